//! Hierarchical domains (Olmix's source → topic → quality): a name
//! `source:topic[:quality]` sits under its prefixes. Fitting and optimizing
//! work on the leaves (the names as they are); the sweep can sample level by
//! level (`Levels`: a Dirichlet over sources, then over the topics within
//! each source, each level with its own temperature and strength), and
//! every table can roll the leaves up to a level (`rollup`).
//!
//! A name without `:` is a source of its own.

use super::sampler::SamplerConfig;
use super::Mixture;
use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The separator between levels of a name.
pub const SEP: char = ':';

/// Whether any domain name has more than one level.
pub fn is_hierarchical(domains: &[String]) -> bool {
    domains.iter().any(|d| d.contains(SEP))
}

/// The first `depth` levels of a name (`depth` ≥ 1): `prefix("a:b:c", 1)` is `a`.
pub fn prefix(name: &str, depth: usize) -> String {
    name.split(SEP)
        .take(depth.max(1))
        .collect::<Vec<_>>()
        .join(":")
}

/// The mixture summed up to its first `depth` levels (1 = sources), groups
/// in order of first appearance.
pub fn rollup(m: &Mixture, depth: usize) -> Result<Mixture> {
    let (names, groups) = groups(m.domains(), depth);
    let weights: Vec<f64> = groups
        .iter()
        .map(|g| g.iter().map(|&i| m.weights()[i]).sum())
        .collect();
    Mixture::new(names, weights)
}

/// Group names at `depth` and, for each, the indices of its leaves.
pub fn groups(domains: &[String], depth: usize) -> (Vec<String>, Vec<Vec<usize>>) {
    let mut names: Vec<String> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, d) in domains.iter().enumerate() {
        let p = prefix(d, depth);
        match names.iter().position(|n| *n == p) {
            Some(j) => members[j].push(i),
            None => {
                names.push(p);
                members.push(vec![i]);
            }
        }
    }
    (names, members)
}

/// Sampling settings of one level of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// τ in p' ∝ p^τ for the shares within a node at this level.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Dirichlet strengths, log-spaced over [lo, hi] (`n_concentrations` values).
    #[serde(default = "default_range")]
    pub concentration: (f64, f64),
    #[serde(default = "default_n")]
    pub n_concentrations: usize,
    /// Replaces the natural shares at this level (Olmix's `manual_prior`),
    /// by group name (`dclm = 0.7`); only on the first level.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prior: BTreeMap<String, f64>,
}

// A level's defaults are the flat sampler's (RegMix's).
fn default_temperature() -> f64 {
    SamplerConfig::REGMIX.temperature
}
fn default_range() -> (f64, f64) {
    SamplerConfig::REGMIX.concentration_range
}
fn default_n() -> usize {
    SamplerConfig::REGMIX.n_concentrations
}

impl Default for Level {
    fn default() -> Self {
        Level {
            temperature: default_temperature(),
            concentration: default_range(),
            n_concentrations: default_n(),
            prior: BTreeMap::new(),
        }
    }
}

/// Per-level settings, outermost (sources) first; a deeper level than
/// given uses the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    #[serde(rename = "level")]
    pub levels: Vec<Level>,
}

impl Levels {
    /// Every level with the flat RegMix sampler's settings.
    pub fn uniform(level: Level) -> Levels {
        Levels {
            levels: vec![level],
        }
    }

    /// Read `levels.toml` (`[[level]]` tables: temperature, concentration =
    /// [lo, hi], n_concentrations, prior on the first).
    pub fn load(path: &Path) -> Result<Levels> {
        let text = std::fs::read_to_string(path).at(path)?;
        let levels: Levels = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            Error::parse(path, line, format!("not a levels file: {}", e.message()))
        })?;
        levels
            .check()
            .map_err(|e| Error::parse(path, 0, e.to_string()))?;
        Ok(levels)
    }

    pub fn check(&self) -> Result<()> {
        if self.levels.is_empty() {
            return Err(Error::invalid(
                "no [[level]]: give one per level, sources first",
            ));
        }
        for (i, l) in self.levels.iter().enumerate() {
            let at = format!("level {}", i + 1);
            if !(l.temperature.is_finite() && l.temperature > 0.0) {
                return Err(Error::invalid(format!("{at}: temperature must be > 0")));
            }
            let (lo, hi) = l.concentration;
            if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
                return Err(Error::invalid(format!(
                    "{at}: concentration [{lo}, {hi}] must satisfy 0 < lo ≤ hi"
                )));
            }
            if l.n_concentrations == 0 {
                return Err(Error::invalid(format!(
                    "{at}: n_concentrations must be ≥ 1"
                )));
            }
            if i > 0 && !l.prior.is_empty() {
                return Err(Error::invalid(format!(
                    "{at}: a prior is only read on level 1 (sources)"
                )));
            }
            if l.prior.values().any(|w| !(w.is_finite() && *w >= 0.0)) {
                return Err(Error::invalid(format!("{at}: prior weights must be ≥ 0")));
            }
        }
        Ok(())
    }

    /// Settings of level `depth` (0 = sources).
    pub fn at(&self, depth: usize) -> &Level {
        &self.levels[depth.min(self.levels.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_groups_and_rollups() {
        assert_eq!(prefix("a:b:c", 1), "a");
        assert_eq!(prefix("a:b:c", 2), "a:b");
        assert_eq!(prefix("web", 2), "web");
        let m = Mixture::parse_spec("dclm:x=0.2,code=0.3,dclm:y=0.1,stack:py=0.4").unwrap();
        let r = rollup(&m, 1).unwrap();
        assert_eq!(r.domains(), ["dclm", "code", "stack"]);
        assert!((r.get("dclm").unwrap() - 0.3).abs() < 1e-12);
        assert!(is_hierarchical(m.domains()));
    }

    #[test]
    fn levels_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("levels.toml");
        std::fs::write(
            &p,
            "[[level]]\ntemperature = 1.0\nconcentration = [1.0, 20.0]\nprior = { dclm = 0.7, code = 0.3 }\n[[level]]\ntemperature = 0.5\n",
        )
        .unwrap();
        let l = Levels::load(&p).unwrap();
        assert_eq!(l.at(0).concentration, (1.0, 20.0));
        assert_eq!(l.at(5).temperature, 0.5);
        std::fs::write(&p, "[[level]]\ntemprature = 1.0\n").unwrap();
        let e = Levels::load(&p).unwrap_err().to_string();
        assert!(e.contains("levels.toml") && e.contains("temprature"), "{e}");
        std::fs::write(&p, "[[level]]\nconcentration = [5.0, 1.0]\n").unwrap();
        assert!(Levels::load(&p).is_err());
    }
}
