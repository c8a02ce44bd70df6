//! `mixopt sweep`: sample mixtures from the RegMix prior and train one proxy per
//! mixture, appending each finished run to the runs table. Resumable: rerunning
//! the same command skips finished runs; proxies run concurrently, one
//! single-threaded trainer per core (two 1-thread trainers beat one 2-thread
//! trainer by 1.6–1.7×, DESIGN.md "Threads").

use crate::corpus::cache::TokenCache;
use crate::mixture::sampler::{PriorSampler, SamplerConfig};
use crate::mixture::{write_json_atomic, Mixture};
use crate::proxy::train::train_proxy;
use crate::proxy::{ProxyConfig, TrainOptions, TrainReport};
use crate::store::runs::{RunRecord, RunsWriter};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Token cache written by `mixopt prepare`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Proxy preset: a TOML file or a built-in name (tiny, small, 1m).
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// Number of mixtures (= proxy runs) in the sweep.
    #[arg(long)]
    pub runs: usize,
    /// Seeds the mixtures and every run's training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The runs table (CSV, appended to; a `.meta.json` sidecar sits beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Proxies trained at once (default: cores / --threads-per-run).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// CPU threads per proxy (data-parallel row shards of each batch). 1 by
    /// default: concurrent single-threaded proxies measured faster on the
    /// presets (`mixopt bench sweep`); more helps when runs are fewer than cores.
    #[arg(long, default_value_t = 1)]
    pub threads_per_run: usize,
    /// Temperature τ of the prior p^τ.
    #[arg(long, default_value_t = 0.5)]
    pub temperature: f64,
    /// At most this many epochs of any domain (RegMix's r_max).
    #[arg(long, default_value_t = 15.0)]
    pub max_repetition: f64,
    /// Run only shard I of N (0-based; run k belongs to shard k mod N). Every
    /// shard samples the same mixtures; give each its own --out and combine
    /// them with `mixopt merge`.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Where proxies train: cpu, or cuda:N (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One shard of a sweep: runs `k` with `k % count == index`.
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

/// `"I/N"` with 0 ≤ I < N (0-based, like Slurm's `--array=0-…` and Kubernetes'
/// JOB_COMPLETION_INDEX).
pub fn parse_shard(arg: &str) -> Result<Shard, String> {
    let (i, n) = arg
        .split_once('/')
        .ok_or_else(|| format!("expected I/N (e.g. 0/4), got {arg:?}"))?;
    let index: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("shard index {i:?} is not a number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("shard count {n:?} is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("shard {arg:?}: need 0 <= I < N (I is 0-based)"));
    }
    Ok(Shard { index, count })
}

/// Everything that determines a sweep's results; its hash guards resumption.
#[derive(serde::Serialize)]
struct SweepIdentity<'a> {
    proxy: &'a ProxyConfig,
    cache_fingerprint: String,
    seed: u64,
    temperature: f64,
    max_repetition: f64,
    /// Data-parallel shards per run change results by float rounding, so they
    /// are part of the identity; left out at 1 so hashes of sweeps made before
    /// the option existed still match.
    #[serde(skip_serializing_if = "is_one")]
    threads_per_run: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
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

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be > 0");
    anyhow::ensure!(args.threads_per_run > 0, "--threads-per-run must be > 0");
    // Default: fill the cores, each run using `threads_per_run` of them.
    let jobs = args.jobs.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.threads_per_run).max(1)
    });
    anyhow::ensure!(jobs > 0, "--jobs must be > 0");
    // Parallelism comes from concurrent trainers and their shards, not candle.
    crate::cmd::train::set_threads(1);

    let cfg = ProxyConfig::load(&args.proxy)?;
    let device = crate::proxy::parse_device(&args.device)?;
    let cache = TokenCache::open(&args.cache)?;
    let prior = cache.natural_mixture()?;
    let sampler_cfg = SamplerConfig {
        temperature: args.temperature,
        max_repetition: args.max_repetition,
        ..SamplerConfig::default()
    };
    let identity = SweepIdentity {
        proxy: &cfg,
        cache_fingerprint: cache.fingerprint(),
        seed: args.seed,
        temperature: args.temperature,
        max_repetition: args.max_repetition,
        threads_per_run: args.threads_per_run,
    };
    let config_hash = hex::encode(&Sha256::digest(serde_json::to_vec(&identity)?)[..8]);
    let mixtures = PriorSampler::new(&prior, sampler_cfg, args.seed)?.sample(args.runs)?;

    let (mut writer, done) = RunsWriter::open(&args.out, cache.domains())?;
    if let Some(other) = done.iter().find(|r| r.config_hash != config_hash) {
        anyhow::bail!(
            "{}: holds runs of a different sweep configuration (config hash {} in {}, this sweep {config_hash}); \
             use another --out or the original options",
            args.out.display(),
            other.config_hash,
            other.run_id
        );
    }
    write_json_atomic(
        &crate::store::meta_paths(&args.out)[0],
        &serde_json::json!({
            "config_hash": config_hash,
            "domains": cache.domains(),
            "prior": prior.to_map(),
            "proxy": cfg,
            "cache": args.cache.display().to_string(),
            "cache_fingerprint": identity.cache_fingerprint,
            "seed": args.seed,
            "runs": args.runs,
            "temperature": args.temperature,
            "max_repetition": args.max_repetition,
            "threads_per_run": args.threads_per_run,
            "shard": args.shard.map(|s| format!("{}/{}", s.index, s.count)),
            "mixopt_version": crate::VERSION,
        }),
    )?;
    let finished: HashSet<&str> = done.iter().map(|r| r.run_id.as_str()).collect();
    let mine: Vec<usize> = (0..args.runs)
        .filter(|k| args.shard.is_none_or(|s| s.owns(*k)))
        .collect();
    let todo: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|k| !finished.contains(run_id(*k).as_str()))
        .collect();
    let shard_note = args
        .shard
        .map(|s| format!(" (shard {}/{}: {} of them)", s.index, s.count, mine.len()))
        .unwrap_or_default();
    println!(
        "sweep: {} runs{shard_note} of proxy {} ({} tokens each), {} already finished, {} to train on {jobs} worker(s) -> {}",
        args.runs,
        cfg.name,
        cfg.n_tokens(),
        mine.len() - todo.len(),
        todo.len(),
        args.out.display()
    );
    if todo.is_empty() {
        // Complete (perhaps by a run killed before it could order the table).
        return Ok(writer.finish_sorted()?);
    }

    let pb = crate::progress::bar(todo.len() as u64, "sweep");
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, crate::Result<TrainReport>)>();
    let mut first_error: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(todo.len()) {
            let tx = tx.clone();
            let (todo, next, stop, cache, cfg, mixtures, device) =
                (&todo, &next, &stop, &cache, &cfg, &mixtures, &device);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&k) = todo.get(i) else { break };
                let opts = TrainOptions {
                    seed: run_seed(args.seed, k),
                    device: device.clone(),
                    threads: args.threads_per_run,
                    ..TrainOptions::default()
                };
                let result = train_proxy(cfg, cache, &mixtures[k], &opts);
                if tx.send((k, result)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // The one writer: rows are appended (and fsynced) as runs finish.
        for (k, result) in rx {
            let outcome = result.map_err(anyhow::Error::from).and_then(|report| {
                let rec = record(k, &mixtures[k], &report, &cfg, &config_hash, args.seed);
                writer.append(&rec).map_err(anyhow::Error::from)
            });
            pb.inc(1);
            if let Err(e) = outcome {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e.context(run_id(k)));
            }
        }
    });
    pb.finish_and_clear();
    if let Some(e) = first_error {
        return Err(e);
    }
    // Rows went in as runs finished; the finished table is in run order.
    writer.finish_sorted()?;
    println!(
        "sweep: {} runs finished ({} trained now){shard_note} -> {}",
        mine.len(),
        todo.len(),
        args.out.display()
    );
    Ok(())
}

fn record(
    k: usize,
    mixture: &Mixture,
    report: &TrainReport,
    cfg: &ProxyConfig,
    config_hash: &str,
    sweep_seed: u64,
) -> RunRecord {
    RunRecord {
        run_id: run_id(k),
        seed: run_seed(sweep_seed, k),
        proxy: cfg.name.clone(),
        n_tokens: report.n_tokens,
        wall_s: report.wall_s,
        config_hash: config_hash.to_string(),
        version: crate::VERSION.to_string(),
        mixture: mixture.clone(),
        losses: report.val_losses.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_runs() {
        let shards: Vec<Shard> = (0..3)
            .map(|i| parse_shard(&format!("{i}/3")).unwrap())
            .collect();
        for k in 0..30 {
            assert_eq!(shards.iter().filter(|s| s.owns(k)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_seeds_differ_and_are_stable() {
        assert_eq!(run_seed(1, 2), run_seed(1, 2));
        assert_ne!(run_seed(1, 2), run_seed(1, 3));
        assert_ne!(run_seed(1, 2), run_seed(2, 2));
    }
}
