//! The RegMix candidate sampler: the prior `p` (natural token shares), tempered
//! `p' ∝ p^τ`, a concentration `s` drawn from log-spaced values, `x ~ Dir(s·p')`,
//! rejection of mixtures that would repeat a domain more than `r_max` epochs,
//! tiny weights zeroed, near-duplicates dropped. Used by `sweep` (the proxy
//! mixtures) and by the simulation proposer (the candidates it scores).
//!
//! With `levels` set (hierarchical names `source:topic[:quality]`), the
//! Dirichlet draw is made level by level instead (Olmix's swarms): a draw
//! over the sources around their summed prior shares, then within each
//! source over its topics around their shares in it, each level with its own
//! temperature and strengths; a leaf's weight is the product down its path.
//! The cap, zeroing and dedup then apply to the leaves as before.

use super::gamma::{fast_dirichlet, FastGamma};
use super::hierarchy::{Levels, SEP};
use super::Mixture;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The sampler's settings. Their defaults (`SamplerConfig::REGMIX`) are the
/// one place mixopt writes RegMix's sampler settings down; `sweep`'s flags and
/// the per-level defaults (`mixture::hierarchy::Level`) take theirs from it.
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
    /// Per-level Dirichlet draws over `source:topic` names (None = one flat draw).
    pub levels: Option<Levels>,
}

impl SamplerConfig {
    /// RegMix's candidate sampler (Liu et al., "RegMix: Data Mixture as
    /// Regression for Language Model Pre-training", ICLR 2025; the settings of
    /// its `mixture_config/synthesize_mixture.py`): τ = 0.5, 15 concentrations
    /// log-spaced over [0.1, 5], at most 15 epochs of a domain, weights under
    /// 2e-4 zeroed, near-duplicates within L1 1e-5 dropped.
    pub const REGMIX: SamplerConfig = SamplerConfig {
        temperature: 0.5,
        max_repetition: 15.0,
        concentration_range: (0.1, 5.0),
        n_concentrations: 15,
        min_weight: 2e-4,
        dedup_l1: 1e-5,
        levels: None,
    };
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::REGMIX
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
    /// The per-level tree when `cfg.levels` is set.
    tree: Option<Node>,
    cfg: SamplerConfig,
    rng: StdRng,
}

/// One node of the per-level tree: its children (leaves or sub-trees),
/// their tempered shares and this level's strengths.
#[derive(Debug, Clone)]
struct Node {
    children: Vec<Child>,
    tempered: Vec<f64>,
    concentrations: Vec<f64>,
}

#[derive(Debug, Clone)]
enum Child {
    Leaf(usize),
    Node(Node),
}

/// `n` values log-spaced over [lo, hi].
fn log_spaced(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let n = n.max(1);
    (0..n)
        .map(|k| {
            let f = if n == 1 {
                0.0
            } else {
                k as f64 / (n - 1) as f64
            };
            (lo.ln() + f * (hi.ln() - lo.ln())).exp()
        })
        .collect()
}

/// p^τ normalized (zeros stay zero; all-zero stays all-zero).
fn temper(p: &[f64], tau: f64) -> Vec<f64> {
    let t: Vec<f64> = p
        .iter()
        .map(|p| if *p > 0.0 { p.powf(tau) } else { 0.0 })
        .collect();
    let z: f64 = t.iter().sum();
    if z > 0.0 {
        t.iter().map(|v| v / z).collect()
    } else {
        t
    }
}

/// The subtree over `members` (indices into `names`) at `depth`.
fn build(
    names: &[Vec<&str>],
    prior: &[f64],
    members: &[usize],
    depth: usize,
    levels: &Levels,
) -> Result<Node> {
    // Children in order of first appearance: a leaf ends at this depth.
    let mut keys: Vec<(String, bool)> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &i in members {
        let leaf = names[i].len() == depth + 1;
        let key = (names[i][depth].to_string(), leaf);
        match keys.iter().position(|k| *k == key) {
            Some(j) => groups[j].push(i),
            None => {
                keys.push(key);
                groups.push(vec![i]);
            }
        }
    }
    let level = levels.at(depth);
    let mut shares: Vec<f64> = groups
        .iter()
        .map(|g| g.iter().map(|&i| prior[i]).sum())
        .collect();
    if depth == 0 && !level.prior.is_empty() {
        for k in level.prior.keys() {
            if !keys.iter().any(|(n, _)| n == k) {
                return Err(Error::invalid(format!(
                    "levels: prior names {k:?}, which is not a source (sources: {})",
                    keys.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        shares = keys
            .iter()
            .map(|(n, _)| level.prior.get(n).copied().unwrap_or(0.0))
            .collect();
    }
    let mut children = Vec::with_capacity(groups.len());
    for ((_, leaf), g) in keys.iter().zip(&groups) {
        children.push(if *leaf && g.len() == 1 {
            Child::Leaf(g[0])
        } else {
            Child::Node(build(names, prior, g, depth + 1, levels)?)
        });
    }
    let (lo, hi) = level.concentration;
    Ok(Node {
        children,
        tempered: temper(&shares, level.temperature),
        concentrations: log_spaced(lo, hi, level.n_concentrations),
    })
}

impl PriorSampler {
    pub fn new(prior: &Mixture, cfg: SamplerConfig, seed: u64) -> Result<Self> {
        if cfg.temperature <= 0.0 || !cfg.temperature.is_finite() {
            return Err(Error::invalid("sampler temperature must be > 0"));
        }
        if cfg.max_repetition <= 0.0 {
            return Err(Error::invalid("sampler max_repetition must be > 0"));
        }
        let tempered = temper(prior.weights(), cfg.temperature);
        let (lo, hi) = cfg.concentration_range;
        let concentrations = log_spaced(lo, hi, cfg.n_concentrations);
        let tree = match &cfg.levels {
            None => None,
            Some(levels) => {
                levels.check()?;
                let names: Vec<Vec<&str>> = prior
                    .domains()
                    .iter()
                    .map(|d| d.split(SEP).collect())
                    .collect();
                let all: Vec<usize> = (0..prior.len()).collect();
                Some(build(&names, prior.weights(), &all, 0, levels)?)
            }
        };
        let gammas = concentrations
            .iter()
            .map(|s| {
                tempered
                    .iter()
                    .map(|t| (*t > 0.0).then(|| Gamma::new(s * t, 1.0).ok()).flatten())
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
            tree,
            cfg,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// One accepted candidate's raw weights (zeroed and renormalized), or
    /// None if rejected. `fast` picks the gamma sampler of flat draws (see
    /// `FastGamma`); per-level draws always use rand_distr's.
    fn try_one(&mut self, fast: bool) -> Option<Vec<f64>> {
        if let Some(tree) = self.tree.take() {
            let mut x = vec![0.0; self.prior.len()];
            draw_tree(&tree, 1.0, &mut x, &mut self.rng);
            self.tree = Some(tree);
            let sum: f64 = x.iter().sum();
            if !(sum > 0.0 && sum.is_finite()) {
                return None;
            }
            x.iter_mut().for_each(|v| *v /= sum);
            return self.finish(x);
        }
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
        let x: Vec<f64> = x.iter().map(|v| v / sum).collect();
        self.finish(x)
    }

    /// Cap, zero tiny weights and renormalize a normalized draw.
    fn finish(&self, mut x: Vec<f64>) -> Option<Vec<f64>> {
        let over_cap = x.iter().zip(&self.caps).any(|(xi, cap)| xi > cap);
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
    /// distribution as `sample`, flat draws made with the faster `FastGamma`
    /// (so not the same rows as `sample` for a seed).
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

/// Fill `out` with the leaves' shares of `mass` under `node`: a Dirichlet
/// draw over its children, recursively.
fn draw_tree(node: &Node, mass: f64, out: &mut [f64], rng: &mut StdRng) {
    let s = node.concentrations[rng.random_range(0..node.concentrations.len())];
    let mut x: Vec<f64> = node
        .tempered
        .iter()
        .map(|t| {
            if *t <= 0.0 {
                return 0.0;
            }
            Gamma::new(s * t, 1.0).map(|g| g.sample(rng)).unwrap_or(0.0)
        })
        .collect();
    let sum: f64 = x.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return;
    }
    x.iter_mut().for_each(|v| *v /= sum);
    for (child, share) in node.children.iter().zip(x) {
        match child {
            Child::Leaf(i) => out[*i] = mass * share,
            Child::Node(n) => draw_tree(n, mass * share, out, rng),
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
    fn per_level_draws_follow_each_level() {
        use crate::mixture::hierarchy::{rollup, Level, Levels};
        let prior = Mixture::parse_spec("a:x=0.3,a:y=0.3,b:x=0.2,b:y=0.1,c=0.1").unwrap();
        // Sources pinned near a manual prior (high strength); topics free.
        let mut top = Level {
            concentration: (1000.0, 1000.0),
            n_concentrations: 1,
            ..Level::default()
        };
        top.prior = [("a".into(), 0.5), ("b".into(), 0.3), ("c".into(), 0.2)].into();
        let levels = Levels {
            levels: vec![
                top,
                Level {
                    concentration: (0.5, 0.5),
                    n_concentrations: 1,
                    temperature: 1.0,
                    ..Level::default()
                },
            ],
        };
        let cfg = SamplerConfig {
            levels: Some(levels),
            temperature: 1.0,
            max_repetition: 100.0,
            ..SamplerConfig::default()
        };
        let xs = PriorSampler::new(&prior, cfg.clone(), 3)
            .unwrap()
            .sample(200)
            .unwrap();
        let mut spread = 0.0;
        for x in &xs {
            let s = rollup(x, 1).unwrap();
            // τ = 0.5 on the manual prior: p' ∝ (0.5, 0.3, 0.2)^0.5.
            let z = 0.5f64.sqrt() + 0.3f64.sqrt() + 0.2f64.sqrt();
            assert!(
                (s.get("a").unwrap() - 0.5f64.sqrt() / z).abs() < 0.08,
                "{s:?}"
            );
            spread += (x.get("a:x").unwrap() / s.get("a").unwrap() - 0.5).abs();
        }
        // Within a source, a weak Dirichlet spreads the topics widely.
        assert!(spread / xs.len() as f64 > 0.15);
        // Same seed, same draws.
        let again = PriorSampler::new(&prior, cfg, 3)
            .unwrap()
            .sample(5)
            .unwrap();
        assert_eq!(&xs[..5], &again[..]);
        let l = Level {
            prior: [("zz".into(), 1.0)].into(),
            ..Level::default()
        };
        let bad = SamplerConfig {
            levels: Some(Levels { levels: vec![l] }),
            ..SamplerConfig::default()
        };
        assert!(PriorSampler::new(&prior, bad, 0).is_err());
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
