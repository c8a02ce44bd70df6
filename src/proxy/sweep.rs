//! The sweep stage: sample mixtures around the prior (RegMix's sampler), train
//! one proxy per mixture, append each finished run to the crash-safe runs
//! table (and its checkpoint losses to the checkpoints table). Resumable: a
//! rerun skips finished runs; shardable: `shard` runs one machine's share.
//!
//! Beside the sampled runs, a sweep measures its own noise floor: the prior
//! (natural) mixture and the first sampled mixture, each trained at
//! `noise_seeds` extra seeds (`noise-natural-<j>`, `noise-probe-<j>`). The
//! spread of natural's target over seeds is the seed noise; the spread of the
//! probe − natural difference is the noise of a *comparison* between two runs
//! that share a seed — what a sweep with common seeds (`SeedMode::Common`,
//! the same initialization and data streams for every run) has to see through.

use super::pool::{train_jobs, Job};
use super::train::{TrainOptions, TrainReport};
use super::ProxyConfig;
use crate::corpus::cache::TokenCache;
use crate::mixture::hierarchy::{is_hierarchical, Level, Levels};
use crate::mixture::reuse::Reuse;
use crate::mixture::sampler::{PriorSampler, SamplerConfig};
use crate::mixture::{write_json_atomic, Mixture};
use crate::store::runs::{RunRecord, RunsLayout, RunsWriter};
use crate::store::{checkpoints_path, CheckpointsWriter};
use anyhow::Context;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;

/// Run ids of noise-floor runs start with this; `fit` keeps them out of the law.
pub const NOISE_PREFIX: &str = "noise-";

/// How runs are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SeedMode {
    /// Every run its own seed (initialization and data order independent).
    PerRun,
    /// One seed for every run: common random numbers, so two runs differ by
    /// their mixtures and not by their initialization or data streams.
    Common,
}

/// One machine's share of a sweep: runs `k` with `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// Everything a sweep needs, validated by `check`.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    pub cache: PathBuf,
    pub proxy: ProxyConfig,
    pub runs: usize,
    pub seed: u64,
    pub seeds: SeedMode,
    pub noise_seeds: usize,
    pub out: PathBuf,
    pub workers: usize,
    pub threads_per_run: usize,
    pub sampler: SamplerConfig,
    pub shard: Option<Shard>,
    pub device: Device,
    /// Per-level sampling settings for `source:topic` domains (a TOML file).
    pub levels: Option<PathBuf>,
    /// A previous mixture (file or name) to freeze into one virtual domain.
    pub reuse: Option<String>,
    /// With `reuse`: domains swept on their own instead of frozen.
    pub unfreeze: Vec<String>,
}

impl SweepSpec {
    /// A sweep of `runs` runs of `proxy` on `cache` into `out`, every other
    /// setting at `mixopt sweep`'s defaults (seed 0, per-run seeds, 3 noise
    /// seeds, one single-threaded worker per core, RegMix's sampler, CPU).
    pub fn new(cache: PathBuf, proxy: ProxyConfig, runs: usize, out: PathBuf) -> SweepSpec {
        SweepSpec {
            cache,
            proxy,
            runs,
            seed: 0,
            seeds: SeedMode::PerRun,
            noise_seeds: 3,
            out,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads_per_run: 1,
            sampler: SamplerConfig::default(),
            shard: None,
            device: Device::Cpu,
            levels: None,
            reuse: None,
            unfreeze: Vec::new(),
        }
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.runs > 0, "--runs must be > 0");
        anyhow::ensure!(self.threads_per_run > 0, "--threads-per-run must be > 0");
        anyhow::ensure!(self.workers > 0, "--jobs must be > 0");
        Ok(())
    }
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// Runs this invocation owns (its shard), sampled and noise.
    pub owned: usize,
    pub already_finished: usize,
    pub trained: usize,
}

/// Everything that determines a sweep's results; its hash guards resumption.
#[derive(Serialize)]
struct SweepIdentity<'a> {
    proxy: &'a ProxyConfig,
    cache_fingerprint: String,
    seed: u64,
    temperature: f64,
    max_repetition: f64,
    /// Left out at their defaults so older sweeps' hashes still match.
    #[serde(skip_serializing_if = "is_regmix_range")]
    concentration: (f64, f64),
    #[serde(skip_serializing_if = "is_per_run")]
    seeds: SeedMode,
    #[serde(skip_serializing_if = "is_zero")]
    noise_seeds: usize,
    /// Data-parallel shards per run change results by float rounding.
    #[serde(skip_serializing_if = "is_one")]
    threads_per_run: usize,
    /// Per-level sampling and reuse change the mixtures; absent when unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    levels: Option<Levels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reuse: Option<Reuse>,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_per_run(m: &SeedMode) -> bool {
    *m == SeedMode::PerRun
}
fn is_regmix_range(r: &(f64, f64)) -> bool {
    *r == SamplerConfig::default().concentration_range
}

/// Seed of run `k` of a sweep: a SplitMix64 step of (sweep seed, k), so runs
/// get unrelated streams and a run's seed does not depend on the sweep size.
pub fn run_seed(sweep_seed: u64, k: usize) -> u64 {
    let mut z = sweep_seed.wrapping_add((k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn run_id(k: usize) -> String {
    format!("run{k:05}")
}

/// Seed of the `j`-th noise-floor seed (apart from every run's).
fn noise_seed(sweep_seed: u64, j: usize) -> u64 {
    run_seed(sweep_seed ^ 0x6E6F_6973_655F_666C, j)
}

/// One planned run.
struct Planned {
    id: String,
    mixture: Mixture,
    seed: u64,
}

/// The sampled runs, then the noise-floor runs, in a fixed order (the shard
/// of run `k` in this list is `k % count`).
fn plan(spec: &SweepSpec, prior: &Mixture, mixtures: &[Mixture]) -> Vec<Planned> {
    let common = run_seed(spec.seed, 0);
    let mut out: Vec<Planned> = mixtures
        .iter()
        .enumerate()
        .map(|(k, m)| Planned {
            id: run_id(k),
            mixture: m.clone(),
            seed: match spec.seeds {
                SeedMode::PerRun => run_seed(spec.seed, k),
                SeedMode::Common => common,
            },
        })
        .collect();
    for j in 0..spec.noise_seeds {
        let seed = noise_seed(spec.seed, j);
        out.push(Planned {
            id: format!("{NOISE_PREFIX}natural-{j}"),
            mixture: prior.clone(),
            seed,
        });
        out.push(Planned {
            id: format!("{NOISE_PREFIX}probe-{j}"),
            mixture: mixtures[0].clone(),
            seed,
        });
    }
    out
}

/// Run (or resume) a sweep. `on_start(owned, already_finished, to_train)` is
/// called once the plan is known (for the caller's message); `on_run` after
/// each finished run.
pub fn run_sweep(
    spec: &SweepSpec,
    on_start: impl FnOnce(usize, usize, usize),
    mut on_run: impl FnMut(),
) -> anyhow::Result<SweepOutcome> {
    spec.check()?;
    let cfg = &spec.proxy;
    let cache = TokenCache::open(&spec.cache)?;
    let prior = cache.natural_mixture()?;
    let reuse = match &spec.reuse {
        Some(p) => Some(
            Mixture::parse_or_load(p)
                .map_err(anyhow::Error::from)
                .and_then(|m| Ok(Reuse::plan(&m, cache.domains(), &spec.unfreeze)?))
                .with_context(|| format!("--reuse {p}"))?,
        ),
        None => None,
    };
    // The mixtures are drawn over the reduced domains when reusing.
    let sample_prior = match &reuse {
        Some(r) => r.reduce(&prior)?,
        None => prior.clone(),
    };
    let levels = match &spec.levels {
        Some(p) => {
            anyhow::ensure!(
                is_hierarchical(sample_prior.domains()),
                "--levels: the domains have no source:topic names"
            );
            Some(Levels::load(p)?)
        }
        None if is_hierarchical(sample_prior.domains()) => Some(Levels::uniform(Level {
            temperature: spec.sampler.temperature,
            ..Level::default()
        })),
        None => None,
    };
    let sampler_cfg = SamplerConfig {
        levels: levels.clone(),
        ..spec.sampler.clone()
    };
    let identity = SweepIdentity {
        proxy: cfg,
        cache_fingerprint: cache.fingerprint(),
        seed: spec.seed,
        temperature: spec.sampler.temperature,
        max_repetition: spec.sampler.max_repetition,
        concentration: spec.sampler.concentration_range,
        seeds: spec.seeds,
        noise_seeds: spec.noise_seeds,
        threads_per_run: spec.threads_per_run,
        levels: levels.clone(),
        reuse: reuse.clone(),
    };
    let config_hash = hex::encode(&Sha256::digest(serde_json::to_vec(&identity)?)[..8]);
    let mut mixtures =
        PriorSampler::new(&sample_prior, sampler_cfg, spec.seed)?.sample(spec.runs)?;
    if let Some(r) = &reuse {
        mixtures = mixtures
            .iter()
            .map(|m| r.expand(m, cache.domains()))
            .collect::<crate::Result<_>>()?;
    }

    let layout = RunsLayout::of_cache(&cache);
    let (mut writer, done) = RunsWriter::open(&spec.out, &layout)?;
    // Checkpoint losses go to their own table, before each run's row.
    let mut checkpoints = (cfg.checkpoints > 1)
        .then(|| CheckpointsWriter::open(&checkpoints_path(&spec.out), &layout.metric_names()))
        .transpose()?;
    if let Some(other) = done.iter().find(|r| r.config_hash != config_hash) {
        anyhow::bail!(
            "{}: holds runs of a different sweep configuration (config hash {} in {}, this sweep {config_hash}); \
             use another --out or the original options",
            spec.out.display(),
            other.config_hash,
            other.run_id
        );
    }
    let sampler = &spec.sampler;
    write_json_atomic(
        &crate::store::meta_paths(&spec.out)[0],
        &serde_json::json!({
            "config_hash": config_hash,
            "domains": cache.domains(),
            "eval_only_domains": layout.eval_only,
            "prior": prior.to_map(),
            "proxy": cfg,
            "cache": spec.cache.display().to_string(),
            "cache_fingerprint": identity.cache_fingerprint,
            "seed": spec.seed,
            "seeds": spec.seeds,
            "noise_seeds": spec.noise_seeds,
            "runs": spec.runs,
            "temperature": sampler.temperature,
            "max_repetition": sampler.max_repetition,
            "concentration": [sampler.concentration_range.0, sampler.concentration_range.1],
            "threads_per_run": spec.threads_per_run,
            "levels": levels,
            "reuse": reuse,
            "shard": spec.shard.map(|s| format!("{}/{}", s.index, s.count)),
            "mixopt_version": crate::VERSION,
        }),
    )?;
    let finished: HashSet<&str> = done.iter().map(|r| r.run_id.as_str()).collect();
    // The noise floor's "natural" run follows the sweep's own structure: with
    // reuse, the reduced prior expanded back to the leaves.
    let noise_prior = match &reuse {
        Some(r) => r.expand(&sample_prior, cache.domains())?,
        None => prior.clone(),
    };
    let planned = plan(spec, &noise_prior, &mixtures);
    let mine: Vec<&Planned> = planned
        .iter()
        .enumerate()
        .filter(|(k, _)| spec.shard.is_none_or(|s| s.owns(*k)))
        .map(|(_, p)| p)
        .collect();
    let todo: Vec<&Planned> = mine
        .iter()
        .copied()
        .filter(|p| !finished.contains(p.id.as_str()))
        .collect();
    on_start(mine.len(), mine.len() - todo.len(), todo.len());
    let jobs: Vec<Job> = todo
        .iter()
        .map(|p| Job {
            mixture: p.mixture.clone(),
            opts: TrainOptions {
                seed: p.seed,
                device: spec.device.clone(),
                threads: spec.threads_per_run,
                ..TrainOptions::default()
            },
        })
        .collect();
    // The one writer: rows are appended (and fsynced) as runs finish.
    train_jobs(cfg, &cache, &jobs, spec.workers, |i, result| {
        let p = todo[i];
        on_run();
        let report = result.with_context(|| p.id.clone())?;
        let rec = record(p, &report, cfg, &config_hash);
        if let Some(c) = checkpoints.as_mut() {
            c.append(&rec.run_id, &report.checkpoints)?;
        }
        writer.append(&rec).map_err(anyhow::Error::from)
    })?;
    // Rows went in as runs finished; the finished tables are in run-id order
    // (also when every run was done already: a sweep killed before this).
    // The runs table's lock is held until both are rewritten.
    if checkpoints.take().is_some() {
        crate::store::checkpoints::finish_sorted(&checkpoints_path(&spec.out))?;
    }
    writer.finish_sorted()?;
    Ok(SweepOutcome {
        owned: mine.len(),
        already_finished: mine.len() - todo.len(),
        trained: todo.len(),
    })
}

/// [`run_sweep`] with a progress bar and the usual messages (what `mixopt
/// sweep`, the demo and `bench sweep` run). Sets candle's intra-op threads to
/// 1 first: parallelism comes from concurrent trainers and their shards.
pub fn run(spec: &SweepSpec) -> anyhow::Result<SweepOutcome> {
    super::set_threads(1);
    let pb = crate::progress::bar(0, "sweep");
    let shard_note = spec
        .shard
        .map(|s| format!(" (shard {}/{})", s.index, s.count))
        .unwrap_or_default();
    let noise = if spec.noise_seeds > 0 {
        format!(" + {} noise-floor runs", 2 * spec.noise_seeds)
    } else {
        String::new()
    };
    let outcome = run_sweep(
        spec,
        |owned, finished, todo| {
            println!(
                "sweep: {} runs{noise} of proxy {} ({} tokens each){shard_note}: {owned} here, \
                 {finished} already finished, {todo} to train on {} worker(s) -> {}",
                spec.runs,
                spec.proxy.name,
                spec.proxy.n_tokens(),
                spec.workers,
                spec.out.display()
            );
            pb.set_length(todo as u64);
        },
        || pb.inc(1),
    )?;
    pb.finish_and_clear();
    if outcome.trained > 0 {
        println!(
            "sweep: {} of {} runs finished here -> {}",
            outcome.owned,
            outcome.owned,
            spec.out.display()
        );
    }
    Ok(outcome)
}

fn record(p: &Planned, report: &TrainReport, cfg: &ProxyConfig, config_hash: &str) -> RunRecord {
    RunRecord {
        run_id: p.id.clone(),
        seed: p.seed,
        proxy: cfg.name.clone(),
        n_tokens: report.n_tokens,
        wall_s: report.wall_s,
        config_hash: config_hash.to_string(),
        version: crate::VERSION.to_string(),
        mixture: p.mixture.clone(),
        losses: report.losses.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_seeds_differ_and_are_stable() {
        assert_eq!(run_seed(1, 2), run_seed(1, 2));
        assert_ne!(run_seed(1, 2), run_seed(1, 3));
        assert_ne!(run_seed(1, 2), run_seed(2, 2));
        assert_ne!(noise_seed(1, 0), run_seed(1, 0));
    }
}
