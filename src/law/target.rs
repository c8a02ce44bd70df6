//! The fitting target: which number a mixing law predicts from a run's
//! metrics. One metric (`web`, `metric/the_pile_pile_cc_val_loss`), the mean
//! of all metrics (`mean`), a weighted sum (`0.7*web+0.3*code`; a name with
//! `+` or `*` in it is written in double quotes), or an objective file
//! (`@objective.toml`, see `objective`). Resolved once against the metric
//! names of the data, then evaluated per row. A target is always minimized;
//! an objective file turns "higher is better" metrics into negative terms.

use crate::error::{Error, Result};
use crate::store::abbreviate;
use serde::{Deserialize, Serialize};

/// One term of the target: `coef × metrics[index]`, where `metric` is the
/// name `index` resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub metric: String,
    pub index: usize,
    pub coef: f64,
}

/// A target resolved against a list of metric names. Invariant: every term's
/// `index` is valid for the metric rows it was parsed for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    spec: String,
    terms: Vec<Term>,
}

impl Target {
    /// Parse `spec` against `metric_names`. A name is an exact column name;
    /// `loss_<d>` also resolves to `d` (the runs-table column of metric `d`).
    /// `mean` is the mean of all metrics.
    pub fn parse(spec: &str, metric_names: &[String]) -> Result<Target> {
        Self::parse_scoped(spec, metric_names, metric_names)
    }

    /// As `parse`, with `mean` taken over the metrics named in `mean_over`
    /// (a sweep's training domains: its evaluation-only domains are targets
    /// of their own), or over all metrics when none of them is named there.
    pub fn parse_scoped(
        spec: &str,
        metric_names: &[String],
        mean_over: &[String],
    ) -> Result<Target> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::invalid("--target is empty"));
        }
        if metric_names.is_empty() {
            return Err(Error::invalid("no metrics to build a target from"));
        }
        if let Some(file) = spec.strip_prefix('@') {
            return super::objective::Objective::load(std::path::Path::new(file))?
                .target(metric_names);
        }
        // A whole-spec name wins over any reading of it as an expression.
        if let Some(index) = resolve(spec, metric_names) {
            return Ok(Target {
                spec: spec.to_string(),
                terms: vec![Term {
                    metric: metric_names[index].clone(),
                    index,
                    coef: 1.0,
                }],
            });
        }
        if spec == "mean" {
            let mut over: Vec<usize> = (0..metric_names.len())
                .filter(|&i| mean_over.contains(&metric_names[i]))
                .collect();
            if over.is_empty() {
                over = (0..metric_names.len()).collect();
            }
            let coef = 1.0 / over.len() as f64;
            return Ok(Target {
                spec: spec.to_string(),
                terms: over
                    .into_iter()
                    .map(|index| Term {
                        metric: metric_names[index].clone(),
                        index,
                        coef,
                    })
                    .collect(),
            });
        }
        let mut terms = Vec::new();
        for part in split_terms(spec)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(Error::invalid(format!(
                    "target {spec:?}: empty term (write e.g. 0.7*web+0.3*code)"
                )));
            }
            let (coef, name) = match split_coef(part) {
                Some((c, n)) => {
                    let c = c.trim();
                    let coef: f64 = c.parse().map_err(|_| {
                        Error::invalid(format!(
                            "target {spec:?}: coefficient {c:?} is not a number"
                        ))
                    })?;
                    if !coef.is_finite() {
                        return Err(Error::invalid(format!(
                            "target {spec:?}: coefficient {c:?} is not finite"
                        )));
                    }
                    (coef, n.trim())
                }
                None => (1.0, part),
            };
            let name =
                unquote(name).map_err(|e| Error::invalid(format!("target {spec:?}: {e}")))?;
            let index = resolve(&name, metric_names).ok_or_else(|| {
                Error::invalid(format!(
                    "target {spec:?}: unknown metric {name:?} (known: {}; or `mean`)",
                    abbreviate(metric_names, 40)
                ))
            })?;
            terms.push(Term {
                metric: metric_names[index].clone(),
                index,
                coef,
            });
        }
        Ok(Target {
            spec: spec.to_string(),
            terms,
        })
    }

    /// A target from resolved terms, its spec the canonical sum
    /// (`0.25*a + -0.5*"b+c"`) that `parse` reads back to the same terms.
    pub fn from_terms(terms: Vec<Term>) -> Result<Target> {
        if terms.is_empty() {
            return Err(Error::invalid("a target needs at least one metric"));
        }
        let spec = terms
            .iter()
            .map(|t| format!("{}*{}", t.coef, quote_if_needed(&t.metric)))
            .collect::<Vec<_>>()
            .join(" + ");
        Ok(Target { spec, terms })
    }

    /// The target's value for one row of metrics (ordered as at parse time).
    pub fn eval(&self, metrics_row: &[f64]) -> f64 {
        self.terms
            .iter()
            .map(|t| t.coef * metrics_row[t.index])
            .sum()
    }

    /// The spec as the user wrote it (trimmed).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Split a sum on the `+` signs outside double quotes.
fn split_terms(spec: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in spec.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '+' if !quoted => {
                out.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Error::invalid(format!("target {spec:?}: unclosed quote")));
    }
    out.push(&spec[start..]);
    Ok(out)
}

/// `coef*name` → (coef, name) when the text before the first `*` outside
/// quotes is a number-like prefix (the name may hold `*` itself).
fn split_coef(term: &str) -> Option<(&str, &str)> {
    let (c, n) = term.split_once('*')?;
    if c.contains('"') {
        return None;
    }
    Some((c, n))
}

/// A metric name as written: bare, or a JSON string in double quotes.
fn unquote(name: &str) -> std::result::Result<String, String> {
    if name.starts_with('"') {
        serde_json::from_str::<String>(name).map_err(|e| format!("bad quoted name {name}: {e}"))
    } else {
        Ok(name.to_string())
    }
}

/// A name as the canonical spec writes it: quoted when it holds a character
/// of the expression syntax or could read as something else.
fn quote_if_needed(name: &str) -> String {
    let plain = !name.is_empty()
        && name.trim() == name
        && !name.contains(['+', '*', '"'])
        && name != "mean"
        && !name.starts_with('@')
        && name.parse::<f64>().is_err();
    if plain {
        name.to_string()
    } else {
        serde_json::to_string(name).unwrap_or_else(|_| format!("{name:?}"))
    }
}

fn resolve(name: &str, metric_names: &[String]) -> Option<usize> {
    metric_names.iter().position(|m| m == name).or_else(|| {
        let bare = name.strip_prefix("loss_")?;
        metric_names.iter().position(|m| m == bare)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["web", "code", "metric/the_pile_pile_cc_val_loss", "a.b-c"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn single_names_and_runs_table_aliases() {
        let t = Target::parse("code", &names()).unwrap();
        assert_eq!(t.eval(&[1.0, 2.0, 3.0, 4.0]), 2.0);
        let t = Target::parse("loss_web", &names()).unwrap();
        assert_eq!(t.eval(&[1.0, 2.0, 3.0, 4.0]), 1.0);
        let t = Target::parse(" metric/the_pile_pile_cc_val_loss ", &names()).unwrap();
        assert_eq!(t.eval(&[1.0, 2.0, 3.0, 4.0]), 3.0);
        assert_eq!(t.spec(), "metric/the_pile_pile_cc_val_loss");
    }

    #[test]
    fn mean_and_weighted_sums() {
        let row = [1.0, 2.0, 3.0, 6.0];
        assert_eq!(Target::parse("mean", &names()).unwrap().eval(&row), 3.0);
        // Scoped to training domains: an evaluation-only metric is left out.
        let scoped = Target::parse_scoped("mean", &names(), &names()[..2]).unwrap();
        assert_eq!(scoped.terms().len(), 2);
        let t = Target::parse("0.7*web + 0.3 * code", &names()).unwrap();
        assert!((t.eval(&row) - 1.3).abs() < 1e-12);
        let t = Target::parse("web+a.b-c", &names()).unwrap();
        assert_eq!(t.eval(&row), 7.0);
        let t = Target::parse("2*metric/the_pile_pile_cc_val_loss", &names()).unwrap();
        assert_eq!(t.eval(&row), 6.0);
    }

    #[test]
    fn errors_list_known_names() {
        let e = Target::parse("math", &names()).unwrap_err().to_string();
        assert!(e.contains("\"math\"") && e.contains("web, code"), "{e}");
        assert!(Target::parse("x*web", &names()).is_err());
        assert!(Target::parse("web+", &names()).is_err());
        assert!(Target::parse("", &names()).is_err());
        assert!(Target::parse("inf*web", &names()).is_err());
    }

    #[test]
    fn quoted_names_and_canonical_specs_round_trip() {
        let names: Vec<String> = ["a+b", "c*d", "arc:rc::olmes", "2"]
            .map(String::from)
            .to_vec();
        let t = Target::parse(r#"0.5*"a+b" + 0.25*"c*d" + -1*arc:rc::olmes"#, &names).unwrap();
        assert_eq!(t.eval(&[2.0, 4.0, 1.0, 9.0]), 1.0 + 1.0 - 1.0);
        let canon = Target::from_terms(t.terms().to_vec()).unwrap();
        let back = Target::parse(canon.spec(), &names).unwrap();
        assert_eq!(back.terms(), t.terms());
        let t = Target::from_terms(vec![Term {
            metric: "2".into(),
            index: 3,
            coef: 1.0,
        }])
        .unwrap();
        assert_eq!(Target::parse(t.spec(), &names).unwrap().terms(), t.terms());
        assert!(Target::parse(r#"0.5*"a+b"#, &names).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let t = Target::parse("0.5*web+0.5*code", &names()).unwrap();
        let back: Target = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(t, back);
    }
}
