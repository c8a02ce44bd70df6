//! The `search` proposer: the best observed run that meets the constraints.
//! No law extrapolation at all — the answer is a mixture a proxy actually
//! trained on, judged by its measured target. A baseline for the law-based
//! proposers (a law's optimum that does not beat the best run it was fit on
//! is not worth much), and the safe choice when the law's fit is poor.
//!
//! The runs are the ones the law was fit on (law.json's `source`), read
//! again and scored with the law's target; the law's prediction for the
//! chosen run is reported beside its observed value.

use super::{Proposal, ProposeContext, Proposer};
use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::Mixture;

/// Observed runs in the law's domain order.
#[derive(Debug, Clone)]
pub struct Search {
    pub ids: Vec<String>,
    pub weights: Vec<Vec<f64>>,
    /// The target measured on each run (as the law's target defines it).
    pub observed: Vec<f64>,
}

/// Tolerance for a run's weights against the bounds (runs are stored with
/// full precision, bounds are user round numbers).
const TOL: f64 = 1e-9;

impl Search {
    /// The runs `law` was fit on (its recorded sources), in its domain order
    /// (reduced when the law reuses a frozen mixture), scored with its target.
    pub fn from_law(law: &crate::law::LawFile) -> Result<Search> {
        let paths: Vec<std::path::PathBuf> =
            law.source.iter().map(|s| s.path.clone().into()).collect();
        let data = crate::store::import::from_sources(&paths)
            .map_err(|e| Error::invalid(format!("search: reading the law's runs: {e}")))?;
        let data = match &law.reuse {
            Some(r) => data.reduce(r)?,
            None => data,
        }
        .align_domains(&law.domains)?;
        let target = crate::law::Target::parse(&law.target, &data.metric_names)?;
        Ok(Search {
            observed: data.metrics.iter().map(|m| target.eval(m)).collect(),
            ids: data.ids,
            weights: data.weights,
        })
    }
}

impl Proposer for Search {
    fn name(&self) -> &'static str {
        "search"
    }

    fn propose(&self, law: &dyn FittedLaw, ctx: &ProposeContext) -> Result<Proposal> {
        let better = |a: f64, b: f64| if ctx.maximize { a > b } else { a < b };
        let mut best: Option<usize> = None;
        let mut feasible = 0usize;
        for (i, (w, y)) in self.weights.iter().zip(&self.observed).enumerate() {
            if w.len() != ctx.domains.len() || !y.is_finite() || !ctx.bounds.contains(w, TOL) {
                continue;
            }
            feasible += 1;
            if best.is_none_or(|b| better(*y, self.observed[b])) {
                best = Some(i);
            }
        }
        let i = best.ok_or_else(|| {
            Error::invalid(format!(
                "search: none of the {} runs meets the constraints (--min/--max/--budget-tokens)",
                self.ids.len()
            ))
        })?;
        let mixture = Mixture::new(ctx.domains.to_vec(), self.weights[i].clone())?;
        Ok(Proposal {
            predicted: law.predict(mixture.weights()),
            details: serde_json::json!({
                "proposer": "search",
                "run": self.ids[i],
                "observed": self.observed[i],
                "feasible_runs": feasible,
                "runs": self.ids.len(),
            }),
            mixture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::{Bounds, ConstraintSpec};

    struct Flat;
    impl FittedLaw for Flat {
        fn predict(&self, x: &[f64]) -> f64 {
            x[0]
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    #[test]
    fn picks_the_best_feasible_run() {
        let domains: Vec<String> = vec!["a".into(), "b".into()];
        let s = Search {
            ids: vec!["r0".into(), "r1".into(), "r2".into()],
            weights: vec![vec![0.9, 0.1], vec![0.5, 0.5], vec![0.2, 0.8]],
            observed: vec![1.0, 2.0, 3.0],
        };
        let prior = Mixture::uniform(domains.clone()).unwrap();
        let simplex = Bounds::simplex(&domains);
        fn ctx<'a>(
            domains: &'a [String],
            prior: &'a Mixture,
            bounds: &'a Bounds,
            maximize: bool,
        ) -> ProposeContext<'a> {
            ProposeContext {
                domains,
                prior,
                seed: 0,
                maximize,
                bounds,
                kl_weight: 0.0,
                spread_weight: 0.0,
            }
        }
        let p = s
            .propose(&Flat, &ctx(&domains, &prior, &simplex, false))
            .unwrap();
        assert_eq!(p.details["run"], "r0");
        assert_eq!(p.predicted, 0.9);
        assert_eq!(
            s.propose(&Flat, &ctx(&domains, &prior, &simplex, true))
                .unwrap()
                .details["run"],
            "r2"
        );
        let capped = ConstraintSpec {
            max: vec![("a".into(), 0.6)],
            ..ConstraintSpec::default()
        }
        .check(&domains)
        .unwrap();
        let p = s
            .propose(&Flat, &ctx(&domains, &prior, &capped, false))
            .unwrap();
        assert_eq!(
            (
                p.details["run"].as_str(),
                p.details["feasible_runs"].as_u64()
            ),
            (Some("r1"), Some(2))
        );
        let none = ConstraintSpec {
            min: vec![("a".into(), 0.95)],
            ..ConstraintSpec::default()
        }
        .check(&domains)
        .unwrap();
        assert!(s
            .propose(&Flat, &ctx(&domains, &prior, &none, false))
            .is_err());
    }
}
