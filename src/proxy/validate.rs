//! Validation: train candidate mixtures at a larger scale than the sweep's
//! proxies, several seeds each, and compare them paired by seed. A seed fixes
//! a run's initialization and data streams (common random numbers), so the
//! difference between two candidates at one seed is the mixture's effect with
//! most of the seed noise cancelled; its spread over seeds says how sure that
//! effect is. `mixopt validate` prints this; `mixopt optimize --validate-proxy`
//! uses it to choose among its own candidates and the natural mixture.

use super::pool::{train_jobs, Job};
use super::train::TrainOptions;
use super::ProxyConfig;
use crate::corpus::cache::{Split, TokenCache};
use crate::error::{Error, Result};
use crate::law::Target;
use crate::mixture::Mixture;
use candle_core::Device;
use serde::Serialize;
use std::path::PathBuf;

/// One mixture to validate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub mixture: Mixture,
    /// The weights file it came from (evidence is recorded there).
    pub source: Option<PathBuf>,
}

/// How to validate: seeds, split, where and on how many workers.
#[derive(Debug, Clone)]
pub struct ValidateSpec {
    pub seeds: Vec<u64>,
    pub split: Split,
    pub workers: usize,
    pub device: Device,
}

/// Paired comparison of candidate `a` against `b` over the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    /// Mean over seeds of target(a) − target(b): negative when `a` is lower.
    pub mean_diff: f64,
    /// Standard deviation of the per-seed differences (0 with one seed).
    pub sd_diff: f64,
    /// Seeds where `a`'s target is lower than `b`'s.
    pub wins: usize,
    pub n: usize,
}

/// Every run's losses and target, by candidate and seed.
#[derive(Debug, Clone)]
pub struct Validation {
    pub proxy: String,
    /// Evaluated domains (training domains first), the order of `losses`.
    pub domains: Vec<String>,
    pub n_train_domains: usize,
    pub target: String,
    pub split: Split,
    pub seeds: Vec<u64>,
    pub candidates: Vec<Candidate>,
    /// `[candidate][seed][domain]`.
    pub losses: Vec<Vec<Vec<f64>>>,
    /// `[candidate][seed]`.
    pub targets: Vec<Vec<f64>>,
    pub n_tokens: u64,
    pub wall_s: f64,
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (0 for fewer than two values).
pub fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

impl Validation {
    /// Mean and standard deviation of candidate `c`'s target over seeds.
    pub fn target_mean_sd(&self, c: usize) -> (f64, f64) {
        (mean(&self.targets[c]), sd(&self.targets[c]))
    }

    /// Each domain's mean loss over seeds for candidate `c`.
    pub fn domain_means(&self, c: usize) -> Vec<f64> {
        (0..self.domains.len())
            .map(|d| mean(&self.losses[c].iter().map(|l| l[d]).collect::<Vec<_>>()))
            .collect()
    }

    /// The training domain with the highest mean loss, and that loss.
    pub fn worst_domain(&self, c: usize) -> (String, f64) {
        let means = self.domain_means(c);
        let (i, l) = means[..self.n_train_domains].iter().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |b, (i, &l)| if l > b.1 { (i, l) } else { b },
        );
        (self.domains[i].clone(), l)
    }

    pub fn paired(&self, a: usize, b: usize) -> Paired {
        let diffs: Vec<f64> = self.targets[a]
            .iter()
            .zip(&self.targets[b])
            .map(|(x, y)| x - y)
            .collect();
        Paired {
            mean_diff: mean(&diffs),
            sd_diff: sd(&diffs),
            wins: diffs.iter().filter(|d| **d < 0.0).count(),
            n: diffs.len(),
        }
    }

    /// The candidate with the lowest mean target.
    pub fn best(&self) -> usize {
        (0..self.candidates.len())
            .min_by(|&a, &b| mean(&self.targets[a]).total_cmp(&mean(&self.targets[b])))
            .unwrap_or(0)
    }

    /// The evidence about candidate `c` against every other candidate, as
    /// recorded in a weights file.
    pub fn evidence(&self, c: usize) -> serde_json::Value {
        let (m, s) = self.target_mean_sd(c);
        let against: serde_json::Map<String, serde_json::Value> = (0..self.candidates.len())
            .filter(|&o| o != c)
            .map(|o| {
                let p = self.paired(c, o);
                (
                    self.candidates[o].name.clone(),
                    serde_json::json!({
                        "mean_diff": p.mean_diff, "sd_diff": p.sd_diff,
                        "wins": p.wins, "seeds": p.n,
                        "their_mean": self.target_mean_sd(o).0,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "proxy": self.proxy,
            "n_tokens": self.n_tokens,
            "split": self.split.name(),
            "target": self.target,
            "seeds": self.seeds,
            "mean": m,
            "sd": s,
            "per_seed": self.targets[c],
            "against": against,
            "mixopt_version": crate::VERSION,
        })
    }

    /// Every run as JSON (for `validate --out` and benchmarks).
    pub fn to_json(&self) -> serde_json::Value {
        let runs: Vec<serde_json::Value> = self
            .candidates
            .iter()
            .enumerate()
            .flat_map(|(c, cand)| {
                self.seeds.iter().enumerate().map(move |(s, seed)| {
                    serde_json::json!({
                        "candidate": cand.name, "seed": seed,
                        "target": self.targets[c][s],
                        "losses": self.domains.iter().cloned()
                            .zip(self.losses[c][s].iter().map(|&l| l.into()))
                            .collect::<serde_json::Map<String, serde_json::Value>>(),
                    })
                })
            })
            .collect();
        let candidates: Vec<serde_json::Value> = self
            .candidates
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "weights": c.mixture.to_map()}))
            .collect();
        serde_json::json!({
            "proxy": self.proxy, "n_tokens": self.n_tokens, "split": self.split.name(),
            "target": self.target, "seeds": self.seeds, "domains": self.domains,
            "candidates": candidates, "runs": runs, "wall_s": self.wall_s,
        })
    }
}

/// Train every candidate at every seed and score it on the target (resolved
/// over the cache's evaluated domains; `mean` is over the training domains).
/// `on_run` is told after each finished run (progress).
pub fn validate(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    candidates: Vec<Candidate>,
    target: &str,
    spec: &ValidateSpec,
    mut on_run: impl FnMut(),
) -> Result<Validation> {
    if candidates.is_empty() || spec.seeds.is_empty() {
        return Err(Error::invalid(
            "validation needs at least one candidate and one seed",
        ));
    }
    let domains = cache.eval_domains().to_vec();
    let t = Target::parse_scoped(target, &domains, cache.domains())?;
    let mut jobs = Vec::new();
    for c in &candidates {
        let mixture = c
            .mixture
            .align(cache.domains())
            .map_err(|e| Error::invalid(format!("candidate {}: {e}", c.name)))?;
        for &seed in &spec.seeds {
            jobs.push(Job {
                mixture: mixture.clone(),
                opts: TrainOptions {
                    seed,
                    device: spec.device.clone(),
                    split: spec.split,
                    ..TrainOptions::default()
                },
            });
        }
    }
    let started = std::time::Instant::now();
    let n_seeds = spec.seeds.len();
    let mut losses = vec![vec![Vec::new(); n_seeds]; candidates.len()];
    train_jobs(cfg, cache, &jobs, spec.workers, |i, report| -> Result<()> {
        let report = report.map_err(|e| {
            Error::invalid(format!(
                "validating {} (seed {}): {e}",
                candidates[i / n_seeds].name,
                spec.seeds[i % n_seeds]
            ))
        })?;
        losses[i / n_seeds][i % n_seeds] = report.losses;
        on_run();
        Ok(())
    })?;
    let targets = losses
        .iter()
        .map(|per_seed| per_seed.iter().map(|l| t.eval(l)).collect())
        .collect();
    Ok(Validation {
        proxy: cfg.name.clone(),
        n_train_domains: cache.domains().len(),
        domains,
        target: t.spec().to_string(),
        split: spec.split,
        seeds: spec.seeds.clone(),
        candidates,
        losses,
        targets,
        n_tokens: cfg.n_tokens(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// [`validate`] with its opening line and a progress bar (what `mixopt
/// validate` and `optimize --validate-proxy` run).
pub fn run(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    candidates: Vec<Candidate>,
    target: &str,
    spec: &ValidateSpec,
) -> anyhow::Result<Validation> {
    let n_runs = (candidates.len() * spec.seeds.len()) as u64;
    println!(
        "validate: {} candidate(s) × {} seed(s) on proxy {} ({} tokens each, {} split), target {target}",
        candidates.len(),
        spec.seeds.len(),
        cfg.name,
        cfg.n_tokens(),
        spec.split.name()
    );
    let pb = crate::progress::bar(n_runs, "validate");
    let v = validate(cfg, cache, candidates, target, spec, || pb.inc(1))?;
    pb.finish_and_clear();
    Ok(v)
}

/// Print the table: each candidate's target (mean ± sd over seeds), worst
/// domain, and its paired difference against `baseline`.
pub fn print_table(v: &Validation, baseline: usize) {
    let w = v
        .candidates
        .iter()
        .map(|c| c.name.len())
        .chain([9])
        .max()
        .unwrap_or(9)
        .min(48);
    println!(
        "{:<w$} {:>16} {:>22} {:>28}",
        "candidate",
        format!("{} ± sd", v.target),
        "worst domain",
        format!("vs {} (paired)", v.candidates[baseline].name)
    );
    for (c, cand) in v.candidates.iter().enumerate() {
        let (m, s) = v.target_mean_sd(c);
        let (wd, wl) = v.worst_domain(c);
        let vs = if c == baseline {
            "—".to_string()
        } else {
            let p = v.paired(c, baseline);
            format!(
                "{:+.4} ± {:.4} ({}/{} lower)",
                p.mean_diff, p.sd_diff, p.wins, p.n
            )
        };
        println!(
            "{:<w$} {:>16} {:>22} {:>28}",
            cand.name,
            format!("{m:.4} ± {s:.4}"),
            format!("{wd} {wl:.3}"),
            vs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(targets: Vec<Vec<f64>>) -> Validation {
        let n = targets.len();
        Validation {
            proxy: "p".into(),
            domains: vec!["a".into(), "b".into()],
            n_train_domains: 2,
            target: "mean".into(),
            split: Split::Val,
            seeds: vec![0, 1, 2],
            candidates: (0..n)
                .map(|i| Candidate {
                    name: format!("c{i}"),
                    mixture: Mixture::uniform(vec!["a".into(), "b".into()]).unwrap(),
                    source: None,
                })
                .collect(),
            losses: targets
                .iter()
                .map(|t| t.iter().map(|&v| vec![v - 0.5, v + 0.5]).collect())
                .collect(),
            targets,
            n_tokens: 10,
            wall_s: 0.0,
        }
    }

    #[test]
    fn paired_differences_count_wins_per_seed() {
        let v = fake(vec![vec![2.0, 2.1, 1.9], vec![2.05, 2.12, 1.95]]);
        let p = v.paired(0, 1);
        assert!((p.mean_diff - (-0.04)).abs() < 1e-12, "{p:?}");
        assert_eq!((p.wins, p.n), (3, 3));
        assert!((p.sd_diff - sd(&[-0.05, -0.02, -0.05])).abs() < 1e-12);
        assert_eq!(v.best(), 0);
        assert_eq!(v.worst_domain(1).0, "b");
        let e = v.evidence(0);
        assert_eq!(e["against"]["c1"]["wins"], 3);
    }
}
