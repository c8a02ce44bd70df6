//! Aioli (Chen et al. 2024, "Aioli: A Unified Optimization Framework for
//! Language Model Data Mixing"): a linear dynamic mixing law
//! `L^{t+1} = L^t − A^t p` whose interaction matrix `A` is estimated online.
//!
//! Updates are grouped in rounds of `round_updates` updates. The first
//! `K · lp_sweeps` updates of a round are the LearnParams phase: the interval
//! after update `j` trains on a mixture leaning on domain `j mod K`
//! (`one_hot_factor` on it, the rest spread evenly) and the drop of every
//! domain's validation loss over that interval is added to column `j mod K` of
//! `G`. Because the perturbations are not pure one-hot, `A` is recovered by
//! solving `W a_i = g_i` for every row (`W` the perturbation mixtures). Then the
//! exponentiated-gradient step `p_j ∝ p_j · exp(η Σ_i A_ij)` (or, with `ema`,
//! `p_j ∝ prior_j · exp(η Σ_i Ā_ij)` on the smoothed `Ā`), and the rest of the
//! round trains on `p`.

use super::{float_text, mixture_of, normalize, Average, LossRequest, Observation, OnlinePolicy};
use crate::error::{Error, Result};
use crate::mixture::Mixture;
use crate::params::{ensure, Hyperparams};
use serde::{Deserialize, Serialize};

/// Aioli parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Exponentiated-gradient step size. 1.0: the value the Aioli reference
    /// scripts sweep for their main SlimPajama runs (`for eta in 1`).
    pub eta: f64,
    /// Optional EMA on `A` (weight of the previous estimate). `None` by default:
    /// the plain multiplicative update of Aioli's Algorithm 1; the reference
    /// scripts' smoothed variant uses 0.1.
    pub ema: Option<f64>,
    /// Weight on the favoured domain during a LearnParams interval: 0.75, a
    /// smoothed probe (the Aioli code's `--one_hot_factor`, Chen et al. 2024;
    /// it and mixtera's port default to 1, pure one-hot, which starves the
    /// other domains during the probe).
    pub one_hot_factor: f64,
    /// Passes over the K domains per LearnParams phase (mixtera `lp_sweep` = 1).
    pub lp_sweeps: usize,
    /// Updates per round; 0 = `10 · K · lp_sweeps`, i.e. LearnParams takes 10%
    /// of each round (mixtera's `lp_portion` = 0.1).
    pub round_updates: usize,
    /// Steps sampled from the prior before the first round (Aioli reference
    /// code `prior_steps`, default none → 0).
    pub warmup_steps: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            eta: 1.0,
            ema: None,
            one_hot_factor: 0.75,
            lp_sweeps: 1,
            round_updates: 0,
            warmup_steps: 0,
        }
    }
}

/// Aioli state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aioli {
    params: Params,
    domains: Vec<String>,
    #[serde(with = "float_text::vec")]
    prior: Vec<f64>,
    /// The learned mixture p (trained on outside LearnParams).
    #[serde(with = "float_text::vec")]
    p: Vec<f64>,
    /// What the trainer samples from now (p, or a LearnParams probe).
    #[serde(with = "float_text::vec")]
    sampling: Vec<f64>,
    /// Accumulated loss drops `G[i][j]`: domain i's loss drop while leaning on j.
    #[serde(with = "float_text::vec_vec")]
    graph: Vec<Vec<f64>>,
    #[serde(with = "float_text::opt_vec")]
    ema_graph_colsum: Option<Vec<f64>>,
    /// Validation losses at the previous update.
    #[serde(with = "float_text::opt_vec")]
    prev_losses: Option<Vec<f64>>,
    /// Updates since warmup ended.
    calls: u64,
    rounds_done: u64,
    avg: Average,
}

impl Hyperparams for Params {
    const OWNER: &'static str = "aioli";

    /// The ranges that do not depend on the number of domains (`Aioli::new`
    /// checks the ones that do).
    fn validate(&self) -> Result<()> {
        let o = Self::OWNER;
        ensure(self.eta.is_finite() && self.eta > 0.0, o, "eta must be > 0")?;
        ensure(
            self.ema.is_none_or(|e| (0.0..1.0).contains(&e)),
            o,
            "ema must be in [0, 1)",
        )?;
        ensure(self.lp_sweeps >= 1, o, "lp_sweeps must be >= 1")
    }
}

impl Aioli {
    pub fn new(
        prior: &Mixture,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let params = Params::from_overrides(overrides)?;
        let k = prior.len();
        if k < 2 {
            return Err(Error::invalid("aioli needs at least 2 domains"));
        }
        let f = params.one_hot_factor;
        if !(f > 1.0 / k as f64 && f <= 1.0) {
            return Err(Error::invalid(format!(
                "aioli one_hot_factor must be in (1/K, 1] = ({:.4}, 1], got {f}",
                1.0 / k as f64
            )));
        }
        let n_lp = k * params.lp_sweeps;
        if params.round_updates != 0 && params.round_updates <= n_lp {
            return Err(Error::invalid(format!(
                "aioli round_updates ({}) must exceed K · lp_sweeps = {n_lp} (the LearnParams phase)",
                params.round_updates
            )));
        }
        Ok(Aioli {
            params,
            domains: prior.domains().to_vec(),
            prior: prior.weights().to_vec(),
            p: prior.weights().to_vec(),
            sampling: prior.weights().to_vec(),
            graph: vec![vec![0.0; k]; k],
            ema_graph_colsum: None,
            prev_losses: None,
            calls: 0,
            rounds_done: 0,
            avg: Average::new(k),
        })
    }

    fn n_lp(&self) -> u64 {
        (self.domains.len() * self.params.lp_sweeps) as u64
    }

    fn round_len(&self) -> u64 {
        match self.params.round_updates {
            0 => 10 * self.n_lp(),
            r => r as u64,
        }
    }

    /// The LearnParams probe leaning on domain `j`.
    fn probe(&self, j: usize) -> Vec<f64> {
        let k = self.domains.len();
        let rest = (1.0 - self.params.one_hot_factor) / (k - 1) as f64;
        let mut w = vec![rest; k];
        w[j] = self.params.one_hot_factor;
        w
    }

    /// Recover A from G: every row solves `W a = g` with
    /// `W = (f − r) I + r 11ᵀ`, whose inverse is `(I − r 11ᵀ) / (f − r)`
    /// (rows of W sum to 1). Averages over sweeps.
    fn interaction_matrix(&self) -> Vec<Vec<f64>> {
        let k = self.domains.len();
        let f = self.params.one_hot_factor;
        let r = (1.0 - f) / (k - 1) as f64;
        let sweeps = self.params.lp_sweeps as f64;
        self.graph
            .iter()
            .map(|row| {
                let s: f64 = row.iter().sum::<f64>() / sweeps;
                row.iter().map(|g| (g / sweeps - r * s) / (f - r)).collect()
            })
            .collect()
    }

    /// Position of the update about to be processed within its round.
    fn position(&self) -> u64 {
        self.calls % self.round_len()
    }
}

impl Aioli {
    /// Validate a state read back from disk (see `super::restore`).
    pub(crate) fn checked(self) -> Result<Self> {
        let k = self.domains.len();
        let prior = Mixture::new(self.domains.clone(), self.prior.clone())?;
        Aioli::new(&prior, &self.params.to_overrides()?)?;
        Mixture::new(self.domains.clone(), self.p.clone())?;
        Mixture::new(self.domains.clone(), self.sampling.clone())?;
        let mut lens = vec![("graph", self.graph.len()), ("avg.sum", self.avg.len())];
        lens.extend(self.graph.iter().map(|row| ("graph row", row.len())));
        if let Some(v) = &self.ema_graph_colsum {
            lens.push(("ema_graph_colsum", v.len()));
        }
        if let Some(v) = &self.prev_losses {
            lens.push(("prev_losses", v.len()));
        }
        super::check_lens(k, &lens)?;
        Ok(self)
    }
}

impl OnlinePolicy for Aioli {
    fn name(&self) -> &'static str {
        "aioli"
    }

    fn domains(&self) -> &[String] {
        &self.domains
    }

    fn weights(&self) -> &[f64] {
        &self.sampling
    }

    fn request(&self) -> LossRequest {
        // Losses matter at the start of LearnParams and after each probe interval.
        if self.position() <= self.n_lp() {
            LossRequest::Validation
        } else {
            LossRequest::None
        }
    }

    fn observe(&mut self, obs: &Observation) -> Result<Option<Mixture>> {
        obs.check(&self.domains)?;
        if obs.step < self.params.warmup_steps {
            self.avg.add(&self.p);
            return Ok(None);
        }
        let pos = self.position();
        let n_lp = self.n_lp();
        let losses: Option<Vec<f64>> = obs.losses.iter().copied().collect();
        if pos <= n_lp && losses.is_none() {
            let missing: Vec<&str> = self
                .domains
                .iter()
                .zip(obs.losses)
                .filter(|(_, l)| l.is_none())
                .map(|(d, _)| d.as_str())
                .collect();
            return Err(Error::invalid(format!(
                "aioli needs every domain's validation loss at this update (LearnParams); missing: losses.{}",
                missing.join(", losses.")
            )));
        }
        // Attribute the interval that just ended to the domain it leaned on.
        if pos >= 1 && pos <= n_lp {
            if let (Some(prev), Some(now)) = (&self.prev_losses, &losses) {
                let j = ((pos - 1) as usize) % self.domains.len();
                for (i, row) in self.graph.iter_mut().enumerate() {
                    row[j] += prev[i] - now[i];
                }
            }
        }
        if losses.is_some() {
            self.prev_losses = losses;
        }
        self.calls += 1;
        let changed = if pos < n_lp {
            self.sampling = self.probe((pos as usize) % self.domains.len());
            true
        } else if pos == n_lp {
            let a = self.interaction_matrix();
            let k = self.domains.len();
            let colsum: Vec<f64> = (0..k).map(|j| a.iter().map(|row| row[j]).sum()).collect();
            let eta = self.params.eta;
            let mut w: Vec<f64> = match self.params.ema {
                Some(e) => {
                    let smoothed: Vec<f64> = match &self.ema_graph_colsum {
                        None => colsum,
                        Some(prev) => colsum
                            .iter()
                            .zip(prev)
                            .map(|(c, p)| (1.0 - e) * c + e * p)
                            .collect(),
                    };
                    let w = self
                        .prior
                        .iter()
                        .zip(&smoothed)
                        .map(|(p, c)| p.ln() + eta * c)
                        .collect::<Vec<f64>>();
                    self.ema_graph_colsum = Some(smoothed);
                    w
                }
                None => self
                    .p
                    .iter()
                    .zip(&colsum)
                    .map(|(p, c)| p.ln() + eta * c)
                    .collect(),
            };
            // Exponentiate in log space (shifted) so large η·ΣA cannot overflow.
            let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            for x in w.iter_mut() {
                *x = if x.is_finite() { (*x - m).exp() } else { 0.0 };
            }
            normalize(&mut w);
            self.p = w;
            self.sampling = self.p.clone();
            for row in self.graph.iter_mut() {
                row.iter_mut().for_each(|g| *g = 0.0);
            }
            self.rounds_done += 1;
            true
        } else {
            false
        };
        if pos >= n_lp {
            self.avg.add(&self.p);
        }
        Ok(changed.then(|| mixture_of(&self.domains, &self.sampling)))
    }

    fn result(&self) -> Mixture {
        self.avg.mixture(&self.domains, &self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_from_leaning_probes() {
        // If losses move exactly as L' = L − A w over a probe w, G[:, j] = A w_j,
        // and the inversion must return A.
        let prior = Mixture::uniform(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        let mut pol = Aioli::new(&prior, &serde_json::Map::new()).unwrap();
        let a = [[0.3, 0.1, 0.0], [0.05, 0.2, 0.0], [0.0, 0.1, 0.4]];
        for j in 0..3 {
            let w = pol.probe(j);
            for (row, a_row) in pol.graph.iter_mut().zip(&a) {
                row[j] = a_row.iter().zip(&w).map(|(x, y)| x * y).sum();
            }
        }
        let got = pol.interaction_matrix();
        for (g_row, a_row) in got.iter().zip(&a) {
            for (g, x) in g_row.iter().zip(a_row) {
                assert!((g - x).abs() < 1e-12, "{got:?}");
            }
        }
    }
}
