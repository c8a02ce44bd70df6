//! `mixopt train`: train one proxy on one mixture and print per-domain
//! validation losses (and throughput). With `--schedule odm|aioli|doremi|ado`
//! an online mixing policy updates the sampling mixture during the run; the
//! trajectory (step, weights, per-domain losses) goes to `--trajectory` and the
//! mixture the schedule amounted to to `--weights-out`.

use crate::corpus::cache::{Split, TokenCache};
use crate::mixture::Mixture;
use crate::online::{self, LossRequest, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use crate::proxy::train::{train_proxy_controlled, train_proxy_with, MixtureController, StepInfo};
use crate::proxy::{ProxyConfig, TrainOptions, TrainReport};
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
}

/// Set candle's own intra-op thread count (it reads RAYON_NUM_THREADS on every
/// matmul; its element-wise pool is sized on first use). mixopt keeps it at 1
/// and parallelizes one level up instead (data-parallel shards within a run,
/// concurrent runs in a sweep): measured faster than candle's intra-op threads,
/// which leave every non-matmul op on one core. Called before any worker starts.
pub fn set_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
}

/// One policy update, as written to the trajectory CSV.
#[derive(Debug, Clone)]
pub struct TrajectoryRow {
    /// Optimizer steps completed when the update happened.
    pub step: usize,
    /// Sampling weights from this update on.
    pub weights: Vec<f64>,
    /// Losses the policy saw (`None`: not observed at this update).
    pub losses: Vec<Option<f64>>,
}

/// Drives an [`OnlinePolicy`] from inside proxy training.
struct PolicyController {
    policy: Box<dyn OnlinePolicy>,
    update_every_steps: usize,
    eval_windows: usize,
    sums: Vec<f64>,
    counts: Vec<usize>,
    rows: Vec<TrajectoryRow>,
}

impl MixtureController for PolicyController {
    fn after_step(
        &mut self,
        info: &StepInfo,
        eval: &mut dyn FnMut(usize) -> crate::Result<Vec<f64>>,
    ) -> crate::Result<Option<Mixture>> {
        for (d, l) in info.batch_losses.iter().enumerate() {
            if let Some(l) = l {
                self.sums[d] += l;
                self.counts[d] += 1;
            }
        }
        let done = info.step + 1;
        if !done.is_multiple_of(self.update_every_steps) || done >= info.n_steps {
            return Ok(None);
        }
        let losses: Vec<Option<f64>> = match self.policy.request() {
            LossRequest::Training => self
                .sums
                .iter()
                .zip(&self.counts)
                .map(|(s, &c)| (c > 0).then(|| s / c as f64))
                .collect(),
            LossRequest::Validation => eval(self.eval_windows)?.into_iter().map(Some).collect(),
            LossRequest::None => vec![None; self.sums.len()],
        };
        let tokens: Vec<Option<f64>> = info.tokens_seen.iter().map(|&n| Some(n as f64)).collect();
        let obs = Observation {
            step: done as u64,
            losses: &losses,
            tokens: &tokens,
        };
        let next = self.policy.observe(&obs)?;
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.rows.push(TrajectoryRow {
            step: done,
            weights: self.policy.weights().to_vec(),
            losses,
        });
        Ok(next)
    }
}

/// The trajectory CSV: `step,w_<d>…,loss_<d>…`, an empty cell where a loss was
/// not observed.
pub fn trajectory_csv(domains: &[String], rows: &[TrajectoryRow]) -> String {
    let mut text = String::from("step");
    for d in domains {
        text += &format!(",w_{d}");
    }
    for d in domains {
        text += &format!(",loss_{d}");
    }
    text.push('\n');
    for r in rows {
        text += &r.step.to_string();
        for w in &r.weights {
            text += &format!(",{w}");
        }
        for l in &r.losses {
            match l {
                Some(l) => text += &format!(",{l}"),
                None => text.push(','),
            }
        }
        text.push('\n');
    }
    text
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
        Some(kind) => run_scheduled(&args, kind, &cfg, &cache, &mixture, &opts)?,
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

/// Build the policy (training a DoReMi reference first if needed) and run.
fn run_scheduled(
    args: &Args,
    kind: PolicyKind,
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
) -> anyhow::Result<(TrainReport, Mixture, Vec<TrajectoryRow>)> {
    let mut params = online::parse_params(&args.params)?;
    let n_updates = cfg.n_steps.saturating_sub(1) / args.update_every_steps;
    match kind {
        // ODM warms up on the prior; here the proxy's own LR warmup.
        PolicyKind::Odm if !params.contains_key("warmup_steps") => {
            params.insert("warmup_steps".into(), cfg.warmup_steps.into());
        }
        // A proxy run is far shorter than the runs Aioli's 10% LearnParams rule
        // was set for: default to 4 rounds per run (at least one update of
        // exploitation after each LearnParams phase).
        PolicyKind::Aioli if !params.contains_key("round_updates") => {
            let sweeps = params
                .get("lp_sweeps")
                .and_then(|v| v.as_u64())
                .unwrap_or(1) as usize;
            let n_lp = cache.domains().len() * sweeps;
            params.insert("round_updates".into(), (n_updates / 4).max(n_lp + 1).into());
        }
        _ => {}
    }
    let reference = match (kind, &args.reference) {
        (PolicyKind::Doremi, Some(r)) => Some(super::online::load_reference(r, cache.domains())?),
        (PolicyKind::Doremi, None) => {
            eprintln!("doremi: training the reference proxy on the starting mixture first");
            let pb = crate::progress::bar(cfg.n_steps as u64, "reference");
            let r = train_proxy_with(cfg, cache, mixture, opts, |_| pb.inc(1))?;
            pb.finish_and_clear();
            Some(r.losses[..cache.domains().len()].to_vec())
        }
        (_, Some(_)) => anyhow::bail!("--reference applies to --schedule doremi only"),
        _ => None,
    };
    let spec = PolicySpec {
        kind,
        prior: mixture.clone(),
        params,
        reference_losses: reference,
    };
    let k = cache.domains().len();
    let mut ctl = PolicyController {
        policy: online::build(&spec)?,
        update_every_steps: args.update_every_steps,
        eval_windows: args.policy_eval_windows,
        sums: vec![0.0; k],
        counts: vec![0; k],
        rows: vec![TrajectoryRow {
            step: 0,
            weights: mixture.weights().to_vec(),
            losses: vec![None; k],
        }],
    };
    if n_updates == 0 {
        eprintln!(
            "warning: {} steps with --update-every-steps {}: the policy never updates",
            cfg.n_steps, args.update_every_steps
        );
    }
    let pb = crate::progress::bar(cfg.n_steps as u64, kind.as_str());
    let report = train_proxy_controlled(cfg, cache, mixture, opts, &mut ctl, |_| pb.inc(1))?;
    pb.finish_and_clear();
    Ok((report, ctl.policy.result(), ctl.rows))
}
