//! `mixopt fit`: runs → law.json. The flags become a [`FitSpec`] and the fit
//! stage (`law::fit_stage`) reads, cross-validates, fits, prints the figures
//! and writes the law. `--law all` fits every registered law on the same
//! folds, prints one comparison table and writes the law with the best CV
//! Spearman ρ.

use crate::law::fit_stage::{FitSpec, RunsInput};
use anyhow::bail;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["runs", "mixtures"])))]
pub struct Args {
    /// Runs table written by `mixopt sweep` (metrics = per-domain losses, named by domain).
    #[arg(long, conflicts_with_all = ["mixtures", "losses"])]
    pub runs: Option<PathBuf>,
    /// Mixtures CSV: the id column plus one weight column per domain.
    #[arg(long, requires = "losses")]
    pub mixtures: Option<PathBuf>,
    /// Metrics CSV: the id column plus one column per metric (e.g. validation losses).
    #[arg(long, requires = "mixtures")]
    pub losses: Option<PathBuf>,
    /// Id column joining --mixtures and --losses (and the test files).
    #[arg(long, default_value = "index")]
    pub id: String,
    /// What the law predicts: a metric name, `mean` (of all metrics), or a weighted sum like `0.7*web+0.3*code`.
    #[arg(long, default_value = "mean", allow_hyphen_values = true)]
    pub target: String,
    /// Mixing law to fit: scaling (each domain's loss a power law in the
    /// tokens of its kind a mixture gives it, fit on every checkpoint; scale-
    /// aware, see --at-tokens), linear (ridge on proportions), loglinear (ridge
    /// on log proportions), gbdt (LightGBM-style boosted trees), dml (Data
    /// Mixing Law c + k·exp(t·r)), ensemble (bagged gbdt with a spread), `all`
    /// (compare every law on the same folds; writes the best by CV ρ), or
    /// `auto`: scaling for a sweep's runs table, loglinear for imported runs.
    #[arg(long, default_value = "auto")]
    pub law: String,
    /// Token budget of the model the mixture is for: the scaling law predicts
    /// its losses there (default: the proxies' own tokens).
    #[arg(long, value_name = "TOKENS")]
    pub at_tokens: Option<f64>,
    /// Where to write the fitted law.
    #[arg(long, default_value = "law.json")]
    pub out: PathBuf,
    /// Cross-validation folds (≥ 2).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed for the fold shuffle and any randomness in the law.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ridge strength of the linear law (default 1e-4).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Any law hyperparameter, repeatable: `--param alpha=0.01`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Held-out mixtures to score the fitted law on (with --test-losses).
    #[arg(long, requires = "test_losses", conflicts_with = "test_runs")]
    pub test_mixtures: Option<PathBuf>,
    /// Held-out metrics, same id column as --test-mixtures.
    #[arg(long, requires = "test_mixtures")]
    pub test_losses: Option<PathBuf>,
    /// Held-out runs table to score the fitted law on.
    #[arg(long)]
    pub test_runs: Option<PathBuf>,
}

/// The runs of either input form (clap makes sure one of them is whole).
fn input(
    runs: Option<PathBuf>,
    mixtures: Option<PathBuf>,
    losses: Option<PathBuf>,
) -> anyhow::Result<RunsInput> {
    match (runs, mixtures, losses) {
        (Some(r), _, _) => Ok(RunsInput::Table(r)),
        (None, Some(mixtures), Some(losses)) => Ok(RunsInput::Tables { mixtures, losses }),
        _ => bail!("give --runs, or both --mixtures and --losses"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut hyper = crate::params::parse(&args.params)?;
    if let Some(a) = args.alpha {
        hyper.insert("alpha".into(), a.into());
    }
    let test = if args.test_runs.is_some() || args.test_mixtures.is_some() {
        Some(input(args.test_runs, args.test_mixtures, args.test_losses)?)
    } else {
        None
    };
    let spec = FitSpec {
        id: args.id,
        target: args.target,
        law: args.law,
        at_tokens: args.at_tokens,
        out: args.out,
        folds: args.folds,
        seed: args.seed,
        hyper,
        test,
        ..FitSpec::new(input(args.runs, args.mixtures, args.losses)?)
    };
    crate::law::fit_stage::run(&spec)?;
    Ok(())
}
