//! `mixopt train`: train one proxy on one mixture and print per-domain
//! validation losses (and throughput).

use crate::corpus::cache::TokenCache;
use crate::mixture::Mixture;
use crate::proxy::train::train_proxy_with;
use crate::proxy::{ProxyConfig, TrainOptions};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Token cache written by `mixopt prepare`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Proxy preset: a TOML file or a built-in name (tiny, small, 1m).
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// The mixture: "a=0.5,b=0.5" or a weights.json.
    #[arg(long)]
    pub mixture: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads for matrix products (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override the preset's number of optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Write the training-loss curve (step,loss) as CSV here.
    #[arg(long)]
    pub curve: Option<PathBuf>,
}

/// Set candle's matmul thread count (it reads RAYON_NUM_THREADS on every call).
/// Called before any worker thread starts.
pub fn set_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        anyhow::ensure!(t > 0, "--threads must be > 0");
        set_threads(t);
    }
    let mut cfg = ProxyConfig::load(&args.proxy)?;
    if let Some(steps) = args.steps {
        cfg.n_steps = steps;
        cfg.warmup_steps = cfg.warmup_steps.min(steps);
        cfg.check().with_context(|| "--steps")?;
    }
    let cache = TokenCache::open(&args.cache)?;
    let mixture = Mixture::parse_or_load(&args.mixture)
        .with_context(|| format!("--mixture {}", args.mixture))?
        .align(cache.domains())
        .with_context(|| {
            format!(
                "--mixture {} against cache {}",
                args.mixture,
                args.cache.display()
            )
        })?;
    let opts = TrainOptions {
        seed: args.seed,
        ..TrainOptions::default()
    };
    let pb = crate::progress::bar(cfg.n_steps as u64, "train");
    let report = train_proxy_with(&cfg, &cache, &mixture, &opts, |_| pb.inc(1))?;
    pb.finish_and_clear();

    println!(
        "proxy {} ({} layers, d={}, {} non-embedding params), {} steps, {} tokens, seed {}",
        cfg.name,
        cfg.n_layers,
        cfg.d_model,
        cfg.n_params_non_embedding(),
        cfg.n_steps,
        report.n_tokens,
        args.seed
    );
    if let (Some((_, first)), Some((_, last))) = (report.curve.first(), report.curve.last()) {
        println!("train loss {first:.4} -> {last:.4}");
    }
    println!("{:<20} {:>8} {:>10}", "domain", "weight", "val_loss");
    for ((d, w), l) in mixture.iter().zip(&report.val_losses) {
        println!("{d:<20} {w:>8.4} {l:>10.4}");
    }
    let mean = report.val_losses.iter().sum::<f64>() / report.val_losses.len() as f64;
    println!("{:<20} {:>8} {:>10.4}", "mean", "", mean);
    println!(
        "wall {:.2} s (training {:.2} s, {:.0} tokens/s; evaluation {:.2} s)",
        report.wall_s,
        report.train_s,
        report.tokens_per_s(),
        report.wall_s - report.train_s
    );
    if let Some(path) = &args.curve {
        let mut text = String::from("step,loss\n");
        for (s, l) in &report.curve {
            text += &format!("{s},{l}\n");
        }
        crate::mixture::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
