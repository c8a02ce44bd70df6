//! What a mixture is: named domains with non-negative weights summing to 1.
//! Every stage passes `Mixture`, never a bare `Vec<f64>`; construction is the
//! one place weights are validated.

mod gamma;
pub mod hierarchy;
pub mod library;
pub mod reuse;
pub mod sampler;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// How far from 1 the weights of a user-given mixture may sum before it is
/// rejected. 1e-2 admits mixtures printed with 3 decimals over ~20 domains
/// (RegMix's published CSVs deviate by up to 0.004) and still rejects real mistakes.
pub const SUM_TOLERANCE: f64 = 1e-2;

/// A validated mixture. Invariants: domain names unique and non-empty, weights
/// finite, non-negative and summing to 1 (renormalized on construction).
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    domains: Vec<String>,
    weights: Vec<f64>,
}

/// The on-disk weights file: `{"domains": {name: weight}, "target": …, "predicted": …, "provenance": …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightsFile {
    pub domains: BTreeMap<String, f64>,
    /// Preserves the domain order of the mixture (JSON objects have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<f64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub provenance: serde_json::Value,
}

/// Characters a domain name may not hold, besides control characters: `,`
/// and `=` separate entries of a mixture spec (`a=0.5,b=0.5`) and of flags
/// such as `--min NAME=W`, and `"` would need escaping in the runs table's
/// and the trajectory's CSV headers. Every other printable character (`:` of
/// a hierarchy `source:topic`, spaces, `+`, …) is carried by every export
/// format, each quoting or escaping it its own way; a name one format cannot
/// carry is refused by that format alone.
pub const FORBIDDEN_NAME_CHARS: [char; 3] = [',', '=', '"'];

/// Domain names travel into CSV headers, flags and framework configs: any
/// printable text without leading or trailing whitespace (CSV readers trim
/// it) and without `FORBIDDEN_NAME_CHARS`.
pub fn check_domain_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.trim() != name {
        Some("starts or ends with whitespace".to_string())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        Some(format!("holds the control character {c:?}"))
    } else {
        name.chars()
            .find(|c| FORBIDDEN_NAME_CHARS.contains(c))
            .map(|c| {
                format!("holds {c:?} (',', '=' and '\"' separate mixture specs and CSV fields)")
            })
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::invalid(format!("domain name {name:?} {p}"))),
    }
}

impl Mixture {
    /// Validate and renormalize. `what` names the source in error messages.
    pub fn new(domains: Vec<String>, weights: Vec<f64>) -> Result<Self> {
        Self::new_in(domains, weights, "mixture")
    }

    pub fn new_in(domains: Vec<String>, weights: Vec<f64>, what: &str) -> Result<Self> {
        if domains.is_empty() {
            return Err(Error::invalid(format!("{what}: no domains")));
        }
        if domains.len() != weights.len() {
            return Err(Error::invalid(format!(
                "{what}: {} domains but {} weights",
                domains.len(),
                weights.len()
            )));
        }
        for (i, d) in domains.iter().enumerate() {
            check_domain_name(d).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
            if domains[..i].contains(d) {
                return Err(Error::invalid(format!(
                    "{what}: domain {d:?} appears twice"
                )));
            }
        }
        for (d, w) in domains.iter().zip(&weights) {
            if !w.is_finite() {
                return Err(Error::invalid(format!("{what}: weight of {d:?} is {w}")));
            }
            if *w < 0.0 {
                return Err(Error::invalid(format!(
                    "{what}: weight of {d:?} is negative ({w})"
                )));
            }
        }
        let sum: f64 = weights.iter().sum();
        if (sum - 1.0).abs() > SUM_TOLERANCE {
            return Err(Error::invalid(format!(
                "{what}: weights sum to {sum:.6}, not 1 (tolerance {SUM_TOLERANCE})"
            )));
        }
        let weights = weights.into_iter().map(|w| w / sum).collect();
        Ok(Mixture { domains, weights })
    }

    /// Build from any non-negative scores (e.g. token counts), normalizing them.
    pub fn from_scores(domains: Vec<String>, scores: &[f64]) -> Result<Self> {
        let sum: f64 = scores.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return Err(Error::invalid(format!(
                "cannot normalize scores summing to {sum}"
            )));
        }
        Self::new(domains, scores.iter().map(|s| s / sum).collect())
    }

    pub fn uniform(domains: Vec<String>) -> Result<Self> {
        let n = domains.len().max(1) as f64;
        let w = vec![1.0 / n; domains.len()];
        Self::new(domains, w)
    }

    /// Parse `"a=0.5,b=0.5"`.
    pub fn parse_spec(spec: &str) -> Result<Self> {
        let mut domains = Vec::new();
        let mut weights = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part.rsplit_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "mixture {spec:?}: expected NAME=WEIGHT, got {part:?}"
                ))
            })?;
            let w: f64 = w.trim().parse().map_err(|_| {
                Error::invalid(format!(
                    "mixture {spec:?}: weight of {:?} is not a number: {w:?}",
                    name.trim()
                ))
            })?;
            domains.push(name.trim().to_string());
            weights.push(w);
        }
        Self::new_in(domains, weights, &format!("mixture {spec:?}"))
    }

    /// Load a weights.json (the `domains` object).
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::store::fsio::read_text(path)?;
        let file: WeightsFile = serde_json::from_str(&text)
            .map_err(|e| Error::parse(path, e.line(), format!("not a weights file: {e}")))?;
        let mut names: Vec<String> = file.order.clone();
        if names.len() != file.domains.len() || names.iter().any(|n| !file.domains.contains_key(n))
        {
            names = file.domains.keys().cloned().collect();
        }
        let weights = names.iter().map(|n| file.domains[n]).collect();
        Self::new_in(names, weights, &path.display().to_string())
    }

    /// A path to a weights.json if such a file exists, else the name of a
    /// published mixture (`mixtures/`, see `library`), else a
    /// `"a=0.5,b=0.5"` spec.
    pub fn parse_or_load(arg: &str) -> Result<Self> {
        let path = Path::new(arg);
        if path.is_file() || arg.ends_with(".json") {
            Self::load(path)
        } else if let Some(m) = library::get(arg) {
            Ok(m)
        } else {
            Self::parse_spec(arg).map_err(|e| {
                if arg.contains('=') {
                    e
                } else {
                    Error::invalid(format!(
                        "mixture {arg:?}: not a file, a published mixture ({}) or a NAME=WEIGHT list",
                        library::names().join(", ")
                    ))
                }
            })
        }
    }

    /// `parse_or_load`, then mapped onto `domains` (in that order): by name,
    /// through the published mixtures' alias table, or a user's table given
    /// as `ARG@aliases.toml` (see `library::resolve_for`).
    pub fn resolve_for(arg: &str, domains: &[String]) -> Result<Self> {
        library::resolve_for(arg, domains)
    }

    /// The same mixture over `domains` (in that order). Domains missing here get
    /// weight 0; a domain of this mixture not in `domains` is an error.
    pub fn align(&self, domains: &[String]) -> Result<Self> {
        for d in &self.domains {
            if !domains.contains(d) {
                return Err(Error::invalid(format!(
                    "unknown domain {d:?} (known: {})",
                    domains.join(", ")
                )));
            }
        }
        let weights = domains.iter().map(|d| self.get(d).unwrap_or(0.0)).collect();
        Self::new(domains.to_vec(), weights)
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn get(&self, domain: &str) -> Option<f64> {
        self.domains
            .iter()
            .position(|d| d == domain)
            .map(|i| self.weights[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.domains
            .iter()
            .map(String::as_str)
            .zip(self.weights.iter().copied())
    }

    /// Domain → weight (sorted by name; JSON objects carry no order).
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.iter().map(|(d, w)| (d.to_string(), w)).collect()
    }

    /// `"a=0.500,b=0.500"`.
    pub fn to_spec(&self) -> String {
        self.iter()
            .map(|(d, w)| format!("{d}={w:.6}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn to_weights_file(
        &self,
        target: Option<String>,
        predicted: Option<f64>,
        provenance: serde_json::Value,
    ) -> WeightsFile {
        WeightsFile {
            domains: self.to_map(),
            order: self.domains.clone(),
            target,
            predicted,
            provenance,
        }
    }
}

/// Write any serializable value as pretty JSON, atomically (write then rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Write bytes to `path` atomically and durably (unique temporary file, fsync,
/// rename, fsync of the directory): see `store::fsio`.
pub use crate::store::fsio::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_specs() {
        let m = Mixture::parse_spec("a=0.25, b=0.75").unwrap();
        assert_eq!(m.domains(), ["a", "b"]);
        assert!((m.get("b").unwrap() - 0.75).abs() < 1e-12);
        assert!(Mixture::parse_spec("a=0.5,b=0.4").is_err());
        assert!(Mixture::parse_spec("a=-0.5,b=1.5").is_err());
        assert!(Mixture::parse_spec("a=x").is_err());
        assert!(Mixture::parse_spec("a=NaN,b=1").is_err());
        assert!(Mixture::parse_spec("a=0.5,a=0.5").is_err());
    }

    #[test]
    fn domain_names_may_hold_hierarchies_and_spaces() {
        for ok in ["dclm:adult_content", "stack-edu:C++", "a b", "x/y.z", "ünï"] {
            assert!(check_domain_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", " a", "a ", "a,b", "a=b", "a\"b", "a\tb", "a\nb"] {
            assert!(check_domain_name(bad).is_err(), "{bad:?}");
        }
        let m = Mixture::parse_spec("dclm:web text=0.5, stack-edu:C++=0.5").unwrap();
        assert_eq!(m.domains(), ["dclm:web text", "stack-edu:C++"]);
    }

    #[test]
    fn align_fills_missing_and_rejects_unknown() {
        let m = Mixture::parse_spec("b=1").unwrap();
        let all = vec!["a".to_string(), "b".to_string()];
        assert_eq!(m.align(&all).unwrap().weights(), [0.0, 1.0]);
        let m = Mixture::parse_spec("c=1").unwrap();
        assert!(m.align(&all).is_err());
    }
}
