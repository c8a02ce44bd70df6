//! Optimize: turn a fitted mixing law into the mixture it predicts is best.
//! `Proposer` is the seam (one implementation per file); `simulate` is RegMix's
//! proposer: score many prior samples, average the top-k.

pub mod simulate;

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
