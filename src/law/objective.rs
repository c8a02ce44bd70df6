//! Objectives from many metrics (`fit --target @objective.toml`): Olmix-style
//! task families. Each family averages its metrics (equally, or with the
//! weights given), the families are weighted, and every metric has a
//! direction: `down` (a loss, bits per byte: lower is better, the default)
//! or `up` (an accuracy: higher is better, so it enters the minimized target
//! with a negative sign). The file compiles to a weighted sum of metrics,
//! a `Target` whose canonical spec is what law.json records.
//!
//! ```toml
//! direction = "down"                 # default for every metric (optional)
//!
//! [family.math]
//! weight = "7/52"                     # a number or a fraction "a/b"
//! metrics = ["minerva_math_*::olmes"] # names or glob patterns (*, ?, [..])
//!
//! [family.qa]
//! weight = 26
//! direction = "up"                    # default for this family's metrics
//! metrics = { "arc_challenge:rc::olmes" = 1, "hellaswag:rc::olmes" = 2 }
//!
//! [directions]                        # per-metric override
//! "hellaswag:rc::olmes" = "up"
//! ```
//!
//! Family weights are normalized to sum to 1, and so are the metric weights
//! within a family; a metric in two families adds both terms. A name that is
//! a metric is taken as it is; otherwise it is a pattern, and a pattern that
//! matches no metric is an error (a typo never silently drops a task).

use super::target::{Target, Term};
use crate::error::{Error, IoContext, Result};
use crate::store::abbreviate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether lower or higher values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Down,
    Up,
}

impl Direction {
    fn parse(v: &toml::Value, at: &str) -> Result<Direction> {
        match v.as_str() {
            Some("down") | Some("min") | Some("lower") => Ok(Direction::Down),
            Some("up") | Some("max") | Some("higher") => Ok(Direction::Up),
            _ => Err(Error::invalid(format!(
                "{at}: direction must be \"down\" (lower is better) or \"up\" (higher is better), got {v}"
            ))),
        }
    }

    fn sign(self) -> f64 {
        match self {
            Direction::Down => 1.0,
            Direction::Up => -1.0,
        }
    }
}

/// One family: its weight, default direction and (pattern, weight) entries.
#[derive(Debug, Clone)]
struct Family {
    name: String,
    weight: f64,
    direction: Option<Direction>,
    metrics: Vec<(String, f64)>,
}

/// A parsed objective file (not yet resolved against metric names).
#[derive(Debug, Clone)]
pub struct Objective {
    path: PathBuf,
    direction: Direction,
    families: Vec<Family>,
    directions: BTreeMap<String, Direction>,
}

/// A weight: a non-negative number or a fraction string `"a/b"`.
fn parse_weight(v: &toml::Value, at: &str) -> Result<f64> {
    let w = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => {
            let parsed = match s.split_once('/') {
                Some((a, b)) => a
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .zip(b.trim().parse::<f64>().ok())
                    .map(|(a, b)| a / b),
                None => s.trim().parse::<f64>().ok(),
            };
            parsed.ok_or_else(|| {
                Error::invalid(format!(
                    "{at}: weight {s:?} is not a number or a fraction a/b"
                ))
            })?
        }
        other => {
            return Err(Error::invalid(format!(
                "{at}: weight must be a number, got a {}",
                other.type_str()
            )))
        }
    };
    if !(w.is_finite() && w >= 0.0) {
        return Err(Error::invalid(format!(
            "{at}: weight {w} must be a finite number ≥ 0"
        )));
    }
    Ok(w)
}

impl Objective {
    pub fn load(path: &Path) -> Result<Objective> {
        let text = std::fs::read_to_string(path).at(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Objective> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            Error::parse(
                path,
                line,
                format!("not an objective file: {}", e.message()),
            )
        })?;
        let at = |what: &str| format!("{}: {what}", path.display());
        let mut obj = Objective {
            path: path.to_path_buf(),
            direction: Direction::Down,
            families: Vec::new(),
            directions: BTreeMap::new(),
        };
        for (key, value) in &table {
            match key.as_str() {
                "direction" => obj.direction = Direction::parse(value, &at("direction"))?,
                "directions" => {
                    let t = value.as_table().ok_or_else(|| {
                        Error::invalid(at(
                            "[directions] must be a table of metric = \"up\"|\"down\"",
                        ))
                    })?;
                    for (m, d) in t {
                        obj.directions.insert(
                            m.clone(),
                            Direction::parse(d, &at(&format!("directions.{m:?}")))?,
                        );
                    }
                }
                "family" => {
                    let t = value
                        .as_table()
                        .ok_or_else(|| Error::invalid(at("[family.NAME] sections expected")))?;
                    for (name, f) in t {
                        obj.families
                            .push(Self::family(name, f, &at(&format!("family.{name}")))?);
                    }
                }
                other => {
                    return Err(Error::invalid(at(&format!(
                        "unknown key {other:?} (keys: direction, directions, family)"
                    ))))
                }
            }
        }
        if obj.families.is_empty() {
            return Err(Error::invalid(at(
                "no [family.NAME] section: name the metrics to optimize",
            )));
        }
        if obj.families.iter().all(|f| f.weight == 0.0) {
            return Err(Error::invalid(at("every family has weight 0")));
        }
        Ok(obj)
    }

    fn family(name: &str, v: &toml::Value, at: &str) -> Result<Family> {
        let t = v.as_table().ok_or_else(|| {
            Error::invalid(format!(
                "{at}: expected a table (weight, metrics, direction)"
            ))
        })?;
        for k in t.keys() {
            if !matches!(k.as_str(), "weight" | "metrics" | "direction") {
                return Err(Error::invalid(format!(
                    "{at}: unknown field {k:?} (fields: weight, metrics, direction)"
                )));
            }
        }
        let weight = match t.get("weight") {
            Some(w) => parse_weight(w, &format!("{at}.weight"))?,
            None => 1.0,
        };
        let direction = t
            .get("direction")
            .map(|d| Direction::parse(d, &format!("{at}.direction")))
            .transpose()?;
        let metrics = match t.get("metrics") {
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(|s| (s.to_string(), 1.0))
                        .ok_or_else(|| Error::invalid(format!("{at}.metrics: {i} is not a string")))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(toml::Value::Table(m)) => m
                .iter()
                .map(|(k, w)| Ok((k.clone(), parse_weight(w, &format!("{at}.metrics.{k:?}"))?)))
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "{at}.metrics: a list of names or a table name = weight, got a {}",
                    other.type_str()
                )))
            }
            None => return Err(Error::invalid(format!("{at}: missing field \"metrics\""))),
        };
        if metrics.is_empty() || metrics.iter().all(|(_, w)| *w == 0.0) {
            return Err(Error::invalid(format!("{at}: no metric with a weight > 0")));
        }
        Ok(Family {
            name: name.to_string(),
            weight,
            direction,
            metrics,
        })
    }

    /// The metrics (indices into `names`) an entry names: itself if it is a
    /// metric, else every metric its glob pattern matches.
    fn matches(&self, family: &str, entry: &str, names: &[String]) -> Result<Vec<usize>> {
        if let Some(i) = names.iter().position(|n| n == entry) {
            return Ok(vec![i]);
        }
        let pattern = glob::Pattern::new(entry).map_err(|e| {
            Error::invalid(format!(
                "{}: family.{family}: {entry:?} is neither a metric nor a valid pattern: {e}",
                self.path.display()
            ))
        })?;
        let hits: Vec<usize> = (0..names.len())
            .filter(|&i| pattern.matches(&names[i]))
            .collect();
        if hits.is_empty() {
            return Err(Error::invalid(format!(
                "{}: family.{family}: {entry:?} matches no metric (metrics: {})",
                self.path.display(),
                abbreviate(names, 30)
            )));
        }
        Ok(hits)
    }

    /// Resolve against the data's metric names into a minimized target.
    pub fn target(&self, names: &[String]) -> Result<Target> {
        for m in self.directions.keys() {
            if !names.contains(m) {
                return Err(Error::invalid(format!(
                    "{}: directions: {m:?} is not a metric (metrics: {})",
                    self.path.display(),
                    abbreviate(names, 30)
                )));
            }
        }
        let total: f64 = self.families.iter().map(|f| f.weight).sum();
        let mut coef: BTreeMap<usize, f64> = BTreeMap::new();
        for f in &self.families {
            // Expand patterns; a metric named twice in a family keeps the sum.
            let mut within: BTreeMap<usize, f64> = BTreeMap::new();
            for (entry, w) in &f.metrics {
                let hits = self.matches(&f.name, entry, names)?;
                for i in &hits {
                    *within.entry(*i).or_default() += w / hits.len() as f64;
                }
            }
            let wsum: f64 = within.values().sum();
            for (i, w) in within {
                let dir = self
                    .directions
                    .get(&names[i])
                    .copied()
                    .or(f.direction)
                    .unwrap_or(self.direction);
                *coef.entry(i).or_default() += dir.sign() * (f.weight / total) * (w / wsum);
            }
        }
        let terms = coef
            .into_iter()
            .filter(|(_, c)| *c != 0.0)
            .map(|(index, coef)| Term {
                metric: names[index].clone(),
                index,
                coef,
            })
            .collect();
        Target::from_terms(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["math_a::olmes", "math_b::olmes", "arc:rc::olmes", "code:x"]
            .map(String::from)
            .to_vec()
    }

    fn target(text: &str) -> Result<Target> {
        Objective::parse(Path::new("obj.toml"), text)?.target(&names())
    }

    #[test]
    fn families_average_then_weight_with_directions() {
        let t = target(
            "[family.math]\nweight = \"1/4\"\nmetrics = [\"math_*\"]\n\
             [family.qa]\nweight = 0.75\ndirection = \"up\"\nmetrics = { \"arc:rc::olmes\" = 2 }\n",
        )
        .unwrap();
        // 0.25 · mean(math_a, math_b) − 0.75 · arc
        let row = [1.0, 3.0, 0.5, 100.0];
        assert!((t.eval(&row) - (0.25 * 2.0 - 0.75 * 0.5)).abs() < 1e-12);
        // The canonical spec reads back to the same target.
        let back = Target::parse(t.spec(), &names()).unwrap();
        assert_eq!(back.terms(), t.terms());
        // And through `@file`.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.toml");
        std::fs::write(
            &p,
            "[family.m]\nmetrics = [\"code:x\"]\n[directions]\n\"code:x\" = \"up\"\n",
        )
        .unwrap();
        let t = Target::parse(&format!("@{}", p.display()), &names()).unwrap();
        assert_eq!(t.eval(&row), -100.0);
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let e = target("[family.m]\nmetrics = [\"nope*\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("obj.toml") && e.contains("nope*") && e.contains("matches no metric"),
            "{e}"
        );
        let e = target("[family.m]\nmetrics = [\"code:x\"]\ndirection = \"sideways\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("family.m.direction"), "{e}");
        let e = target("[family.m]\nmetrics = [\"code:x\"]\nweight = \"a/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("family.m.weight"), "{e}");
        let e = target("[family.m]\nmetrics = [\"code:x\"]\n[directions]\nzzz = \"up\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zzz"), "{e}");
        let e = target("[family.m\n").unwrap_err().to_string();
        assert!(e.contains("obj.toml:1"), "{e}");
        assert!(target("colour = 1\n").is_err());
        assert!(target("").is_err());
    }
}
