//! `mixopt optimize`: find the mixture a fitted law predicts is best under
//! the requested constraints (min/max weights, repetition limits for a token
//! budget, closeness to the prior) and write weights.json, printed beside the
//! uniform and natural mixtures.

use crate::corpus::cache::TokenCache;
use crate::law::LawFile;
use crate::mixture::{write_json_atomic, Mixture};
use crate::optimize::exact::Exact;
use crate::optimize::simulate::Simulate;
use crate::optimize::{ConstraintSpec, ProposeContext, Proposer};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Fitted law written by `mixopt fit`.
    #[arg(long)]
    pub law: PathBuf,
    /// Where to write the optimized weights.
    #[arg(long, default_value = "weights.json")]
    pub out: PathBuf,
    /// Proposer: `exact` (mirror descent + pairwise search on the law,
    /// multi-start), `simulate` (RegMix: average the top-k of many prior
    /// samples) or `search` (the best observed run that meets the constraints).
    #[arg(long, default_value = "exact")]
    pub proposer: String,
    /// Candidates the simulation scores.
    #[arg(long, default_value_t = 100_000)]
    pub candidates: usize,
    /// Best candidates averaged.
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prior to sample around ("a=0.5,b=0.5" or weights.json); default: the
    /// prior stored in the law (the sweep's natural token shares).
    #[arg(long)]
    pub prior: Option<String>,
    /// Maximize the target instead of minimizing it (e.g. an accuracy).
    #[arg(long)]
    pub maximize: bool,
    /// Lower bound on a domain's weight, repeatable: `--min code=0.1`.
    #[arg(long = "min", value_name = "NAME=W")]
    pub min: Vec<String>,
    /// Upper bound on a domain's weight, repeatable: `--max web=0.5`.
    #[arg(long = "max", value_name = "NAME=W")]
    pub max: Vec<String>,
    /// Tokens the real training run will use; with --max-epochs caps each
    /// domain at available_tokens × max_epochs / budget.
    #[arg(long, requires = "max_epochs")]
    pub budget_tokens: Option<f64>,
    /// Epochs allowed over each domain's available tokens (with --budget-tokens).
    #[arg(long, requires = "budget_tokens")]
    pub max_epochs: Option<f64>,
    /// Token cache whose manifest gives each domain's available training tokens.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Available tokens of a domain, repeatable (`--available web=2e9`);
    /// overrides --cache for that domain.
    #[arg(long = "available", value_name = "NAME=TOKENS")]
    pub available: Vec<String>,
    /// λ: add λ·KL(w‖prior) to the objective to stay near the prior.
    #[arg(long, default_value_t = 0.0)]
    pub kl_prior: f64,
    /// Trust region: keep KL(w‖prior) at most this (`none`: no limit). Laws
    /// extrapolate badly far from the prior: on the real 10-domain corpus
    /// KL 0.05 beat natural on the 8×-token target model, KL 0.2 lost to it
    /// (docs/benchmarks.md, "End to end").
    #[arg(long, default_value = "0.05", value_parser = parse_radius)]
    pub trust_kl: Radius,
    /// β: add β·spread to the objective (laws with an uncertainty estimate,
    /// i.e. `ensemble`), to stay where the law is trustworthy.
    #[arg(long, default_value_t = 0.0)]
    pub spread_penalty: f64,
    /// Check before trusting: train the law's optima at KL radii ¼×, 1× and
    /// 4× --trust-kl, natural and uniform on this (larger) proxy preset,
    /// --validate-seeds seeds each, on the validation split of --cache, and
    /// write whichever reaches the best target.
    #[arg(long, requires = "cache")]
    pub validate_proxy: Option<String>,
    /// Seeds per candidate for --validate-proxy.
    #[arg(long, default_value_t = 2)]
    pub validate_seeds: usize,
    /// Proxies trained at once for --validate-proxy (default: one per core).
    #[arg(long)]
    pub validate_jobs: Option<usize>,
    /// Starting points of the exact proposer.
    #[arg(long, default_value_t = 8)]
    pub starts: usize,
}

/// `--trust-kl`: a KL radius, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Radius(pub Option<f64>);

fn parse_radius(s: &str) -> Result<Radius, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Radius(None));
    }
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Radius(Some(v))),
        _ => Err(format!("{s:?}: expected a KL radius > 0 or `none`")),
    }
}

/// `NAME=NUMBER` pairs of a repeatable flag.
fn pairs(flag: &str, items: &[String]) -> anyhow::Result<Vec<(String, f64)>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("{flag} {s:?}: expected NAME=NUMBER"))?;
            let v: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("{flag} {s:?}: {:?} is not a number", v.trim()))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

/// Each law domain's available tokens, from --cache and/or --available.
fn available_tokens(
    domains: &[String],
    cache: Option<&Path>,
    given: &[(String, f64)],
) -> anyhow::Result<Vec<f64>> {
    let mut avail: Vec<Option<f64>> = vec![None; domains.len()];
    if let Some(dir) = cache {
        let cache = TokenCache::open(dir).with_context(|| format!("--cache {}", dir.display()))?;
        for (name, n) in cache.domains().iter().zip(cache.n_train_tokens()) {
            if let Some(i) = domains.iter().position(|d| d == name) {
                avail[i] = Some(n as f64);
            }
        }
    }
    for (name, n) in given {
        let i = domains.iter().position(|d| d == name).with_context(|| {
            format!(
                "--available {name}: unknown domain (the law's domains: {})",
                domains.join(", ")
            )
        })?;
        if !(n.is_finite() && *n >= 0.0) {
            bail!("--available {name}={n}: tokens must be a number ≥ 0");
        }
        avail[i] = Some(*n);
    }
    let missing: Vec<&str> = domains
        .iter()
        .zip(&avail)
        .filter(|(_, a)| a.is_none())
        .map(|(d, _)| d.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "--budget-tokens: no available-token count for {} (give --cache DIR or --available NAME=TOKENS)",
            missing.join(", ")
        );
    }
    Ok(avail.into_iter().map(|a| a.unwrap_or(0.0)).collect())
}

/// The optimized mixture plus the reference mixtures it is compared against.
pub struct Outcome {
    pub optimized: Mixture,
    pub predicted: f64,
    pub uniform: (Mixture, f64),
    pub natural: (Mixture, f64),
    /// The law's spread at the optimum (ensemble laws only).
    pub spread: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let law_file = LawFile::load(&args.law)?;
    let law = law_file.fitted()?;
    let domains = law_file.domains.clone();
    let natural = match &args.prior {
        Some(p) => Mixture::resolve_for(p, &domains).with_context(|| format!("--prior {p}"))?,
        None => law_file
            .prior_mixture()?
            .align(&domains)
            .context("--prior")?,
    };
    // What to call that mixture: "natural" only when it is the sweep's
    // natural token shares (not the mean of imported runs, nor --prior).
    let prior_label = match &args.prior {
        Some(_) => "prior",
        None => law_file.prior_label(),
    };
    let proposer: Box<dyn Proposer> = match args.proposer.as_str() {
        "simulate" => Box::new(Simulate {
            n_candidates: args.candidates,
            top_k: args.top_k,
            ..Simulate::default()
        }),
        "exact" => Box::new(Exact {
            starts: args.starts,
            ..Exact::default()
        }),
        "search" => Box::new(crate::optimize::search::Search::from_law(&law_file)?),
        other => bail!("--proposer {other:?}: unknown (known: simulate, exact, search)"),
    };
    for (flag, v) in [
        ("--kl-prior", args.kl_prior),
        ("--spread-penalty", args.spread_penalty),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag} {v}: must be a number ≥ 0");
        }
    }
    let mut spec = ConstraintSpec {
        min: pairs("--min", &args.min)?,
        max: pairs("--max", &args.max)?,
        budget_tokens: args.budget_tokens,
        max_epochs: args.max_epochs,
        available_tokens: None,
    };
    if args.budget_tokens.is_some() {
        spec.available_tokens = Some(available_tokens(
            &domains,
            args.cache.as_deref(),
            &pairs("--available", &args.available)?,
        )?);
    } else if (args.cache.is_some() && args.validate_proxy.is_none()) || !args.available.is_empty()
    {
        bail!("--cache/--available give available tokens for --budget-tokens and --max-epochs; add those");
    }
    let bounds = spec.check(&domains)?;
    let ctx = ProposeContext {
        domains: &domains,
        prior: &natural,
        seed: args.seed,
        maximize: args.maximize,
        bounds: &bounds,
        kl_weight: args.kl_prior,
        spread_weight: args.spread_penalty,
    };
    let pb = crate::progress::bar(1, "optimize");
    let (proposal, trust) = match args.trust_kl.0 {
        Some(r) => {
            let (p, t) =
                crate::optimize::trust::propose_within(proposer.as_ref(), law.as_ref(), &ctx, r)?;
            (p, Some(t))
        }
        None => (proposer.propose(law.as_ref(), &ctx)?, None),
    };
    pb.finish_and_clear();
    let uniform = Mixture::uniform(domains.clone())?;
    let pred_uniform = law.predict(uniform.weights());
    let pred_natural = law.predict(natural.weights());
    let spread = law.predict_spread(proposal.mixture.weights());
    let constraints: Vec<serde_json::Value> = domains
        .iter()
        .enumerate()
        .filter(|(i, _)| bounds.lo[*i] > 0.0 || bounds.hi[*i] < 1.0)
        .map(|(i, d)| {
            serde_json::json!({"domain": d, "min": bounds.lo[i], "max": bounds.hi[i],
                               "max_from": bounds.hi_reason[i]})
        })
        .collect();

    let provenance = serde_json::json!({
        "law": args.law.display().to_string(),
        "law_sha256": crate::store::sha256_file(&args.law)?,
        "law_kind": law_file.kind,
        "seed": args.seed,
        "prior": natural.to_map(),
        "predicted_uniform": pred_uniform,
        "predicted_natural": pred_natural,
        "prior_label": prior_label,
        "spread": spread,
        "constraints": constraints,
        "kl_prior": args.kl_prior,
        "spread_penalty": args.spread_penalty,
        "trust_region": trust,
        "budget_tokens": args.budget_tokens,
        "max_epochs": args.max_epochs,
        "search": proposal.details,
        "mixopt_version": crate::VERSION,
    });
    // Mixture reuse: the law's optimum is over the virtual domain; the
    // weights written are the composed leaf weights.
    let (written, mut provenance) = (
        match &law_file.reuse {
            Some(r) => r.expand_leaves(&proposal.mixture)?,
            None => proposal.mixture.clone(),
        },
        provenance,
    );
    if let Some(r) = &law_file.reuse {
        provenance["reuse"] = serde_json::json!({
            "virtual": r.name, "frozen": r.parts, "reduced": proposal.mixture.to_map(),
        });
    }
    let (written, predicted) = match (&args.validate_proxy, &args.cache) {
        (Some(proxy), Some(cache)) => {
            let spec = crate::cmd::optimize_check::CheckSpec {
                proxy,
                cache,
                seeds: args.validate_seeds,
                jobs: args.validate_jobs,
            };
            let radius = args.trust_kl.0.unwrap_or(0.05);
            let checked = crate::cmd::optimize_check::validate_and_keep(
                &spec,
                &law_file,
                law.as_ref(),
                proposer.as_ref(),
                &ctx,
                radius,
            )?;
            provenance["validated"] = checked.evidence;
            let kept = checked.mixture.align(&domains)?;
            let p = law.predict(kept.weights());
            (kept, p)
        }
        _ => (written, proposal.predicted),
    };
    let file = written.to_weights_file(Some(law_file.target.clone()), Some(predicted), provenance);
    write_json_atomic(&args.out, &file)?;

    println!(
        "target: {} (law {}, {})",
        law_file.target,
        law_file.kind,
        if args.maximize {
            "maximized"
        } else {
            "minimized"
        }
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "domain", "optimized", "uniform", prior_label
    );
    for (i, d) in domains.iter().enumerate() {
        println!(
            "{d:<28} {:>10.4} {:>10.4} {:>10.4}",
            proposal.mixture.weights()[i],
            uniform.weights()[i],
            natural.weights()[i]
        );
    }
    println!(
        "{:<28} {:>10.4} {:>10.4} {:>10.4}",
        "predicted target", proposal.predicted, pred_uniform, pred_natural
    );
    if let Some(s) = spread {
        let su = law.predict_spread(uniform.weights()).unwrap_or(f64::NAN);
        let sn = law.predict_spread(natural.weights()).unwrap_or(f64::NAN);
        println!(
            "{:<28} {:>10.4} {:>10.4} {:>10.4}",
            "spread (ensemble std)", s, su, sn
        );
    }
    if law_file.reuse.is_some() {
        println!(
            "composed leaf weights (frozen domains × the {:?} weight):",
            domains[0]
        );
        for (d, w) in written.iter() {
            println!("{d:<28} {w:>10.4}");
        }
    }
    if crate::mixture::hierarchy::is_hierarchical(written.domains()) {
        let by_source = crate::mixture::hierarchy::rollup(&written, 1)?;
        println!("{:<28} {:>10}", "source", "optimized");
        for (d, w) in by_source.iter() {
            println!("{d:<28} {w:>10.4}");
        }
    }
    if let Some(t) = &trust {
        if t.lambda > 0.0 {
            println!(
                "trust region: KL to the prior {:.4} (radius {}; the law's unconstrained optimum is at KL {:.3})",
                t.kl, t.radius, t.kl_unconstrained
            );
        }
        if !t.reached {
            eprintln!(
                "warning: the {} proposer found nothing within KL {} of the prior; the closest is at KL {:.3}",
                proposer.name(),
                t.radius,
                t.kl
            );
        }
    }
    for w in doubts(
        &law_file,
        proposal.predicted,
        (prior_label, pred_natural),
        args.maximize,
    ) {
        eprintln!("warning: {w}");
    }
    println!("wrote {}", args.out.display());
    Ok(Outcome {
        optimized: written,
        predicted,
        uniform: (uniform, pred_uniform),
        natural: (natural, pred_natural),
        spread,
    })
}

/// Reasons not to trust the predicted gain: a prediction outside the targets
/// the law was fitted on, or a gain over the prior (`(label, prediction)`:
/// natural, runs mean or --prior) smaller than the law's own cross-validated
/// error or the sweep's seed noise.
pub fn doubts(
    law: &LawFile,
    predicted: f64,
    (prior_label, natural): (&str, f64),
    maximize: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let scaled = law.at_tokens.is_some() && law.at_tokens != law.proxy_tokens;
    if let (Some((lo, hi)), false) = (law.target_range, scaled) {
        if predicted < lo || predicted > hi {
            out.push(format!(
                "the predicted target {predicted:.4} lies outside the fitted runs' targets \
                 [{lo:.4}, {hi:.4}]: an extrapolation"
            ));
        }
    }
    let gain = if maximize {
        predicted - natural
    } else {
        natural - predicted
    };
    let rmse = law.cv.mse.sqrt();
    let noise = law
        .noise
        .as_ref()
        .map(|n| n.seed_sd)
        .filter(|v| v.is_finite());
    if gain.is_finite() && rmse.is_finite() && gain < rmse {
        let noise = noise
            .map(|n| format!(", seed noise sd {n:.4}"))
            .unwrap_or_default();
        out.push(format!(
            "the predicted gain over the {prior_label} mixture ({gain:.4}) is smaller than the law's \
             CV error (rmse {rmse:.4}{noise}): confirm it with `mixopt validate` before using it"
        ));
    }
    if law.cv.spearman.is_finite() && law.cv.spearman < 0.5 {
        out.push(format!(
            "the law ranks held-out runs poorly (CV Spearman {:.2}): its optimum is a weak guess",
            law.cv.spearman
        ));
    }
    out
}
