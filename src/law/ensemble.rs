//! The `ensemble` law: bagged gradient-boosted trees. Each of `members`
//! boosters is fit on its own seeded subsample of the runs (a share
//! `subsample`, drawn without replacement) with its own early-stopping split;
//! the prediction is their mean and the spread their standard deviation —
//! an uncertainty estimate that `optimize --spread-penalty` uses to stay where
//! the runs are dense enough for the members to agree.
//!
//! Hyperparameters: `members` (default 8), `subsample` (default 0.8), plus
//! every `gbdt` hyperparameter, passed to each member.

use super::gbdt::{FittedGbdt, GbdtLaw};
use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleLaw {
    pub members: usize,
    pub subsample: f64,
    /// Every member's booster parameters (the `gbdt` names, flat).
    #[serde(flatten)]
    pub base: GbdtLaw,
}

impl Default for EnsembleLaw {
    fn default() -> Self {
        EnsembleLaw {
            members: 8,
            subsample: 0.8,
            base: GbdtLaw::default(),
        }
    }
}

impl Hyperparams for EnsembleLaw {
    const OWNER: &'static str = "law ensemble";

    fn validate(&self) -> Result<()> {
        ensure(
            (2..=1000).contains(&self.members),
            Self::OWNER,
            format!(
                "members must be a whole number in [2, 1000], got {}",
                self.members
            ),
        )?;
        ensure(
            self.subsample > 0.0 && self.subsample <= 1.0,
            Self::OWNER,
            format!("subsample must be in (0, 1], got {}", self.subsample),
        )?;
        self.base
            .validate()
            .map_err(|e| Error::invalid(e.to_string().replace("law gbdt", Self::OWNER)))
    }
}

pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(EnsembleLaw::from_overrides(hyper)?))
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let members = params["members"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::invalid("ensemble law params: `members` must be a non-empty list"))?;
    let members = members
        .iter()
        .map(|m| FittedGbdt::from_params(m, n_domains))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| Error::invalid(format!("ensemble law params: {e}")))?;
    Ok(Box::new(FittedEnsemble { members }))
}

/// Members' mean and standard deviation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FittedEnsemble {
    pub members: Vec<FittedGbdt>,
}

impl FittedEnsemble {
    /// (mean, population standard deviation) of the members' predictions.
    pub fn mean_spread(&self, x: &[f64]) -> (f64, f64) {
        let p: Vec<f64> = self.members.iter().map(|m| m.predict(x)).collect();
        let n = p.len() as f64;
        let mean = p.iter().sum::<f64>() / n;
        let var = p.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }
}

impl FittedLaw for FittedEnsemble {
    fn predict(&self, x: &[f64]) -> f64 {
        self.mean_spread(x).0
    }

    fn predict_spread(&self, x: &[f64]) -> Option<f64> {
        Some(self.mean_spread(x).1)
    }

    fn predict_batch(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        let mut out = vec![0.0; rows.len()];
        for m in &self.members {
            for (o, p) in out.iter_mut().zip(m.predict_batch(rows)) {
                *o += p / self.members.len() as f64;
            }
        }
        out
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "members": self.members.iter().map(|m| m.params()).collect::<Vec<_>>(),
        })
    }
}

impl MixingLaw for EnsembleLaw {
    fn kind(&self) -> &'static str {
        "ensemble"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Box<dyn FittedLaw>> {
        super::check_xy(x, y)?;
        let n = x.len();
        let take = ((self.subsample * n as f64).round() as usize).clamp(1, n);
        // Members are independent: fit them in parallel on rayon's pool (as
        // the folds and the trees' features are, so nested parallelism
        // shares one pool instead of blocking threads that wait on each
        // other); results do not depend on the number of threads.
        use rayon::prelude::*;
        let members = (0..self.members)
            .into_par_iter()
            .map(|m| {
                let member_seed = seed.wrapping_mul(1_000_003).wrapping_add(m as u64);
                let mut idx: Vec<usize> = (0..n).collect();
                idx.shuffle(&mut StdRng::seed_from_u64(member_seed));
                idx.truncate(take);
                idx.sort_unstable();
                let mx: Vec<Vec<f64>> = idx.iter().map(|&i| x[i].clone()).collect();
                let my: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
                self.base.fit_gbdt(&mx, &my, member_seed)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(FittedEnsemble { members }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn fits_members_and_round_trips_mean_and_spread() {
        // Noisy runs over a ≤ 0.5; members fit on different subsamples.
        let mut rng = StdRng::seed_from_u64(2);
        let x: Vec<Vec<f64>> = (0..200)
            .map(|_| {
                let a = 0.5 * rng.random::<f64>();
                vec![a, 1.0 - a]
            })
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| r[0] * r[0] + 0.05 * rng.random::<f64>())
            .collect();
        let h: Hyper = [("learning_rate".to_string(), 0.1.into())]
            .into_iter()
            .collect();
        let f = EnsembleLaw::from_overrides(&h)
            .unwrap()
            .fit(&x, &y, 0)
            .unwrap();
        let inside = f.predict_spread(&[0.25, 0.75]).unwrap();
        // The spread is the members' population sd, and bagged members disagree.
        let each: Vec<f64> = f.params()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                FittedGbdt::from_params(m, 2)
                    .unwrap()
                    .predict(&[0.25, 0.75])
            })
            .collect();
        let mean = each.iter().sum::<f64>() / each.len() as f64;
        let sd = (each.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / each.len() as f64).sqrt();
        assert!(
            inside > 0.0 && (inside - sd).abs() < 1e-12,
            "{inside} vs {sd}"
        );
        let g = load(&f.params(), 2).unwrap();
        assert_eq!(g.predict(&[0.3, 0.7]), f.predict(&[0.3, 0.7]));
        assert_eq!(g.predict_spread(&[0.3, 0.7]), f.predict_spread(&[0.3, 0.7]));
        assert!(load(&serde_json::json!({"members": []}), 2).is_err());
        let bad: Hyper = [("members".to_string(), 1.0.into())].into_iter().collect();
        assert!(EnsembleLaw::from_overrides(&bad).is_err());
    }
}
