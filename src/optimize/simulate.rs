//! RegMix's simulation proposer: draw many candidates from the prior sampler,
//! predict each with the law, average the best `top_k` (averaging smooths the
//! law's noise and keeps the answer inside the region the sweep explored).

use super::{Proposal, ProposeContext, Proposer};
use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::sampler::{PriorSampler, SamplerConfig};
use crate::mixture::Mixture;

#[derive(Debug, Clone)]
pub struct Simulate {
    /// Candidates scored (RegMix uses 1e5–1e6).
    pub n_candidates: usize,
    /// Best candidates averaged (RegMix: 100).
    pub top_k: usize,
    pub sampler: SamplerConfig,
}

impl Default for Simulate {
    fn default() -> Self {
        Simulate {
            n_candidates: 100_000,
            top_k: 100,
            sampler: SamplerConfig {
                dedup_l1: 0.0,
                ..SamplerConfig::default()
            },
        }
    }
}

impl Proposer for Simulate {
    fn name(&self) -> &'static str {
        "simulate"
    }

    fn propose(&self, law: &dyn FittedLaw, ctx: &ProposeContext) -> Result<Proposal> {
        if self.n_candidates == 0 || self.top_k == 0 || self.top_k > self.n_candidates {
            return Err(Error::invalid(format!(
                "simulate: need 0 < top-k ({}) <= candidates ({})",
                self.top_k, self.n_candidates
            )));
        }
        let prior = ctx.prior.align(ctx.domains)?;
        let mut sampler = PriorSampler::new(&prior, self.sampler.clone(), ctx.seed)?;
        let rows = sampler.sample_rows(self.n_candidates)?;
        let sign = if ctx.maximize { -1.0 } else { 1.0 };
        let mut scored: Vec<(f64, usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (sign * law.predict(r), i))
            .collect();
        if let Some((s, _)) = scored.iter().find(|(s, _)| !s.is_finite()) {
            return Err(Error::invalid(format!(
                "the law predicts {s} for a candidate mixture"
            )));
        }
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let k = self.top_k;
        let mut avg = vec![0.0; ctx.domains.len()];
        for (_, i) in &scored[..k] {
            for (a, w) in avg.iter_mut().zip(&rows[*i]) {
                *a += w / k as f64;
            }
        }
        let mixture = Mixture::new(ctx.domains.to_vec(), avg)?;
        let predicted = law.predict(mixture.weights());
        Ok(Proposal {
            mixture,
            predicted,
            details: serde_json::json!({
                "proposer": "simulate",
                "n_candidates": self.n_candidates,
                "top_k": k,
                "best_candidate_predicted": sign * scored[0].0,
                "kth_candidate_predicted": sign * scored[k - 1].0,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A law whose loss falls with the weight of domain 0.
    struct Prefers0;
    impl FittedLaw for Prefers0 {
        fn predict(&self, x: &[f64]) -> f64 {
            1.0 - x[0]
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    #[test]
    fn moves_weight_toward_what_the_law_prefers() {
        let prior = Mixture::parse_spec("a=0.2,b=0.4,c=0.4").unwrap();
        let domains = prior.domains().to_vec();
        let ctx = ProposeContext {
            domains: &domains,
            prior: &prior,
            seed: 3,
            maximize: false,
        };
        let sim = Simulate {
            n_candidates: 5_000,
            top_k: 20,
            ..Simulate::default()
        };
        let p = sim.propose(&Prefers0, &ctx).unwrap();
        assert!(p.mixture.weights()[0] > 0.8, "{:?}", p.mixture);
        let again = sim.propose(&Prefers0, &ctx).unwrap();
        assert_eq!(p.mixture, again.mixture, "same seed, same answer");
        let ctx_max = ProposeContext {
            maximize: true,
            ..ctx
        };
        let q = sim.propose(&Prefers0, &ctx_max).unwrap();
        assert!(q.mixture.weights()[0] < 0.05, "{:?}", q.mixture);
    }
}
