//! `mixopt validate`: train candidate mixtures at a larger scale than the
//! sweep's proxies, several seeds each, and print paired differences by seed
//! (common random numbers: a seed fixes initialization and data streams) —
//! does the optimized mixture beat the natural and uniform ones where it
//! counts? The evidence is recorded in each candidate's weights file.
//!
//! ```text
//! mixopt validate --cache C --proxy small --mixtures weights.json,natural,uniform --seeds 3
//! ```

use crate::corpus::cache::{Split, TokenCache};
use crate::mixture::Mixture;
use crate::proxy::validate::{print_table, Candidate, ValidateSpec, Validation};
use crate::proxy::ProxyConfig;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Token cache written by `mixopt prepare`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Proxy preset to validate with: larger than the sweep's (a TOML file or a
    /// built-in name).
    #[arg(long, default_value = "small")]
    pub proxy: String,
    /// Candidates, comma-separated: weights.json files, `natural` (the cache's
    /// token shares) or `uniform`.
    #[arg(long, value_delimiter = ',')]
    pub mixtures: Vec<String>,
    /// One more candidate, repeatable: a file, a name, or an inline
    /// "a=0.5,b=0.5" (which --mixtures cannot hold).
    #[arg(long = "mixture")]
    pub mixture: Vec<String>,
    /// Seeds per candidate (`--seed`, `--seed`+1, …); every candidate uses the same seeds.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What to compare: `mean` (over the training domains), a domain, or a
    /// weighted sum like `0.7*web+0.3*code` (evaluation-only domains too).
    #[arg(long, default_value = "mean")]
    pub target: String,
    /// Held-out split: val (the default, for choosing) or test (for judging
    /// a final answer; choose nothing on it).
    #[arg(long, value_enum, default_value = "val")]
    pub split: Split,
    /// The candidate the others are compared to (default: natural when
    /// given, else the last candidate).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Override the preset's optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Runs trained at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write every run (candidate, seed, per-domain losses) as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not record the evidence in the candidates' weights files.
    #[arg(long)]
    pub no_record: bool,
    /// Where the runs train: cpu, or cuda:N (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A candidate by name: `natural`, `uniform`, a weights file or an inline spec.
pub fn resolve_candidate(arg: &str, cache: &TokenCache) -> anyhow::Result<Candidate> {
    let arg = arg.trim();
    let (mixture, source) = match arg {
        "natural" => (cache.natural_mixture()?, None),
        "uniform" => (Mixture::uniform(cache.domains().to_vec())?, None),
        _ => {
            let m = Mixture::parse_or_load(arg).with_context(|| format!("mixture {arg}"))?;
            let path = Path::new(arg);
            (m, path.is_file().then(|| path.to_path_buf()))
        }
    };
    let mixture = mixture
        .align(cache.domains())
        .with_context(|| format!("mixture {arg} against the cache's training domains"))?;
    Ok(Candidate {
        name: arg.to_string(),
        mixture,
        source,
    })
}

/// Record the evidence in every candidate that came from a weights file.
pub fn record_evidence(v: &Validation) -> anyhow::Result<()> {
    for (c, cand) in v.candidates.iter().enumerate() {
        let Some(path) = &cand.source else { continue };
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let Some(obj) = json.as_object_mut() else {
            bail!("{}: not a JSON object", path.display());
        };
        let entry = obj
            .entry("validation")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = serde_json::Value::Array(Vec::new());
        }
        if let Some(list) = entry.as_array_mut() {
            list.push(v.evidence(c));
        }
        crate::mixture::write_json_atomic(path, &json)?;
        println!("recorded the evidence in {}", path.display());
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.seeds > 0, "--seeds must be > 0");
    let cache = TokenCache::open(&args.cache)?;
    let mut cfg = ProxyConfig::load(&args.proxy)?;
    if let Some(steps) = args.steps {
        cfg.n_steps = steps;
        cfg.warmup_steps = cfg.warmup_steps.min(steps);
        cfg.checkpoints = cfg.checkpoints.min(steps);
        cfg.check().context("--steps")?;
    }
    let names: Vec<&String> = args.mixtures.iter().chain(&args.mixture).collect();
    if names.is_empty() {
        bail!("no candidates: give --mixtures weights.json,natural,uniform (or --mixture)");
    }
    let candidates = names
        .iter()
        .map(|n| resolve_candidate(n, &cache))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, c) in candidates.iter().enumerate() {
        if candidates[..i].iter().any(|o| o.name == c.name) {
            bail!("candidate {} is given twice", c.name);
        }
    }
    let baseline = match &args.baseline {
        Some(b) => candidates
            .iter()
            .position(|c| &c.name == b)
            .with_context(|| format!("--baseline {b}: not one of the candidates"))?,
        None => candidates
            .iter()
            .position(|c| c.name == "natural")
            .unwrap_or(candidates.len() - 1),
    };
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(workers > 0, "--jobs must be > 0");
    crate::proxy::set_threads(1);
    let spec = ValidateSpec {
        seeds: (0..args.seeds as u64).map(|i| args.seed + i).collect(),
        split: args.split,
        workers,
        device: crate::proxy::parse_device(&args.device)?,
    };
    let v = crate::proxy::validate::run(&cfg, &cache, candidates, &args.target, &spec)?;
    print_table(&v, baseline);
    for c in 0..v.candidates.len() {
        if c == baseline {
            continue;
        }
        let p = v.paired(c, baseline);
        let verdict = if p.mean_diff < 0.0 && p.wins == p.n {
            "beats"
        } else if p.mean_diff < 0.0 {
            "is lower on average than (not in every seed)"
        } else {
            "does NOT beat"
        };
        println!(
            "{} {verdict} {} on {}: {:+.4} ± {:.4} over {} seed(s)",
            v.candidates[c].name,
            v.candidates[baseline].name,
            v.target,
            p.mean_diff,
            p.sd_diff,
            p.n
        );
    }
    if let Some(out) = &args.out {
        crate::mixture::write_json_atomic(out, &v.to_json())?;
    }
    if !args.no_record {
        record_evidence(&v)?;
    }
    Ok(())
}
