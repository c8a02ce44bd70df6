//! Corpus stage, the token cache's `manifest.json`: tokenizer, options, the
//! source files with their hashes, and per-domain document and token counts
//! (the layout of a cache directory is described in `cache`). Written last by
//! `prepare`, so its presence means the bins are complete.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Bumped whenever the cache layout or the meaning of a manifest field changes.
pub const FORMAT_VERSION: u32 = 2;
pub const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The mixopt version that wrote the cache.
    pub mixopt_version: String,
    pub tokenizer: TokenizerInfo,
    /// Bytes per token id in the bins: 2 (u16) or 4 (u32), little-endian.
    pub token_width_bytes: usize,
    /// JSON field / parquet column holding the text.
    pub text_field: String,
    /// Share of documents held out for validation when a domain has no split of its own.
    pub val_fraction: f64,
    /// Share of each domain's held-out documents in the test split.
    pub test_fraction: f64,
    pub seed: u64,
    /// Cap on each domain's validation tokens (and on its test tokens).
    pub max_val_tokens: u64,
    /// sha256 over the options, the tokenizer hash and the source sizes and
    /// hashes: equal fingerprints mean a re-run would write the same bins.
    pub inputs_fingerprint: String,
    pub domains: Vec<DomainEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// `"bytes"` or `"huggingface"`.
    pub kind: String,
    /// The tokenizer.json used (absent for bytes).
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// Number of ids including the separator.
    pub vocab_size: usize,
    pub separator_id: u32,
}

/// Whether a domain is sampled for training or only evaluated (a held-out
/// target: a downstream set, a distribution one optimizes for but does not train on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Train,
    Eval,
}

/// The held-out split a proxy is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// For choosing: sweeps, fits, any automatic choice.
    Val,
    /// For judging: a final comparison nothing was tuned on.
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEntry {
    pub name: String,
    pub role: Role,
    /// `"seeded"` (held-out documents drawn with the seed), `"given"` (the
    /// source directory had its own train/val files; its val documents are
    /// dealt between validation and test) or `"all held out"` (evaluation-only).
    pub split: String,
    pub sources: Vec<SourceFile>,
    /// File names relative to the cache directory.
    pub train_file: String,
    pub val_file: String,
    pub test_file: String,
    pub train_docs: u64,
    pub val_docs: u64,
    pub test_docs: u64,
    /// Token counts include one separator per document; they equal the bin
    /// lengths in tokens.
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub test_tokens: u64,
    /// Held-out tokens before the `max_val_tokens` cap.
    pub val_tokens_uncapped: u64,
    pub test_tokens_uncapped: u64,
}

impl DomainEntry {
    /// The bins' file names: train, val, test.
    pub fn files(&self) -> [&str; 3] {
        [&self.train_file, &self.val_file, &self.test_file]
    }

    /// Tokens in each bin, in `files` order.
    pub fn token_counts(&self) -> [u64; 3] {
        [self.train_tokens, self.val_tokens, self.test_tokens]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Absolute path when it could be resolved.
    pub path: String,
    /// `"pool"` (split by seed), `"train"` or `"val"`.
    pub role: String,
    pub size_bytes: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: Option<u64>,
    /// Status-change time and inode (Unix): a re-run reuses `sha256` only when
    /// size, mtime, ctime and inode are all unchanged. Any write to a file
    /// moves its ctime, and ctime cannot be set back (unlike mtime, which
    /// `touch -d` or `cp -p` restore), so an edit that keeps size and mtime
    /// is still re-hashed. `None` where unknown, or when the file had changed
    /// just before it was hashed (too recent to trust the clock's tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    pub sha256: String,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "{}: no token cache here (run `mixopt prepare --cache {}` first)",
                    path.display(),
                    dir.display()
                )))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::parse(&path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| {
            Error::parse(path, e.line(), format!("not a token cache manifest: {e}"))
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "cache format version {} (this mixopt reads {FORMAT_VERSION}); re-run mixopt prepare",
                    manifest.format_version
                ),
            ));
        }
        if !matches!(manifest.token_width_bytes, 2 | 4) {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "token_width_bytes is {}, expected 2 or 4",
                    manifest.token_width_bytes
                ),
            ));
        }
        if manifest.domains.is_empty() {
            return Err(Error::parse(path, 0, "no domains"));
        }
        let t = &manifest.tokenizer;
        if t.separator_id as usize >= t.vocab_size {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "tokenizer.separator_id {} is not below tokenizer.vocab_size {}",
                    t.separator_id, t.vocab_size
                ),
            ));
        }
        if manifest.token_width_bytes < token_width_for(t.vocab_size) {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "token_width_bytes {} cannot hold ids of tokenizer.vocab_size {}",
                    manifest.token_width_bytes, t.vocab_size
                ),
            ));
        }
        for d in &manifest.domains {
            for (field, file) in ["train_file", "val_file", "test_file"]
                .into_iter()
                .zip(d.files())
            {
                if !inside_cache(file) {
                    return Err(Error::parse(
                        path,
                        0,
                        format!(
                            "domains.{}.{field} {file:?}: must be a relative path inside the cache directory",
                            d.name
                        ),
                    ));
                }
            }
        }
        let first_eval = manifest
            .domains
            .iter()
            .position(|d| d.role == Role::Eval)
            .unwrap_or(manifest.domains.len());
        if first_eval == 0
            || manifest.domains[first_eval..]
                .iter()
                .any(|d| d.role != Role::Eval)
        {
            return Err(Error::parse(
                path,
                0,
                "domains must list training domains (at least one) before evaluation-only ones",
            ));
        }
        Ok(manifest)
    }
}

/// A bin name the manifest may give: relative, no `..`, no root or prefix
/// (a manifest is data; it must not point training at files elsewhere).
fn inside_cache(file: &str) -> bool {
    let p = Path::new(file);
    !file.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Bytes per token for a vocabulary (including the separator).
pub fn token_width_for(vocab_size: usize) -> usize {
    if vocab_size <= 1 << 16 {
        2
    } else {
        4
    }
}

/// sha256 over the inputs fingerprint and the per-domain counts (not paths or
/// mtimes, so touching a source or moving the corpus does not change it).
pub fn content_fingerprint(manifest: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(format!("mixopt-cache-v{}\n", manifest.format_version));
    h.update(&manifest.inputs_fingerprint);
    for d in &manifest.domains {
        h.update(format!(
            "\n{}\t{:?}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.name,
            d.role,
            d.train_docs,
            d.val_docs,
            d.test_docs,
            d.train_tokens,
            d.val_tokens,
            d.test_tokens
        ));
    }
    hex::encode(h.finalize())
}
