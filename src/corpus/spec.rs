//! Corpus stage, what to prepare: the domains (name, files, role) and the
//! options of a `mixopt prepare` run, checked before any data is read.

use crate::corpus::cache::Role;
use crate::error::{Error, IoContext, Result};
use crate::mixture::check_domain_name;
use std::path::{Path, PathBuf};

/// 5% of documents held out: RegMix-style proxies only need a stable estimate
/// of each domain's loss, not a large test set.
pub const DEFAULT_VAL_FRACTION: f64 = 0.05;
/// Half of the held-out documents of each domain form the test split: what a
/// final comparison is judged on, apart from the validation split that proxies
/// are scored on and choices are made on.
pub const DEFAULT_TEST_FRACTION: f64 = 0.5;
/// 256 Ki validation tokens per domain keeps one evaluation of a tiny proxy
/// over ~10 domains to seconds on a CPU.
pub const DEFAULT_MAX_VAL_TOKENS: u64 = 262_144;
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// One domain to prepare: a name and a file, directory or glob, and whether
/// it is trained on or only evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSource {
    pub name: String,
    pub path: PathBuf,
    pub role: Role,
}

impl DomainSource {
    /// Parse `NAME=PATH` (the `--domain` flag).
    pub fn parse(arg: &str) -> Result<DomainSource> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--domain {arg:?}: expected NAME=PATH")))?;
        let (name, path) = (name.trim(), path.trim());
        if path.is_empty() {
            return Err(Error::invalid(format!("--domain {arg:?}: empty PATH")));
        }
        Ok(DomainSource {
            name: name.to_string(),
            path: PathBuf::from(path),
            role: Role::Train,
        })
    }
}

/// Every non-hidden subdirectory of `dir` as a domain named after it, sorted
/// (the layout `shared/corpus/build_corpus.sh` writes: `DIR/<domain>/{train,val}.jsonl`).
pub fn domains_in_dir(dir: &Path) -> Result<Vec<DomainSource>> {
    let mut domains = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_dir() && !name.starts_with('.') {
            domains.push(DomainSource {
                name: name.to_string(),
                path: path.clone(),
                role: Role::Train,
            });
        }
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    if domains.is_empty() {
        return Err(Error::invalid(format!(
            "--domains-dir {}: no subdirectories (expected one per domain)",
            dir.display()
        )));
    }
    Ok(domains)
}

/// What to prepare and how. Build with [`PrepareSpec::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct PrepareSpec {
    pub domains: Vec<DomainSource>,
    pub cache_dir: PathBuf,
    /// A HuggingFace `tokenizer.json`; `None` for byte-level.
    pub tokenizer: Option<PathBuf>,
    /// JSON field / parquet column holding the text.
    pub text_field: String,
    /// Share of documents held out when a domain has no split of its own; in (0, 1).
    pub val_fraction: f64,
    /// Share of each domain's held-out documents that form the test split; in [0, 1).
    pub test_fraction: f64,
    pub seed: u64,
    /// Cap on each domain's validation tokens, and on its test tokens.
    pub max_val_tokens: u64,
    /// Rebuild even when the cache is up to date.
    pub force: bool,
}

impl PrepareSpec {
    pub fn new(cache_dir: impl Into<PathBuf>, domains: Vec<(String, PathBuf)>) -> PrepareSpec {
        PrepareSpec {
            domains: domains
                .into_iter()
                .map(|(name, path)| DomainSource {
                    name,
                    path,
                    role: Role::Train,
                })
                .collect(),
            cache_dir: cache_dir.into(),
            tokenizer: None,
            text_field: DEFAULT_TEXT_FIELD.to_string(),
            val_fraction: DEFAULT_VAL_FRACTION,
            test_fraction: DEFAULT_TEST_FRACTION,
            seed: 0,
            max_val_tokens: DEFAULT_MAX_VAL_TOKENS,
            force: false,
        }
    }

    /// Validate everything that can be checked without reading the data.
    pub fn check(&self) -> Result<()> {
        if self.domains.is_empty() {
            return Err(Error::invalid(
                "no domains: give --domain NAME=PATH or --domains-dir DIR",
            ));
        }
        for (i, d) in self.domains.iter().enumerate() {
            check_file_safe_name(&d.name)?;
            if self.domains[..i].iter().any(|e| e.name == d.name) {
                return Err(Error::invalid(format!(
                    "domain {:?} is given twice",
                    d.name
                )));
            }
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(Error::invalid(format!(
                "--val-fraction {}: must lie strictly between 0 and 1",
                self.val_fraction
            )));
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(Error::invalid(format!(
                "--test-fraction {}: must lie in [0, 1)",
                self.test_fraction
            )));
        }
        if !self.domains.iter().any(|d| d.role == Role::Train) {
            return Err(Error::invalid(
                "no training domains: every domain is evaluation-only",
            ));
        }
        if self.max_val_tokens == 0 {
            return Err(Error::invalid("--max-val-tokens must be at least 1"));
        }
        if self.text_field.is_empty() {
            return Err(Error::invalid("--text-field must not be empty"));
        }
        Ok(())
    }
}

/// Domain names become file names in the cache: on top of the general rule,
/// no empty, `.` or `..` path components.
fn check_file_safe_name(name: &str) -> Result<()> {
    check_domain_name(name)?;
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::invalid(format!(
            "domain name {name:?}: empty, '.' or '..' path components are not allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_checks() {
        let ok = PrepareSpec::new("c", vec![("a".into(), "x".into())]);
        assert!(ok.check().is_ok());
        for (name, bad) in [
            ("dup", {
                let mut s = ok.clone();
                s.domains.push(s.domains[0].clone());
                s
            }),
            (
                "fraction",
                PrepareSpec {
                    val_fraction: 1.0,
                    ..ok.clone()
                },
            ),
            (
                "name",
                PrepareSpec::new("c", vec![("a,b".into(), "x".into())]),
            ),
            (
                "dots",
                PrepareSpec::new("c", vec![("../a".into(), "x".into())]),
            ),
            ("none", PrepareSpec::new("c", vec![])),
        ] {
            assert!(bad.check().is_err(), "{name}");
        }
        assert!(DomainSource::parse("noequals").is_err());
        assert_eq!(
            DomainSource::parse("a=b=c").unwrap(),
            DomainSource {
                name: "a".into(),
                path: "b=c".into(),
                role: Role::Train,
            }
        );
    }
}
