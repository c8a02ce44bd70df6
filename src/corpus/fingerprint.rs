//! Corpus stage, what a cache was built from: each source's size, times and
//! sha256 (re-hashed only when its stamps changed), the fingerprint of every
//! input that decides the bins, and the check that an up-to-date cache's bins
//! are intact. `prepare` uses these to skip work when nothing changed.

use crate::corpus::cache::{Manifest, SourceFile, TokenizerInfo, FORMAT_VERSION, MANIFEST_FILE};
use crate::corpus::prepare::{Plan, PrepareReport};
use crate::corpus::source::{self, DomainFiles};
use crate::corpus::spec::PrepareSpec;
use crate::error::{IoContext, Result};
use crate::mixture::write_json_atomic;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn files_of(files: &DomainFiles) -> impl Iterator<Item = (&Path, &'static str)> {
    let (pool, train, val): (&[PathBuf], &[PathBuf], &[PathBuf]) = match files {
        DomainFiles::Pooled(p) => (p, &[], &[]),
        DomainFiles::Presplit { train, val } => (&[], train, val),
    };
    pool.iter()
        .map(|p| (p.as_path(), "pool"))
        .chain(train.iter().map(|p| (p.as_path(), "train")))
        .chain(val.iter().map(|p| (p.as_path(), "val")))
}

/// Size, times, inode and sha256 of each source; the hash is reused from the
/// old manifest only when size, mtime, ctime and inode are all unchanged
/// (git's rule for its index: see `SourceFile::ctime_ns`).
pub(crate) fn describe_sources(
    files: &DomainFiles,
    known: &HashMap<String, &SourceFile>,
) -> Result<Vec<SourceFile>> {
    files_of(files)
        .map(|(path, role)| {
            let meta = std::fs::metadata(path).at(path)?;
            let size_bytes = meta.len();
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok());
            let (ctime_ns, inode) = change_stamp(&meta);
            let shown = absolute_display(path);
            let sha256 = match known.get(&shown) {
                Some(k)
                    if k.size_bytes == size_bytes
                        && mtime_ns.is_some()
                        && k.mtime_ns == mtime_ns
                        && ctime_ns.is_some()
                        && k.ctime_ns == ctime_ns
                        && k.inode == inode =>
                {
                    k.sha256.clone()
                }
                _ => source::sha256_file(path)?,
            };
            Ok(SourceFile {
                path: shown,
                role: role.to_string(),
                size_bytes,
                mtime_ns,
                ctime_ns: ctime_ns.filter(|&c| settled(c)),
                inode,
                sha256,
            })
        })
        .collect()
}

/// A file's ctime (ns) and inode, where the platform has them.
#[cfg(unix)]
fn change_stamp(meta: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let ns = u64::try_from(meta.ctime())
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|s| s.checked_add(u64::try_from(meta.ctime_nsec()).ok()?));
    (ns, Some(meta.ino()))
}

#[cfg(not(unix))]
fn change_stamp(_: &std::fs::Metadata) -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// A change time at least 2 s old: a later write lands on a later clock tick
/// even on coarse-timestamp filesystems, so the stamp identifies the contents
/// just hashed. (A file changed in the last 2 s is re-hashed next time.)
fn settled(ctime_ns: u64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.saturating_sub(ctime_ns) >= 2_000_000_000
}

pub(crate) fn absolute_display(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// sha256 over everything that decides the bins' contents: the format, the
/// tokenizer (by hash), the options and, per domain, the sources' roles, sizes
/// and hashes (not their paths, so moving a corpus keeps the cache valid).
pub(crate) fn inputs_fingerprint(
    spec: &PrepareSpec,
    tokenizer: &TokenizerInfo,
    plans: &[Plan],
) -> String {
    let domains: Vec<serde_json::Value> = plans
        .iter()
        .map(|p| {
            let sources: Vec<serde_json::Value> = p
                .sources
                .iter()
                .map(|s| serde_json::json!([s.role, s.size_bytes, s.sha256]))
                .collect();
            serde_json::json!({ "name": p.name, "role": p.role, "sources": sources })
        })
        .collect();
    let inputs = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "tokenizer": [tokenizer.kind, tokenizer.sha256, tokenizer.vocab_size],
        "text_field": spec.text_field,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
        "seed": spec.seed,
        "max_val_tokens": spec.max_val_tokens,
        "domains": domains,
    });
    hex::encode(Sha256::digest(inputs.to_string().as_bytes()))
}

/// Every bin the manifest names exists with the length it records.
pub(crate) fn bins_intact(dir: &Path, manifest: &Manifest) -> bool {
    let width = manifest.token_width_bytes as u64;
    manifest.domains.iter().all(|d| {
        d.files().into_iter().zip(d.token_counts()).all(|(f, n)| {
            std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() == n.saturating_mul(width))
        })
    })
}

/// The cache is current. If sources moved or were touched without changing,
/// record their new paths and times (so the next run skips hashing); else
/// leave every file alone.
pub(crate) fn refresh_source_times(
    dir: &Path,
    mut manifest: Manifest,
    plans: &[Plan],
) -> Result<PrepareReport> {
    // Learning a change stamp the manifest lacks is no reason to rewrite it
    // (the next run re-hashes that file again, which is always safe).
    let differs = |old: &SourceFile, new: &SourceFile| {
        let known = |s: &SourceFile| SourceFile {
            ctime_ns: s.ctime_ns.and(old.ctime_ns),
            inode: s.inode.and(old.inode),
            ..s.clone()
        };
        *old != known(new)
    };
    let mut changed = false;
    for (d, p) in manifest.domains.iter_mut().zip(plans) {
        if d.sources.len() != p.sources.len()
            || d.sources.iter().zip(&p.sources).any(|(o, n)| differs(o, n))
        {
            d.sources = p.sources.clone();
            changed = true;
        }
    }
    if changed {
        write_json_atomic(&dir.join(MANIFEST_FILE), &manifest)?;
    }
    Ok(PrepareReport::new(dir, true, manifest))
}
