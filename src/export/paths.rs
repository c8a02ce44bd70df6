//! `paths.toml`: where each domain's data lives in the user's framework.
//!
//! One top-level key per domain, in any of three forms:
//!
//! ```toml
//! web  = "/data/web_text_document"                   # one path / prefix
//! code = ["/data/code/part0", "/data/code/part1"]    # several
//! [books]                                            # with extras
//! train = "s3://bucket/books/train"
//! valid = "s3://bucket/books/val"                    # validation split (optional)
//! test = "s3://bucket/books/test"                    # test split (optional; GPT-NeoX)
//! max_repetition = 4.0                               # OLMo-core max_repetition_ratio
//! ```
//!
//! Paths are taken as written (spaces included); a format that cannot carry
//! one (Megatron's whitespace-split blend) refuses it itself, naming it.
//!
//! Every domain of the mixture must appear, and every key must be a domain:
//! a typo is an error naming the file and line, never a silently dropped domain.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Where one domain's data is.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainPaths {
    pub train: Vec<String>,
    pub valid: Vec<String>,
    pub test: Vec<String>,
    pub max_repetition: Option<f64>,
}

/// Paths of every domain of a mixture. Invariant: has exactly the plan's domains.
#[derive(Debug, Clone, PartialEq)]
pub struct PathMap {
    entries: BTreeMap<String, DomainPaths>,
    /// Whether the paths came from a file (false: names stand in for paths).
    pub from_file: bool,
}

impl PathMap {
    /// Without a paths.toml each domain's name stands in for its path.
    pub fn names_only(domains: &[String]) -> PathMap {
        PathMap {
            entries: domains
                .iter()
                .map(|d| {
                    (
                        d.clone(),
                        DomainPaths {
                            train: vec![d.clone()],
                            valid: Vec::new(),
                            test: Vec::new(),
                            max_repetition: None,
                        },
                    )
                })
                .collect(),
            from_file: false,
        }
    }

    /// Read and validate against the mixture's `domains`.
    pub fn load(path: &Path, domains: &[String]) -> Result<PathMap> {
        let text = crate::store::fsio::read_text(path)?;
        Self::parse(path, &text, domains)
    }

    pub fn parse(path: &Path, text: &str, domains: &[String]) -> Result<PathMap> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            Error::parse(path, line, format!("not a paths file: {}", e.message()))
        })?;
        let mut entries = BTreeMap::new();
        for (key, value) in &table {
            let line = line_of_key(text, key);
            if !domains.contains(key) {
                return Err(Error::parse(
                    path,
                    line,
                    format!(
                        "{key:?} is not a domain of the mixture (domains: {})",
                        domains.join(", ")
                    ),
                ));
            }
            let at = |msg: String| Error::parse(path, line, format!("domain {key:?}: {msg}"));
            let entry = match value {
                toml::Value::String(_) | toml::Value::Array(_) => DomainPaths {
                    train: path_list(value).map_err(at)?,
                    valid: Vec::new(),
                    test: Vec::new(),
                    max_repetition: None,
                },
                toml::Value::Table(t) => {
                    for k in t.keys() {
                        if !matches!(k.as_str(), "train" | "valid" | "test" | "max_repetition") {
                            return Err(at(format!(
                                "unknown field {k:?} (fields: train, valid, test, max_repetition)"
                            )));
                        }
                    }
                    let train = t
                        .get("train")
                        .ok_or_else(|| at("missing field \"train\"".into()))?;
                    let max_repetition = match t.get("max_repetition") {
                        None => None,
                        Some(v) => {
                            let r = v
                                .as_float()
                                .or_else(|| v.as_integer().map(|i| i as f64))
                                .ok_or_else(|| at("max_repetition is not a number".into()))?;
                            if !(r.is_finite() && r >= 1.0) {
                                return Err(at(format!("max_repetition {r}: must be ≥ 1")));
                            }
                            Some(r)
                        }
                    };
                    DomainPaths {
                        train: path_list(train).map_err(|e| at(format!("train: {e}")))?,
                        valid: match t.get("valid") {
                            Some(v) => path_list(v).map_err(|e| at(format!("valid: {e}")))?,
                            None => Vec::new(),
                        },
                        test: match t.get("test") {
                            Some(v) => path_list(v).map_err(|e| at(format!("test: {e}")))?,
                            None => Vec::new(),
                        },
                        max_repetition,
                    }
                }
                other => {
                    return Err(at(format!(
                        "expected a path, a list of paths or a table, got a {}",
                        other.type_str()
                    )))
                }
            };
            entries.insert(key.clone(), entry);
        }
        if let Some(missing) = domains.iter().find(|d| !entries.contains_key(*d)) {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "no paths for domain {missing:?} (every domain of the mixture needs an entry)"
                ),
            ));
        }
        Ok(PathMap {
            entries,
            from_file: true,
        })
    }

    /// The paths of `domain` (a domain of the plan).
    pub fn get(&self, domain: &str) -> &DomainPaths {
        // Invariant: constructed for exactly the plan's domains.
        &self.entries[domain]
    }

    /// Whether any domain names validation data.
    pub fn has_valid(&self) -> bool {
        self.entries.values().any(|e| !e.valid.is_empty())
    }

    /// Whether any domain names test data.
    pub fn has_test(&self) -> bool {
        self.entries.values().any(|e| !e.test.is_empty())
    }
}

/// A string or a non-empty array of non-empty strings.
fn path_list(v: &toml::Value) -> std::result::Result<Vec<String>, String> {
    let list: Vec<String> = match v {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("list item {i} is not a string"))
            })
            .collect::<std::result::Result<_, _>>()?,
        other => return Err(format!("expected a path, got a {}", other.type_str())),
    };
    if list.is_empty() {
        return Err("empty list of paths".into());
    }
    if list.iter().any(|p| p.trim().is_empty()) {
        return Err("empty path".into());
    }
    if let Some(p) = list.iter().find(|p| p.chars().any(char::is_control)) {
        return Err(format!("path {p:?} contains a control character"));
    }
    Ok(list)
}

/// 1-based line where `key` is defined (as `key =`, `"key" =` or `[key]`), 0 if not found.
fn line_of_key(text: &str, key: &str) -> usize {
    let quoted = format!("\"{key}\"");
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix('[').unwrap_or(t).trim_start();
        for name in [key, quoted.as_str()] {
            if let Some(rest) = t.strip_prefix(name) {
                let rest = rest.trim_start();
                if rest.starts_with('=') || rest.starts_with(']') {
                    return i + 1;
                }
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["web".into(), "code".into(), "books".into()]
    }

    #[test]
    fn reads_all_three_forms() {
        let text = "web = \"/d/web\"\ncode = [\"/d/c0\", \"/d/c1\"]\n[books]\ntrain = \"s3://b/train\"\nvalid = \"s3://b/val\"\nmax_repetition = 4\n";
        let m = PathMap::parse(Path::new("p.toml"), text, &domains()).unwrap();
        assert_eq!(m.get("code").train, ["/d/c0", "/d/c1"]);
        assert_eq!(m.get("books").valid, ["s3://b/val"]);
        assert_eq!(m.get("books").max_repetition, Some(4.0));
        assert!(m.has_valid());
    }

    #[test]
    fn unknown_and_missing_domains_name_file_and_line() {
        let text = "web = \"a\"\ncode = \"b\"\nbooks = \"c\"\nwbe = \"d\"\n";
        let e = PathMap::parse(Path::new("p.toml"), text, &domains())
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:4") && e.contains("wbe"), "{e}");
        let text = "web = \"a\"\ncode = \"b\"\n";
        let e = PathMap::parse(Path::new("p.toml"), text, &domains())
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml") && e.contains("books"), "{e}");
        let e = PathMap::parse(Path::new("p.toml"), "web = [", &domains())
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:1"), "{e}");
        let text = "web = 3\ncode = \"b\"\nbooks = \"c\"\n";
        let e = PathMap::parse(Path::new("p.toml"), text, &domains())
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:1") && e.contains("integer"), "{e}");
    }
}
