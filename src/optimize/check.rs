//! Checking the optimum before trusting it (`optimize --validate-proxy P`):
//! train the law's optima at three trust radii (a quarter of `--trust-kl`,
//! `--trust-kl`, four times it) beside the natural and uniform mixtures on a
//! larger proxy, several seeds each, on the validation split, and keep
//! whichever reaches the best target. When natural or uniform wins, that is
//! what is written, and the output says so rather than recommending the
//! law's optimum.

use super::constraints::kl;
use super::trust::propose_within;
use super::{ProposeContext, Proposer};
use crate::corpus::cache::{Split, TokenCache};
use crate::law::{FittedLaw, LawFile};
use crate::mixture::Mixture;
use crate::proxy::validate::{print_table, Candidate, ValidateSpec};
use crate::proxy::ProxyConfig;
use anyhow::{bail, Context};
use std::path::Path;

/// The validation settings of `optimize`.
pub struct CheckSpec<'a> {
    pub proxy: &'a str,
    pub cache: &'a Path,
    pub seeds: usize,
    pub jobs: Option<usize>,
}

/// The mixture kept and what the check found (for the weights file).
pub struct Checked {
    pub mixture: Mixture,
    pub name: String,
    pub evidence: serde_json::Value,
}

/// Train the candidates and return the best by the law's target.
pub fn validate_and_keep(
    spec: &CheckSpec,
    law_file: &LawFile,
    law: &dyn FittedLaw,
    proposer: &dyn Proposer,
    ctx: &ProposeContext,
    radius: f64,
) -> anyhow::Result<Checked> {
    if law_file.reuse.is_some() {
        bail!("--validate-proxy: not available for a law fitted with mixture reuse (validate the written weights with `mixopt validate`)");
    }
    anyhow::ensure!(spec.seeds > 0, "--validate-seeds must be > 0");
    let cache = TokenCache::open(spec.cache)
        .with_context(|| format!("--cache {}", spec.cache.display()))?;
    let cfg = ProxyConfig::load(spec.proxy).context("--validate-proxy")?;
    let prior = ctx.prior.align(ctx.domains)?;
    let mut candidates = Vec::new();
    for r in [radius / 4.0, radius, radius * 4.0] {
        let (p, _) = propose_within(proposer, law, ctx, r)?;
        let mixture = p.mixture.align(cache.domains()).with_context(|| {
            format!(
                "the law's domains against the cache {}",
                spec.cache.display()
            )
        })?;
        candidates.push(Candidate {
            name: format!("optimized KL<={r}"),
            mixture,
            source: None,
        });
    }
    for (name, m) in [
        ("natural", cache.natural_mixture()?),
        ("uniform", Mixture::uniform(cache.domains().to_vec())?),
    ] {
        candidates.push(Candidate {
            name: name.to_string(),
            mixture: m,
            source: None,
        });
    }
    let workers = spec
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    crate::proxy::set_threads(1);
    let vspec = ValidateSpec {
        seeds: (0..spec.seeds as u64).collect(),
        split: Split::Val,
        workers,
        device: candle_core::Device::Cpu,
    };
    let v = crate::proxy::validate::run(&cfg, &cache, candidates, &law_file.target, &vspec)?;
    let natural = v.candidates.len() - 2;
    print_table(&v, natural);
    let means: Vec<f64> = v
        .targets
        .iter()
        .map(|t| crate::proxy::validate::mean(t))
        .collect();
    let sign = if ctx.maximize { -1.0 } else { 1.0 };
    let best = (0..means.len())
        .min_by(|&a, &b| (sign * means[a]).total_cmp(&(sign * means[b])))
        .unwrap_or(natural);
    let chosen = &v.candidates[best];
    if best >= natural {
        println!(
            "no optimized candidate beat {} at proxy {} ({} seed(s), validation split): writing {} instead of the law's optimum",
            chosen.name, cfg.name, spec.seeds, chosen.name
        );
    } else {
        let p = v.paired(best, natural);
        println!(
            "kept {} (KL {:.3} from the prior): {:+.4} ± {:.4} against natural, lower in {}/{} seed(s)",
            chosen.name,
            kl(
                chosen.mixture.align(ctx.domains)?.weights(),
                prior.weights()
            ),
            p.mean_diff,
            p.sd_diff,
            p.wins,
            p.n
        );
    }
    let table: Vec<serde_json::Value> = (0..v.candidates.len())
        .map(|c| {
            let (m, s) = v.target_mean_sd(c);
            serde_json::json!({"name": v.candidates[c].name, "mean": m, "sd": s,
                               "per_seed": v.targets[c]})
        })
        .collect();
    Ok(Checked {
        mixture: chosen.mixture.clone(),
        name: chosen.name.clone(),
        evidence: serde_json::json!({
            "proxy": cfg.name, "n_tokens": v.n_tokens, "split": "val",
            "seeds": v.seeds, "target": v.target, "candidates": table,
            "kept": chosen.name,
        }),
    })
}
