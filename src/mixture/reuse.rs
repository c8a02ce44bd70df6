//! Mixture reuse when the domains change (Olmix's case study): a previous
//! optimized mixture's ratios among the domains that did not change are
//! frozen into one virtual domain, only that virtual domain and the changed
//! domains (a new source, the parts of a split one) are swept, fit and
//! optimized, and the final leaf weights are composed back: each frozen
//! domain gets the virtual domain's weight times its frozen ratio.
//!
//! The runs table keeps the leaf weights the proxies trained on; `collapse`
//! maps them to the reduced coordinates the law is fit on, checking that
//! every run kept the frozen ratios.

use super::Mixture;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default name of the virtual domain.
pub const VIRTUAL: &str = "reused";

/// A frozen part of a previous mixture. Invariant: `parts` sum to 1, none
/// is named `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reuse {
    /// The virtual domain standing for the frozen part.
    pub name: String,
    /// Frozen domain → its share of the virtual domain.
    pub parts: BTreeMap<String, f64>,
    /// Every leaf domain, in the order of the runs (frozen and changed).
    pub leaves: Vec<String>,
}

impl Reuse {
    /// Freeze `previous`'s ratios among the domains it shares with
    /// `domains` (less `unfreeze`); the others are the changed ones.
    pub fn plan(previous: &Mixture, domains: &[String], unfreeze: &[String]) -> Result<Reuse> {
        for u in unfreeze {
            if !domains.contains(u) {
                return Err(Error::invalid(format!(
                    "--unfreeze {u:?}: not a domain (domains: {})",
                    domains.join(", ")
                )));
            }
        }
        let frozen: Vec<(String, f64)> = previous
            .iter()
            .filter(|(d, w)| {
                *w > 0.0 && domains.iter().any(|x| x == d) && !unfreeze.iter().any(|u| u == d)
            })
            .map(|(d, w)| (d.to_string(), w))
            .collect();
        let total: f64 = frozen.iter().map(|(_, w)| w).sum();
        if frozen.is_empty() || total <= 0.0 {
            return Err(Error::invalid(
                "reuse: the previous mixture shares no domain with weight > 0 with this one; nothing to freeze",
            ));
        }
        let changed = domains
            .iter()
            .filter(|d| !frozen.iter().any(|(f, _)| f == *d))
            .count();
        if changed == 0 {
            return Err(Error::invalid(
                "reuse: every domain is frozen; nothing changed to sweep (use --unfreeze NAME)",
            ));
        }
        let mut name = VIRTUAL.to_string();
        while domains.contains(&name) {
            name.push('_');
        }
        Ok(Reuse {
            name,
            parts: frozen.into_iter().map(|(d, w)| (d, w / total)).collect(),
            leaves: domains.to_vec(),
        })
    }

    /// Check against the domains a stored reuse is applied to.
    pub fn check(&self, domains: &[String]) -> Result<()> {
        if let Some(d) = self.parts.keys().find(|d| !domains.contains(d)) {
            return Err(Error::invalid(format!(
                "reuse: frozen domain {d:?} is not a domain here"
            )));
        }
        let s: f64 = self.parts.values().sum();
        if (s - 1.0).abs() > 1e-6 || self.parts.values().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(Error::invalid(format!(
                "reuse: frozen ratios sum to {s}, not 1"
            )));
        }
        Ok(())
    }

    /// The reduced domains: the virtual one, then the changed ones in order.
    pub fn reduced_domains(&self, domains: &[String]) -> Vec<String> {
        std::iter::once(self.name.clone())
            .chain(
                domains
                    .iter()
                    .filter(|d| !self.parts.contains_key(*d))
                    .cloned(),
            )
            .collect()
    }

    /// Leaf weights (over `domains`) → reduced weights. Every row must keep
    /// the frozen ratios (within `tol` of the virtual domain's weight).
    pub fn collapse(&self, domains: &[String], leaf: &[f64], tol: f64) -> Result<Vec<f64>> {
        let reduced = self.reduced_domains(domains);
        let mut out = vec![0.0; reduced.len()];
        for (d, w) in domains.iter().zip(leaf) {
            if self.parts.contains_key(d) {
                out[0] += w;
            } else {
                let j = reduced.iter().position(|r| r == d).unwrap_or(0);
                out[j] = *w;
            }
        }
        for (d, w) in domains.iter().zip(leaf) {
            if let Some(r) = self.parts.get(d) {
                if (w - out[0] * r).abs() > tol {
                    return Err(Error::invalid(format!(
                        "reuse: weight of {d:?} is {w}, not {} × its frozen ratio {r}: \
                         these runs were not sampled with this frozen mixture",
                        out[0]
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Reduced mixture → leaf mixture over the leaves.
    pub fn expand_leaves(&self, reduced: &Mixture) -> Result<Mixture> {
        self.expand(reduced, &self.leaves)
    }

    /// Reduced mixture → leaf mixture over `domains`.
    pub fn expand(&self, reduced: &Mixture, domains: &[String]) -> Result<Mixture> {
        let v = reduced.get(&self.name).unwrap_or(0.0);
        let weights: Vec<f64> = domains
            .iter()
            .map(|d| match self.parts.get(d) {
                Some(r) => v * r,
                None => reduced.get(d).unwrap_or(0.0),
            })
            .collect();
        Mixture::new(domains.to_vec(), weights)
    }

    /// A leaf mixture (e.g. the natural shares) in reduced coordinates.
    pub fn reduce(&self, m: &Mixture) -> Result<Mixture> {
        let domains = m.domains().to_vec();
        let reduced = self.reduced_domains(&domains);
        let mut w = vec![0.0; reduced.len()];
        for (d, x) in m.iter() {
            if self.parts.contains_key(d) {
                w[0] += x;
            } else if let Some(j) = reduced.iter().position(|r| r == d) {
                w[j] = x;
            }
        }
        Mixture::new(reduced, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_expand_collapse_round_trip() {
        let prev = Mixture::parse_spec("web=0.6,code=0.3,books=0.1").unwrap();
        // `books` was split into two new domains; `math` is new.
        let domains: Vec<String> = ["web", "code", "books:fic", "books:non", "math"]
            .map(String::from)
            .to_vec();
        let r = Reuse::plan(&prev, &domains, &[]).unwrap();
        assert_eq!(r.parts.len(), 2);
        assert!((r.parts["web"] - 2.0 / 3.0).abs() < 1e-12);
        let red = r.reduced_domains(&domains);
        assert_eq!(red, ["reused", "books:fic", "books:non", "math"]);
        let m = Mixture::new(red.clone(), vec![0.6, 0.1, 0.1, 0.2]).unwrap();
        let leaf = r.expand(&m, &domains).unwrap();
        assert!((leaf.get("web").unwrap() - 0.4).abs() < 1e-12);
        let back = r.collapse(&domains, leaf.weights(), 1e-9).unwrap();
        assert!(back
            .iter()
            .zip(m.weights())
            .all(|(a, b)| (a - b).abs() < 1e-12));
        let mut off = leaf.weights().to_vec();
        off.swap(0, 1);
        assert!(r.collapse(&domains, &off, 1e-9).is_err());
        assert!(Reuse::plan(&prev, &["web".into(), "code".into()], &[]).is_err());
        let u = Reuse::plan(&prev, &["web".into(), "code".into()], &["code".into()]).unwrap();
        assert_eq!(
            u.reduced_domains(&["web".into(), "code".into()]),
            ["reused", "code"]
        );
    }
}
