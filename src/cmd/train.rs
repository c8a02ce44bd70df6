//! `mixopt train`: train one proxy on one mixture and print per-domain
//! validation losses (and throughput). With `--schedule odm|aioli|doremi|ado`
//! an online mixing policy updates the sampling mixture during the run; the
//! trajectory (step, weights, per-domain losses) goes to `--trajectory` and the
//! mixture the schedule amounted to to `--weights-out`.

use crate::corpus::cache::{Split, TokenCache};
use crate::mixture::Mixture;
use crate::online::controller::{train_scheduled, trajectory_csv, ScheduleSpec, TrajectoryRow};
use crate::online::PolicyKind;
use crate::proxy::train::train_proxy_with;
use crate::proxy::{set_threads, ProxyConfig, TrainOptions};
use anyhow::Context;
use std::path::PathBuf;

/// `--schedule`: static, or one of the online policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    Static,
    Odm,
    Aioli,
    Doremi,
    Ado,
}

impl Schedule {
    fn policy(self) -> Option<PolicyKind> {
        match self {
            Schedule::Static => None,
            Schedule::Odm => Some(PolicyKind::Odm),
            Schedule::Aioli => Some(PolicyKind::Aioli),
            Schedule::Doremi => Some(PolicyKind::Doremi),
            Schedule::Ado => Some(PolicyKind::Ado),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Token cache written by `mixopt prepare`.
    #[arg(long)]
    pub cache: PathBuf,
    /// Proxy preset: a TOML file or a built-in name (base, tiny, small, 1m, 60m).
    #[arg(long, default_value = "tiny")]
    pub proxy: String,
    /// The (starting) mixture: "a=0.5,b=0.5" or a weights.json (default: uniform,
    /// i.e. stratified sampling).
    #[arg(long)]
    pub mixture: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads: each batch is split into this many row shards trained
    /// concurrently (data parallel). Faster; the result then differs from the
    /// 1-thread run (and from a sweep's row for the same run) by float
    /// summation order. Default 1, so a seed gives the same numbers on any machine.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where the proxy trains: cpu, or cuda:N (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Override the preset's number of optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Write the training-loss curve (step,loss) as CSV here.
    #[arg(long)]
    pub curve: Option<PathBuf>,
    /// Override the preset's evaluations per run (evenly spaced, the last at
    /// the end); with more than one, each is printed.
    #[arg(long)]
    pub checkpoints: Option<usize>,
    /// The held-out split to score on: val (for choosing) or test (for
    /// judging a final answer; nothing should be tuned on it).
    #[arg(long, value_enum, default_value = "val")]
    pub split: Split,
    /// Write every evaluation (steps, n_tokens, loss_<domain>…) as CSV here.
    #[arg(long)]
    pub checkpoints_out: Option<PathBuf>,
    /// Sampling schedule: static, or an online policy updating the mixture.
    #[arg(long, value_enum, default_value = "static")]
    pub schedule: Schedule,
    /// Steps between policy updates (scheduled runs). 5 (our choice): ODM and
    /// DoReMi update every step, but a tiny proxy's batch holds ~1–2 rows per
    /// domain, so per-domain losses are averaged over 5 steps (~80 updates in
    /// a 400-step run).
    #[arg(long, default_value_t = 5)]
    pub update_every_steps: usize,
    /// Validation windows per domain when a policy asks for validation losses
    /// (Aioli). 8 (our choice): a quarter of `tiny`'s final evaluation, so a
    /// LearnParams probe costs a few forward batches, not a full evaluation.
    #[arg(long, default_value_t = 8)]
    pub policy_eval_windows: usize,
    /// Policy parameter override KEY=VALUE (repeatable; see docs/online.md).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// DoReMi reference losses ({"domain": loss} JSON or "a=2.1,b=3.4"); default:
    /// train a reference proxy on the starting mixture first (same preset and seed).
    #[arg(long)]
    pub reference: Option<String>,
    /// Write the trajectory CSV here: step, w_<domain>…, loss_<domain>… per update.
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Write the resulting mixture as weights.json (static: the mixture itself;
    /// scheduled: the time-averaged policy weights).
    #[arg(long)]
    pub weights_out: Option<PathBuf>,
    /// Save the trained proxy's parameters here as safetensors (named
    /// tok_emb, blocks.N.wq, …; `ProxyModel::load` reads them back).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from a proxy a `--save` wrote (same preset and cache vocabulary)
    /// instead of a fresh initialization: continued training. AdamW's state
    /// and the learning-rate schedule (warmup included) start afresh.
    #[arg(long, value_name = "FILE.safetensors")]
    pub init: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = args.threads;
    anyhow::ensure!(threads > 0, "--threads must be > 0");
    set_threads(1);
    anyhow::ensure!(
        args.update_every_steps > 0,
        "--update-every-steps must be > 0"
    );
    anyhow::ensure!(
        args.policy_eval_windows > 0,
        "--policy-eval-windows must be > 0"
    );
    let mut cfg = ProxyConfig::load(&args.proxy)?;
    if let Some(steps) = args.steps {
        cfg.n_steps = steps;
        cfg.warmup_steps = cfg.warmup_steps.min(steps);
        cfg.check().with_context(|| "--steps")?;
    }
    if let Some(k) = args.checkpoints {
        cfg.checkpoints = k;
        cfg.check().with_context(|| "--checkpoints")?;
    }
    let cache = TokenCache::open(&args.cache)?;
    let mixture = match &args.mixture {
        Some(m) => Mixture::resolve_for(m, cache.domains())
            .with_context(|| format!("--mixture {m} against cache {}", args.cache.display()))?,
        None => Mixture::uniform(cache.domains().to_vec())?,
    };
    let opts = TrainOptions {
        seed: args.seed,
        device: crate::proxy::parse_device(&args.device)?,
        threads,
        split: args.split,
        save: args.save.clone(),
        init: args.init.clone(),
        ..TrainOptions::default()
    };

    let (report, result, rows) = match args.schedule.policy() {
        None => {
            anyhow::ensure!(
                args.params.is_empty() && args.reference.is_none(),
                "--param and --reference apply to --schedule odm|aioli|doremi|ado only"
            );
            let pb = crate::progress::bar(cfg.n_steps as u64, "train");
            let report = train_proxy_with(&cfg, &cache, &mixture, &opts, |_| pb.inc(1))?;
            pb.finish_and_clear();
            let rows = vec![TrajectoryRow {
                step: 0,
                weights: mixture.weights().to_vec(),
                losses: vec![None; mixture.len()],
            }];
            (report, mixture.clone(), rows)
        }
        Some(kind) => {
            let reference_losses = match (kind, &args.reference) {
                (PolicyKind::Doremi, Some(r)) => {
                    Some(super::online::load_reference(r, cache.domains())?)
                }
                (_, Some(_)) => anyhow::bail!("--reference applies to --schedule doremi only"),
                (_, None) => None,
            };
            let schedule = ScheduleSpec {
                kind,
                params: args.params.clone(),
                reference_losses,
                update_every_steps: args.update_every_steps,
                eval_windows: args.policy_eval_windows,
            };
            let run = train_scheduled(&cfg, &cache, &mixture, &opts, &schedule)?;
            (run.report, run.result, run.trajectory)
        }
    };

    println!(
        "proxy {} ({} layers, d={}, {} non-embedding params), {} steps, {} tokens, seed {}, {} thread(s), schedule {:?}",
        cfg.name,
        cfg.n_layers,
        cfg.d_model,
        cfg.n_params_non_embedding(),
        cfg.n_steps,
        report.n_tokens,
        args.seed,
        if opts.device.is_cpu() { threads.min(cfg.batch_size) } else { 1 },
        args.schedule
    );
    if let (Some((_, first)), Some((_, last))) = (report.curve.first(), report.curve.last()) {
        println!("train loss {first:.4} -> {last:.4}");
    }
    let weight_title = if args.schedule == Schedule::Static {
        "weight"
    } else {
        "avg_w"
    };
    let loss_title = format!("{}_loss", report.split.name());
    println!("{:<20} {:>8} {:>10}", "domain", weight_title, loss_title);
    let n_train = result.len();
    for (i, (d, l)) in report.domains.iter().zip(&report.losses).enumerate() {
        match result.weights().get(i) {
            Some(w) => println!("{d:<20} {w:>8.4} {l:>10.4}"),
            None => println!("{d:<20} {:>8} {l:>10.4}", "eval"),
        }
    }
    // The mean over the training domains (evaluation-only ones are targets of their own).
    let mean = report.losses[..n_train].iter().sum::<f64>() / n_train as f64;
    println!("{:<20} {:>8} {:>10.4}", "mean", "", mean);
    println!(
        "wall {:.2} s (training {:.2} s, {:.0} tokens/s; evaluation {:.2} s)",
        report.wall_s,
        report.train_s,
        report.tokens_per_s(),
        report.wall_s - report.train_s
    );
    if report.checkpoints.len() > 1 {
        println!("{:<20} {:>8} {:>10}", "checkpoint", "steps", "mean");
        for c in &report.checkpoints {
            let mean = c.losses.iter().sum::<f64>() / c.losses.len() as f64;
            println!("{:<20} {:>8} {mean:>10.4}", c.n_tokens, c.steps);
        }
    }
    if let Some(path) = &args.checkpoints_out {
        let text = crate::store::checkpoints_csv(&report.domains, "train", &report.checkpoints);
        crate::mixture::write_atomic(path, text.as_bytes())?;
    }
    if let Some(path) = &args.curve {
        let mut text = String::from("step,loss\n");
        for (s, l) in &report.curve {
            text += &format!("{s},{l}\n");
        }
        crate::mixture::write_atomic(path, text.as_bytes())?;
    }
    if let Some(path) = &args.trajectory {
        crate::mixture::write_atomic(path, trajectory_csv(cache.domains(), &rows).as_bytes())?;
    }
    if let Some(path) = &args.weights_out {
        let provenance = serde_json::json!({
            "source": "mixopt train",
            "schedule": format!("{:?}", args.schedule).to_lowercase(),
            "proxy": cfg.name,
            "seed": args.seed,
            "n_steps": cfg.n_steps,
            "update_every_steps": args.update_every_steps,
            "params": args.params,
            "start_mixture": mixture.to_spec(),
            "mean_val_loss": mean,
            "cache": args.cache.display().to_string(),
            "mixopt_version": crate::VERSION,
        });
        let file = result.to_weights_file(Some("mean".into()), None, provenance);
        crate::mixture::write_json_atomic(path, &file)?;
    }
    Ok(())
}
