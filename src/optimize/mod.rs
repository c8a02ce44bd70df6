//! Optimize: turn a fitted mixing law into the mixture it predicts is best.
//! `Proposer` is the seam (one implementation per file); `simulate` is RegMix's
//! proposer: score many prior samples, average the top-k; `exact` minimizes
//! the law directly (mirror descent + pairwise-transfer search, multi-start).
//! Both minimize the same `Objective` (law, optional KL to the prior, optional
//! ensemble spread) inside the same `Bounds` (min/max weights, repetition
//! limits), from `constraints`. `stage` is the pipeline step (law.json →
//! weights.json); `check` trains its candidates on larger proxies first.

pub mod check;
pub mod constraints;
pub mod exact;
pub mod search;
pub mod simulate;
pub mod stage;
pub mod trust;

pub use constraints::{Bounds, ConstraintSpec, Objective};

use crate::error::Result;
use crate::law::FittedLaw;
use crate::mixture::Mixture;

/// What every proposer is given besides the law.
pub struct ProposeContext<'a> {
    /// The law's domains, in the order its `predict` expects.
    pub domains: &'a [String],
    /// The prior (natural token shares) candidates are drawn around.
    pub prior: &'a Mixture,
    pub seed: u64,
    /// Maximize the target instead of minimizing it (e.g. a downstream score).
    pub maximize: bool,
    /// Where the mixture may lie (`Bounds::simplex` for no constraint).
    pub bounds: &'a Bounds,
    /// λ in + λ·KL(w‖prior): stay near the prior (0 = off).
    pub kl_weight: f64,
    /// β in + β·spread(w) for laws with an uncertainty estimate (0 = off).
    pub spread_weight: f64,
}

impl ProposeContext<'_> {
    /// The objective this context asks proposers to minimize.
    pub fn objective<'l>(&self, law: &'l dyn FittedLaw) -> Result<Objective<'l>> {
        let prior = self.prior.align(self.domains)?;
        // A penalty on a spread the law does not have would silently be 0.
        if self.spread_weight > 0.0 && law.predict_spread(prior.weights()).is_none() {
            return Err(crate::error::Error::invalid(format!(
                "--spread-penalty {}: this law has no uncertainty estimate (fit --law ensemble for one)",
                self.spread_weight
            )));
        }
        let mut o = Objective::new(law, self.maximize, &prior);
        o.kl_weight = self.kl_weight;
        o.spread_weight = self.spread_weight;
        Ok(o)
    }
}

/// A proposed mixture and the law's prediction for it.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub mixture: Mixture,
    pub predicted: f64,
    /// Proposer-specific figures for provenance (e.g. candidates scored).
    pub details: serde_json::Value,
}

/// Law + context → mixture.
pub trait Proposer {
    fn name(&self) -> &'static str;
    fn propose(&self, law: &dyn FittedLaw, ctx: &ProposeContext) -> Result<Proposal>;
}
