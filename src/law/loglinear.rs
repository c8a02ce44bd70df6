//! The log-linear mixing law: the target as an affine function of the *log*
//! proportions, `y = b + Σ_j c_j · ln(w_j + ε)`, fit by the same ridge
//! regression as `linear` on transformed features.
//!
//! Why: a domain's loss falls steeply with its first few percent of weight and
//! flattens after (diminishing returns), and a domain with weight 0 is the
//! worst case. A linear law cannot bend that way and so sends the optimizer to
//! a corner of the simplex; the log features can. (Of the two readings of
//! "log-linear" — regress log loss on proportions, or loss on log proportions —
//! this is the second; the first is almost linear over the loss ranges that
//! proxies produce.) ε keeps ln finite at w = 0: 1e-3 by default, i.e. weights
//! below 0.1% count as "absent".

use super::linear::{FittedLinear, LinearLaw};
use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams};
use serde::{Deserialize, Serialize};

/// Default floor added to each proportion before the log.
pub const DEFAULT_EPS: f64 = 1e-3;

/// Hyperparameters: `eps` (> 0, default `DEFAULT_EPS`) and `alpha` (ridge,
/// as `linear`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLinearLaw {
    pub alpha: f64,
    pub eps: f64,
}

impl Default for LogLinearLaw {
    fn default() -> Self {
        LogLinearLaw {
            alpha: super::linear::DEFAULT_ALPHA,
            eps: DEFAULT_EPS,
        }
    }
}

impl Hyperparams for LogLinearLaw {
    const OWNER: &'static str = "law loglinear";

    fn validate(&self) -> Result<()> {
        ensure(
            self.eps.is_finite() && self.eps > 0.0,
            Self::OWNER,
            format!("eps must be a finite number > 0, got {}", self.eps),
        )?;
        ensure(
            self.alpha.is_finite() && self.alpha >= 0.0,
            Self::OWNER,
            format!("alpha must be a finite number ≥ 0, got {}", self.alpha),
        )
    }
}

fn log_features(x: &[f64], eps: f64) -> Vec<f64> {
    x.iter().map(|w| (w.max(0.0) + eps).ln()).collect()
}

/// `predict(x) = intercept + coef · ln(x + eps)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedLogLinear {
    pub eps: f64,
    #[serde(flatten)]
    pub linear: FittedLinear,
}

pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(LogLinearLaw::from_overrides(hyper)?))
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let f: FittedLogLinear = serde_json::from_value(params.clone())
        .map_err(|e| Error::invalid(format!("loglinear law params: {e}")))?;
    if !(f.eps.is_finite() && f.eps > 0.0) {
        return Err(Error::invalid("loglinear law params: eps must be > 0"));
    }
    let linear = FittedLinear::from_params(&serde_json::to_value(&f.linear).unwrap_or_default())?;
    if linear.coef.len() != n_domains {
        return Err(Error::invalid(format!(
            "loglinear law params: {} coefficients for {n_domains} domains",
            linear.coef.len()
        )));
    }
    Ok(Box::new(FittedLogLinear { eps: f.eps, linear }))
}

impl MixingLaw for LogLinearLaw {
    fn kind(&self) -> &'static str {
        "loglinear"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Box<dyn FittedLaw>> {
        super::check_xy(x, y)?;
        let feats: Vec<Vec<f64>> = x.iter().map(|r| log_features(r, self.eps)).collect();
        let ridge = LinearLaw { alpha: self.alpha };
        let inner = ridge.fit(&feats, y, seed)?;
        let linear = FittedLinear::from_params(&inner.params())?;
        Ok(Box::new(FittedLogLinear {
            eps: self.eps,
            linear,
        }))
    }
}

impl FittedLaw for FittedLogLinear {
    fn predict(&self, x: &[f64]) -> f64 {
        self.linear.predict(&log_features(x, self.eps))
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

    #[test]
    fn recovers_a_known_log_law_and_reloads() {
        // y = 3 - 0.2 ln(w0 + eps) - 0.1 ln(w1 + eps) on random mixtures of 3 domains.
        let mut rng = StdRng::seed_from_u64(0);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let a: f64 = rng.random();
            let b: f64 = rng.random::<f64>() * (1.0 - a);
            let row = vec![a, b, 1.0 - a - b];
            y.push(3.0 - 0.2 * (a + DEFAULT_EPS).ln() - 0.1 * (b + DEFAULT_EPS).ln());
            x.push(row);
        }
        let law = LogLinearLaw::from_overrides(&Hyper::new()).unwrap();
        let fitted = law.fit(&x, &y, 0).unwrap();
        let probe = [0.3, 0.5, 0.2];
        let truth = 3.0 - 0.2 * (0.3 + DEFAULT_EPS).ln() - 0.1 * (0.5 + DEFAULT_EPS).ln();
        assert!((fitted.predict(&probe) - truth).abs() < 1e-3);
        let again = load(&fitted.params(), 3).unwrap();
        assert_eq!(again.predict(&probe), fitted.predict(&probe));
        assert!(load(&fitted.params(), 4).is_err());
    }

    #[test]
    fn rejects_bad_hyperparameters() {
        let mut h = Hyper::new();
        h.insert("eps".into(), 0.0.into());
        assert!(LogLinearLaw::from_overrides(&h).is_err());
        let mut h = Hyper::new();
        h.insert("beta".into(), 1.0.into());
        assert!(LogLinearLaw::from_overrides(&h).is_err());
    }
}
