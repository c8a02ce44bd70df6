//! Online mixing: policies that update the sampling mixture while a model
//! trains, from the per-domain losses the trainer reports.
//!
//! The seam is [`OnlinePolicy`]: `observe(step, losses, tokens) -> Option<Mixture>`.
//! One policy per file — `odm` (EXP3 bandit), `aioli` (learn-params rounds +
//! exponentiated gradient), `doremi` (excess loss over a reference),
//! `ado` (per-domain power laws). `service` wraps a policy with request
//! validation and atomic state persistence (what `mixopt online` speaks over
//! JSON lines, `http` over HTTP); `controller` drives a policy from inside
//! proxy training (`mixopt train --schedule`).
//!
//! Policies hold no random state: given the same sequence of observations they
//! return the same weights, which is what makes a persisted state resumable.

pub mod ado;
pub mod aioli;
pub mod controller;
pub mod doremi;
pub mod float_text;
pub mod http;
pub mod odm;
mod request;
pub mod service;
pub mod trajectory;

use crate::error::{Error, Result};
use crate::mixture::Mixture;
use serde::{Deserialize, Serialize};

/// What the trainer reports at one update. Slices are in the policy's domain
/// order; `None` means "not observed at this step".
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The trainer's optimizer step (monotone; the unit is the trainer's).
    pub step: u64,
    /// Mean token loss (nats) per domain: training-batch or validation loss,
    /// whichever [`OnlinePolicy::request`] asked for.
    pub losses: &'a [Option<f64>],
    /// Cumulative training tokens seen from each domain so far.
    pub tokens: &'a [Option<f64>],
}

impl Observation<'_> {
    /// Shape and value checks shared by every policy (policies add their own).
    pub fn check(&self, domains: &[String]) -> Result<()> {
        let k = domains.len();
        if self.losses.len() != k || self.tokens.len() != k {
            return Err(Error::invalid(format!(
                "observation has {} losses and {} token counts for {k} domains",
                self.losses.len(),
                self.tokens.len()
            )));
        }
        for (d, l) in domains.iter().zip(self.losses) {
            if let Some(l) = l {
                if !(l.is_finite() && *l >= 0.0) {
                    return Err(Error::invalid(format!(
                        "losses.{d}: must be a finite number >= 0, got {l}"
                    )));
                }
            }
        }
        for (d, n) in domains.iter().zip(self.tokens) {
            if let Some(n) = n {
                if !(n.is_finite() && *n >= 0.0) {
                    return Err(Error::invalid(format!(
                        "tokens.{d}: must be a finite number >= 0, got {n}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Which losses a policy wants at its next update (the "evaluation request").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossRequest {
    /// Per-domain mean training loss over the batches since the last update
    /// (domains absent from those batches left out).
    Training,
    /// Every domain's held-out validation loss.
    Validation,
    /// Nothing: the next update ignores losses (tokens are still recorded).
    None,
}

/// An online mixing policy. Implementations are deterministic functions of
/// their observation history, serializable with [`OnlinePolicy::to_state`].
pub trait OnlinePolicy: PolicyState + Send + std::fmt::Debug {
    /// `odm`, `aioli`, `doremi` or `ado`.
    fn name(&self) -> &'static str;
    fn domains(&self) -> &[String];
    /// The weights to sample from until the next update (aligned to `domains`).
    fn weights(&self) -> &[f64];
    /// Which losses the next `observe` should carry.
    fn request(&self) -> LossRequest;
    /// Learn from one update; `Some(mixture)` when the sampling weights changed.
    /// On `Err` the policy is unchanged.
    fn observe(&mut self, obs: &Observation) -> Result<Option<Mixture>>;
    /// The mixture to train a final (static) model on: the time average of the
    /// weights the policy chose (DoReMi's definition of its output; for the
    /// others the token-weighted mixture the schedule amounted to).
    fn result(&self) -> Mixture;
}

/// Saving and copying a policy; every serializable, clonable policy gets it
/// from the blanket impl below, so no policy file repeats it.
pub trait PolicyState {
    /// Everything needed to resume (configuration and learned state).
    fn to_state(&self) -> serde_json::Value;
    fn boxed_clone(&self) -> Box<dyn OnlinePolicy>;
}

impl<T: OnlinePolicy + serde::Serialize + Clone + 'static> PolicyState for T {
    fn to_state(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn boxed_clone(&self) -> Box<dyn OnlinePolicy> {
        Box::new(self.clone())
    }
}

/// The policies `--policy` / `--schedule` accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Odm,
    Aioli,
    Doremi,
    Ado,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Odm => "odm",
            PolicyKind::Aioli => "aioli",
            PolicyKind::Doremi => "doremi",
            PolicyKind::Ado => "ado",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "odm" => Ok(PolicyKind::Odm),
            "aioli" => Ok(PolicyKind::Aioli),
            "doremi" => Ok(PolicyKind::Doremi),
            "ado" => Ok(PolicyKind::Ado),
            _ => Err(Error::invalid(format!(
                "policy {name:?}: expected odm, aioli, doremi or ado"
            ))),
        }
    }
}

/// Inputs to build a fresh policy.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    /// Starting (and, for ODM/ADO, prior) mixture; its domains are the policy's.
    pub prior: Mixture,
    /// `key=value` overrides of the policy's parameters (see each policy's
    /// `Params`); unknown keys are errors naming the key.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// DoReMi only: reference loss per domain (aligned to `prior`'s domains).
    pub reference_losses: Option<Vec<f64>>,
}

/// Parse `--param key=value` strings (see `crate::params::parse`).
pub use crate::params::parse as parse_params;

/// Build a fresh policy.
pub fn build(spec: &PolicySpec) -> Result<Box<dyn OnlinePolicy>> {
    Ok(match spec.kind {
        PolicyKind::Odm => Box::new(odm::Odm::new(&spec.prior, &spec.params)?),
        PolicyKind::Aioli => Box::new(aioli::Aioli::new(&spec.prior, &spec.params)?),
        PolicyKind::Doremi => {
            let reference = spec.reference_losses.as_ref().ok_or_else(|| {
                Error::invalid("doremi needs reference losses (--reference FILE)")
            })?;
            Box::new(doremi::DoReMi::new(&spec.prior, reference, &spec.params)?)
        }
        PolicyKind::Ado => Box::new(ado::Ado::new(&spec.prior, &spec.params)?),
    })
}

/// Rebuild a policy from [`OnlinePolicy::to_state`].
pub fn restore(kind: PolicyKind, state: serde_json::Value) -> Result<Box<dyn OnlinePolicy>> {
    fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T> {
        serde_json::from_value(v).map_err(|e| Error::invalid(format!("{what} state: {e}")))
    }
    // A state file may have been edited or truncated: check its shape and
    // parameters before any update indexes into it.
    let p: Box<dyn OnlinePolicy> = match kind {
        PolicyKind::Odm => Box::new(de::<odm::Odm>(state, "odm")?.checked()?),
        PolicyKind::Aioli => Box::new(de::<aioli::Aioli>(state, "aioli")?.checked()?),
        PolicyKind::Doremi => Box::new(de::<doremi::DoReMi>(state, "doremi")?.checked()?),
        PolicyKind::Ado => Box::new(de::<ado::Ado>(state, "ado")?.checked()?),
    };
    Ok(p)
}

/// Every per-domain vector of a restored state has one entry per domain.
pub(crate) fn check_lens(k: usize, fields: &[(&str, usize)]) -> Result<()> {
    for (name, len) in fields {
        if *len != k {
            return Err(Error::invalid(format!(
                "field {name} has {len} entries for {k} domains"
            )));
        }
    }
    Ok(())
}

/// Softmax of `x` into `out` (max-shifted).
pub(crate) fn softmax_into(x: &[f64], out: &mut [f64]) {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Normalize non-negative `w` in place to sum to 1 (uniform if the sum is 0).
pub(crate) fn normalize(w: &mut [f64]) {
    let s: f64 = w.iter().sum();
    if s > 0.0 && s.is_finite() {
        for x in w.iter_mut() {
            *x /= s;
        }
    } else {
        let u = 1.0 / w.len() as f64;
        w.iter_mut().for_each(|x| *x = u);
    }
}

/// Running sum of chosen weights, for [`OnlinePolicy::result`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Average {
    #[serde(with = "float_text::vec")]
    sum: Vec<f64>,
    n: u64,
}

impl Average {
    pub fn new(k: usize) -> Self {
        Average {
            sum: vec![0.0; k],
            n: 0,
        }
    }

    pub fn add(&mut self, w: &[f64]) {
        for (s, x) in self.sum.iter_mut().zip(w) {
            *s += x;
        }
        self.n += 1;
    }

    /// Entries (for checking a restored state).
    pub fn len(&self) -> usize {
        self.sum.len()
    }

    /// The average, or `fallback` before anything was added.
    pub fn mixture(&self, domains: &[String], fallback: &[f64]) -> Mixture {
        let w: Vec<f64> = if self.n == 0 {
            fallback.to_vec()
        } else {
            let mut w: Vec<f64> = self.sum.iter().map(|s| s / self.n as f64).collect();
            normalize(&mut w);
            w
        };
        mixture_of(domains, &w)
    }
}

/// A `Mixture` from weights a policy computed (already non-negative, summing to 1).
pub(crate) fn mixture_of(domains: &[String], w: &[f64]) -> Mixture {
    // Policies keep their weights normalized; a failure here is a bug, so fall
    // back to renormalizing rather than panicking.
    Mixture::new(domains.to_vec(), w.to_vec())
        .or_else(|_| Mixture::from_scores(domains.to_vec(), w))
        .unwrap_or_else(|_| {
            Mixture::uniform(domains.to_vec()).expect("domains were validated at construction")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_numbers_and_reject_unknown_keys() {
        let m = parse_params(&["eta=0.5".into(), "ema=null".into(), "x=abc".into()]).unwrap();
        assert_eq!(m["eta"], serde_json::json!(0.5));
        assert!(m["ema"].is_null());
        assert_eq!(m["x"], serde_json::json!("abc"));
        assert!(parse_params(&["eta".into()]).is_err());
        let prior = Mixture::uniform(vec!["a".into(), "b".into()]).unwrap();
        let bad = parse_params(&["etaa=1".into()]).unwrap();
        let err = odm::Odm::new(&prior, &bad).unwrap_err().to_string();
        assert!(err.contains("etaa"), "{err}");
    }
}
