//! `mixopt demo`: the whole offline pipeline on the built-in synthetic corpus —
//! generate → prepare → sweep → fit → optimize — then a check of the answer:
//! fresh proxies trained on the optimized, uniform and natural mixtures.

use crate::corpus::cache::TokenCache;
use crate::corpus::prepare::{domains_in_dir, prepare, PrepareSpec};
use crate::corpus::synthetic::{self, NOISE_DOMAIN};
use crate::law::fit_stage::{FitSpec, RunsInput};
use crate::law::Target;
use crate::mixture::Mixture;
use crate::optimize::stage::OptimizeSpec;
use crate::proxy::pool::{train_jobs, Job};
use crate::proxy::sweep::SweepSpec;
use crate::proxy::{ProxyConfig, TrainOptions};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Instant;

/// Seeds of the demo sweep's noise floor (2 × this many extra runs).
const DEMO_NOISE_SEEDS: usize = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the corpus, cache, runs table, law and weights.
    #[arg(long, default_value = "mixopt-demo")]
    pub out: PathBuf,
    /// Proxy runs in the sweep.
    #[arg(long, default_value_t = 32)]
    pub runs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Proxy preset (a built-in name or a TOML file).
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// Proxies trained at once (default: number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Multiplies the synthetic corpus' document counts.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scale > 0.0 && args.scale.is_finite(),
        "--scale must be > 0"
    );
    let started = Instant::now();
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;

    println!(
        "== 1/5 corpus: {} synthetic domains",
        synthetic::DOMAINS.len()
    );
    let corpus_dir = out.join("corpus");
    synthetic::write_demo_corpus(&corpus_dir, args.seed, args.scale)?;

    println!("== 2/5 prepare");
    let cache_dir = out.join("cache");
    let mut spec = PrepareSpec::new(&cache_dir, Vec::new());
    spec.domains = domains_in_dir(&corpus_dir)?;
    let report = prepare(&spec)?;
    let cache = TokenCache::open(&cache_dir)?;
    println!(
        "{} domains, {} training tokens{}",
        cache.domains().len(),
        cache.n_train_tokens().iter().sum::<u64>(),
        if report.up_to_date {
            " (cache up to date)"
        } else {
            ""
        }
    );

    println!("== 3/5 sweep");
    let runs = out.join("runs.csv");
    forget_other_demo(out, &args)?;
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    crate::proxy::sweep::run(&SweepSpec {
        seed: args.seed,
        noise_seeds: DEMO_NOISE_SEEDS,
        workers,
        ..SweepSpec::new(
            cache_dir.clone(),
            ProxyConfig::load(&args.proxy)?,
            args.runs,
            runs.clone(),
        )
    })?;

    // The target: mean validation loss over the learnable domains. The noise
    // domain is excluded — nothing about it can be learned, so any weight on it
    // is wasted capacity, and the optimizer should find that out.
    let learnable: Vec<&String> = cache
        .domains()
        .iter()
        .filter(|d| *d != NOISE_DOMAIN)
        .collect();
    let target_spec = learnable
        .iter()
        .map(|d| format!("{:.6}*{d}", 1.0 / learnable.len() as f64))
        .collect::<Vec<_>>()
        .join("+");

    println!("== 4/5 fit (the default law, target: mean loss of the learnable domains)");
    let law = out.join("law.json");
    crate::law::fit_stage::run(&FitSpec {
        target: target_spec.clone(),
        out: law.clone(),
        seed: args.seed,
        ..FitSpec::new(RunsInput::Table(runs.clone()))
    })?;

    println!("== 5/5 optimize");
    let weights = out.join("weights.json");
    let outcome = crate::optimize::stage::run(&OptimizeSpec {
        seed: args.seed,
        ..OptimizeSpec::new(law, weights.clone())
    })?;

    println!(
        "== check: fresh proxies trained on each mixture (seed {})",
        args.seed + 1
    );
    let cfg = ProxyConfig::load(&args.proxy)?;
    let target = Target::parse(&target_spec, cache.domains())?;
    let candidates = [
        ("optimized", outcome.optimized.clone(), outcome.predicted),
        ("uniform", outcome.uniform.0.clone(), outcome.uniform.1),
        ("natural", outcome.natural.0.clone(), outcome.natural.1),
    ];
    let actual = train_each(&cfg, &cache, &candidates, args.seed + 1)?;
    println!(
        "{:<10} {:>10} {:>10} {:>8}",
        "mixture", "predicted", "actual", NOISE_DOMAIN
    );
    let mut worst: f64 = 0.0;
    for ((name, mix, pred), losses) in candidates.iter().zip(&actual) {
        let noise = mix.get(NOISE_DOMAIN).unwrap_or(0.0);
        let got = target.eval(losses);
        worst = worst.max((got - pred).abs());
        println!("{name:<10} {pred:>10.4} {got:>10.4} {noise:>8.4}");
    }
    let rmse = crate::law::LawFile::load(&out.join("law.json"))?
        .cv
        .mse
        .sqrt();
    println!(
        "largest |predicted - actual| {worst:.4}: {} the law's CV error (rmse {rmse:.4})",
        if worst <= rmse { "within" } else { "OUTSIDE" }
    );
    let report_inputs = crate::report::ReportInputs {
        runs: runs.clone(),
        law: out.join("law.json"),
        weights: Some(weights.clone()),
        trajectory: None,
    };
    crate::report::write_report(&report_inputs, &out.join("report.html"))?;
    println!(
        "demo finished in {:.1} s; results in {} (runs.csv, law.json, weights.json, report.html)",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The demo owns its directory: when it last ran with other settings, its runs
/// table belongs to another sweep, so start that afresh instead of refusing.
fn forget_other_demo(out: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let marker = out.join("demo.json");
    let settings = serde_json::json!({
        "seed": args.seed, "proxy": args.proxy, "scale": args.scale,
        "mixopt_version": crate::VERSION,
    });
    let previous: Option<serde_json::Value> = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if previous.as_ref() != Some(&settings) {
        let runs = out.join("runs.csv");
        for path in std::iter::once(runs.clone()).chain(crate::store::meta_paths(&runs)) {
            if path.exists() {
                std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
            }
        }
    }
    crate::mixture::write_json_atomic(&marker, &settings)?;
    Ok(())
}

/// Train one proxy per mixture, concurrently (one worker each), returning each
/// run's per-domain validation losses in the cache's domain order.
fn train_each(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixtures: &[(&str, Mixture, f64)],
    seed: u64,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let jobs: Vec<Job> = mixtures
        .iter()
        .map(|(_, m, _)| Job {
            mixture: m.clone(),
            opts: TrainOptions {
                seed,
                ..TrainOptions::default()
            },
        })
        .collect();
    let mut losses = vec![Vec::new(); jobs.len()];
    train_jobs(
        cfg,
        cache,
        &jobs,
        jobs.len(),
        |i, report| -> anyhow::Result<()> {
            losses[i] = report?.losses;
            Ok(())
        },
    )?;
    Ok(losses)
}
