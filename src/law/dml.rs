//! The Data Mixing Law (`dml`, Ye et al. 2024): L(r) = c + k·exp(Σ_j t_j·r_j),
//! one law per target. Fit with argmin's L-BFGS (More–Thuente line search) on
//! a Huber loss — robust to the odd diverged proxy — from several starts;
//! the start with the lowest final loss wins.
//!
//! Parameters are θ = (c, κ = ln k, t_1…t_d). Proportions sum to 1, so
//! (κ, t) and (κ − a, t + a) predict the same everywhere on the simplex; a
//! tiny ridge on t (`ridge`, default 1e-6) picks the smallest such t.
//!
//! Starts: the first ones put the floor c below the smallest observed loss at
//! a few distances and set (κ, t) by least squares of ln(y − c) on r (the law
//! is linear there); the rest perturb those with seeded Gaussian noise.

use super::linear::LinearLaw;
use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::{Error, Result};
use crate::params::{ensure, Hyperparams};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmlLaw {
    /// Huber threshold in the target's units (nats): residuals beyond it count linearly.
    pub huber_delta: f64,
    /// Number of L-BFGS starts.
    pub starts: usize,
    /// L-BFGS iterations per start.
    pub max_iters: u64,
    /// Ridge on t (identifiability; see the module note).
    pub ridge: f64,
}

impl Default for DmlLaw {
    fn default() -> Self {
        DmlLaw {
            huber_delta: 0.02,
            starts: 8,
            max_iters: 300,
            ridge: 1e-6,
        }
    }
}

impl Hyperparams for DmlLaw {
    const OWNER: &'static str = "law dml";

    fn validate(&self) -> Result<()> {
        let o = Self::OWNER;
        for (name, v) in [
            ("starts", self.starts as u64),
            ("max_iters", self.max_iters),
        ] {
            ensure(
                (1..=1_000_000).contains(&v),
                o,
                format!("{name} must be a whole number ≥ 1, got {v}"),
            )?;
        }
        ensure(
            self.huber_delta.is_finite() && self.huber_delta > 0.0,
            o,
            format!("huber_delta must be > 0, got {}", self.huber_delta),
        )?;
        ensure(
            self.ridge.is_finite() && self.ridge >= 0.0,
            o,
            format!("ridge must be ≥ 0, got {}", self.ridge),
        )
    }
}

pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(DmlLaw::from_overrides(hyper)?))
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    let f: FittedDml = serde_json::from_value(params.clone())
        .map_err(|e| Error::invalid(format!("dml law params: {e}")))?;
    if f.t.len() != n_domains {
        return Err(Error::invalid(format!(
            "dml law params: {} exponents for {n_domains} domains",
            f.t.len()
        )));
    }
    if !f.c.is_finite() || !f.k.is_finite() || f.t.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("dml law params: c, k and t must be finite"));
    }
    Ok(Box::new(f))
}

/// `predict(r) = c + k·exp(t·r)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedDml {
    pub c: f64,
    pub k: f64,
    pub t: Vec<f64>,
    /// Final Huber objective of the winning start.
    pub loss: f64,
}

impl FittedLaw for FittedDml {
    fn predict(&self, x: &[f64]) -> f64 {
        let e: f64 = self.t.iter().zip(x).map(|(t, r)| t * r).sum();
        self.c + self.k * e.min(EXP_CAP).exp()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Exponents are capped so a wild line-search step gives a huge but finite cost.
const EXP_CAP: f64 = 50.0;

/// The fitting problem for argmin: mean Huber loss + ridge on t.
struct Problem<'a> {
    x: &'a [Vec<f64>],
    y: &'a [f64],
    delta: f64,
    ridge: f64,
}

impl Problem<'_> {
    fn residuals(&self, p: &[f64]) -> impl Iterator<Item = (f64, f64, &Vec<f64>)> + '_ {
        let (c, kappa) = (p[0], p[1]);
        let t = p[2..].to_vec();
        self.x.iter().zip(self.y).map(move |(r, y)| {
            let e = kappa + t.iter().zip(r).map(|(a, b)| a * b).sum::<f64>();
            let ex = e.min(EXP_CAP).exp();
            (c + ex - y, ex, r)
        })
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        let d = self.delta;
        let n = self.y.len() as f64;
        let h: f64 = self
            .residuals(p)
            .map(|(res, _, _)| {
                let a = res.abs();
                if a <= d {
                    0.5 * res * res
                } else {
                    d * (a - 0.5 * d)
                }
            })
            .sum::<f64>()
            / n;
        Ok(h + self.ridge * p[2..].iter().map(|v| v * v).sum::<f64>())
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        let d = self.delta;
        let n = self.y.len() as f64;
        let mut g = vec![0.0; p.len()];
        for (res, ex, r) in self.residuals(p) {
            let dh = res.clamp(-d, d) / n;
            g[0] += dh;
            g[1] += dh * ex;
            for (gj, rj) in g[2..].iter_mut().zip(r) {
                *gj += dh * ex * rj;
            }
        }
        for (gj, tj) in g[2..].iter_mut().zip(&p[2..]) {
            *gj += 2.0 * self.ridge * tj;
        }
        Ok(g)
    }
}

impl DmlLaw {
    /// Start points: floors below min(y) at several distances with (κ, t)
    /// from least squares on ln(y − c), then seeded perturbations of them.
    fn starts(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Vec<Vec<f64>>> {
        let lo = y.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let range = (hi - lo).max(1e-6);
        let mut base = Vec::new();
        for gap in [0.1, 0.5, 2.0] {
            let c = lo - gap * range;
            let z: Vec<f64> = y.iter().map(|v| (v - c).ln()).collect();
            let lin = LinearLaw { alpha: 1e-6 }.fit(x, &z, 0)?;
            let p = lin.params();
            let kappa = p["intercept"].as_f64().unwrap_or(0.0);
            let mut theta = vec![c, kappa];
            theta.extend(
                p["coef"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
                    .unwrap_or_else(|| vec![0.0; x[0].len()]),
            );
            base.push(theta);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, 0.5).map_err(|e| Error::invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(self.starts);
        for s in 0..self.starts {
            let mut theta = base[s % base.len()].clone();
            if s >= base.len() {
                for v in theta[2..].iter_mut() {
                    *v += noise.sample(&mut rng);
                }
                // Keep the start's mean prediction where it was: re-centre κ.
                let mean_e = x
                    .iter()
                    .map(|r| theta[2..].iter().zip(r).map(|(a, b)| a * b).sum::<f64>())
                    .sum::<f64>()
                    / x.len() as f64;
                theta[1] = (y.iter().sum::<f64>() / y.len() as f64 - theta[0])
                    .max(1e-6)
                    .ln()
                    - mean_e;
            }
            out.push(theta);
        }
        Ok(out)
    }
}

impl MixingLaw for DmlLaw {
    fn kind(&self) -> &'static str {
        "dml"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Box<dyn FittedLaw>> {
        super::check_xy(x, y)?;
        let mut best: Option<(f64, Vec<f64>)> = None;
        let mut last_err = String::new();
        for start in self.starts(x, y, seed)? {
            let problem = Problem {
                x,
                y,
                delta: self.huber_delta,
                ridge: self.ridge,
            };
            let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
                .with_tolerance_grad(1e-10)
                .and_then(|s| s.with_tolerance_cost(1e-14))
                .map_err(|e| Error::invalid(format!("law dml: {e}")))?;
            let run = Executor::new(problem, solver)
                .configure(|s| s.param(start).max_iters(self.max_iters))
                .run();
            match run {
                Ok(res) => {
                    let state = res.state();
                    let cost = state.get_best_cost();
                    if let Some(p) = state.get_best_param() {
                        if cost.is_finite() && best.as_ref().is_none_or(|(b, _)| cost < *b) {
                            best = Some((cost, p.clone()));
                        }
                    }
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        let (loss, p) = best.ok_or_else(|| {
            Error::invalid(format!("law dml: every L-BFGS start failed ({last_err})"))
        })?;
        if p.iter().any(|v| !v.is_finite()) || p[1] > EXP_CAP {
            return Err(Error::invalid(
                "law dml: fit diverged (non-finite parameters)",
            ));
        }
        Ok(Box::new(FittedDml {
            c: p[0],
            k: p[1].exp(),
            t: p[2..].to_vec(),
            loss,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn gradient_matches_finite_differences() {
        let x = vec![vec![0.2, 0.8], vec![0.6, 0.4], vec![1.0, 0.0]];
        let y = vec![3.0, 2.5, 2.45];
        let p = Problem {
            x: &x,
            y: &y,
            delta: 0.2,
            ridge: 1e-3,
        };
        let theta = vec![2.0, -0.5, -1.0, 0.3];
        let g = p.gradient(&theta).unwrap();
        for j in 0..theta.len() {
            let h = 1e-6;
            let (mut a, mut b) = (theta.clone(), theta.clone());
            a[j] += h;
            b[j] -= h;
            let fd = (p.cost(&a).unwrap() - p.cost(&b).unwrap()) / (2.0 * h);
            assert!((fd - g[j]).abs() < 1e-6, "param {j}: {fd} vs {}", g[j]);
        }
    }

    #[test]
    fn recovers_a_noiseless_law() {
        let mut rng = StdRng::seed_from_u64(5);
        let x: Vec<Vec<f64>> = (0..150)
            .map(|_| {
                let r: Vec<f64> = (0..3).map(|_| rng.random::<f64>()).collect();
                let s: f64 = r.iter().sum();
                r.iter().map(|v| v / s).collect()
            })
            .collect();
        let truth = FittedDml {
            c: 2.0,
            k: 1.5,
            t: vec![-2.0, 0.5, -0.5],
            loss: 0.0,
        };
        let y: Vec<f64> = x.iter().map(|r| truth.predict(r)).collect();
        let f = DmlLaw::default().fit(&x, &y, 0).unwrap();
        let back: FittedDml = serde_json::from_value(f.params()).unwrap();
        assert!((back.c - 2.0).abs() < 0.02, "{back:?}");
        for r in &x[..20] {
            assert!((f.predict(r) - truth.predict(r)).abs() < 1e-3);
        }
        assert!(load(&f.params(), 3).is_ok() && load(&f.params(), 2).is_err());
    }
}
