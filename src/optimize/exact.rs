//! The exact proposer: minimize the objective (predicted target, + λ·KL to the
//! prior, + β·ensemble spread) over the capped simplex directly, from several
//! starts (the prior, uniform, seeded random mixtures — all projected into
//! the bounds), keeping the best.
//!
//! Each start runs two argmin solvers, one after the other, on the objective
//! as an argmin `CostFunction` (argmin's executor runs the iterations,
//! enforces the iteration cap and counts the law evaluations):
//! (1) `MirrorDescent` — exponentiated-gradient steps
//! w ← KL-projection(w ⊙ exp(−η·g)) with backtracking on η and a
//! finite-difference gradient g (laws need not be differentiable) — then
//! (2) `PairwiseTransfer` — move mass δ from domain i to j while that
//! improves, for shrinking δ. Directions e_j − e_i span the simplex, so (2)
//! also optimizes laws whose gradient is zero almost everywhere (trees),
//! where (1) stops at once. Both stay inside the bounds by construction.
//! argmin's own solvers are unconstrained (or box-constrained); the capped
//! simplex needs these two, written as argmin `Solver`s. Starts run in
//! parallel on rayon's pool; results do not depend on the thread count.

use super::{Bounds, Objective, Proposal, ProposeContext, Proposer};
use crate::error::{Error, Result};
use crate::law::FittedLaw;
use crate::mixture::Mixture;
use argmin::core::{
    CostFunction, Executor, IterState, Problem, Solver, State, TerminationReason,
    TerminationStatus, KV,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use rayon::prelude::*;

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

/// The objective as an argmin problem (a weight vector in the bounds → the
/// value to minimize).
struct Cost<'a>(&'a Objective<'a>);

impl CostFunction for Cost<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, w: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.0.value(w))
    }
}

type Iter = IterState<Vec<f64>, (), (), (), (), f64>;
type Step = std::result::Result<(Iter, Option<KV>), argmin::core::Error>;

/// Mirror descent on the capped simplex; one iteration is one gradient and
/// one accepted step. Stops (converged) when the gradient vanishes or no step
/// size improves.
struct MirrorDescent<'a> {
    bounds: &'a Bounds,
    fd_step: f64,
    eta: f64,
}

impl MirrorDescent<'_> {
    fn gradient(&self, problem: &mut Problem<Cost>, w: &[f64], f: f64) -> Vec<f64> {
        let h = self.fd_step;
        let mut x = w.to_vec();
        (0..w.len())
            .map(|i| {
                x[i] = w[i] + h;
                let fi = cost(problem, &x);
                x[i] = w[i];
                (fi - f) / h
            })
            .collect()
    }
}

/// The objective at `w`, counted by argmin's evaluation counter. (`&Vec`:
/// argmin's parameter type is the vector itself.)
#[allow(clippy::ptr_arg)]
fn cost(problem: &mut Problem<Cost>, w: &Vec<f64>) -> f64 {
    problem.cost(w).unwrap_or(f64::NAN)
}

fn converged(state: Iter) -> Step {
    Ok((
        state.terminate_with(TerminationReason::SolverConverged),
        None,
    ))
}

impl<'o> Solver<Cost<'o>, Iter> for MirrorDescent<'_> {
    fn name(&self) -> &str {
        "mirror descent"
    }

    fn init(&mut self, problem: &mut Problem<Cost<'o>>, mut state: Iter) -> Step {
        // Weights exactly 0 cannot move under multiplicative updates: start
        // from a point nudged into the interior of the bounds.
        let w = state.take_param().unwrap_or_default();
        let value = state.get_cost();
        let d = w.len() as f64;
        let nudged: Vec<f64> = w.iter().map(|v| 0.99 * v + 0.01 / d).collect();
        let start = self.bounds.project_kl(&nudged);
        let fs = cost(problem, &start);
        let state = if fs <= value || w.iter().any(|&v| v <= 0.0) {
            state.param(start).cost(fs)
        } else {
            state.param(w)
        };
        Ok((state, None))
    }

    fn next_iter(&mut self, problem: &mut Problem<Cost<'o>>, mut state: Iter) -> Step {
        let w = state.take_param().unwrap_or_default();
        let value = state.get_cost();
        let g = self.gradient(problem, &w, value);
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if gmax <= 1e-12 || !gmax.is_finite() {
            return converged(state.param(w));
        }
        while self.eta > 1e-8 {
            let v: Vec<f64> = w
                .iter()
                .zip(&g)
                .map(|(w, gi)| (w * (-self.eta * gi / gmax).exp()).max(1e-300))
                .collect();
            let cand = self.bounds.project_kl(&v);
            let fc = cost(problem, &cand);
            if fc < value - 1e-12 {
                self.eta = (self.eta * 1.5).min(4.0);
                let state = state.param(cand).cost(fc);
                return if value - fc > 1e-12 {
                    Ok((state, None))
                } else {
                    converged(state)
                };
            }
            self.eta *= 0.5;
        }
        converged(state.param(w))
    }
}

/// Pattern search over pairwise transfers; one iteration is one pass over
/// all pairs (i, j) at the current transfer size, which shrinks after a pass
/// without improvement (or `MAX_PASSES` passes).
struct PairwiseTransfer<'a> {
    bounds: &'a Bounds,
    steps: &'a [f64],
    step: usize,
    passes: usize,
}

const MAX_PASSES: usize = 200;

impl<'o> Solver<Cost<'o>, Iter> for PairwiseTransfer<'_> {
    fn name(&self) -> &str {
        "pairwise transfer"
    }

    fn next_iter(&mut self, problem: &mut Problem<Cost<'o>>, mut state: Iter) -> Step {
        let mut w = state.take_param().unwrap_or_default();
        let mut value = state.get_cost();
        let (b, step, d) = (self.bounds, self.steps[self.step], w.len());
        let mut improved = false;
        for i in 0..d {
            for j in 0..d {
                if i == j {
                    continue;
                }
                let delta = step.min(w[i] - b.lo[i]).min(b.hi[j] - w[j]);
                if delta <= 1e-15 {
                    continue;
                }
                let (wi, wj) = (w[i], w[j]);
                w[i] = wi - delta;
                w[j] = wj + delta;
                let f = cost(problem, &w);
                if f < value - 1e-12 {
                    value = f;
                    improved = true;
                } else {
                    w[i] = wi;
                    w[j] = wj;
                }
            }
        }
        self.passes += 1;
        if !improved || self.passes == MAX_PASSES {
            self.step += 1;
            self.passes = 0;
        }
        Ok((state.param(w).cost(value), None))
    }

    fn terminate(&mut self, _state: &Iter) -> TerminationStatus {
        if self.step >= self.steps.len() {
            TerminationStatus::Terminated(TerminationReason::SolverConverged)
        } else {
            TerminationStatus::NotTerminated
        }
    }
}

/// Run `solver` from `run`'s point; `run` takes its end point, value and
/// evaluation count.
fn execute<'o, S: Solver<Cost<'o>, Iter>>(
    obj: &'o Objective<'o>,
    solver: S,
    max_iters: u64,
    run: &mut Run,
) -> Result<()> {
    let w = std::mem::take(&mut run.w);
    let value = run.value;
    let res = Executor::new(Cost(obj), solver)
        .configure(|s| s.param(w).cost(value).max_iters(max_iters).counting(true))
        .timer(false)
        .run()
        .map_err(|e| Error::invalid(format!("exact: {e}")))?;
    let mut state = res.state;
    run.value = state.get_cost();
    run.evals += state
        .get_func_counts()
        .get("cost_count")
        .copied()
        .unwrap_or(0) as usize;
    run.w = state
        .take_param()
        .ok_or_else(|| Error::invalid("exact: the solver lost its point"))?;
    Ok(())
}

impl Exact {
    fn solve(&self, obj: &Objective, b: &Bounds, w: Vec<f64>) -> Result<Run> {
        let value = obj.value(&w);
        let mut run = Run { w, value, evals: 1 };
        let md = MirrorDescent {
            bounds: b,
            fd_step: self.fd_step,
            eta: 0.5,
        };
        execute(obj, md, self.max_iters as u64, &mut run)?;
        let transfer = PairwiseTransfer {
            bounds: b,
            steps: &self.transfer_steps,
            step: 0,
            passes: 0,
        };
        execute(obj, transfer, u64::MAX, &mut run)?;
        Ok(run)
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
        // Starts are independent; rayon keeps their order in the result.
        let runs: Vec<Run> = starts
            .into_par_iter()
            .map(|w| self.solve(&obj, ctx.bounds, w))
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
        // argmin's executor counted every law evaluation of every start.
        let evals = p.details["law_evaluations"].as_u64().unwrap();
        assert!(evals > 8 * 20, "{evals}");
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
