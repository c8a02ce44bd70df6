//! The exact proposer: minimize the objective (predicted target, + λ·KL to the
//! prior, + β·ensemble spread) over the capped simplex directly, from several
//! starts (the prior, uniform, seeded random mixtures — all projected into
//! the bounds), keeping the best.
//!
//! Each start runs (1) mirror descent — exponentiated-gradient steps
//! w ← KL-projection(w ⊙ exp(−η·g)) with backtracking on η and a
//! finite-difference gradient g (laws need not be differentiable) — then
//! (2) a pairwise-transfer search: move mass δ from domain i to j while that
//! improves, for shrinking δ. Directions e_j − e_i span the simplex, so (2)
//! also optimizes laws whose gradient is zero almost everywhere (trees),
//! where (1) stops at once. Both stay inside the bounds by construction.

use super::{Bounds, Objective, Proposal, ProposeContext, Proposer};
use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::Mixture;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};

#[derive(Debug, Clone)]
pub struct Exact {
    /// Starting points (≥ 1): prior, uniform, then random mixtures.
    pub starts: usize,
    /// Mirror-descent iterations per start.
    pub max_iters: usize,
    /// Finite-difference step for the gradient.
    pub fd_step: f64,
    /// Transfer sizes tried by the pairwise search, largest first.
    pub transfer_steps: Vec<f64>,
}

impl Default for Exact {
    fn default() -> Self {
        Exact {
            starts: 8,
            max_iters: 500,
            fd_step: 1e-5,
            transfer_steps: vec![0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 1e-4],
        }
    }
}

/// One start's result.
struct Run {
    w: Vec<f64>,
    value: f64,
    evals: usize,
}

impl Exact {
    fn gradient(&self, obj: &Objective, w: &[f64], f: f64, evals: &mut usize) -> Vec<f64> {
        let h = self.fd_step;
        let mut x = w.to_vec();
        (0..w.len())
            .map(|i| {
                x[i] = w[i] + h;
                let fi = obj.value(&x);
                x[i] = w[i];
                *evals += 1;
                (fi - f) / h
            })
            .collect()
    }

    fn mirror_descent(&self, obj: &Objective, b: &Bounds, run: &mut Run) {
        // Weights exactly 0 cannot move under multiplicative updates: start
        // from a point nudged into the interior of the bounds.
        let d = run.w.len() as f64;
        let nudged: Vec<f64> = run.w.iter().map(|v| 0.99 * v + 0.01 / d).collect();
        let start = b.project_kl(&nudged);
        let fs = obj.value(&start);
        if fs <= run.value || run.w.iter().any(|&v| v <= 0.0) {
            run.w = start;
            run.value = fs;
        }
        let mut eta = 0.5;
        for _ in 0..self.max_iters {
            let g = self.gradient(obj, &run.w, run.value, &mut run.evals);
            let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if gmax <= 1e-12 || !gmax.is_finite() {
                return;
            }
            let mut improved = false;
            while eta > 1e-8 {
                let v: Vec<f64> = run
                    .w
                    .iter()
                    .zip(&g)
                    .map(|(w, gi)| (w * (-eta * gi / gmax).exp()).max(1e-300))
                    .collect();
                let cand = b.project_kl(&v);
                let fc = obj.value(&cand);
                run.evals += 1;
                if fc < run.value - 1e-12 {
                    let gain = run.value - fc;
                    run.w = cand;
                    run.value = fc;
                    eta = (eta * 1.5).min(4.0);
                    improved = gain > 1e-12;
                    break;
                }
                eta *= 0.5;
            }
            if !improved {
                return;
            }
        }
    }

    fn transfer_search(&self, obj: &Objective, b: &Bounds, run: &mut Run) {
        let d = run.w.len();
        for &step in &self.transfer_steps {
            for _pass in 0..200 {
                let mut improved = false;
                for i in 0..d {
                    for j in 0..d {
                        if i == j {
                            continue;
                        }
                        let delta = step.min(run.w[i] - b.lo[i]).min(b.hi[j] - run.w[j]);
                        if delta <= 1e-15 {
                            continue;
                        }
                        let (wi, wj) = (run.w[i], run.w[j]);
                        run.w[i] = wi - delta;
                        run.w[j] = wj + delta;
                        let f = obj.value(&run.w);
                        run.evals += 1;
                        if f < run.value - 1e-12 {
                            run.value = f;
                            improved = true;
                        } else {
                            run.w[i] = wi;
                            run.w[j] = wj;
                        }
                    }
                }
                if !improved {
                    break;
                }
            }
        }
    }

    fn start_points(&self, ctx: &ProposeContext, prior: &Mixture) -> Result<Vec<Vec<f64>>> {
        let d = ctx.domains.len();
        let b = ctx.bounds;
        let mut out = vec![
            b.project(prior.weights()),
            b.project(&vec![1.0 / d as f64; d]),
        ];
        let mut rng = StdRng::seed_from_u64(ctx.seed);
        let gamma = Gamma::new(1.0, 1.0).map_err(|e| Error::invalid(e.to_string()))?;
        while out.len() < self.starts {
            let r: Vec<f64> = (0..d).map(|_| gamma.sample(&mut rng)).collect();
            let s: f64 = r.iter().sum();
            out.push(b.project(&r.iter().map(|v| v / s).collect::<Vec<_>>()));
        }
        out.truncate(self.starts);
        Ok(out)
    }
}

impl Proposer for Exact {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn propose(&self, law: &dyn FittedLaw, ctx: &ProposeContext) -> Result<Proposal> {
        if self.starts == 0 {
            return Err(Error::invalid("exact: --starts must be ≥ 1"));
        }
        let prior = ctx.prior.align(ctx.domains)?;
        let obj = ctx.objective(law)?;
        let starts = self.start_points(ctx, &prior)?;
        let threads = std::thread::available_parallelism()
            .map(|t| t.get())
            .unwrap_or(1)
            .clamp(1, starts.len());
        let mut runs: Vec<Option<Run>> = (0..starts.len()).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (obj, starts) = (&obj, &starts);
                    s.spawn(move || {
                        (t..starts.len())
                            .step_by(threads)
                            .map(|i| {
                                let w = starts[i].clone();
                                let value = obj.value(&w);
                                let mut run = Run { w, value, evals: 1 };
                                self.mirror_descent(obj, ctx.bounds, &mut run);
                                self.transfer_search(obj, ctx.bounds, &mut run);
                                (i, run)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                if let Ok(done) = h.join() {
                    for (i, r) in done {
                        runs[i] = Some(r);
                    }
                }
            }
        });
        let runs: Vec<Run> = runs
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::invalid("an exact-search thread failed")))
            .collect::<Result<_>>()?;
        let evals: usize = runs.iter().map(|r| r.evals).sum();
        let values: Vec<f64> = runs.iter().map(|r| r.value).collect();
        let best = runs
            .into_iter()
            .filter(|r| r.value.is_finite())
            .min_by(|a, b| a.value.total_cmp(&b.value))
            .ok_or_else(|| Error::invalid("the law predicts a non-finite value everywhere"))?;
        // Exact zeros for weights at the lower bound's rounding noise.
        let w = ctx.bounds.project(&best.w);
        let mixture = Mixture::new(ctx.domains.to_vec(), w)?;
        let predicted = law.predict(mixture.weights());
        Ok(Proposal {
            details: serde_json::json!({
                "proposer": "exact",
                "starts": self.starts,
                "objective": obj.value(mixture.weights()),
                "objective_per_start": values,
                "law_evaluations": evals,
            }),
            mixture,
            predicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::ConstraintSpec;

    /// Quadratic bowl with its minimum at `m` (inside the simplex).
    struct Bowl(Vec<f64>);
    impl FittedLaw for Bowl {
        fn predict(&self, x: &[f64]) -> f64 {
            x.iter().zip(&self.0).map(|(a, b)| (a - b).powi(2)).sum()
        }
        fn params(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    fn ctx<'a>(domains: &'a [String], prior: &'a Mixture, b: &'a Bounds) -> ProposeContext<'a> {
        ProposeContext {
            domains,
            prior,
            seed: 0,
            maximize: false,
            bounds: b,
            kl_weight: 0.0,
            spread_weight: 0.0,
        }
    }

    #[test]
    fn finds_interior_and_bounded_optima() {
        let prior = Mixture::parse_spec("a=0.25,b=0.25,c=0.25,d=0.25").unwrap();
        let domains = prior.domains().to_vec();
        let law = Bowl(vec![0.1, 0.6, 0.3, 0.0]);
        let free = Bounds::simplex(&domains);
        let p = Exact::default()
            .propose(&law, &ctx(&domains, &prior, &free))
            .unwrap();
        for (w, m) in p.mixture.weights().iter().zip(&law.0) {
            assert!((w - m).abs() < 2e-3, "{:?}", p.mixture);
        }
        // With b ≤ 0.4 the optimum is the projection of m: the 0.2 taken from b
        // spreads equally over a, c, d (the bowl is isotropic) → d = 0.2/3 > 0.
        let b = ConstraintSpec {
            max: vec![("b".into(), 0.4)],
            ..Default::default()
        }
        .check(&domains)
        .unwrap();
        let q = Exact::default()
            .propose(&law, &ctx(&domains, &prior, &b))
            .unwrap();
        let w = q.mixture.weights();
        assert!((w[1] - 0.4).abs() < 2e-3, "{w:?}");
        assert!((w[0] - (0.1 + 0.2 / 3.0)).abs() < 3e-3, "{w:?}");
    }
}
