//! The proxy training loop: draw each sequence's domain from the mixture, take
//! an AdamW step (our own warmup/cosine schedule and global-norm clipping —
//! candle's AdamW has neither), then evaluate mean token loss on every domain's
//! fixed validation windows.
//!
//! A scheduled run (`train_proxy_controlled`) hands a [`MixtureController`]
//! each step's per-domain batch losses and tokens seen, lets it measure
//! validation losses, and switches the sampling mixture when it says so. Static
//! runs take the original code path, so they stay bit-identical for a seed
//! (and the same `threads`).
//!
//! Batches are drawn in `batch`; held-out evaluation is in `eval`.

use super::batch::{Batcher, GOLDEN};
use super::config::ProxyConfig;
use super::eval::{evaluate_in, EvalSpec};
use super::model::{Params, ProxyModel};
use super::optim::{AdamWConfig, FusedAdamW};
use crate::corpus::cache::{Split, TokenCache};
use crate::error::{Error, Result};
use crate::mixture::Mixture;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::distr::weighted::WeightedIndex;
use rayon::prelude::*;
use std::ops::Range;
use std::time::Instant;

/// Per-run options that are not part of the preset.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Seeds weight initialization and batch sampling (separate streams).
    pub seed: u64,
    pub device: Device,
    /// Record the training loss every this many steps in `TrainReport::curve`.
    pub log_every_steps: usize,
    /// CPU worker threads for this run: each step's batch is split into this
    /// many row shards, whose forward and backward passes run concurrently
    /// (data parallel; gradients summed before the step). Set candle's own
    /// matmul threads to 1 when using more than one (`proxy::set_threads`).
    pub threads: usize,
    /// The held-out split the run is scored on: validation for anything that
    /// chooses, test for a final judgement.
    pub split: Split,
    /// Save the trained proxy's parameters here (safetensors; `ProxyModel::load`
    /// reads them back).
    pub save: Option<std::path::PathBuf>,
    /// Start from the parameters a `save` wrote (same config and vocabulary)
    /// instead of the seed's initialization: continued training. The
    /// optimizer state and the learning-rate schedule start afresh; the seed
    /// still orders the data.
    pub init: Option<std::path::PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 0,
            device: Device::Cpu,
            log_every_steps: 10,
            threads: 1,
            split: Split::Val,
            save: None,
            init: None,
        }
    }
}

/// What one proxy run measured.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Every evaluated domain (the cache's `eval_domains`: training domains,
    /// then evaluation-only ones).
    pub domains: Vec<String>,
    /// The split `losses` were measured on.
    pub split: Split,
    /// Mean held-out token loss (nats) per evaluated domain after training.
    pub losses: Vec<f64>,
    /// (step, training loss) every `log_every_steps`.
    pub curve: Vec<(usize, f64)>,
    pub n_tokens: u64,
    /// Whole run: setup, training steps and evaluation.
    pub wall_s: f64,
    /// The optimizer steps alone (what training throughput is measured on).
    pub train_s: f64,
    /// Per-domain validation losses along the way (the preset's
    /// `checkpoints`), the last one at the end: the loss-versus-tokens curve a scale-aware law fits.
    pub checkpoints: Vec<Checkpoint>,
}

/// Held-out losses (every evaluated domain) after `steps` optimizer steps
/// (`n_tokens` training tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub steps: usize,
    pub n_tokens: u64,
    pub losses: Vec<f64>,
}

impl TrainReport {
    /// Training tokens per second of optimizer-step time (evaluation excluded).
    pub fn tokens_per_s(&self) -> f64 {
        self.n_tokens as f64 / self.train_s.max(1e-9)
    }
}

/// What a [`MixtureController`] sees after each optimizer step.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// 0-based step just taken.
    pub step: usize,
    pub n_steps: usize,
    /// Mean token loss of this step's rows from each domain (`None`: no row).
    pub batch_losses: &'a [Option<f64>],
    /// Training tokens drawn from each domain so far (inputs, `seq_len` per row).
    pub tokens_seen: &'a [u64],
}

/// Changes the sampling mixture of a proxy run between steps (an online
/// mixing policy, in `mixopt train --schedule`).
pub trait MixtureController {
    /// Called after every optimizer step. `eval(n)` measures every domain's
    /// validation loss now on `n` evenly spaced windows per domain. A returned
    /// mixture (over the cache's domains) is sampled from the next step on.
    fn after_step(
        &mut self,
        info: &StepInfo,
        eval: &mut dyn FnMut(usize) -> Result<Vec<f64>>,
    ) -> Result<Option<Mixture>>;
}

/// Train one proxy on `mixture` (aligned to the cache's domains) and evaluate it.
pub fn train_proxy(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
) -> Result<TrainReport> {
    train_proxy_with(cfg, cache, mixture, opts, |_| {})
}

/// As `train_proxy`, calling `on_step(step)` after each optimizer step (progress bars).
pub fn train_proxy_with(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
    on_step: impl FnMut(usize),
) -> Result<TrainReport> {
    train_loop(cfg, cache, mixture, opts, on_step, None)
}

/// A scheduled run: `mixture` is the starting mixture and `controller` may
/// replace it after any step.
pub fn train_proxy_controlled(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
    controller: &mut dyn MixtureController,
    on_step: impl FnMut(usize),
) -> Result<TrainReport> {
    train_loop(cfg, cache, mixture, opts, on_step, Some(controller))
}

/// Every domain with weight > 0 must hold at least one training window.
fn check_trainable(cache: &TokenCache, mixture: &Mixture, window: usize) -> Result<()> {
    for (d, (name, w)) in mixture.iter().enumerate() {
        if w > 0.0 && cache.train(d).len() < window {
            return Err(Error::invalid(format!(
                "domain {name:?}: {} training tokens, fewer than one window of {window}",
                cache.train(d).len()
            )));
        }
    }
    Ok(())
}

/// Mean next-token loss of the batch (for backward) and of each row, computed
/// from the logits (the same cross-entropy as `ProxyModel::loss`, kept per row).
fn loss_per_row(model: &ProxyModel, ids: &Tensor) -> Result<(Tensor, Vec<f32>)> {
    let (b, t1) = ids.dims2()?;
    let t = t1 - 1;
    let inputs = ids.narrow(1, 0, t)?;
    let targets = ids.narrow(1, 1, t)?;
    let logits = model.forward(&inputs)?;
    let v = logits.dim(D::Minus1)?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * t, v))?, D::Minus1)?;
    let nll = logp.gather(&targets.reshape((b * t, 1))?, 1)?.neg()?;
    let loss = nll.mean_all()?;
    let rows: Vec<f32> = nll.reshape((b, t))?.mean(1)?.to_vec1()?;
    Ok((loss, rows))
}

/// One shard's forward and backward pass.
struct ShardPass {
    /// The shard's share of the batch's mean loss (scaled by rows / B).
    loss: Tensor,
    grads: GradStore,
    /// Mean loss of each row (scheduled runs only).
    row_losses: Vec<f32>,
}

fn shard_pass(
    model: &ProxyModel,
    batch: &[u32],
    rows: &Range<usize>,
    batch_size: usize,
    window: usize,
    device: &Device,
    per_row: bool,
) -> Result<ShardPass> {
    let ids = Tensor::from_slice(
        &batch[rows.start * window..rows.end * window],
        (rows.len(), window),
        device,
    )?;
    let (loss, row_losses) = if per_row {
        loss_per_row(model, &ids)?
    } else {
        (model.loss(&ids)?, Vec::new())
    };
    let loss = if rows.len() == batch_size {
        loss
    } else {
        (loss * (rows.len() as f64 / batch_size as f64))?
    };
    let grads = loss.backward()?;
    Ok(ShardPass {
        loss,
        grads,
        row_losses,
    })
}

/// The optimizer step with global-norm clipping: fused on the CPU, candle's
/// AdamW (one per weight-decay group) elsewhere.
enum Stepper {
    Fused(FusedAdamW),
    Candle { decay: AdamW, plain: AdamW },
}

impl Stepper {
    fn new(cfg: &ProxyConfig, params: &Params, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            let adam = AdamWConfig {
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
            };
            return Ok(Stepper::Fused(FusedAdamW::new(&params.vars, adam)?));
        }
        let (decay, plain): (Vec<_>, Vec<_>) = params.vars.iter().partition(|(_, _, wd)| *wd);
        let adam = |vars: Vec<&(String, candle_core::Var, bool)>, wd: f64| {
            AdamW::new(
                vars.into_iter().map(|(_, v, _)| v.clone()).collect(),
                ParamsAdamW {
                    lr: cfg.lr_peak,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: 1e-8,
                    weight_decay: wd,
                },
            )
        };
        Ok(Stepper::Candle {
            decay: adam(decay, cfg.weight_decay)?,
            plain: adam(plain, 0.0)?,
        })
    }

    /// One step on the sum of the shards' gradients.
    fn step(
        &mut self,
        mut shards: Vec<GradStore>,
        lr: f64,
        clip: f64,
        params: &Params,
    ) -> Result<()> {
        match self {
            Stepper::Fused(opt) => {
                opt.step(&shards, lr, clip)?;
            }
            Stepper::Candle { decay, plain } => {
                // Off the CPU there is one shard.
                let mut grads = shards.swap_remove(0);
                if clip > 0.0 {
                    let mut sq = 0.0f64;
                    for (_, var, _) in &params.vars {
                        if let Some(g) = grads.get(var.as_tensor()) {
                            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                        }
                    }
                    let norm = sq.sqrt();
                    if norm > clip {
                        let scale = clip / (norm + 1e-6);
                        for (_, var, _) in &params.vars {
                            if let Some(g) = grads.get(var.as_tensor()) {
                                let scaled = (g * scale)?;
                                grads.insert(var.as_tensor(), scaled);
                            }
                        }
                    }
                }
                decay.set_learning_rate(lr);
                plain.set_learning_rate(lr);
                decay.step(&grads)?;
                plain.step(&grads)?;
            }
        }
        Ok(())
    }
}

fn train_loop(
    cfg: &ProxyConfig,
    cache: &TokenCache,
    mixture: &Mixture,
    opts: &TrainOptions,
    mut on_step: impl FnMut(usize),
    mut controller: Option<&mut dyn MixtureController>,
) -> Result<TrainReport> {
    let started = Instant::now();
    let mixture = mixture.align(cache.domains())?;
    let window = cfg.seq_len + 1;
    check_trainable(cache, &mixture, window)?;
    let domain_dist = WeightedIndex::new(mixture.weights())
        .map_err(|e| Error::invalid(format!("mixture {}: {e}", mixture.to_spec())))?;
    // Separate streams so changing the data order never changes the initialization.
    let init_seed = opts.seed;
    let data_seed = opts.seed ^ GOLDEN;
    let mut batcher = Batcher::new(
        (0..cache.domains().len()).map(|d| cache.train(d)).collect(),
        domain_dist,
        data_seed,
        window,
    );
    let n_domains = cache.domains().len();
    let mut tokens_seen = vec![0u64; n_domains];
    let mut sums = vec![0.0f64; n_domains];
    let mut counts = vec![0usize; n_domains];
    let mut batch_losses: Vec<Option<f64>> = vec![None; n_domains];
    let device = &opts.device;
    let (model, params) = ProxyModel::new(cfg, cache.vocab_size(), init_seed, device)?;
    if let Some(path) = &opts.init {
        params.load(path)?;
    }
    let mut stepper = Stepper::new(cfg, &params, device)?;
    // Data-parallel row shards (CPU only): shard i takes rows
    // [i·B/n, (i+1)·B/n) of every batch.
    let n_shards = if device.is_cpu() {
        opts.threads.max(1).min(cfg.batch_size.max(1))
    } else {
        1
    };
    let shards: Vec<Range<usize>> = (0..n_shards)
        .map(|i| i * cfg.batch_size / n_shards..(i + 1) * cfg.batch_size / n_shards)
        .collect();
    let pool = if n_shards > 1 {
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n_shards)
                .thread_name(|i| format!("mixopt-shard-{i}"))
                .build()
                .map_err(|e| Error::invalid(format!("cannot start {n_shards} threads: {e}")))?,
        )
    } else {
        None
    };

    let mut curve = Vec::new();
    let mut checkpoints = Vec::new();
    let checkpoint_steps = cfg.checkpoint_steps();
    let final_eval = EvalSpec {
        split: opts.split,
        n_windows: cfg.eval_windows,
        all_domains: true,
    };
    let mut checkpoint_s = 0.0;
    let tokens_per_step = (cfg.batch_size * cfg.seq_len) as u64;
    let mut buf = Vec::new();
    let train_started = Instant::now();
    for step in 0..cfg.n_steps {
        batcher.next_batch(cfg.batch_size, &mut buf);
        let per_row = controller.is_some();
        let run_shard = |rows: &Range<usize>| {
            shard_pass(&model, &buf, rows, cfg.batch_size, window, device, per_row)
        };
        let passes: Vec<ShardPass> = match &pool {
            Some(pool) => {
                pool.install(|| shards.par_iter().map(run_shard).collect::<Result<_>>())?
            }
            None => vec![run_shard(&shards[0])?],
        };
        if per_row {
            sums.iter_mut().for_each(|s| *s = 0.0);
            counts.iter_mut().for_each(|c| *c = 0);
            let rows = passes.iter().flat_map(|p| &p.row_losses);
            for (&d, &l) in batcher.row_domains.iter().zip(rows) {
                sums[d] += l as f64;
                counts[d] += 1;
                tokens_seen[d] += cfg.seq_len as u64;
            }
            for d in 0..n_domains {
                batch_losses[d] = (counts[d] > 0).then(|| sums[d] / counts[d] as f64);
            }
        }
        let (losses, grads): (Vec<Tensor>, Vec<GradStore>) =
            passes.into_iter().map(|p| (p.loss, p.grads)).unzip();
        stepper.step(grads, cfg.lr_at(step), cfg.grad_clip, &params)?;
        if step % opts.log_every_steps.max(1) == 0 || step + 1 == cfg.n_steps {
            let mut l = 0f32;
            for loss in &losses {
                l += loss.to_scalar::<f32>()?;
            }
            if !l.is_finite() {
                return Err(Error::invalid(format!(
                    "training loss is {l} at step {step} (diverged; lower lr_peak)"
                )));
            }
            curve.push((step, l as f64));
        }
        if let Some(ctl) = controller.as_deref_mut() {
            let info = StepInfo {
                step,
                n_steps: cfg.n_steps,
                batch_losses: &batch_losses,
                tokens_seen: &tokens_seen,
            };
            let mut eval = |n_windows: usize| {
                let spec = EvalSpec {
                    split: Split::Val,
                    n_windows,
                    all_domains: false,
                };
                evaluate_in(&model, cfg, cache, device, spec, pool.as_ref())
            };
            if let Some(next) = ctl.after_step(&info, &mut eval)? {
                let next = next.align(cache.domains())?;
                check_trainable(cache, &next, window)?;
                batcher.domain_dist = WeightedIndex::new(next.weights())
                    .map_err(|e| Error::invalid(format!("mixture {}: {e}", next.to_spec())))?;
            }
        }
        if step + 1 < cfg.n_steps && checkpoint_steps.contains(&(step + 1)) {
            let t = Instant::now();
            let losses = evaluate_in(&model, cfg, cache, device, final_eval, pool.as_ref())?;
            checkpoint_s += t.elapsed().as_secs_f64();
            checkpoints.push(Checkpoint {
                steps: step + 1,
                n_tokens: (step + 1) as u64 * tokens_per_step,
                losses,
            });
        }
        on_step(step);
    }
    let train_s = train_started.elapsed().as_secs_f64() - checkpoint_s;
    let losses = evaluate_in(&model, cfg, cache, device, final_eval, pool.as_ref())?;
    checkpoints.push(Checkpoint {
        steps: cfg.n_steps,
        n_tokens: cfg.n_tokens(),
        losses: losses.clone(),
    });
    if let Some(path) = &opts.save {
        params.save(path)?;
    }
    Ok(TrainReport {
        checkpoints,
        train_s,
        domains: cache.eval_domains().to_vec(),
        split: opts.split,
        losses,
        curve,
        n_tokens: cfg.n_tokens(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_row_loss_is_the_same_objective_as_model_loss() {
        let cfg = ProxyConfig::from_toml(
            "name = \"t\"\nn_layers = 1\nd_model = 16\nn_heads = 2\nd_ff = 32\n\
             seq_len = 8\nbatch_size = 3\nn_steps = 1\nlr_peak = 1e-3\n\
             warmup_steps = 0\neval_windows = 1\n",
            "test",
        )
        .unwrap();
        let (model, _) = ProxyModel::new(&cfg, 11, 5, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..27u32).map(|i| (i * 7 + 3) % 11).collect();
        let ids = Tensor::from_slice(&ids, (3, 9), &Device::Cpu).unwrap();
        let want: f32 = model.loss(&ids).unwrap().to_scalar().unwrap();
        let (loss, rows) = loss_per_row(&model, &ids).unwrap();
        let got: f32 = loss.to_scalar().unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let mean_rows = rows.iter().sum::<f32>() / rows.len() as f32;
        assert!((mean_rows - want).abs() < 1e-5, "{rows:?}");
    }
}
