//! The elastic-net mixing law (`elasticnet`): the target as an affine
//! function of the domain proportions, `y = b + Σ_j c_j·w_j`, fit by
//! linfa-elasticnet's coordinate descent under an L1 + L2 penalty — a linear
//! law that sets the coefficients of domains that do not move the target to
//! exactly 0, so the law names the domains that matter.
//!
//! Objective (linfa's, as scikit-learn's `ElasticNet`):
//! 1/(2n)·‖y − ȳ − Xc‖² + penalty·(l1_ratio·‖c‖₁ + (1 − l1_ratio)/2·‖c‖²),
//! b = ȳ. Proportions sum to 1, so a shift of every c_j by the same amount
//! acts as an offset: the fit needs no separate intercept on X.
//! A domain whose weight is 0 in every run has no column to fit (its
//! coefficient is 0); linfa also estimates the coefficients' variance, which
//! needs more runs than domains.

use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams, ParamGuard};
use linfa::prelude::{Fit, Predict};
use linfa::Dataset;
use linfa_elasticnet::ElasticNet;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Hyperparameters; `penalty` and `l1_ratio` are linfa's (and scikit-learn's)
/// `alpha` and `l1_ratio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElasticNetLaw {
    /// Overall penalty strength (≥ 0). 1e-5: the best 5-fold CV MSE on
    /// RegMix's 512 1M-proxy runs of 1e-3 … 1e-7 at l1_ratio 0.5
    /// (docs/benchmarks.md), where no coefficient is zeroed yet; 1e-3 zeroes
    /// 4 of the 17 at a slightly worse fit. Losses move by hundredths of a nat
    /// across mixtures, so scikit-learn's default 1.0 would zero them all.
    pub penalty: f64,
    /// Share of the penalty that is L1 (1 = lasso, 0 = ridge).
    pub l1_ratio: f64,
    /// Coordinate-descent sweeps at most.
    pub max_iterations: u32,
    /// Stop when the duality gap is below `tolerance`·‖y − ȳ‖².
    pub tolerance: f64,
}

impl Default for ElasticNetLaw {
    fn default() -> Self {
        ElasticNetLaw {
            penalty: 1e-5,
            l1_ratio: 0.5,
            max_iterations: 10_000,
            tolerance: 1e-6,
        }
    }
}

impl ElasticNetLaw {
    fn linfa(&self) -> linfa_elasticnet::ElasticNetParams<f64> {
        ElasticNet::params()
            .penalty(self.penalty)
            .l1_ratio(self.l1_ratio)
            .max_iterations(self.max_iterations)
            .tolerance(self.tolerance)
            .with_intercept(true)
    }
}

impl Hyperparams for ElasticNetLaw {
    const OWNER: &'static str = "law elasticnet";

    fn validate(&self) -> Result<()> {
        let o = Self::OWNER;
        ensure(
            self.penalty.is_finite() && self.tolerance.is_finite(),
            o,
            "penalty and tolerance must be finite",
        )?;
        ensure(self.max_iterations >= 1, o, "max_iterations must be ≥ 1")?;
        // The ranges are linfa's own check.
        self.linfa()
            .check_ref()
            .map(|_| ())
            .map_err(|e| Error::invalid(format!("{o}: {e}")))
    }
}

/// `predict(x) = intercept + coef · x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedElasticNet {
    pub intercept: f64,
    pub coef: Vec<f64>,
    pub penalty: f64,
    pub l1_ratio: f64,
}

pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(ElasticNetLaw::from_overrides(hyper)?))
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let f: FittedElasticNet = serde_json::from_value(params.clone())
        .map_err(|e| Error::invalid(format!("elasticnet law params: {e}")))?;
    if !f.intercept.is_finite() || f.coef.iter().any(|c| !c.is_finite()) {
        return Err(Error::invalid(
            "elasticnet law params: intercept and coef must be finite",
        ));
    }
    if f.coef.len() != n_domains {
        return Err(Error::invalid(format!(
            "elasticnet law params: {} coefficients for {n_domains} domains",
            f.coef.len()
        )));
    }
    Ok(Box::new(f))
}

impl MixingLaw for ElasticNetLaw {
    fn kind(&self) -> &'static str {
        "elasticnet"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], _seed: u64) -> Result<Box<dyn FittedLaw>> {
        let d = super::check_xy(x, y)?;
        // Domains with some weight somewhere; the others keep coefficient 0.
        let used: Vec<usize> = (0..d).filter(|&j| x.iter().any(|r| r[j] != 0.0)).collect();
        if x.len() <= used.len() {
            return Err(Error::invalid(format!(
                "law elasticnet: {} runs for {} domains with weight; needs more runs than domains",
                x.len(),
                used.len()
            )));
        }
        let records = Array2::from_shape_fn((x.len(), used.len()), |(i, k)| x[i][used[k]]);
        let data = Dataset::new(records, Array1::from(y.to_vec()));
        let model = self
            .linfa()
            .fit(&data)
            .map_err(|e| Error::invalid(format!("law elasticnet: {e}")))?;
        let mut coef = vec![0.0; d];
        for (k, &j) in used.iter().enumerate() {
            coef[j] = model.hyperplane()[k];
        }
        let intercept = model.intercept();
        if !intercept.is_finite() || coef.iter().any(|c| !c.is_finite()) {
            return Err(Error::invalid(
                "law elasticnet: fit produced non-finite coefficients",
            ));
        }
        // linfa's own prediction, to pin `predict` to it.
        debug_assert!({
            let p = model.predict(data.records());
            (0..x.len()).all(|i| (p[i] - predict(intercept, &coef, &x[i])).abs() < 1e-9)
        });
        Ok(Box::new(FittedElasticNet {
            intercept,
            coef,
            penalty: self.penalty,
            l1_ratio: self.l1_ratio,
        }))
    }
}

fn predict(intercept: f64, coef: &[f64], x: &[f64]) -> f64 {
    intercept + coef.iter().zip(x).map(|(c, v)| c * v).sum::<f64>()
}

impl FittedLaw for FittedElasticNet {
    fn predict(&self, x: &[f64]) -> f64 {
        predict(self.intercept, &self.coef, x)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random points on the 5-simplex (domain 4 never sampled).
    fn simplex(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut r: Vec<f64> = (0..4).map(|_| rng.random::<f64>() + 1e-3).collect();
                let s: f64 = r.iter().sum();
                r.iter_mut().for_each(|v| *v /= s);
                r.push(0.0);
                r
            })
            .collect()
    }

    #[test]
    fn recovers_a_sparse_linear_law_and_reloads() {
        // Only domains 0 and 1 move the target; 2 and 3 count the same.
        let x = simplex(300, 1);
        let truth = |r: &[f64]| 3.0 - 0.5 * r[0] + 0.25 * r[1];
        let y: Vec<f64> = x.iter().map(|r| truth(r)).collect();
        let f = ElasticNetLaw::from_overrides(&Hyper::new())
            .unwrap()
            .fit(&x, &y, 0)
            .unwrap();
        for r in simplex(50, 2) {
            assert!(
                (f.predict(&r) - truth(&r)).abs() < 2e-3,
                "{}",
                f.predict(&r)
            );
        }
        let p: FittedElasticNet = serde_json::from_value(f.params()).unwrap();
        assert_eq!(p.coef[4], 0.0, "a domain never sampled has no coefficient");
        // The L1 part makes the two equivalent domains share one level:
        // their coefficients' difference is 0.
        assert!((p.coef[2] - p.coef[3]).abs() < 1e-3, "{:?}", p.coef);
        let again = load(&f.params(), 5).unwrap();
        assert_eq!(again.predict(&x[0]), f.predict(&x[0]));
        assert!(load(&f.params(), 4).is_err());
    }

    #[test]
    fn rejects_bad_hyperparameters_and_too_few_runs() {
        for (k, v) in [
            ("l1_ratio", 1.5),
            ("penalty", -1.0),
            ("max_iterations", 0.0),
        ] {
            let h: Hyper = [(k.to_string(), v.into())].into_iter().collect();
            let e = ElasticNetLaw::from_overrides(&h).unwrap_err().to_string();
            assert!(e.contains("law elasticnet"), "{k}: {e}");
        }
        let x = simplex(4, 3);
        let e = ElasticNetLaw::default()
            .fit(&x, &[1.0, 2.0, 3.0, 4.0], 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs more runs than domains"), "{e}");
    }
}
