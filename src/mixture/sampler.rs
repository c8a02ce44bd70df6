//! The RegMix candidate sampler: the prior `p` (natural token shares), tempered
//! `p' ∝ p^τ`, a concentration `s` drawn from log-spaced values, `x ~ Dir(s·p')`,
//! rejection of mixtures that would repeat a domain more than `r_max` epochs,
//! tiny weights zeroed, near-duplicates dropped. Used by `sweep` (the proxy
//! mixtures) and by the simulation proposer (the candidates it scores).

use super::Mixture;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};

/// RegMix defaults (DESIGN.md, "Candidate mixtures").
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// τ in p' ∝ p^τ; 0.5 flattens the token shares so small domains get explored.
    pub temperature: f64,
    /// r_max: reject x if x_i > min(r_max · p_i, 1) (at most ~15 epochs of a domain).
    pub max_repetition: f64,
    /// Concentrations s are log-spaced over [lo, hi] with this many values.
    pub concentration_range: (f64, f64),
    pub n_concentrations: usize,
    /// Weights below this are zeroed (then renormalized).
    pub min_weight: f64,
    /// Candidates within this L1 distance of an earlier one are dropped (0 = keep all).
    pub dedup_l1: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.5,
            max_repetition: 15.0,
            concentration_range: (0.1, 5.0),
            n_concentrations: 15,
            min_weight: 2e-4,
            dedup_l1: 1e-5,
        }
    }
}

/// Seeded sampler of candidate mixtures around a prior.
pub struct PriorSampler {
    prior: Mixture,
    tempered: Vec<f64>,
    concentrations: Vec<f64>,
    cfg: SamplerConfig,
    rng: StdRng,
}

impl PriorSampler {
    pub fn new(prior: &Mixture, cfg: SamplerConfig, seed: u64) -> Result<Self> {
        if cfg.temperature <= 0.0 || !cfg.temperature.is_finite() {
            return Err(Error::invalid("sampler temperature must be > 0"));
        }
        if cfg.max_repetition <= 0.0 {
            return Err(Error::invalid("sampler max_repetition must be > 0"));
        }
        let tempered_raw: Vec<f64> = prior
            .weights()
            .iter()
            .map(|p| {
                if *p > 0.0 {
                    p.powf(cfg.temperature)
                } else {
                    0.0
                }
            })
            .collect();
        let z: f64 = tempered_raw.iter().sum();
        let tempered = tempered_raw.iter().map(|t| t / z).collect();
        let (lo, hi) = cfg.concentration_range;
        let n = cfg.n_concentrations.max(1);
        let concentrations = (0..n)
            .map(|k| {
                let f = if n == 1 {
                    0.0
                } else {
                    k as f64 / (n - 1) as f64
                };
                (lo.ln() + f * (hi.ln() - lo.ln())).exp()
            })
            .collect();
        Ok(PriorSampler {
            prior: prior.clone(),
            tempered,
            concentrations,
            cfg,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// One accepted candidate's raw weights (zeroed and renormalized), or None if rejected.
    fn try_one(&mut self) -> Option<Vec<f64>> {
        let s = self.concentrations[self.rng.random_range(0..self.concentrations.len())];
        let mut x: Vec<f64> = self
            .tempered
            .iter()
            .map(|t| {
                if *t <= 0.0 {
                    return 0.0;
                }
                // Gamma(α, 1) draws normalized = Dirichlet(α).
                Gamma::new(s * t, 1.0)
                    .map(|g| g.sample(&mut self.rng))
                    .unwrap_or(0.0)
            })
            .collect();
        let sum: f64 = x.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return None;
        }
        x.iter_mut().for_each(|v| *v /= sum);
        let over_cap = x
            .iter()
            .zip(self.prior.weights())
            .any(|(xi, pi)| *xi > (self.cfg.max_repetition * pi).min(1.0));
        if over_cap {
            return None;
        }
        x.iter_mut()
            .filter(|v| **v < self.cfg.min_weight)
            .for_each(|v| *v = 0.0);
        let sum: f64 = x.iter().sum();
        if sum <= 0.0 {
            return None;
        }
        x.iter_mut().for_each(|v| *v /= sum);
        Some(x)
    }

    /// The next `n` accepted candidates. The sequence depends only on the seed:
    /// the first k of `sample(n)` equal `sample(k)` for the same seed.
    pub fn sample(&mut self, n: usize) -> Result<Vec<Mixture>> {
        let dedup = self.cfg.dedup_l1;
        let rows = self.draw(n, |x, kept| {
            dedup > 0.0
                && kept
                    .iter()
                    .any(|y| x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum::<f64>() <= dedup)
        })?;
        let domains = self.prior.domains().to_vec();
        rows.into_iter()
            .map(|w| Mixture::new(domains.clone(), w))
            .collect()
    }

    /// Candidates as raw weight rows (no dedup check, no `Mixture` per row):
    /// the simulation proposer scores up to millions of these.
    pub fn sample_rows(&mut self, n: usize) -> Result<Vec<Vec<f64>>> {
        self.draw(n, |_, _| false)
    }

    /// Draw until `n` candidates are accepted and not `rejected(candidate, kept)`.
    fn draw(
        &mut self,
        n: usize,
        rejected: impl Fn(&[f64], &[Vec<f64>]) -> bool,
    ) -> Result<Vec<Vec<f64>>> {
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(n);
        let max_tries = 10_000 + n.saturating_mul(2_000);
        let mut tries = 0usize;
        while out.len() < n {
            tries += 1;
            if tries > max_tries {
                return Err(Error::invalid(format!(
                    "prior sampler accepted only {} of {n} mixtures after {max_tries} draws: \
                     the repetition cap ({}× the prior share) rejects nearly everything",
                    out.len(),
                    self.cfg.max_repetition
                )));
            }
            let Some(x) = self.try_one() else { continue };
            if !rejected(&x, &out) {
                out.push(x);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior() -> Mixture {
        Mixture::parse_spec("a=0.6,b=0.3,c=0.1").unwrap()
    }

    #[test]
    fn same_seed_same_samples_and_prefix_stable() {
        let a = PriorSampler::new(&prior(), SamplerConfig::default(), 7)
            .unwrap()
            .sample(20)
            .unwrap();
        let b = PriorSampler::new(&prior(), SamplerConfig::default(), 7)
            .unwrap()
            .sample(5)
            .unwrap();
        assert_eq!(&a[..5], &b[..]);
        let c = PriorSampler::new(&prior(), SamplerConfig::default(), 8)
            .unwrap()
            .sample(5)
            .unwrap();
        assert_ne!(b, c);
    }

    #[test]
    fn respects_repetition_cap_and_min_weight() {
        let cfg = SamplerConfig {
            max_repetition: 2.0,
            ..SamplerConfig::default()
        };
        let p = prior();
        let xs = PriorSampler::new(&p, cfg, 1).unwrap().sample(200).unwrap();
        for x in &xs {
            for (xi, pi) in x.weights().iter().zip(p.weights()) {
                // Renormalizing after zeroing can lift a weight by at most the zeroed mass.
                assert!(
                    *xi <= (2.0 * pi).min(1.0) + 3.0 * 2e-4,
                    "{xi} > cap for {pi}"
                );
                assert!(*xi == 0.0 || *xi >= 2e-4);
            }
        }
    }
}
