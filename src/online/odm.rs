//! ODM: online data mixing as a multi-armed bandit (Albalak et al. 2023,
//! "Efficient Online Data Mixing For Language Model Pre-Training", EXP3 variant).
//!
//! Each domain is an arm; the reward of a domain is its training loss (a domain
//! the model still finds hard is worth sampling). Rewards are importance
//! weighted by the probability the domain was sampled with and smoothed:
//! `R̂_i ← α R̂_i + (1 − α) r_i / π_i`. The policy is
//! `π = (1 − K ε_t) softmax(ε_{t−1} R̂) + ε_t` with the decaying exploration
//! rate `ε_t = min(1/K, √(ln K / (K t)))`. Before `warmup_steps` the prior is used.

use super::{
    float_text, mixture_of, softmax_into, Average, LossRequest, Observation, OnlinePolicy,
};
use crate::error::{Error, Result};
use crate::mixture::Mixture;
use crate::params::{ensure, Hyperparams};
use serde::{Deserialize, Serialize};

/// ODM parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Smoothing of the estimated rewards. 0.9 as in the ODM paper (Albalak et
    /// al. 2023, §3) and DataFlex's ODM mixer default (`alpha: 0.9`).
    pub alpha: f64,
    /// Steps (trainer's unit) sampled from the prior before the bandit starts.
    /// ODM warms up on the initial distribution (DataFlex default 2000 steps of
    /// a long run); the step scale of an arbitrary trainer is unknown, so the
    /// service defaults to 0 and `train --schedule` passes the proxy's LR warmup.
    pub warmup_steps: u64,
    /// Multiplier on the loss to form the reward. ODM uses the raw loss (1.0).
    pub reward_scale: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            alpha: 0.9,
            warmup_steps: 0,
            reward_scale: 1.0,
        }
    }
}

impl Hyperparams for Params {
    const OWNER: &'static str = "odm";

    fn validate(&self) -> Result<()> {
        ensure(
            (0.0..1.0).contains(&self.alpha),
            Self::OWNER,
            format!("alpha must be in [0, 1), got {}", self.alpha),
        )?;
        ensure(
            self.reward_scale.is_finite() && self.reward_scale > 0.0,
            Self::OWNER,
            "reward_scale must be > 0",
        )
    }
}

/// EXP3 bandit state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Odm {
    params: Params,
    domains: Vec<String>,
    #[serde(with = "float_text::vec")]
    prior: Vec<f64>,
    /// Current sampling distribution π.
    #[serde(with = "float_text::vec")]
    pi: Vec<f64>,
    /// Smoothed importance-weighted rewards R̂.
    #[serde(with = "float_text::vec")]
    r_hat: Vec<f64>,
    /// ε_{t−1}.
    #[serde(with = "float_text::one")]
    eps_prev: f64,
    /// Bandit updates so far (t).
    t: u64,
    avg: Average,
}

/// ε_t = min(1/K, √(ln K / (K t))) (ODM, Alg. 1).
pub fn exploration_rate(k: usize, t: u64) -> f64 {
    let k = k as f64;
    let t = t.max(1) as f64;
    (1.0 / k).min((k.ln() / (k * t)).sqrt())
}

impl Odm {
    pub fn new(
        prior: &Mixture,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let params = Params::from_overrides(overrides)?;
        let k = prior.len();
        Ok(Odm {
            params,
            domains: prior.domains().to_vec(),
            prior: prior.weights().to_vec(),
            pi: prior.weights().to_vec(),
            r_hat: vec![0.0; k],
            eps_prev: 1.0 / k as f64,
            t: 0,
            avg: Average::new(k),
        })
    }
}

impl Odm {
    /// Validate a state read back from disk (see `super::restore`).
    pub(crate) fn checked(self) -> Result<Self> {
        let prior = Mixture::new(self.domains.clone(), self.prior.clone())?;
        Odm::new(&prior, &self.params.to_overrides()?)?;
        Mixture::new(self.domains.clone(), self.pi.clone())?;
        super::check_lens(
            self.domains.len(),
            &[("r_hat", self.r_hat.len()), ("avg.sum", self.avg.len())],
        )?;
        Ok(self)
    }
}

impl OnlinePolicy for Odm {
    fn name(&self) -> &'static str {
        "odm"
    }

    fn domains(&self) -> &[String] {
        &self.domains
    }

    fn weights(&self) -> &[f64] {
        &self.pi
    }

    fn request(&self) -> LossRequest {
        LossRequest::Training
    }

    fn observe(&mut self, obs: &Observation) -> Result<Option<Mixture>> {
        obs.check(&self.domains)?;
        if obs.step < self.params.warmup_steps || obs.losses.iter().all(Option::is_none) {
            self.avg.add(&self.pi);
            return Ok(None);
        }
        let k = self.domains.len();
        let a = self.params.alpha;
        // Computed aside so that an overflowing reward leaves the policy unchanged.
        let mut r_hat = self.r_hat.clone();
        for (i, (r_i, l)) in r_hat.iter_mut().zip(obs.losses).enumerate() {
            if let Some(l) = l {
                // π_i > 0 always after the first update (ε_t > 0); a zero prior
                // weight before it means the domain cannot have been sampled.
                if self.pi[i] > 0.0 {
                    let r = self.params.reward_scale * l / self.pi[i];
                    *r_i = a * *r_i + (1.0 - a) * r;
                }
            }
            if !(self.eps_prev * *r_i).is_finite() {
                return Err(Error::invalid(format!(
                    "losses.{}: {:e} overflows the importance-weighted reward (is it a loss in nats?)",
                    self.domains[i],
                    l.unwrap_or(f64::NAN)
                )));
            }
        }
        self.r_hat = r_hat;
        self.t += 1;
        let eps = exploration_rate(k, self.t);
        let logits: Vec<f64> = self.r_hat.iter().map(|r| self.eps_prev * r).collect();
        let mut probs = vec![0.0; k];
        softmax_into(&logits, &mut probs);
        for (p, s) in self.pi.iter_mut().zip(&probs) {
            *p = (1.0 - k as f64 * eps) * s + eps;
        }
        self.eps_prev = eps;
        self.avg.add(&self.pi);
        Ok(Some(mixture_of(&self.domains, &self.pi)))
    }

    fn result(&self) -> Mixture {
        self.avg.mixture(&self.domains, &self.pi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::PolicyState;

    #[test]
    fn an_overflowing_loss_is_an_error_not_nan_weights() {
        let prior = Mixture::uniform(vec!["a".into(), "b".into()]).unwrap();
        let mut odm = Odm::new(&prior, &serde_json::Map::new()).unwrap();
        let (losses, tokens) = ([Some(1e308), Some(1.0)], [None, None]);
        let obs = Observation {
            step: 1,
            losses: &losses,
            tokens: &tokens,
        };
        let before = odm.to_state();
        for _ in 0..3 {
            assert!(odm.observe(&obs).is_err());
        }
        assert_eq!(odm.to_state(), before);
        assert!(odm.weights().iter().all(|w| w.is_finite()));
    }

    #[test]
    fn exploration_rate_matches_the_formula() {
        // K = 4: 1/K = 0.25 caps t = 1; at t = 100, √(ln 4 / 400) = 0.05887.
        assert_eq!(exploration_rate(4, 1), 0.25);
        assert!((exploration_rate(4, 100) - (4f64.ln() / 400.0).sqrt()).abs() < 1e-15);
    }
}
