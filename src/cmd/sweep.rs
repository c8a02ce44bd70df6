//! `mixopt sweep`: sample mixtures from the prior and train one proxy per
//! mixture, appending each finished run to the runs table (the stage is
//! `proxy::sweep`). Resumable: rerunning the same command skips finished
//! runs; proxies run concurrently, one single-threaded trainer per core.

use crate::mixture::sampler::SamplerConfig;
use crate::proxy::sweep::{SeedMode, Shard, SweepSpec};
use crate::proxy::ProxyConfig;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Token cache written by `mixopt prepare`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Proxy preset: a TOML file or a built-in name (base, tiny, small, 1m, 60m).
    #[arg(long, default_value = "base")]
    pub proxy: String,
    /// Number of sampled mixtures (= proxy runs) in the sweep.
    #[arg(long)]
    pub runs: usize,
    /// Seeds the mixtures and every run's training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `common`: every run gets the same seed (initialization and data
    /// streams), so runs differ by their mixture only; `per-run`: each run its own.
    #[arg(long, value_enum, default_value = "per-run")]
    pub seeds: SeedMode,
    /// Noise floor: train the natural mixture and the first sampled one at this
    /// many extra seeds each (0: none); `fit` reports the spread.
    #[arg(long, default_value_t = 3)]
    pub noise_seeds: usize,
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
    #[arg(long, default_value_t = SamplerConfig::REGMIX.temperature)]
    pub temperature: f64,
    /// Range LO:HI of the Dirichlet concentrations s (log-spaced, x ~ Dir(s·p')):
    /// RegMix's 0.1:5 spreads mixtures over the whole simplex; larger values
    /// keep them near the prior.
    #[arg(long, default_value = REGMIX_CONCENTRATION.as_str(), value_parser = parse_range)]
    pub concentration: (f64, f64),
    /// At most this many epochs of any domain (RegMix's r_max).
    #[arg(long, default_value_t = SamplerConfig::REGMIX.max_repetition)]
    pub max_repetition: f64,
    /// Run only shard I of N (0-based; run k belongs to shard k mod N). Every
    /// shard samples the same mixtures; give each its own --out and combine
    /// them with `mixopt merge`.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Where proxies train: cpu, or cuda:N (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Per-level Dirichlet settings for `source:topic` domains (TOML
    /// `[[level]]`: temperature, concentration = [lo, hi], prior); with
    /// hierarchical names and no file, every level uses --temperature and
    /// RegMix's strengths.
    #[arg(long)]
    pub levels: Option<PathBuf>,
    /// Reuse a previous optimized mixture (weights file or name): its ratios
    /// among the domains still here are frozen into one virtual domain and
    /// only that and the changed domains are swept (Olmix's mixture reuse).
    #[arg(long)]
    pub reuse: Option<String>,
    /// With --reuse: sweep this domain too instead of freezing it (repeatable).
    #[arg(long, requires = "reuse")]
    pub unfreeze: Vec<String>,
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

/// `--concentration`'s default, RegMix's range written as `LO:HI`.
static REGMIX_CONCENTRATION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let (lo, hi) = SamplerConfig::REGMIX.concentration_range;
    format!("{lo}:{hi}")
});

/// `LO:HI` with 0 < LO ≤ HI.
pub fn parse_range(arg: &str) -> Result<(f64, f64), String> {
    let (lo, hi) = arg
        .split_once(':')
        .ok_or_else(|| format!("expected LO:HI (e.g. 0.1:5), got {arg:?}"))?;
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Err(format!("{arg:?}: need 0 < LO <= HI"));
    }
    Ok((lo, hi))
}

impl Args {
    /// The flags as a sweep spec (preset loaded, defaults resolved).
    pub fn spec(&self) -> anyhow::Result<SweepSpec> {
        anyhow::ensure!(self.threads_per_run > 0, "--threads-per-run must be > 0");
        // Default: fill the cores, each run using `threads_per_run` of them.
        let workers = self.jobs.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.threads_per_run).max(1)
        });
        Ok(SweepSpec {
            cache: self.cache.clone(),
            proxy: ProxyConfig::load(&self.proxy)?,
            runs: self.runs,
            seed: self.seed,
            seeds: self.seeds,
            noise_seeds: self.noise_seeds,
            out: self.out.clone(),
            workers,
            threads_per_run: self.threads_per_run,
            sampler: SamplerConfig {
                temperature: self.temperature,
                max_repetition: self.max_repetition,
                concentration_range: self.concentration,
                ..SamplerConfig::default()
            },
            shard: self.shard,
            device: crate::proxy::parse_device(&self.device)?,
            levels: self.levels.clone(),
            reuse: self.reuse.clone(),
            unfreeze: self.unfreeze.clone(),
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.spec()?;
    spec.check()?;
    crate::proxy::sweep::run(&spec)?;
    Ok(())
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
        assert_eq!(parse_range("20:200"), Ok((20.0, 200.0)));
        for bad in ["0:1", "2:1", "x", "1:y"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
