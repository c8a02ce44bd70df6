//! `mixopt optimize`: the flags become an [`OptimizeSpec`] and the optimize
//! stage (`optimize::stage`) finds the mixture the fitted law predicts is
//! best under the constraints, writes weights.json and prints it beside the
//! uniform and natural mixtures.

use crate::optimize::stage::OptimizeSpec;
use std::path::PathBuf;

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

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = OptimizeSpec {
        proposer: args.proposer,
        candidates: args.candidates,
        top_k: args.top_k,
        seed: args.seed,
        prior: args.prior,
        maximize: args.maximize,
        min: args.min,
        max: args.max,
        budget_tokens: args.budget_tokens,
        max_epochs: args.max_epochs,
        cache: args.cache,
        available: args.available,
        kl_prior: args.kl_prior,
        trust_kl: args.trust_kl.0,
        spread_penalty: args.spread_penalty,
        validate_proxy: args.validate_proxy,
        validate_seeds: args.validate_seeds,
        validate_jobs: args.validate_jobs,
        starts: args.starts,
        ..OptimizeSpec::new(args.law, args.out)
    };
    crate::optimize::stage::run(&spec)?;
    Ok(())
}
