//! Corpus stage, input side: where a domain's documents come from. A domain
//! path (file, directory or glob) resolves to a list of source files (or a
//! directory's own train/validation shards); `documents` streams each file's
//! documents.
//!
//! Formats, chosen by extension: `.txt` (the whole file is one document),
//! `.jsonl` (one JSON object per line, the text in a named string field), and
//! `.parquet` (a string column). `.txt` and `.jsonl` may be compressed with gzip
//! (`.gz`) or zstd (`.zst`).

use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use super::documents::{read_documents, read_documents_counting, read_jsonl};

/// The extensions `resolve` accepts, for error messages.
pub const SUPPORTED: &str =
    ".txt, .jsonl, .parquet (.txt and .jsonl also gzip .gz or zstd .zst compressed)";

/// Base names a directory may use to give its own train/validation split.
const SPLIT_STEMS: [&str; 2] = ["train", "val"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Txt,
    Jsonl,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How to read one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub kind: Kind,
    pub compression: Compression,
}

impl Format {
    /// The format a file name says it has; `None` for anything unsupported.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let (rest, compression) = if let Some(r) = name.strip_suffix(".gz") {
            (r, Compression::Gzip)
        } else if let Some(r) = name.strip_suffix(".zst") {
            (r, Compression::Zstd)
        } else {
            (name.as_str(), Compression::None)
        };
        let kind = if rest.ends_with(".txt") {
            Kind::Txt
        } else if rest.ends_with(".jsonl") {
            Kind::Jsonl
        } else if rest.ends_with(".parquet") && compression == Compression::None {
            Kind::Parquet
        } else {
            return None;
        };
        Some(Format { kind, compression })
    }
}

/// The files of one domain: either one pool that prepare splits by seed, or a
/// split the data already carries (a directory holding train and val files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainFiles {
    Pooled(Vec<PathBuf>),
    Presplit {
        train: Vec<PathBuf>,
        val: Vec<PathBuf>,
    },
}

/// Resolve a domain path: a file, a glob, or a directory. A directory whose
/// top level holds both train and val files (`train.jsonl`, `train-00001.jsonl.zst`,
/// `val.jsonl`, …) gives exactly those as a ready split; any other directory
/// gives every supported file below it, sorted. `domain` only names the domain
/// in error messages.
pub fn resolve(domain: &str, spec: &Path) -> Result<DomainFiles> {
    let text = spec.to_string_lossy();
    if !spec.exists() && text.contains(['*', '?', '[']) {
        let files = resolve_glob(domain, &text)?;
        return Ok(DomainFiles::Pooled(files));
    }
    let meta = std::fs::metadata(spec).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "domain {domain:?}: {} does not exist",
                spec.display()
            ))
        } else {
            Error::io(spec, e)
        }
    })?;
    if meta.is_dir() {
        if let Some(split) = presplit_in(spec) {
            return Ok(split);
        }
        // Validation files without training files: pooling them would train
        // on the held-out text (and the split would pretend otherwise).
        if let Some(val) = val_only_in(spec) {
            return Err(Error::invalid(format!(
                "domain {domain:?}: {} has validation files ({}) but no train files; \
                 pooling them would train on validation data. Add train.* files beside them, \
                 or give the files to split explicitly (a file or glob, e.g. --domain {domain}='{}/*.jsonl')",
                spec.display(),
                val.iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.display()
            )));
        }
        let mut files = Vec::new();
        walk_dir(spec, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid(format!(
                "domain {domain:?}: directory {} holds no {SUPPORTED} files",
                spec.display()
            )));
        }
        Ok(DomainFiles::Pooled(files))
    } else {
        check_supported(spec)?;
        Ok(DomainFiles::Pooled(vec![spec.to_path_buf()]))
    }
}

fn resolve_glob(domain: &str, pattern: &str) -> Result<Vec<PathBuf>> {
    // Shell semantics: `*` does not match a leading dot.
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::new()
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| Error::invalid(format!("domain {domain:?}: bad glob {pattern:?}: {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let p = e.path().to_path_buf();
            Error::io(p, std::io::Error::from(e))
        })?;
        if path.is_file() {
            check_supported(&path)?;
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(format!(
            "domain {domain:?}: glob {pattern:?} matched no files"
        )));
    }
    files.sort();
    Ok(files)
}

fn check_supported(path: &Path) -> Result<()> {
    match Format::of(path) {
        Some(_) => Ok(()),
        None => Err(Error::invalid(format!(
            "{}: unsupported file type (expected {SUPPORTED})",
            path.display()
        ))),
    }
}

/// The split a file name claims: `train` for `train.jsonl`, `train-00001.jsonl.zst`
/// or `train_0.parquet`, likewise `val`; `None` for any other name.
fn split_role(file_name: &str) -> Option<&'static str> {
    let stem = file_name.split('.').next()?;
    SPLIT_STEMS.into_iter().find(|role| {
        stem.strip_prefix(role)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_']))
    })
}

/// The supported files of `dir` (not below it) named as train and as val
/// shards, each sorted.
fn shards_in(dir: &Path) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for path in std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
    {
        if !path.is_file() || Format::of(&path).is_none() {
            continue;
        }
        match path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(split_role)
        {
            Some("train") => train.push(path),
            Some(_) => val.push(path),
            None => {}
        }
    }
    train.sort();
    val.sort();
    Some((train, val))
}

/// The val shards of `dir`, when there are such files but no train shards.
fn val_only_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let (train, val) = shards_in(dir)?;
    (train.is_empty() && !val.is_empty()).then_some(val)
}

/// The train and val shards of `dir`, when there are both (any supported extension).
fn presplit_in(dir: &Path) -> Option<DomainFiles> {
    let (train, val) = shards_in(dir)?;
    (!train.is_empty() && !val.is_empty()).then_some(DomainFiles::Presplit { train, val })
}

/// Every supported, non-hidden file below `dir` (other files are ignored, so a
/// README or a manifest beside the data does no harm).
fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk_dir(&path, out)?;
        } else if Format::of(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dirs_globs_and_presplit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("b.txt"), "b").unwrap();
        std::fs::write(d.join("sub/a.jsonl"), "").unwrap();
        std::fs::write(d.join("README.md"), "ignored").unwrap();
        std::fs::write(d.join(".hidden.txt"), "ignored").unwrap();
        let DomainFiles::Pooled(files) = resolve("x", d).unwrap() else {
            panic!("expected pooled files")
        };
        assert_eq!(files, [d.join("b.txt"), d.join("sub/a.jsonl")]);

        let pattern = d.join("*.txt");
        assert_eq!(
            resolve("x", &pattern).unwrap(),
            DomainFiles::Pooled(vec![d.join("b.txt")])
        );
        let err = resolve("x", &d.join("*.nothing")).unwrap_err().to_string();
        assert!(err.contains("matched no files"), "{err}");
        let err = resolve("x", &d.join("README.md")).unwrap_err().to_string();
        assert!(err.contains("README.md: unsupported file type"), "{err}");
        let err = resolve("x", &d.join("missing")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        assert_eq!(split_role("train.jsonl"), Some("train"));
        assert_eq!(split_role("val-00001.jsonl.zst"), Some("val"));
        assert_eq!(split_role("train_0.parquet"), Some("train"));
        assert_eq!(split_role("trainee.jsonl"), None);
        assert_eq!(split_role("validation.jsonl"), None);
        std::fs::write(d.join("sub/train.jsonl"), "").unwrap();
        std::fs::write(d.join("sub/val.jsonl"), "").unwrap();
        assert_eq!(
            resolve("x", &d.join("sub")).unwrap(),
            DomainFiles::Presplit {
                train: vec![d.join("sub/train.jsonl")],
                val: vec![d.join("sub/val.jsonl")],
            }
        );
    }
}
