//! Online mixing inside proxy training (`mixopt train --schedule`): a
//! [`MixtureController`] that feeds a policy the per-domain losses it asks for
//! every `update_every_steps` steps and switches the sampling mixture to its
//! answer, the trajectory of those updates, and the scheduled run itself
//! (training a DoReMi reference first when none is given).

use super::{LossRequest, Observation, OnlinePolicy, PolicyKind, PolicySpec};
use crate::corpus::cache::TokenCache;
use crate::mixture::Mixture;
use crate::proxy::train::{train_proxy_controlled, train_proxy_with, MixtureController, StepInfo};
use crate::proxy::{ProxyConfig, TrainOptions, TrainReport};
pub use crate::store::trajectory::TrajectoryRow;

/// How a scheduled run updates its mixture.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub kind: PolicyKind,
    /// Policy parameter overrides, `KEY=VALUE` (see docs/online.md).
    pub params: Vec<String>,
    /// DoReMi's reference losses, one per training domain; `None`: train a
    /// reference proxy on the starting mixture first (same preset and seed).
    pub reference_losses: Option<Vec<f64>>,
    /// Steps between policy updates.
    pub update_every_steps: usize,
    /// Validation windows per domain when the policy asks for validation losses.
    pub eval_windows: usize,
}

/// What a scheduled run produced.
#[derive(Debug)]
pub struct ScheduledRun {
    pub report: TrainReport,
    /// The mixture the schedule amounted to (the policy's time-averaged weights).
    pub result: Mixture,
    /// The starting weights (step 0), then one row per update.
    pub trajectory: Vec<TrajectoryRow>,
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
            step: done as u64,
            weights: self.policy.weights().to_vec(),
            losses,
        });
        Ok(next)
    }
}

/// The trajectory CSV (`store::trajectory`'s format) of `rows` over `domains`.
pub fn trajectory_csv(domains: &[String], rows: &[TrajectoryRow]) -> String {
    crate::store::trajectory::Trajectory {
        domains: domains.to_vec(),
        rows: rows.to_vec(),
    }
    .to_csv()
}

/// Train one proxy on `mixture` with `schedule`'s policy updating the
/// sampling mixture (a DoReMi reference proxy is trained first when the spec
/// has no reference losses).
pub fn train_scheduled(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
    schedule: &ScheduleSpec,
) -> anyhow::Result<ScheduledRun> {
    anyhow::ensure!(
        schedule.update_every_steps > 0,
        "--update-every-steps must be > 0"
    );
    anyhow::ensure!(
        schedule.eval_windows > 0,
        "--policy-eval-windows must be > 0"
    );
    let kind = schedule.kind;
    let mut params = super::parse_params(&schedule.params)?;
    let n_updates = cfg.n_steps.saturating_sub(1) / schedule.update_every_steps;
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
    let reference = match (kind, &schedule.reference_losses) {
        (PolicyKind::Doremi, Some(r)) => Some(r.clone()),
        (PolicyKind::Doremi, None) => {
            eprintln!("doremi: training the reference proxy on the starting mixture first");
            let pb = crate::progress::bar(cfg.n_steps as u64, "reference");
            // The reference proxy is not the one `--save` asks for; it starts
            // where the scheduled run starts (`--init` included).
            let reference_opts = TrainOptions {
                save: None,
                ..opts.clone()
            };
            let r = train_proxy_with(cfg, cache, mixture, &reference_opts, |_| pb.inc(1))?;
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
        policy: super::build(&spec)?,
        update_every_steps: schedule.update_every_steps,
        eval_windows: schedule.eval_windows,
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
            cfg.n_steps, schedule.update_every_steps
        );
    }
    let pb = crate::progress::bar(cfg.n_steps as u64, kind.as_str());
    let report = train_proxy_controlled(cfg, cache, mixture, opts, &mut ctl, |_| pb.inc(1))?;
    pb.finish_and_clear();
    Ok(ScheduledRun {
        report,
        result: ctl.policy.result(),
        trajectory: ctl.rows,
    })
}
