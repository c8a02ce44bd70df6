//! The RegMix candidate sampler: the prior `p` (natural token shares), tempered
//! `p' ∝ p^τ`, a concentration `s` drawn from log-spaced values, `x ~ Dir(s·p')`,
//! rejection of mixtures that would repeat a domain more than `r_max` epochs,
//! tiny weights zeroed, near-duplicates dropped. Used by `sweep` (the proxy
//! mixtures) and by the simulation proposer (the candidates it scores).

use super::Mixture;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1, Gamma, Open01, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

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
    concentrations: Vec<f64>,
    /// `gammas[k][i]`: Gamma(s_k · p'_i, 1), built once; `None` where p'_i = 0.
    gammas: Vec<Vec<Option<Gamma<f64>>>>,
    /// The same distributions for the fast path of `sample_rows`.
    fast: Vec<Vec<Option<FastGamma>>>,
    /// One candidate's draws, reused (nearly all candidates are rejected),
    /// and the fast path's exponents.
    scratch: Vec<f64>,
    exponents: Vec<f64>,
    /// The fast path's generator (xoshiro256++: the ChaCha of `rng` was a
    /// sixth of its time), seeded from the same seed.
    fast_rng: Xoshiro256PlusPlus,
    /// r_max · p_i capped at 1: the most a candidate may give domain i.
    caps: Vec<f64>,
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
        let tempered: Vec<f64> = tempered_raw.iter().map(|t| t / z).collect();
        let (lo, hi) = cfg.concentration_range;
        let n = cfg.n_concentrations.max(1);
        let concentrations: Vec<f64> = (0..n)
            .map(|k| {
                let f = if n == 1 {
                    0.0
                } else {
                    k as f64 / (n - 1) as f64
                };
                (lo.ln() + f * (hi.ln() - lo.ln())).exp()
            })
            .collect();
        let gammas = concentrations
            .iter()
            .map(|s: &f64| {
                tempered
                    .iter()
                    .map(|t: &f64| (*t > 0.0).then(|| Gamma::new(s * t, 1.0).ok()).flatten())
                    .collect()
            })
            .collect();
        let fast = concentrations
            .iter()
            .map(|s| tempered.iter().map(|t| FastGamma::new(s * t)).collect())
            .collect();
        let caps = prior
            .weights()
            .iter()
            .map(|p| (cfg.max_repetition * p).min(1.0))
            .collect();
        Ok(PriorSampler {
            prior: prior.clone(),
            concentrations,
            gammas,
            fast,
            scratch: vec![0.0; prior.len()],
            exponents: vec![0.0; prior.len()],
            fast_rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            caps,
            cfg,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// One accepted candidate's raw weights (zeroed and renormalized), or
    /// None if rejected. `fast` picks the gamma sampler (see `FastGamma`).
    fn try_one(&mut self, fast: bool) -> Option<Vec<f64>> {
        // Gamma(α, 1) draws normalized = Dirichlet(α).
        if fast {
            let k = self.fast_rng.random_range(0..self.concentrations.len());
            fast_dirichlet(
                &self.fast[k],
                &mut self.fast_rng,
                &mut self.scratch,
                &mut self.exponents,
            );
        } else {
            let k = self.rng.random_range(0..self.concentrations.len());
            let rng = &mut self.rng;
            for (v, g) in self.scratch.iter_mut().zip(&self.gammas[k]) {
                *v = g.as_ref().map_or(0.0, |g| g.sample(rng));
            }
        }
        let x = &self.scratch;
        let sum: f64 = x.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return None;
        }
        // Check the caps before touching the weights: x_i/sum > cap_i (the
        // fast path multiplies instead: the same test up to the last bit).
        let over = if fast {
            x.iter().zip(&self.caps).any(|(xi, cap)| *xi > *cap * sum)
        } else {
            x.iter().zip(&self.caps).any(|(xi, cap)| *xi / sum > *cap)
        };
        if over {
            return None;
        }
        let mut x: Vec<f64> = x.iter().map(|v| v / sum).collect();
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
        let rows = self.draw(n, false, |x, kept| {
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
    /// the simulation proposer scores up to millions of these. Same
    /// distribution as `sample`, drawn with the faster `FastGamma` (so not
    /// the same rows as `sample` for a seed).
    pub fn sample_rows(&mut self, n: usize) -> Result<Vec<Vec<f64>>> {
        self.draw(n, true, |_, _| false)
    }

    /// Draw until `n` candidates are accepted and not `rejected(candidate, kept)`.
    fn draw(
        &mut self,
        n: usize,
        fast: bool,
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
            let Some(x) = self.try_one(fast) else {
                continue;
            };
            if !rejected(&x, &out) {
                out.push(x);
            }
        }
        Ok(out)
    }
}

/// Gamma(α, 1) by Marsaglia and Tsang's method with its constants computed
/// once, and for α < 1 the boost G(α) = G(α + 1) · U^(1/α) computed as
/// exp(−E/α) with E ~ Exp(1) (= −ln U in distribution), skipping the
/// G(α + 1) draw when the factor underflows.
/// (rand_distr's `Gamma` draws the same distribution; here `powf` was 47% of
/// the simulation proposer's time with 64 domains, where most shapes are
/// tiny.) The sweep keeps rand_distr's exact draws, so its mixtures do not
/// change.
#[derive(Debug, Clone, Copy)]
struct FastGamma {
    /// Marsaglia–Tsang for shape a ≥ 1: d = a − 1/3, c = 1/√(9d).
    d: f64,
    c: f64,
    /// 1/α for α < 1, else 0.
    inv_shape: f64,
}

impl FastGamma {
    fn new(shape: f64) -> Option<FastGamma> {
        if !(shape > 0.0 && shape.is_finite()) {
            return None;
        }
        let (a, inv_shape) = if shape < 1.0 {
            (shape + 1.0, 1.0 / shape)
        } else {
            (shape, 0.0)
        };
        let d = a - 1.0 / 3.0;
        Some(FastGamma {
            d,
            c: 1.0 / (9.0 * d).sqrt(),
            inv_shape,
        })
    }

    fn large<R: Rng>(&self, rng: &mut R) -> f64 {
        loop {
            let x: f64 = rng.sample(StandardNormal);
            let v_cbrt = 1.0 + self.c * x;
            if v_cbrt <= 0.0 {
                continue;
            }
            let v = v_cbrt * v_cbrt * v_cbrt;
            let u: f64 = rng.sample(Open01);
            let x2 = x * x;
            if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + self.d * (1.0 - v + v.ln()) {
                return self.d * v;
            }
        }
    }

    /// The exponent t of the boost factor e^t (α < 1 only): ln U = −E for
    /// E ~ Exp(1), a ziggurat draw with no logarithm.
    fn exponent<R: Rng>(&self, rng: &mut R) -> f64 {
        let e: f64 = rng.sample(Exp1);
        -e * self.inv_shape
    }
}

/// G(α+1) for α+1 ≤ 2 exceeds this with probability below 1e-24.
const LN_GAMMA_BOUND: f64 = 4.1; // ln 60
/// Components below 2^-60 of the total do not change the normalized weights
/// at f64 precision (and fall far under `min_weight`).
const LN_NEGLIGIBLE: f64 = -41.6; // ln 2^-60

/// Unnormalized Dirichlet draws `x` (one per domain) from `gammas`. For the
/// tiny shapes of many-domain priors the boost exponents are drawn first;
/// the component with the largest one is completed and bounds the total from
/// below, and components that cannot reach 2^-60 of it are set to 0 without
/// drawing their G(α + 1) or taking an exponential (most of them, at small
/// concentrations). Exact up to those negligible components.
fn fast_dirichlet<R: Rng>(gammas: &[Option<FastGamma>], rng: &mut R, x: &mut [f64], t: &mut [f64]) {
    let mut lead: Option<usize> = None;
    for (i, g) in gammas.iter().enumerate() {
        match g {
            None => {
                x[i] = 0.0;
                t[i] = f64::NEG_INFINITY;
            }
            Some(g) if g.inv_shape == 0.0 => {
                x[i] = g.large(rng);
                t[i] = f64::NEG_INFINITY;
            }
            Some(g) => {
                t[i] = g.exponent(rng);
                x[i] = f64::NAN; // pending
                if lead.is_none_or(|j| t[i] > t[j]) {
                    lead = Some(i);
                }
            }
        }
    }
    let Some(lead) = lead else { return };
    let complete = |i: usize, rng: &mut R| {
        gammas[i]
            .as_ref()
            .map_or(0.0, |g| g.large(rng) * t[i].exp())
    };
    x[lead] = complete(lead, rng);
    let floor = x
        .iter()
        .filter(|v| !v.is_nan())
        .fold(0.0f64, |m, &v| m.max(v));
    let cut = if floor > 0.0 {
        floor.ln() + LN_NEGLIGIBLE - LN_GAMMA_BOUND
    } else {
        f64::NEG_INFINITY
    };
    for i in 0..x.len() {
        if x[i].is_nan() {
            // e^t below 2^-1074 is 0 whatever G(α + 1) is.
            x[i] = if t[i] < cut || t[i] < -750.0 {
                0.0
            } else {
                complete(i, rng)
            };
        }
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
    fn fast_gamma_matches_the_gamma_distribution() {
        // Mean α and variance α of Gamma(α, 1), for tiny, small and large shapes.
        let mut rng = StdRng::seed_from_u64(5);
        for alpha in [0.02, 0.3, 1.0, 2.5, 9.0] {
            let g = [FastGamma::new(alpha)];
            let n = 200_000;
            let (mut x, mut t) = ([0.0], [0.0]);
            let xs: Vec<f64> = (0..n)
                .map(|_| {
                    fast_dirichlet(&g, &mut rng, &mut x, &mut t);
                    x[0]
                })
                .collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Standard error of the mean is sqrt(α/n); of the variance ~ sqrt(6α²/n) for small α.
            assert!(
                (mean - alpha).abs() < 6.0 * (alpha / n as f64).sqrt(),
                "α {alpha}: mean {mean}"
            );
            assert!(
                (var - alpha).abs() < 0.05 * alpha + 0.01,
                "α {alpha}: var {var}"
            );
        }
    }

    #[test]
    fn fast_rows_follow_the_same_distribution_as_sample() {
        // Mean weight of each domain over many candidates: both paths agree.
        let p = prior();
        let mean = |rows: Vec<Vec<f64>>| -> Vec<f64> {
            let n = rows.len() as f64;
            (0..3)
                .map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / n)
                .collect()
        };
        let cfg = SamplerConfig {
            dedup_l1: 0.0,
            ..SamplerConfig::default()
        };
        let exact: Vec<Vec<f64>> = PriorSampler::new(&p, cfg.clone(), 1)
            .unwrap()
            .sample(20_000)
            .unwrap()
            .into_iter()
            .map(|m| m.weights().to_vec())
            .collect();
        let fast = PriorSampler::new(&p, cfg, 2)
            .unwrap()
            .sample_rows(20_000)
            .unwrap();
        for (a, b) in mean(exact).iter().zip(mean(fast)) {
            assert!((a - b).abs() < 0.01, "{a} vs {b}");
        }
    }

    #[test]
    fn fast_rows_are_seeded_and_match_sample_on_many_domains() {
        // 64 domains with uneven shares: most Dirichlet shapes are tiny, so
        // the fast path skips the negligible components' draws.
        let names: Vec<String> = (0..64).map(|i| format!("d{i}")).collect();
        let raw: Vec<f64> = (0..64)
            .map(|i| 1.0 + (i % 7) as f64 * (i % 5) as f64)
            .collect();
        let z: f64 = raw.iter().sum();
        let p = Mixture::new(names, raw.iter().map(|r| r / z).collect()).unwrap();
        let cfg = SamplerConfig {
            dedup_l1: 0.0,
            ..SamplerConfig::default()
        };
        let rows = |seed: u64, n: usize| {
            PriorSampler::new(&p, cfg.clone(), seed)
                .unwrap()
                .sample_rows(n)
                .unwrap()
        };
        let a = rows(3, 20_000);
        assert_eq!(a, rows(3, 20_000), "same seed, same rows");
        assert_ne!(a[..10], rows(4, 10)[..], "another seed, other rows");
        for r in &a {
            assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        let exact: Vec<Vec<f64>> = PriorSampler::new(&p, cfg.clone(), 5)
            .unwrap()
            .sample(20_000)
            .unwrap()
            .into_iter()
            .map(|m| m.weights().to_vec())
            .collect();
        // Per domain: the mean weight and the share of rows that zero it.
        let stats = |rows: &[Vec<f64>], i: usize| {
            let n = rows.len() as f64;
            let mean = rows.iter().map(|r| r[i]).sum::<f64>() / n;
            let zero = rows.iter().filter(|r| r[i] == 0.0).count() as f64 / n;
            (mean, zero)
        };
        for i in 0..64 {
            let ((ma, za), (mb, zb)) = (stats(&a, i), stats(&exact, i));
            assert!(
                (ma - mb).abs() < 0.1 * mb + 2e-4,
                "domain {i}: mean {ma} vs {mb}"
            );
            assert!(
                (za - zb).abs() < 0.03,
                "domain {i}: zero share {za} vs {zb}"
            );
        }
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
