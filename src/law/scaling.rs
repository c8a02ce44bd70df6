//! The scale-aware law (`scaling`): loss in proportions *and* tokens, fitted
//! on every checkpoint of every proxy run, then evaluated at the target
//! model's token budget (`at_tokens`).
//!
//! One component per metric the target uses (each domain's loss is a law of
//! its own, as in Data Mixing Laws, Ye et al. 2024): training on a mixture w
//! for n tokens gives domain m an *effective* amount of its kind of data,
//! n·s_m(w) with s_m(w) = Σ_j T_mj·w_j — its own data and whatever transfers
//! from the others — and its loss falls as a power law in it:
//!
//!   L_m(w, n) = E_m + (n/n_ref · Σ_j T_mj·w_j)^(−α_m),   T_mj = exp(τ_mj) > 0.
//!
//! (The power law's scale is absorbed into T.) The target is the weighted sum
//! of components. Because w and n enter only through n·s_m(w), a concentrated
//! mixture seen early informs a diluted one seen late: the checkpoints of a
//! short proxy sweep carry the token axis. Fitted per component with argmin's
//! L-BFGS on a Huber loss from several starts, as `dml`.
//!
//! Parameters per component θ = (e, a, τ_1…τ_d): E = y_min·σ(e) keeps the
//! floor below the lowest observed loss, α = softplus(a) > 0.

use super::{FittedLaw, Target};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::{Deserialize, Serialize};

/// Loss evaluations of proxy runs: point `i` is run `run[i]` with mixture
/// `weights[run[i]]` after `n_tokens[i]` tokens, with one loss per metric.
#[derive(Debug, Clone, Default)]
pub struct ScalePoints {
    pub weights: Vec<Vec<f64>>,
    pub run: Vec<usize>,
    pub n_tokens: Vec<f64>,
    pub metrics: Vec<Vec<f64>>,
}

impl ScalePoints {
    /// The points of the runs in `keep` (run indices renumbered in that order).
    pub fn subset(&self, keep: &[usize]) -> ScalePoints {
        let mut out = ScalePoints {
            weights: keep.iter().map(|&r| self.weights[r].clone()).collect(),
            ..Default::default()
        };
        for (i, &r) in self.run.iter().enumerate() {
            if let Some(new) = keep.iter().position(|&k| k == r) {
                out.run.push(new);
                out.n_tokens.push(self.n_tokens[i]);
                out.metrics.push(self.metrics[i].clone());
            }
        }
        out
    }

    /// Each run's last point (the most tokens): its index.
    pub fn finals(&self) -> Vec<usize> {
        let mut best: Vec<Option<usize>> = vec![None; self.weights.len()];
        for (i, &r) in self.run.iter().enumerate() {
            if best[r].is_none_or(|b| self.n_tokens[i] > self.n_tokens[b]) {
                best[r] = Some(i);
            }
        }
        best.into_iter().flatten().collect()
    }
}

/// Fitting settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingLaw {
    /// Huber threshold (nats).
    pub huber_delta: f64,
    pub max_iters: u64,
    /// Checkpoints before this fraction of a run's tokens are left out: the
    /// first steps (warmup, unigram statistics) follow no power law.
    pub min_fraction: f64,
}

impl Default for ScalingLaw {
    fn default() -> Self {
        ScalingLaw {
            huber_delta: 0.02,
            max_iters: 400,
            min_fraction: 0.25,
        }
    }
}

impl Hyperparams for ScalingLaw {
    const OWNER: &'static str = "law scaling";

    fn validate(&self) -> Result<()> {
        ensure(
            self.huber_delta.is_finite()
                && self.huber_delta > 0.0
                && (0.0..=1.0).contains(&self.min_fraction)
                && self.max_iters >= 1,
            Self::OWNER,
            format!(
                "huber_delta = {}, min_fraction = {}, max_iters = {}: out of range \
                 (huber_delta > 0, min_fraction in [0, 1], max_iters a whole number ≥ 1)",
                self.huber_delta, self.min_fraction, self.max_iters
            ),
        )
    }
}

/// One metric's fitted power law.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub metric: String,
    /// Weight of this metric in the target.
    pub coef: f64,
    /// E: the loss with unlimited data of this kind (at this model size).
    pub floor: f64,
    pub alpha: f64,
    /// T_mj per domain: how much a token of domain j counts for this metric.
    pub transfer: Vec<f64>,
    /// The smallest effective share s(w) among the fitted runs: a mixture
    /// giving this metric less is predicted as if it had this much, so the law
    /// never extrapolates below the data it saw (where a power law blows up).
    #[serde(default)]
    pub min_share: f64,
}

impl Component {
    /// Effective share s(w) = Σ_j T_j·w_j of this metric's kind of data.
    pub fn share(&self, w: &[f64]) -> f64 {
        self.transfer.iter().zip(w).map(|(t, x)| t * x).sum()
    }

    pub fn predict(&self, w: &[f64], n_tokens: f64, n_ref: f64) -> f64 {
        let s = self.share(w).max(self.min_share).max(1e-300);
        self.floor + ((n_tokens / n_ref) * s).powf(-self.alpha)
    }
}

/// The fitted law, evaluated at `at_tokens` by `predict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedScaling {
    pub components: Vec<Component>,
    /// Token count the power laws are normalized by (the largest fitted).
    pub n_ref: f64,
    /// The budget `predict` answers for.
    pub at_tokens: f64,
}

impl FittedScaling {
    /// The target at another token budget.
    pub fn predict_at(&self, w: &[f64], n_tokens: f64) -> f64 {
        self.components
            .iter()
            .map(|c| c.coef * c.predict(w, n_tokens, self.n_ref))
            .sum()
    }
}

impl FittedLaw for FittedScaling {
    fn predict(&self, x: &[f64]) -> f64 {
        self.predict_at(x, self.at_tokens)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let f: FittedScaling = serde_json::from_value(params.clone())
        .map_err(|e| Error::invalid(format!("scaling law params: {e}")))?;
    let finite = |v: f64| v.is_finite();
    let ok = f.components.iter().all(|c| {
        c.transfer.len() == n_domains
            && finite(c.coef)
            && finite(c.floor)
            && finite(c.alpha)
            && c.alpha > 0.0
            && c.transfer.iter().all(|t| finite(*t) && *t >= 0.0)
    });
    if f.components.is_empty() || !ok || !(f.n_ref > 0.0 && f.at_tokens > 0.0) {
        return Err(Error::invalid(format!(
            "scaling law params: need components with {n_domains} finite non-negative transfers, \
             finite floor and alpha > 0, and n_ref, at_tokens > 0"
        )));
    }
    Ok(Box::new(f))
}

/// Large exponents are capped so a wild line-search step stays finite.
const EXP_CAP: f64 = 50.0;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// One component's fitting problem: mean Huber loss over the points.
struct Problem<'a> {
    w: Vec<&'a [f64]>,
    log_n: Vec<f64>,
    y: Vec<f64>,
    y_min: f64,
    delta: f64,
}

impl Problem<'_> {
    /// (prediction, P = power term, u = log effective tokens, s) per point.
    fn eval(&self, p: &[f64], i: usize) -> (f64, f64, f64, f64) {
        let floor = self.y_min * sigmoid(p[0]);
        let alpha = softplus(p[1]);
        let s: f64 = p[2..]
            .iter()
            .zip(self.w[i])
            .map(|(t, x)| t.min(EXP_CAP).exp() * x)
            .sum::<f64>()
            .max(1e-300);
        let u = self.log_n[i] + s.ln();
        let power = (-alpha * u).min(EXP_CAP).exp();
        (floor + power, power, u, s)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        let d = self.delta;
        let total: f64 = (0..self.y.len())
            .map(|i| {
                let r = self.eval(p, i).0 - self.y[i];
                let a = r.abs();
                if a <= d {
                    0.5 * r * r
                } else {
                    d * (a - 0.5 * d)
                }
            })
            .sum();
        Ok(total / self.y.len() as f64)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        let n = self.y.len() as f64;
        let mut g = vec![0.0; p.len()];
        let sig_e = sigmoid(p[0]);
        let alpha = softplus(p[1]);
        let dalpha = sigmoid(p[1]);
        for i in 0..self.y.len() {
            let (pred, power, u, s) = self.eval(p, i);
            let dh = (pred - self.y[i]).clamp(-self.delta, self.delta) / n;
            g[0] += dh * self.y_min * sig_e * (1.0 - sig_e);
            g[1] += dh * (-u * power * dalpha);
            for (j, x) in self.w[i].iter().enumerate() {
                let t = p[2 + j].min(EXP_CAP).exp();
                g[2 + j] += dh * (-alpha * power * t * x / s);
            }
        }
        Ok(g)
    }
}

fn fit_component(
    law: &ScalingLaw,
    points: &ScalePoints,
    keep: &[usize],
    metric: usize,
    n_ref: f64,
) -> Result<Fit> {
    let y: Vec<f64> = keep.iter().map(|&i| points.metrics[i][metric]).collect();
    let y_min = y.iter().copied().fold(f64::INFINITY, f64::min);
    if y_min.is_nan() || y_min <= 0.0 {
        return Err(Error::invalid(
            "law scaling: losses must be positive (a loss floor below the lowest one is fitted)",
        ));
    }
    let d = points.weights[0].len();
    let problem = || Problem {
        w: keep
            .iter()
            .map(|&i| points.weights[points.run[i]].as_slice())
            .collect(),
        log_n: keep
            .iter()
            .map(|&i| (points.n_tokens[i] / n_ref).ln())
            .collect(),
        y: y.clone(),
        y_min,
        delta: law.huber_delta,
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut last_err = String::new();
    // Starts: floors at ~50% and ~12% of the lowest loss, slow and fast decay,
    // no or weak transfer between domains.
    for (e, a, tau) in [
        (0.0, -2.2, -1.0),
        (0.0, -1.0, -3.0),
        (-2.0, -2.2, -1.0),
        (-2.0, -1.0, 0.0),
        (1.0, -2.9, -2.0),
    ] {
        let mut start = vec![e, a];
        start.extend(std::iter::repeat_n(tau, d));
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(1e-10)
            .and_then(|s| s.with_tolerance_cost(1e-14))
            .map_err(|e| Error::invalid(format!("law scaling: {e}")))?;
        match Executor::new(problem(), solver)
            .configure(|s| s.param(start).max_iters(law.max_iters))
            .run()
        {
            Ok(res) => {
                let state = res.state();
                let cost = state.get_best_cost();
                if let Some(p) = state.get_best_param() {
                    if cost.is_finite()
                        && p.iter().all(|v| v.is_finite())
                        && best.as_ref().is_none_or(|(b, _)| cost < *b)
                    {
                        best = Some((cost, p.clone()));
                    }
                }
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    let (_, p) = best.ok_or_else(|| {
        Error::invalid(format!(
            "law scaling: every L-BFGS start failed ({last_err})"
        ))
    })?;
    let transfer: Vec<f64> = p[2..].iter().map(|t| t.min(EXP_CAP).exp()).collect();
    let min_share = keep
        .iter()
        .map(|&i| {
            let w = &points.weights[points.run[i]];
            transfer.iter().zip(w).map(|(t, x)| t * x).sum::<f64>()
        })
        .fold(f64::INFINITY, f64::min);
    Ok(Fit {
        floor: y_min * sigmoid(p[0]),
        alpha: softplus(p[1]),
        transfer,
        min_share,
    })
}

/// One component's fitted parameters.
struct Fit {
    floor: f64,
    alpha: f64,
    transfer: Vec<f64>,
    min_share: f64,
}

/// Fit one component per target term on the points at or after
/// `min_fraction` of each run's tokens; `predict` answers at `at_tokens`.
pub fn fit_scaling(
    law: &ScalingLaw,
    points: &ScalePoints,
    target: &Target,
    at_tokens: f64,
) -> Result<FittedScaling> {
    if points.weights.is_empty() || points.run.is_empty() {
        return Err(Error::invalid("law scaling: no runs to fit"));
    }
    if !(at_tokens.is_finite() && at_tokens > 0.0) {
        return Err(Error::invalid(format!(
            "law scaling: the token budget must be > 0, got {at_tokens}"
        )));
    }
    let mut last_n = vec![0.0f64; points.weights.len()];
    for (i, &r) in points.run.iter().enumerate() {
        last_n[r] = last_n[r].max(points.n_tokens[i]);
    }
    let keep: Vec<usize> = (0..points.run.len())
        .filter(|&i| points.n_tokens[i] >= law.min_fraction * last_n[points.run[i]])
        .collect();
    let n_ref = last_n.iter().copied().fold(0.0, f64::max);
    let mut components = Vec::new();
    for term in target.terms() {
        let fit = fit_component(law, points, &keep, term.index, n_ref)
            .map_err(|e| Error::invalid(format!("{} ({})", e, term.metric)))?;
        components.push(Component {
            metric: term.metric.clone(),
            coef: term.coef,
            floor: fit.floor,
            alpha: fit.alpha,
            transfer: fit.transfer,
            min_share: fit.min_share,
        });
    }
    Ok(FittedScaling {
        components,
        n_ref,
        at_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn truth() -> FittedScaling {
        FittedScaling {
            components: vec![
                Component {
                    metric: "a".into(),
                    coef: 0.5,
                    floor: 1.5,
                    alpha: 0.3,
                    transfer: vec![2.0, 0.2, 0.05],
                    min_share: 0.0,
                },
                Component {
                    metric: "b".into(),
                    coef: 0.5,
                    floor: 2.0,
                    alpha: 0.2,
                    transfer: vec![0.1, 1.5, 0.5],
                    min_share: 0.0,
                },
            ],
            n_ref: 1e6,
            at_tokens: 8e6,
        }
    }

    fn points(seed: u64) -> ScalePoints {
        let t = truth();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = ScalePoints::default();
        for r in 0..40 {
            let raw: Vec<f64> = (0..3).map(|_| rng.random::<f64>().powi(2)).collect();
            let s: f64 = raw.iter().sum();
            p.weights.push(raw.iter().map(|v| v / s).collect());
            for k in 1..=4 {
                let n = 2.5e5 * k as f64;
                p.run.push(r);
                p.n_tokens.push(n);
                p.metrics.push(
                    t.components
                        .iter()
                        .map(|c| c.predict(&p.weights[r], n, t.n_ref))
                        .collect(),
                );
            }
        }
        p
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let pts = points(1);
        let keep: Vec<usize> = (0..pts.run.len()).collect();
        let problem = Problem {
            w: keep
                .iter()
                .map(|&i| pts.weights[pts.run[i]].as_slice())
                .collect(),
            log_n: keep.iter().map(|&i| (pts.n_tokens[i] / 1e6).ln()).collect(),
            y: keep.iter().map(|&i| pts.metrics[i][0]).collect(),
            y_min: 1.9,
            delta: 0.05,
        };
        let theta = vec![0.3, -1.5, 0.2, -1.0, -2.0];
        let g = problem.gradient(&theta).unwrap();
        for j in 0..theta.len() {
            let h = 1e-6;
            let (mut a, mut b) = (theta.clone(), theta.clone());
            a[j] += h;
            b[j] -= h;
            let fd = (problem.cost(&a).unwrap() - problem.cost(&b).unwrap()) / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-6, "param {j}: {fd} vs {}", g[j]);
        }
    }

    #[test]
    fn recovers_a_noiseless_law_and_extrapolates_in_tokens() {
        let pts = points(2);
        let names = vec!["a".to_string(), "b".to_string()];
        let target = Target::parse("mean", &names).unwrap();
        let law = ScalingLaw {
            min_fraction: 0.0,
            ..ScalingLaw::default()
        };
        let f = fit_scaling(&law, &pts, &target, 8e6).unwrap();
        let t = truth();
        // 8× beyond the last checkpoint, on mixtures it saw.
        for w in pts.weights.iter().take(10) {
            let (got, want) = (f.predict(w), t.predict(w));
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
        assert!(load(&f.params(), 3).is_ok() && load(&f.params(), 2).is_err());
    }
}
