//! RegMix's simulation proposer: draw many candidates from the prior sampler,
//! predict each with the law, average the best `top_k` (averaging smooths the
//! law's noise and keeps the answer inside the region the sweep explored).

use super::{Objective, Proposal, ProposeContext, Proposer};
use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::sampler::{PriorSampler, SamplerConfig};
use crate::mixture::Mixture;
use rayon::prelude::*;

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

/// Candidates are drawn in this many chunks, each from its own sampler
/// seeded by (seed, chunk), so the answer does not depend on the number of
/// threads that score them; 64 keeps machines of up to 64 cores busy.
const CHUNKS: usize = 64;
/// Rows sampled and scored at a time within a chunk (bounds memory).
const BATCH: usize = 8192;

/// The best `k` (score, weights) of one chunk, best first.
type TopK = Vec<(f64, Vec<f64>)>;

fn push_top(top: &mut TopK, k: usize, score: f64, row: &[f64]) {
    if top.len() == k && score >= top[k - 1].0 {
        return;
    }
    let at = top.partition_point(|(s, _)| *s <= score);
    top.insert(at, (score, row.to_vec()));
    top.truncate(k);
}

impl Simulate {
    fn chunk(
        &self,
        obj: &Objective,
        ctx: &ProposeContext,
        prior: &Mixture,
        chunk: usize,
        n: usize,
    ) -> Result<TopK> {
        let seed = ctx
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(chunk as u64);
        let mut sampler = PriorSampler::new(prior, self.sampler.clone(), seed)?;
        let constrained = !ctx.bounds.is_simplex();
        let mut top = TopK::with_capacity(self.top_k + 1);
        let mut left = n;
        while left > 0 {
            let rows = sampler.sample_rows(left.min(BATCH))?;
            left -= rows.len();
            // Candidates outside the bounds are moved to the nearest
            // feasible mixture (a no-op for feasible ones).
            let rows: Vec<Vec<f64>> = if constrained {
                rows.iter().map(|r| ctx.bounds.project(r)).collect()
            } else {
                rows
            };
            for (s, row) in obj.values(&rows).into_iter().zip(&rows) {
                if !s.is_finite() {
                    return Err(Error::invalid(format!(
                        "the law predicts {s} for a candidate mixture"
                    )));
                }
                push_top(&mut top, self.top_k, s, row);
            }
        }
        Ok(top)
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
        let obj = ctx.objective(law)?;
        let sizes: Vec<usize> = (0..CHUNKS)
            .map(|c| (c + 1) * self.n_candidates / CHUNKS - c * self.n_candidates / CHUNKS)
            .collect();
        let results: Vec<Result<TopK>> = (0..CHUNKS)
            .into_par_iter()
            .map(|c| self.chunk(&obj, ctx, &prior, c, sizes[c]))
            .collect();
        let mut all = TopK::new();
        for r in results {
            let top = r?;
            for (score, row) in top {
                push_top(&mut all, self.top_k, score, &row);
            }
        }
        let k = all.len();
        let mut avg = vec![0.0; ctx.domains.len()];
        for (_, row) in &all {
            for (a, w) in avg.iter_mut().zip(row) {
                *a += w / k as f64;
            }
        }
        // The average of feasible mixtures is feasible (the bounds are convex);
        // projecting only removes rounding.
        let avg = ctx.bounds.project(&avg);
        let mixture = Mixture::new(ctx.domains.to_vec(), avg)?;
        let predicted = law.predict(mixture.weights());
        let objective = obj.value(mixture.weights());
        Ok(Proposal {
            mixture,
            predicted,
            details: serde_json::json!({
                "proposer": "simulate",
                "n_candidates": self.n_candidates,
                "top_k": k,
                "objective": objective,
                "best_candidate_objective": all[0].0,
                "kth_candidate_objective": all[k - 1].0,
                "best_candidate_predicted": law.predict(&all[0].1),
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

    /// A law with its minimum at (0.5, 0.3, 0.2).
    struct Near;
    impl FittedLaw for Near {
        fn predict(&self, x: &[f64]) -> f64 {
            (x[0] - 0.5).powi(2) + (x[1] - 0.3).powi(2)
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    #[test]
    fn moves_weight_toward_what_the_law_prefers() {
        let prior = Mixture::parse_spec("a=0.2,b=0.4,c=0.4").unwrap();
        let domains = prior.domains().to_vec();
        let bounds = super::super::Bounds::simplex(&domains);
        let ctx = ProposeContext {
            domains: &domains,
            prior: &prior,
            seed: 3,
            maximize: false,
            bounds: &bounds,
            kl_weight: 0.0,
            spread_weight: 0.0,
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
        // Chunks are scored on rayon's pool: the answer must not depend on
        // how many threads it has.
        for threads in [1, 3] {
            let on = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| sim.propose(&Prefers0, &ctx).unwrap());
            assert_eq!(p.mixture, on.mixture, "{threads} thread(s)");
            assert_eq!(p.details, on.details, "{threads} thread(s)");
        }
        // An interior optimum: the top candidates' average depends on which
        // candidates were drawn, so on the seed.
        let a = sim.propose(&Near, &ctx).unwrap();
        assert_eq!(a.mixture, sim.propose(&Near, &ctx).unwrap().mixture);
        let b = sim
            .propose(&Near, &ProposeContext { seed: 4, ..ctx })
            .unwrap();
        assert_ne!(a.mixture, b.mixture, "another seed, other candidates");
        let ctx_max = ProposeContext {
            maximize: true,
            ..ctx
        };
        let q = sim.propose(&Prefers0, &ctx_max).unwrap();
        assert!(q.mixture.weights()[0] < 0.05, "{:?}", q.mixture);
    }
}
