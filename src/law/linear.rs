//! The linear mixing law: the target as an affine function of the domain
//! proportions, fit by ridge regression (RegMix's "linear regression"
//! baseline). Cheap, smooth, and exact-optimizable; the reference the
//! non-linear laws must beat.
//!
//! Objective (same as scikit-learn's `Ridge(alpha)`): minimize
//! ‖y − b − Xw‖² + α‖w‖² with an unpenalized intercept b, solved on centered
//! features. Proportions sum to 1, so after centering one direction of X is
//! always null; the small α makes the system positive definite and sends
//! that direction's coefficient to 0 without changing any prediction on the
//! simplex.

use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams};
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

/// Ridge strength: small enough to leave a well-posed fit unchanged, large
/// enough to make the always-singular sum-to-one direction solvable.
pub const DEFAULT_ALPHA: f64 = 1e-4;

/// Ridge regression of the target on the proportions; its one
/// hyperparameter `alpha` (≥ 0, default `DEFAULT_ALPHA`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearLaw {
    pub alpha: f64,
}

impl Default for LinearLaw {
    fn default() -> Self {
        LinearLaw {
            alpha: DEFAULT_ALPHA,
        }
    }
}

impl Hyperparams for LinearLaw {
    const OWNER: &'static str = "law linear";

    fn validate(&self) -> Result<()> {
        ensure(
            self.alpha.is_finite() && self.alpha >= 0.0,
            Self::OWNER,
            format!("alpha must be a finite number ≥ 0, got {}", self.alpha),
        )
    }
}

/// `predict(x) = intercept + coef · x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedLinear {
    pub intercept: f64,
    pub coef: Vec<f64>,
    pub alpha: f64,
}

impl FittedLinear {
    /// Rebuild from `params()` (a law.json's `params`).
    pub fn from_params(params: &serde_json::Value) -> Result<Self> {
        let f: FittedLinear = serde_json::from_value(params.clone())
            .map_err(|e| Error::invalid(format!("linear law params: {e}")))?;
        if !f.intercept.is_finite() || f.coef.iter().any(|c| !c.is_finite()) || f.coef.is_empty() {
            return Err(Error::invalid(
                "linear law params: intercept and coef must be finite and coef non-empty",
            ));
        }
        Ok(f)
    }
}

/// Registry constructor (see `law::LAWS`).
pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(LinearLaw::from_overrides(hyper)?))
}

/// Registry loader: rebuild from stored params over `n_domains` domains.
pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let f = FittedLinear::from_params(params)?;
    if f.coef.len() != n_domains {
        return Err(Error::invalid(format!(
            "linear law params: {} coefficients for {n_domains} domains",
            f.coef.len()
        )));
    }
    Ok(Box::new(f))
}

impl MixingLaw for LinearLaw {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], _seed: u64) -> Result<Box<dyn FittedLaw>> {
        let d = super::check_xy(x, y)?;
        let n = x.len() as f64;
        let x_mean: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let y_mean = y.iter().sum::<f64>() / n;

        // Normal equations (XcᵀXc + αI) w = Xcᵀyc. A d×d (d = number of
        // domains, ~10–30) symmetric solve is a few lines with nalgebra; a
        // regression crate would add a dependency for no gain.
        let mut a = DMatrix::<f64>::zeros(d, d);
        let mut b = DVector::<f64>::zeros(d);
        let mut xc = vec![0.0; d];
        for (row, &yi) in x.iter().zip(y) {
            for j in 0..d {
                xc[j] = row[j] - x_mean[j];
            }
            let yc = yi - y_mean;
            for j in 0..d {
                b[j] += xc[j] * yc;
                for k in 0..=j {
                    a[(j, k)] += xc[j] * xc[k];
                }
            }
        }
        for j in 0..d {
            for k in 0..j {
                a[(k, j)] = a[(j, k)];
            }
            a[(j, j)] += self.alpha;
        }
        let w = match a.clone().cholesky() {
            Some(ch) => ch.solve(&b),
            None => a.lu().solve(&b).ok_or_else(|| {
                Error::invalid(
                    "linear law: the normal equations are singular (proportions sum to 1); \
                     use --alpha > 0",
                )
            })?,
        };
        let coef: Vec<f64> = w.iter().copied().collect();
        let intercept = y_mean - coef.iter().zip(&x_mean).map(|(c, m)| c * m).sum::<f64>();
        if !intercept.is_finite() || coef.iter().any(|c| !c.is_finite()) {
            return Err(Error::invalid(
                "linear law: fit produced non-finite coefficients; raise --alpha",
            ));
        }
        Ok(Box::new(FittedLinear {
            intercept,
            coef,
            alpha: self.alpha,
        }))
    }
}

impl FittedLaw for FittedLinear {
    fn predict(&self, x: &[f64]) -> f64 {
        debug_assert_eq!(x.len(), self.coef.len());
        self.intercept + self.coef.iter().zip(x).map(|(c, v)| c * v).sum::<f64>()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "intercept": self.intercept,
            "coef": self.coef,
            "alpha": self.alpha,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random points on the 4-simplex.
    fn simplex(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let r: Vec<f64> = (0..4).map(|_| rng.random::<f64>() + 1e-3).collect();
                let s: f64 = r.iter().sum();
                r.iter().map(|v| v / s).collect()
            })
            .collect()
    }

    #[test]
    fn recovers_a_known_linear_function_on_the_simplex() {
        let x = simplex(200, 1);
        let truth = |r: &[f64]| 3.0 + 1.0 * r[0] - 2.0 * r[1] + 0.5 * r[2] + 4.0 * r[3];
        let y: Vec<f64> = x.iter().map(|r| truth(r)).collect();
        let law = LinearLaw::from_overrides(&Hyper::new()).unwrap();
        let f = law.fit(&x, &y, 0).unwrap();
        for r in simplex(50, 2) {
            assert!(
                (f.predict(&r) - truth(&r)).abs() < 1e-4,
                "{}",
                f.predict(&r)
            );
        }
        // The coefficients are identified only up to the all-ones direction
        // (Σr = 1); their differences are not.
        let p = FittedLinear::from_params(&f.params()).unwrap();
        assert!(((p.coef[3] - p.coef[1]) - 6.0).abs() < 1e-3, "{:?}", p.coef);
    }

    #[test]
    fn reloads_from_params() {
        let x = simplex(30, 3);
        let y: Vec<f64> = x.iter().map(|r| r[0] * 2.0 + 1.0).collect();
        let f = LinearLaw { alpha: 1e-2 }.fit(&x, &y, 0).unwrap();
        let g = FittedLinear::from_params(&f.params()).unwrap();
        assert_eq!(f.predict(&x[0]), g.predict(&x[0]));
        assert!(FittedLinear::from_params(&serde_json::json!({"coef": [1.0]})).is_err());
    }

    #[test]
    fn rejects_bad_hyperparameters_and_data() {
        let mut h = Hyper::new();
        h.insert("alpha".into(), (-1.0).into());
        assert!(LinearLaw::from_overrides(&h).is_err());
        h.clear();
        h.insert("depth".into(), 3.0.into());
        assert!(LinearLaw::from_overrides(&h).is_err());
        let law = LinearLaw { alpha: 1e-4 };
        assert!(law.fit(&[], &[], 0).is_err());
        assert!(law.fit(&[vec![0.5, 0.5]], &[f64::NAN], 0).is_err());
        assert!(law
            .fit(&[vec![0.5, 0.5], vec![1.0]], &[1.0, 2.0], 0)
            .is_err());
    }
}
