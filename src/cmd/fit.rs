//! `mixopt fit`: runs → law.json. Reads a runs table (or a mixtures CSV plus a
//! metrics CSV joined on an id column), cross-validates the chosen law on
//! the target, fits it on all runs, optionally scores it on a held-out test
//! set, prints the figures and writes law.json for `predict` and `optimize`.
//! `--law all` fits every registered law on the same folds, prints one
//! comparison table and writes the law with the best CV Spearman ρ.

use crate::law::{fit_law, known_laws, FitOptions, HeldOut, Hyper, LoadedLaw, SourceFile, Target};
use crate::store::import::{from_runs_csv, from_two_csvs, read_sidecar_prior, RunsData};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// Mixing law to fit: linear (ridge on proportions), loglinear (ridge on
    /// log proportions), gbdt (LightGBM-style boosted trees), dml (Data Mixing
    /// Law c + k·exp(t·r)), ensemble (bagged gbdt with a spread), or `all`
    /// (compare every law on the same folds; writes the best by CV ρ).
    #[arg(long, default_value = "linear")]
    pub law: String,
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

/// Read fitting data from either input form; also the files to hash and the
/// file whose sidecar may hold the sweep's prior.
fn load_data(
    runs: Option<&Path>,
    mixtures: Option<&Path>,
    losses: Option<&Path>,
    id: &str,
) -> anyhow::Result<(RunsData, Vec<PathBuf>)> {
    match (runs, mixtures, losses) {
        (Some(r), _, _) => Ok((
            from_runs_csv(r).with_context(|| format!("reading runs table {}", r.display()))?,
            vec![r.to_path_buf()],
        )),
        (None, Some(m), Some(l)) => Ok((
            from_two_csvs(m, l, id).context("reading mixtures and losses")?,
            vec![m.to_path_buf(), l.to_path_buf()],
        )),
        _ => bail!("give --runs, or both --mixtures and --losses"),
    }
}

fn hyper(args: &Args) -> anyhow::Result<Hyper> {
    let mut h = Hyper::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        let v: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("--param {p:?}: value is not a number"))?;
        h.insert(k.trim().to_string(), v);
    }
    if let Some(a) = args.alpha {
        h.insert("alpha".into(), a);
    }
    Ok(h)
}

fn sources(paths: &[PathBuf]) -> anyhow::Result<Vec<SourceFile>> {
    paths
        .iter()
        .map(|p| SourceFile::of(p).map_err(anyhow::Error::from))
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let hyper = hyper(&args)?;
    let laws: Vec<String> = if args.law == "all" {
        if !hyper.is_empty() {
            bail!("--law all: --param/--alpha apply to one law; fit that law on its own");
        }
        known_laws().into_iter().map(String::from).collect()
    } else {
        // Fail on a bad law name or hyperparameter before reading any data.
        crate::law::law_by_name_with(&args.law, &hyper).context("--law")?;
        vec![args.law.clone()]
    };
    let (data, paths) = load_data(
        args.runs.as_deref(),
        args.mixtures.as_deref(),
        args.losses.as_deref(),
        &args.id,
    )?;
    let target = Target::parse(&args.target, &data.metric_names)
        .with_context(|| format!("--target (metrics of {})", data.source))?;
    let test = if args.test_runs.is_some() || args.test_mixtures.is_some() {
        Some(load_data(
            args.test_runs.as_deref(),
            args.test_mixtures.as_deref(),
            args.test_losses.as_deref(),
            &args.id,
        )?)
    } else {
        None
    };
    let sidecar_prior = read_sidecar_prior(&paths[0])?;
    // The prior decides where `optimize` starts and what --kl-prior pulls
    // toward: say which one law.json gets.
    match &sidecar_prior {
        Some(_) => println!(
            "prior: the sweep's natural token shares (from the sidecar of {})",
            paths[0].display()
        ),
        None => println!(
            "prior: the mean of the {} runs' mixtures (no sidecar {} beside {}; \
             give optimize --prior for the natural token shares)",
            data.len(),
            crate::store::meta_paths(&paths[0])[0].display(),
            paths[0].display()
        ),
    }

    let mut fitted: Vec<(LoadedLaw, f64)> = Vec::new();
    for name in &laws {
        let opts = FitOptions {
            law: name.clone(),
            hyper: hyper.clone(),
            folds: args.folds,
            seed: args.seed,
        };
        let started = Instant::now();
        let mut law = fit_law(&data, &target, &opts)
            .with_context(|| format!("fitting {name} law to {}", data.source))?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(prior) = &sidecar_prior {
            law.file = law
                .file
                .with_sidecar_prior(prior)
                .with_context(|| format!("prior in the sidecar of {}", paths[0].display()))?;
        }
        law.file.source = sources(&paths)?;
        if let Some((test_data, test_paths)) = &test {
            let score = law
                .score_runs(test_data)
                .with_context(|| format!("scoring on {}", test_data.source))?;
            law.file.test = Some(HeldOut {
                score,
                source: sources(test_paths)?,
            });
        }
        fitted.push((law, seconds));
    }

    let f0 = &fitted[0].0.file;
    if fitted.len() == 1 {
        let f = f0;
        println!(
            "law {} on {} runs × {} domains, target {}  (spearman ρ and pearson r ×100)",
            f.kind,
            f.n_runs,
            f.domains.len(),
            f.target
        );
        println!("{}", line(&format!("{}-fold CV", f.cv.k), &f.cv.score()));
        if let Some(t) = &f.test {
            println!("{}", line("train→test", &t.score));
        }
        println!(
            "  fit time     {:.2} s ({} CV fits + 1 on all runs; {:.2} s per fit)",
            fitted[0].1,
            f.cv.k,
            fitted[0].1 / (f.cv.k + 1) as f64
        );
    } else {
        println!(
            "{} laws on {} runs × {} domains, target {}, {}-fold CV on the same folds (ρ, r ×100)",
            fitted.len(),
            f0.n_runs,
            f0.domains.len(),
            f0.target,
            f0.cv.k
        );
        print!(
            "{:<10} {:>7} {:>7} {:>10} {:>9}",
            "law", "cv ρ", "cv r", "cv mse", "cv mae"
        );
        if test.is_some() {
            print!(
                " {:>8} {:>8} {:>10} {:>9}",
                "test ρ", "test r", "test mse", "test mae"
            );
        }
        println!(" {:>8} {:>8}", "time s", "per fit");
        for (law, seconds) in &fitted {
            let f = &law.file;
            print!(
                "{:<10} {:>7.2} {:>7.2} {:>10.6} {:>9.6}",
                f.kind,
                100.0 * f.cv.spearman,
                100.0 * f.cv.pearson,
                f.cv.mse,
                f.cv.mae
            );
            if let Some(t) = &f.test {
                let s = t.score;
                print!(
                    " {:>8.2} {:>8.2} {:>10.6} {:>9.6}",
                    100.0 * s.spearman,
                    100.0 * s.pearson,
                    s.mse,
                    s.mae
                );
            }
            println!(" {seconds:>8.2} {:>8.3}", seconds / (f.cv.k + 1) as f64);
        }
    }
    // The law written: the only one, or the best by CV ρ (never by test ρ,
    // which would leak the held-out runs into the choice).
    let best = fitted
        .into_iter()
        .max_by(|a, b| {
            let key = |l: &LoadedLaw| {
                let r = l.file.cv.spearman;
                if r.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    r
                }
            };
            key(&a.0).total_cmp(&key(&b.0))
        })
        .map(|(l, _)| l)
        .context("no law fitted")?;
    if laws.len() > 1 && best.file.cv.spearman.is_nan() {
        bail!(
            "no law has a defined CV ρ on target {} (every law's out-of-fold predictions are constant); \
             nothing to choose between — fit one law by name",
            best.file.target
        );
    }
    best.file
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if laws.len() > 1 {
        println!(
            "wrote {} (law {}, best CV ρ)",
            args.out.display(),
            best.file.kind
        );
    } else {
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

fn line(label: &str, s: &crate::law::Score) -> String {
    format!(
        "  {label:<12} n={:<5} spearman {:6.2}  pearson {:6.2}  mse {:.6}  mae {:.6}",
        s.n,
        100.0 * s.spearman,
        100.0 * s.pearson,
        s.mse,
        s.mae
    )
}
