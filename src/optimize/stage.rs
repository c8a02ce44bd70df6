//! The optimize stage: find the mixture a fitted law predicts is best under
//! the requested constraints (min/max weights, repetition limits for a token
//! budget, closeness to the prior), optionally check it on larger proxies
//! (`check`), and write weights.json. [`optimize`] does the work; [`run`]
//! adds the printed comparison with the uniform and natural mixtures (what
//! `mixopt optimize` and the demo call).

use super::exact::Exact;
use super::simulate::Simulate;
use super::trust::TrustOutcome;
use super::{ConstraintSpec, Proposal, ProposeContext, Proposer};
use crate::corpus::cache::TokenCache;
use crate::law::LawFile;
use crate::mixture::{write_json_atomic, Mixture};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Everything the optimize stage needs. Weights, bounds and token counts are
/// given as on the command line (`NAME=NUMBER`), and errors name the flags.
#[derive(Debug, Clone)]
pub struct OptimizeSpec {
    /// The law.json written by the fit stage.
    pub law: PathBuf,
    /// Where weights.json goes.
    pub out: PathBuf,
    /// `exact`, `simulate` or `search`.
    pub proposer: String,
    /// Candidates `simulate` scores.
    pub candidates: usize,
    /// Best candidates `simulate` averages.
    pub top_k: usize,
    pub seed: u64,
    /// Prior ("a=0.5,b=0.5" or a weights file); default: the law's own.
    pub prior: Option<String>,
    /// Maximize the target instead of minimizing it.
    pub maximize: bool,
    /// Lower bounds on weights, `NAME=W` each.
    pub min: Vec<String>,
    /// Upper bounds on weights, `NAME=W` each.
    pub max: Vec<String>,
    /// Tokens of the real training run (with `max_epochs`).
    pub budget_tokens: Option<f64>,
    /// Epochs allowed over each domain's available tokens.
    pub max_epochs: Option<f64>,
    /// Token cache: available tokens for the budget, data for the check.
    pub cache: Option<PathBuf>,
    /// Available tokens of a domain, `NAME=TOKENS` each (over `cache`'s).
    pub available: Vec<String>,
    /// λ of the λ·KL(w‖prior) term.
    pub kl_prior: f64,
    /// Trust region radius on KL(w‖prior); `None`: no limit.
    pub trust_kl: Option<f64>,
    /// β of the β·spread term (laws with an uncertainty estimate).
    pub spread_penalty: f64,
    /// Proxy preset to check the optimum on (needs `cache`).
    pub validate_proxy: Option<String>,
    /// Seeds per candidate of the check.
    pub validate_seeds: usize,
    /// Proxies trained at once by the check (default: one per core).
    pub validate_jobs: Option<usize>,
    /// Starting points of the exact proposer.
    pub starts: usize,
}

impl OptimizeSpec {
    /// Optimize the law in `law` into `out` with `mixopt optimize`'s
    /// defaults: the exact proposer from 8 starts, seed 0, the law's prior,
    /// minimizing, no bounds or budget, trust radius KL 0.05, no penalties
    /// and no check (100000 candidates and top 100 should `simulate` be set).
    pub fn new(law: PathBuf, out: PathBuf) -> OptimizeSpec {
        OptimizeSpec {
            law,
            out,
            proposer: "exact".into(),
            candidates: 100_000,
            top_k: 100,
            seed: 0,
            prior: None,
            maximize: false,
            min: Vec::new(),
            max: Vec::new(),
            budget_tokens: None,
            max_epochs: None,
            cache: None,
            available: Vec::new(),
            kl_prior: 0.0,
            trust_kl: Some(0.05),
            spread_penalty: 0.0,
            validate_proxy: None,
            validate_seeds: 2,
            validate_jobs: None,
            starts: 8,
        }
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
    /// The mixture written: the law's optimum (leaf weights with mixture
    /// reuse), or the candidate the check kept.
    pub optimized: Mixture,
    /// The law's prediction for `optimized`.
    pub predicted: f64,
    pub uniform: (Mixture, f64),
    pub natural: (Mixture, f64),
    /// The law's spread at the optimum (ensemble laws only).
    pub spread: Option<f64>,
    /// The law's spread at uniform and natural, when it has one.
    pub reference_spread: Option<(f64, f64)>,
    /// The proposer's optimum over the law's domains.
    pub proposal: Proposal,
    /// How the trust region was met (none without a radius).
    pub trust: Option<TrustOutcome>,
    /// The law optimized.
    pub law: LawFile,
    /// What the prior is called: natural, runs mean or prior.
    pub prior_label: &'static str,
    pub proposer: &'static str,
    pub maximize: bool,
    /// Where the weights were written.
    pub out: PathBuf,
}

/// Optimize, check when asked, and write the weights file.
pub fn optimize(spec: &OptimizeSpec) -> anyhow::Result<Outcome> {
    let law_file = LawFile::load(&spec.law)?;
    let law = law_file.fitted()?;
    let domains = law_file.domains.clone();
    let natural = match &spec.prior {
        Some(p) => Mixture::resolve_for(p, &domains).with_context(|| format!("--prior {p}"))?,
        None => law_file
            .prior_mixture()?
            .align(&domains)
            .context("--prior")?,
    };
    // What to call that mixture: "natural" only when it is the sweep's
    // natural token shares (not the mean of imported runs, nor --prior).
    let prior_label = match &spec.prior {
        Some(_) => "prior",
        None => law_file.prior_label(),
    };
    let proposer: Box<dyn Proposer> = match spec.proposer.as_str() {
        "simulate" => Box::new(Simulate {
            n_candidates: spec.candidates,
            top_k: spec.top_k,
            ..Simulate::default()
        }),
        "exact" => Box::new(Exact {
            starts: spec.starts,
            ..Exact::default()
        }),
        "search" => Box::new(super::search::Search::from_law(&law_file)?),
        other => bail!("--proposer {other:?}: unknown (known: simulate, exact, search)"),
    };
    for (flag, v) in [
        ("--kl-prior", spec.kl_prior),
        ("--spread-penalty", spec.spread_penalty),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag} {v}: must be a number ≥ 0");
        }
    }
    let mut constraints = ConstraintSpec {
        min: pairs("--min", &spec.min)?,
        max: pairs("--max", &spec.max)?,
        budget_tokens: spec.budget_tokens,
        max_epochs: spec.max_epochs,
        available_tokens: None,
    };
    if spec.budget_tokens.is_some() {
        constraints.available_tokens = Some(available_tokens(
            &domains,
            spec.cache.as_deref(),
            &pairs("--available", &spec.available)?,
        )?);
    } else if (spec.cache.is_some() && spec.validate_proxy.is_none()) || !spec.available.is_empty()
    {
        bail!("--cache/--available give available tokens for --budget-tokens and --max-epochs; add those");
    }
    let bounds = constraints.check(&domains)?;
    let ctx = ProposeContext {
        domains: &domains,
        prior: &natural,
        seed: spec.seed,
        maximize: spec.maximize,
        bounds: &bounds,
        kl_weight: spec.kl_prior,
        spread_weight: spec.spread_penalty,
    };
    let pb = crate::progress::bar(1, "optimize");
    let (proposal, trust) = match spec.trust_kl {
        Some(r) => {
            let (p, t) = super::trust::propose_within(proposer.as_ref(), law.as_ref(), &ctx, r)?;
            (p, Some(t))
        }
        None => (proposer.propose(law.as_ref(), &ctx)?, None),
    };
    pb.finish_and_clear();
    let uniform = Mixture::uniform(domains.clone())?;
    let pred_uniform = law.predict(uniform.weights());
    let pred_natural = law.predict(natural.weights());
    let spread = law.predict_spread(proposal.mixture.weights());
    let limits: Vec<serde_json::Value> = domains
        .iter()
        .enumerate()
        .filter(|(i, _)| bounds.lo[*i] > 0.0 || bounds.hi[*i] < 1.0)
        .map(|(i, d)| {
            serde_json::json!({"domain": d, "min": bounds.lo[i], "max": bounds.hi[i],
                               "max_from": bounds.hi_reason[i]})
        })
        .collect();

    let mut provenance = serde_json::json!({
        "law": spec.law.display().to_string(),
        "law_sha256": crate::store::sha256_file(&spec.law)?,
        "law_kind": law_file.kind,
        "seed": spec.seed,
        "prior": natural.to_map(),
        "predicted_uniform": pred_uniform,
        "predicted_natural": pred_natural,
        "prior_label": prior_label,
        "spread": spread,
        "constraints": limits,
        "kl_prior": spec.kl_prior,
        "spread_penalty": spec.spread_penalty,
        "trust_region": trust,
        "budget_tokens": spec.budget_tokens,
        "max_epochs": spec.max_epochs,
        "search": proposal.details,
        "mixopt_version": crate::VERSION,
    });
    // Mixture reuse: the law's optimum is over the virtual domain; the
    // weights written are the composed leaf weights.
    let written = match &law_file.reuse {
        Some(r) => r.expand_leaves(&proposal.mixture)?,
        None => proposal.mixture.clone(),
    };
    if let Some(r) = &law_file.reuse {
        provenance["reuse"] = serde_json::json!({
            "virtual": r.name, "frozen": r.parts, "reduced": proposal.mixture.to_map(),
        });
    }
    let (written, predicted) = match (&spec.validate_proxy, &spec.cache) {
        (Some(proxy), Some(cache)) => {
            let check = super::check::CheckSpec {
                proxy,
                cache,
                seeds: spec.validate_seeds,
                jobs: spec.validate_jobs,
            };
            let radius = spec.trust_kl.unwrap_or(0.05);
            let checked = super::check::validate_and_keep(
                &check,
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
    write_json_atomic(&spec.out, &file)?;
    let reference_spread = spread.map(|_| {
        (
            law.predict_spread(uniform.weights()).unwrap_or(f64::NAN),
            law.predict_spread(natural.weights()).unwrap_or(f64::NAN),
        )
    });
    Ok(Outcome {
        optimized: written,
        predicted,
        uniform: (uniform, pred_uniform),
        natural: (natural, pred_natural),
        spread,
        reference_spread,
        proposal,
        trust,
        law: law_file,
        prior_label,
        proposer: proposer.name(),
        maximize: spec.maximize,
        out: spec.out.clone(),
    })
}

impl Outcome {
    /// Print the comparison (optimized, uniform and prior weights and their
    /// predictions), the composed or per-source weights where they apply,
    /// the trust region, and warnings (on stderr) about trusting the gain.
    pub fn print(&self) -> anyhow::Result<()> {
        let law_file = &self.law;
        let domains = &law_file.domains;
        let (uniform, pred_uniform) = &self.uniform;
        let (natural, pred_natural) = &self.natural;
        let proposal = &self.proposal;
        let written = &self.optimized;
        println!(
            "target: {} (law {}, {})",
            law_file.target,
            law_file.kind,
            if self.maximize {
                "maximized"
            } else {
                "minimized"
            }
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "domain", "optimized", "uniform", self.prior_label
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
        if let (Some(s), Some((su, sn))) = (self.spread, self.reference_spread) {
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
            let by_source = crate::mixture::hierarchy::rollup(written, 1)?;
            println!("{:<28} {:>10}", "source", "optimized");
            for (d, w) in by_source.iter() {
                println!("{d:<28} {w:>10.4}");
            }
        }
        if let Some(t) = &self.trust {
            if t.lambda > 0.0 {
                println!(
                    "trust region: KL to the prior {:.4} (radius {}; the law's unconstrained optimum is at KL {:.3})",
                    t.kl, t.radius, t.kl_unconstrained
                );
            }
            if !t.reached {
                eprintln!(
                    "warning: the {} proposer found nothing within KL {} of the prior; the closest is at KL {:.3}",
                    self.proposer, t.radius, t.kl
                );
            }
        }
        for w in doubts(
            law_file,
            proposal.predicted,
            (self.prior_label, *pred_natural),
            self.maximize,
        ) {
            eprintln!("warning: {w}");
        }
        println!("wrote {}", self.out.display());
        Ok(())
    }
}

/// The whole stage with its messages: [`optimize`], then print the result.
pub fn run(spec: &OptimizeSpec) -> anyhow::Result<Outcome> {
    let outcome = optimize(spec)?;
    outcome.print()?;
    Ok(outcome)
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
