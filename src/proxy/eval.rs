//! Proxy evaluation: mean token loss on every domain's fixed held-out windows
//! (the same windows for every run), one domain per task when a pool is given.

use super::config::ProxyConfig;
use super::model::ProxyModel;
use crate::corpus::cache::{Split, TokenCache};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use rayon::ThreadPool;

/// Start offsets of `n` evenly spaced windows of `window` tokens in `len` tokens
/// (fewer if the split is short). Fixed, so every run is scored on the same tokens.
pub fn eval_offsets(len: usize, window: usize, n: usize) -> Vec<usize> {
    if len < window {
        return Vec::new();
    }
    let room = len - window;
    let n = n.min(len / window).max(1);
    if n == 1 {
        return vec![0];
    }
    (0..n).map(|i| i * room / (n - 1)).collect()
}

/// What to evaluate: which held-out split, how many windows per domain, and
/// whether evaluation-only domains are included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EvalSpec {
    pub split: Split,
    pub n_windows: usize,
    /// False: training domains only (what an online policy observes).
    pub all_domains: bool,
}

/// Mean token loss of `model` on each domain's held-out windows, one domain
/// per task on `pool` when given.
pub(crate) fn evaluate_in(
    model: &ProxyModel,
    cfg: &ProxyConfig,
    cache: &TokenCache,
    device: &Device,
    spec: EvalSpec,
    pool: Option<&ThreadPool>,
) -> Result<Vec<f64>> {
    let n = if spec.all_domains {
        cache.eval_domains().len()
    } else {
        cache.domains().len()
    };
    let one = |d: usize| evaluate_domain(model, cfg, cache, device, spec, d);
    match pool {
        Some(pool) => pool.install(|| (0..n).into_par_iter().map(one).collect()),
        None => (0..n).map(one).collect(),
    }
}

fn evaluate_domain(
    model: &ProxyModel,
    cfg: &ProxyConfig,
    cache: &TokenCache,
    device: &Device,
    spec: EvalSpec,
    d: usize,
) -> Result<f64> {
    let window = cfg.seq_len + 1;
    let name = &cache.eval_domains()[d];
    let view = cache.held_out(spec.split, d);
    let offsets = eval_offsets(view.len(), window, spec.n_windows.max(1));
    if offsets.is_empty() {
        let hint = if spec.split == Split::Test && view.is_empty() {
            " (no test documents: it had too few held-out documents, or the cache was \
             prepared with --test-fraction 0)"
        } else {
            ""
        };
        return Err(Error::invalid(format!(
            "domain {name:?}: {} split has {} tokens, fewer than one window of {window}{hint}",
            spec.split.name(),
            view.len()
        )));
    }
    let mut buf = Vec::new();
    let mut total = 0.0;
    for chunk in offsets.chunks(cfg.batch_size) {
        buf.resize(chunk.len() * window, 0);
        for (row, &off) in buf.chunks_mut(window).zip(chunk) {
            view.copy_to(off, row);
        }
        let ids = Tensor::from_slice(&buf, (chunk.len(), window), device)?;
        let loss: f32 = model.loss(&ids)?.to_scalar()?;
        total += loss as f64 * chunk.len() as f64;
    }
    let mean = total / offsets.len() as f64;
    if !mean.is_finite() {
        return Err(Error::invalid(format!(
            "domain {name:?}: validation loss is {mean} (training diverged)"
        )));
    }
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_offsets_are_even_and_in_range() {
        assert_eq!(eval_offsets(100, 10, 3), vec![0, 45, 90]);
        assert_eq!(eval_offsets(25, 10, 8), vec![0, 15]);
        assert_eq!(eval_offsets(9, 10, 3), Vec::<usize>::new());
        assert_eq!(eval_offsets(10, 10, 3), vec![0]);
    }
}
