//! DoReMi-style reweighting (Xie et al. 2023, "DoReMi: Optimizing Data
//! Mixtures Speeds Up Language Model Pretraining", Algorithm 1).
//!
//! Excess loss over a reference model, clipped at 0, drives a multiplicative
//! update: `log α_i += η · max(ℓ_i − ℓ_ref,i, 0)`, `α = softmax(log α)`, then
//! smoothing with the uniform distribution `α ← (1 − c) α + c / K`. The output
//! mixture is the average of α over all updates. DoReMi clips per token; a
//! trainer here reports per-domain means, so the clip applies to the mean.

use super::{
    float_text, mixture_of, softmax_into, Average, LossRequest, Observation, OnlinePolicy,
};
use crate::error::{Error, Result};
use crate::mixture::Mixture;
use crate::params::{ensure, Hyperparams};
use serde::{Deserialize, Serialize};

/// DoReMi parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Step size η = 1 (DoReMi paper, §2 "Training details").
    pub eta: f64,
    /// Smoothing with uniform, c = 1e-3 (DoReMi paper, §2).
    pub smoothing: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            eta: 1.0,
            smoothing: 1e-3,
        }
    }
}

impl Hyperparams for Params {
    const OWNER: &'static str = "doremi";

    fn validate(&self) -> Result<()> {
        ensure(
            self.eta.is_finite() && self.eta > 0.0,
            Self::OWNER,
            "eta must be > 0",
        )?;
        ensure(
            (0.0..=1.0).contains(&self.smoothing),
            Self::OWNER,
            "smoothing must be in [0, 1]",
        )
    }
}

/// DoReMi state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoReMi {
    params: Params,
    domains: Vec<String>,
    #[serde(with = "float_text::vec")]
    reference: Vec<f64>,
    /// Current (smoothed) domain weights α.
    #[serde(with = "float_text::vec")]
    alpha: Vec<f64>,
    avg: Average,
}

impl DoReMi {
    /// `prior` is the initial α (DoReMi starts from uniform); `reference` the
    /// reference model's loss per domain, aligned to `prior`'s domains.
    pub fn new(
        prior: &Mixture,
        reference: &[f64],
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let params = Params::from_overrides(overrides)?;
        if reference.len() != prior.len() {
            return Err(Error::invalid(format!(
                "doremi: {} reference losses for {} domains",
                reference.len(),
                prior.len()
            )));
        }
        for (d, r) in prior.domains().iter().zip(reference) {
            if !(r.is_finite() && *r >= 0.0) {
                return Err(Error::invalid(format!(
                    "doremi reference loss of {d:?} must be a finite number >= 0, got {r}"
                )));
            }
        }
        let k = prior.len();
        // log α must be finite: give zero-weight domains the smoothing floor.
        let c = params.smoothing.max(1e-12);
        let alpha = prior
            .weights()
            .iter()
            .map(|w| (1.0 - c) * w + c / k as f64)
            .collect();
        Ok(DoReMi {
            params,
            domains: prior.domains().to_vec(),
            reference: reference.to_vec(),
            alpha,
            avg: Average::new(k),
        })
    }
}

impl DoReMi {
    /// Validate a state read back from disk (see `super::restore`).
    pub(crate) fn checked(self) -> Result<Self> {
        let alpha = Mixture::new(self.domains.clone(), self.alpha.clone())?;
        DoReMi::new(&alpha, &self.reference, &self.params.to_overrides()?)?;
        super::check_lens(self.domains.len(), &[("avg.sum", self.avg.len())])?;
        Ok(self)
    }
}

impl OnlinePolicy for DoReMi {
    fn name(&self) -> &'static str {
        "doremi"
    }

    fn domains(&self) -> &[String] {
        &self.domains
    }

    fn weights(&self) -> &[f64] {
        &self.alpha
    }

    fn request(&self) -> LossRequest {
        LossRequest::Training
    }

    fn observe(&mut self, obs: &Observation) -> Result<Option<Mixture>> {
        obs.check(&self.domains)?;
        if obs.losses.iter().all(Option::is_none) {
            self.avg.add(&self.alpha);
            return Ok(None);
        }
        let k = self.domains.len();
        let eta = self.params.eta;
        let logits: Vec<f64> = (0..k)
            .map(|i| {
                let excess = obs.losses[i]
                    .map(|l| (l - self.reference[i]).max(0.0))
                    .unwrap_or(0.0);
                self.alpha[i].ln() + eta * excess
            })
            .collect();
        let mut a = vec![0.0; k];
        softmax_into(&logits, &mut a);
        let c = self.params.smoothing;
        for (x, y) in self.alpha.iter_mut().zip(&a) {
            *x = (1.0 - c) * y + c / k as f64;
        }
        self.avg.add(&self.alpha);
        Ok(Some(mixture_of(&self.domains, &self.alpha)))
    }

    fn result(&self) -> Mixture {
        self.avg.mixture(&self.domains, &self.alpha)
    }
}
