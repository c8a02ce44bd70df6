//! ADO-style adaptive mixing (Jiang et al. 2024, "Adaptive Data Optimization:
//! Dynamic Sample Selection with Scaling Laws").
//!
//! Each domain's training loss is modelled as a power law in the tokens seen
//! from it, `L_k(n) = ε_k + β_k n^{−α_k}`, refit every few of its new points
//! (staggered across domains) on a bounded history. Its slope
//! `−dL_k/dn = α_k (L̂_k(n) − ε_k) / n` forecasts how fast the domain still
//! learns. With a credit score `h_k` (an EMA of the domain's recent sampling
//! weight; ADO's credit assignment) the preference is
//! `ρ_k ∝ μ_k · h_k · (−dL_k/dn)` (μ the prior), and the policy moves a step
//! toward it: `π ← (1 − s) π + s ρ`, floored at `min_weight_of_uniform / K`.
//!
//! Fitting: for a grid of floors ε (fractions of the lowest observed loss),
//! ordinary least squares of `ln(L − ε)` on `ln n`; the ε with the smallest
//! squared residual wins: a few microseconds per domain (see `mixopt online
//! --bench`), where the ADO code runs a multi-start nonlinear fit every few
//! hundred steps.

use super::{float_text, mixture_of, normalize, Average, LossRequest, Observation, OnlinePolicy};
use crate::error::{Error, Result};
use crate::mixture::Mixture;
use crate::params::{ensure, Hyperparams};
use serde::{Deserialize, Serialize};

/// Fractions of the lowest observed loss tried as the irreducible floor ε.
const EPS_GRID: [f64; 10] = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95];

/// ADO parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// EMA weight of the newest policy in the credit score h (mixtera's ADO
    /// implementation, `gamma1` = 0.1).
    pub credit_ema: f64,
    /// Step of the policy toward the new preference ρ. ADO time-averages its
    /// policy; 0.1 (our choice) gives it a memory of ~10 updates.
    pub step: f64,
    /// Floor on every domain's weight so each keeps being observed; ADO keeps a
    /// minimum sampling probability, its value is our choice (1% of uniform).
    pub min_weight_of_uniform: f64,
    /// Points per domain before its law is fit (and ADO leaves the prior).
    /// 8 (our choice): three parameters need a handful of points beyond them.
    pub min_points: usize,
    /// History kept per domain; when full, every other point is dropped, which
    /// keeps the history spread over the whole run (our choice: 32).
    pub max_points: usize,
    /// Refit a domain's law every this many of its new points, staggered across
    /// domains. ADO refits its laws periodically, not every step; 4 (our
    /// choice) keeps an update for 20 domains well under 100 µs.
    pub refit_every: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            credit_ema: 0.1,
            step: 0.1,
            min_weight_of_uniform: 0.01,
            min_points: 8,
            max_points: 32,
            refit_every: 4,
        }
    }
}

/// One domain's fitted law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    pub eps: f64,
    pub beta: f64,
    pub alpha: f64,
}

impl PowerLaw {
    pub fn predict(&self, n: f64) -> f64 {
        self.eps + self.beta * n.powf(-self.alpha)
    }

    /// −dL/dn at `n` (≥ 0).
    pub fn neg_slope(&self, n: f64) -> f64 {
        (self.alpha * (self.predict(n) - self.eps) / n).max(0.0)
    }
}

/// Fit `L = ε + β n^{−α}` to `(ln n, L)` points (see the module comment).
pub fn fit_power_law(ln_n: &[f64], loss: &[f64]) -> Option<PowerLaw> {
    let m = ln_n.len();
    if m < 3 {
        return None;
    }
    let lmin = loss.iter().cloned().fold(f64::INFINITY, f64::min);
    let mx = ln_n.iter().sum::<f64>() / m as f64;
    let sxx: f64 = ln_n.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let mut best: Option<(f64, PowerLaw)> = None;
    let mut y = vec![0.0f64; m];
    for frac in EPS_GRID {
        let eps = frac * lmin;
        let mut my = 0.0;
        for (yi, l) in y.iter_mut().zip(loss) {
            *yi = (l - eps).max(1e-12).ln();
            my += *yi;
        }
        my /= m as f64;
        let sxy: f64 = ln_n
            .iter()
            .zip(y.iter())
            .map(|(x, yi)| (x - mx) * (yi - my))
            .sum();
        let slope = sxy / sxx;
        let icpt = my - slope * mx;
        let sse: f64 = ln_n
            .iter()
            .zip(y.iter())
            .map(|(x, yi)| {
                let r = yi - (icpt + slope * x);
                r * r
            })
            .sum();
        let law = PowerLaw {
            eps,
            beta: icpt.exp(),
            alpha: -slope,
        };
        if best.as_ref().is_none_or(|(s, _)| sse < *s) {
            best = Some((sse, law));
        }
    }
    best.map(|(_, l)| l)
}

impl Hyperparams for Params {
    const OWNER: &'static str = "ado";

    fn validate(&self) -> Result<()> {
        let o = Self::OWNER;
        for (what, x) in [
            ("credit_ema", self.credit_ema),
            ("step", self.step),
            ("min_weight_of_uniform", self.min_weight_of_uniform),
        ] {
            ensure(
                (0.0..=1.0).contains(&x),
                o,
                format!("{what} must be in [0, 1], got {x}"),
            )?;
        }
        ensure(self.refit_every >= 1, o, "refit_every must be >= 1")?;
        ensure(
            self.min_points >= 3
                && self.max_points >= 2 * self.min_points
                && self.max_points <= 256,
            o,
            format!(
                "needs 3 <= min_points ({}) and 2·min_points <= max_points ({}) <= 256",
                self.min_points, self.max_points
            ),
        )
    }
}

/// ADO state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ado {
    params: Params,
    domains: Vec<String>,
    #[serde(with = "float_text::vec")]
    prior: Vec<f64>,
    #[serde(with = "float_text::vec")]
    pi: Vec<f64>,
    /// Credit scores h.
    #[serde(with = "float_text::vec")]
    credit: Vec<f64>,
    /// Per domain: ln(tokens) of each kept point.
    #[serde(with = "float_text::vec_vec")]
    hist_ln_n: Vec<Vec<f64>>,
    /// Per domain: the loss of each kept point.
    #[serde(with = "float_text::vec_vec")]
    hist_loss: Vec<Vec<f64>>,
    /// Per domain: the fitted law as `[ε, β, α]`, empty before the first fit.
    #[serde(with = "float_text::vec_vec")]
    laws: Vec<Vec<f64>>,
    /// Per domain: points ever recorded (the history is decimated, this is not).
    n_points: Vec<u64>,
    /// Latest token count per domain.
    #[serde(with = "float_text::vec")]
    tokens: Vec<f64>,
    avg: Average,
}

impl Ado {
    pub fn new(
        prior: &Mixture,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let params = Params::from_overrides(overrides)?;
        let k = prior.len();
        Ok(Ado {
            params,
            domains: prior.domains().to_vec(),
            prior: prior.weights().to_vec(),
            pi: prior.weights().to_vec(),
            credit: prior.weights().to_vec(),
            hist_ln_n: vec![Vec::new(); k],
            hist_loss: vec![Vec::new(); k],
            laws: vec![Vec::new(); k],
            n_points: vec![0; k],
            tokens: vec![0.0; k],
            avg: Average::new(k),
        })
    }

    /// The current fitted law of domain `k` (none before `min_points` points).
    pub fn law(&self, k: usize) -> Option<PowerLaw> {
        match self.laws[k][..] {
            [eps, beta, alpha] => Some(PowerLaw { eps, beta, alpha }),
            _ => None,
        }
    }
}

impl Ado {
    /// Validate a state read back from disk (see `super::restore`).
    pub(crate) fn checked(self) -> Result<Self> {
        let k = self.domains.len();
        let prior = Mixture::new(self.domains.clone(), self.prior.clone())?;
        Ado::new(&prior, &self.params.to_overrides()?)?;
        Mixture::new(self.domains.clone(), self.pi.clone())?;
        super::check_lens(
            k,
            &[
                ("credit", self.credit.len()),
                ("hist_ln_n", self.hist_ln_n.len()),
                ("hist_loss", self.hist_loss.len()),
                ("laws", self.laws.len()),
                ("n_points", self.n_points.len()),
                ("tokens", self.tokens.len()),
                ("avg.sum", self.avg.len()),
            ],
        )?;
        for (i, (n, l)) in self.hist_ln_n.iter().zip(&self.hist_loss).enumerate() {
            if n.len() != l.len() || n.len() > self.params.max_points {
                return Err(Error::invalid(format!(
                    "history of {:?}: {} token counts, {} losses (at most {} points)",
                    self.domains[i],
                    n.len(),
                    l.len(),
                    self.params.max_points
                )));
            }
        }
        if let Some(l) = self.laws.iter().find(|l| !(l.is_empty() || l.len() == 3)) {
            return Err(Error::invalid(format!(
                "field laws: a law has {} numbers, not 3",
                l.len()
            )));
        }
        Ok(self)
    }
}

impl OnlinePolicy for Ado {
    fn name(&self) -> &'static str {
        "ado"
    }

    fn domains(&self) -> &[String] {
        &self.domains
    }

    fn weights(&self) -> &[f64] {
        &self.pi
    }

    fn request(&self) -> LossRequest {
        LossRequest::Training
    }

    fn observe(&mut self, obs: &Observation) -> Result<Option<Mixture>> {
        obs.check(&self.domains)?;
        for (i, d) in self.domains.iter().enumerate() {
            if obs.losses[i].is_some() && obs.tokens[i].is_none() {
                return Err(Error::invalid(format!(
                    "ado needs tokens.{d} (cumulative tokens seen) wherever losses.{d} is given"
                )));
            }
            if let Some(n) = obs.tokens[i] {
                if n < self.tokens[i] {
                    return Err(Error::invalid(format!(
                        "tokens.{d} went down ({n} < {}): token counts are cumulative",
                        self.tokens[i]
                    )));
                }
            }
        }
        let k = self.domains.len();
        for i in 0..k {
            if let Some(n) = obs.tokens[i] {
                self.tokens[i] = n;
            }
            if let (Some(l), Some(n)) = (obs.losses[i], obs.tokens[i]) {
                if n >= 1.0 {
                    if self.hist_loss[i].len() >= self.params.max_points {
                        let keep = |v: &mut Vec<f64>| {
                            let kept: Vec<f64> = v.iter().copied().step_by(2).collect();
                            *v = kept;
                        };
                        keep(&mut self.hist_ln_n[i]);
                        keep(&mut self.hist_loss[i]);
                    }
                    self.hist_ln_n[i].push(n.ln());
                    self.hist_loss[i].push(l);
                    self.n_points[i] += 1;
                    let due = (self.n_points[i] + i as u64).is_multiple_of(self.params.refit_every);
                    if self.hist_loss[i].len() >= self.params.min_points
                        && (self.laws[i].is_empty() || due)
                    {
                        if let Some(law) = fit_power_law(&self.hist_ln_n[i], &self.hist_loss[i]) {
                            self.laws[i] = vec![law.eps, law.beta, law.alpha];
                        }
                    }
                }
            }
        }
        let laws: Vec<Option<PowerLaw>> = (0..k).map(|i| self.law(i)).collect();
        if laws.iter().any(Option::is_none) {
            // Not every domain has a law yet: stay on the prior.
            self.avg.add(&self.pi);
            return Ok(None);
        }
        let g = self.params.credit_ema;
        for (h, p) in self.credit.iter_mut().zip(&self.pi) {
            *h = g * p + (1.0 - g) * *h;
        }
        let mut rho: Vec<f64> = (0..k)
            .map(|i| {
                let slope = laws[i].map_or(0.0, |l| l.neg_slope(self.tokens[i].max(1.0)));
                let v = self.prior[i] * self.credit[i] * slope;
                if v.is_finite() {
                    v
                } else {
                    0.0
                }
            })
            .collect();
        normalize(&mut rho);
        let s = self.params.step;
        let floor = self.params.min_weight_of_uniform / k as f64;
        for (p, r) in self.pi.iter_mut().zip(&rho) {
            *p = ((1.0 - s) * *p + s * r).max(floor);
        }
        normalize(&mut self.pi);
        self.avg.add(&self.pi);
        Ok(Some(mixture_of(&self.domains, &self.pi)))
    }

    fn result(&self) -> Mixture {
        self.avg.mixture(&self.domains, &self.pi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_clean_power_law() {
        // L = 1.5 + 20 n^-0.3 on n = 1e3 … 1e6: ε = 0.5·lmin is not on the grid
        // exactly, but the slope at the last point must be close.
        let truth = PowerLaw {
            eps: 1.5,
            beta: 20.0,
            alpha: 0.3,
        };
        let ns: Vec<f64> = (0..24).map(|i| 1e3 * 10f64.powf(i as f64 / 8.0)).collect();
        let ln_n: Vec<f64> = ns.iter().map(|n| n.ln()).collect();
        let loss: Vec<f64> = ns.iter().map(|&n| truth.predict(n)).collect();
        let law = fit_power_law(&ln_n, &loss).unwrap();
        let n = *ns.last().unwrap();
        let rel = (law.neg_slope(n) - truth.neg_slope(n)).abs() / truth.neg_slope(n);
        assert!(rel < 0.2, "{law:?} slope off by {rel}");
    }
}
