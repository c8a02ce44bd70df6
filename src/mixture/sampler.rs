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

use super::hierarchy::{Levels, SEP};
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
    /// Per-level Dirichlet draws over `source:topic` names (None = one flat draw).
    pub levels: Option<Levels>,
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
            levels: None,
        }
    }
}

/// Seeded sampler of candidate mixtures around a prior.
pub struct PriorSampler {
    prior: Mixture,
    tempered: Vec<f64>,
    concentrations: Vec<f64>,
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
        Ok(PriorSampler {
            prior: prior.clone(),
            tempered,
            concentrations,
            tree,
            cfg,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// One accepted candidate's raw weights (zeroed and renormalized), or None if rejected.
    fn try_one(&mut self) -> Option<Vec<f64>> {
        let mut x = match self.tree.take() {
            Some(tree) => {
                let mut x = vec![0.0; self.prior.len()];
                draw_tree(&tree, 1.0, &mut x, &mut self.rng);
                self.tree = Some(tree);
                x
            }
            None => self.flat_draw(),
        };
        let sum: f64 = x.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return None;
        }
        x.iter_mut().for_each(|v| *v /= sum);
        self.finish(x)
    }

    /// One flat Dirichlet draw around the tempered prior (unnormalized).
    fn flat_draw(&mut self) -> Vec<f64> {
        let s = self.concentrations[self.rng.random_range(0..self.concentrations.len())];
        self.tempered
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
            .collect()
    }

    /// Cap, zero tiny weights and renormalize a normalized draw.
    fn finish(&self, mut x: Vec<f64>) -> Option<Vec<f64>> {
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
