//! `mixopt fit`: runs → law.json. Reads a runs table (or a mixtures CSV plus a
//! metrics CSV joined on an id column), cross-validates the chosen law on
//! the target, fits it on all runs, optionally scores it on a held-out test
//! set, prints the figures and writes law.json for `predict` and `optimize`.
//! `--law all` fits every registered law on the same folds, prints one
//! comparison table and writes the law with the best CV Spearman ρ.

use crate::law::noise;
use crate::law::scaling::ScalingLaw;
use crate::law::scaling_fit::{fit_scaling_law, points_from_runs};
use crate::law::{fit_law, known_laws, FitOptions, HashedFile, HeldOut, Hyper, LoadedLaw};
use crate::params::Hyperparams;
use crate::store::import::{
    from_runs_csv, from_two_tables, read_sidecar_prior, read_sidecar_reuse, RunsData,
};
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
        (None, Some(m), Some(l)) => {
            let (data, notes) = from_two_tables(m, l, id).context("reading mixtures and losses")?;
            for n in notes {
                eprintln!("note: {n}");
            }
            Ok((data, vec![m.to_path_buf(), l.to_path_buf()]))
        }
        _ => bail!("give --runs, or both --mixtures and --losses"),
    }
}

fn hyper(args: &Args) -> anyhow::Result<Hyper> {
    let mut h = crate::params::parse(&args.params)?;
    if let Some(a) = args.alpha {
        h.insert("alpha".into(), a.into());
    }
    Ok(h)
}

fn sources(paths: &[PathBuf]) -> anyhow::Result<Vec<HashedFile>> {
    paths
        .iter()
        .map(|p| HashedFile::of(p).map_err(anyhow::Error::from))
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let hyper = hyper(&args)?;
    if let Some(n) = args.at_tokens {
        anyhow::ensure!(n.is_finite() && n > 0.0, "--at-tokens {n}: must be > 0");
    }
    let auto = if args.runs.is_some() {
        "scaling"
    } else {
        "loglinear"
    };
    let law_name = if args.law == "auto" {
        auto
    } else {
        args.law.as_str()
    };
    if law_name == "scaling" && args.runs.is_none() {
        bail!("--law scaling needs a sweep's runs table (--runs): mixtures and metrics CSVs carry no token counts");
    }
    if args.at_tokens.is_some() && law_name != "scaling" && law_name != "all" {
        bail!("--at-tokens applies to the scaling law (--law scaling or auto)");
    }
    let laws: Vec<String> = if law_name == "all" {
        if !hyper.is_empty() {
            bail!("--law all: --param/--alpha apply to one law; fit that law on its own");
        }
        known_laws()
            .into_iter()
            .filter(|l| *l != "scaling" || args.runs.is_some())
            .map(String::from)
            .collect()
    } else if law_name == "scaling" {
        ScalingLaw::from_overrides(&hyper).context("--param")?;
        vec![law_name.to_string()]
    } else {
        // Fail on a bad law name or hyperparameter before reading any data.
        crate::law::law_by_name_with(law_name, &hyper).context("--law")?;
        vec![law_name.to_string()]
    };
    let (data, paths) = load_data(
        args.runs.as_deref(),
        args.mixtures.as_deref(),
        args.losses.as_deref(),
        &args.id,
    )?;
    // A sweep with --reuse: fit over the virtual domain + the changed ones.
    let reuse = read_sidecar_reuse(&paths[0])?;
    let data = match &reuse {
        Some(r) => {
            eprintln!(
                "reuse: {} frozen domains fit as one ({:?}); law over {} domains",
                r.parts.len(),
                r.name,
                r.reduced_domains(&data.domains).len()
            );
            data.reduce(r)?
        }
        None => data,
    };
    let target = data
        .target(&args.target)
        .with_context(|| format!("--target (metrics of {})", data.source))?;
    // A sweep's noise-floor runs measure noise; the law is fit on the rest.
    let (data, noise_runs) = noise::partition(&data);
    anyhow::ensure!(!data.is_empty(), "{}: no sampled runs to fit", data.source);
    let noise_floor = noise::measure(&data, &noise_runs, &target);
    let points = match &args.runs {
        Some(r) if laws.iter().any(|l| l == "scaling") => Some(points_from_runs(r, &data)?),
        _ => None,
    };
    let test = if args.test_runs.is_some() || args.test_mixtures.is_some() {
        let (t, p) = load_data(
            args.test_runs.as_deref(),
            args.test_mixtures.as_deref(),
            args.test_losses.as_deref(),
            &args.id,
        )?;
        let t = match &reuse {
            Some(r) => t.reduce(r)?,
            None => t,
        };
        Some((t, p))
    } else {
        None
    };
    let sidecar_prior = match (read_sidecar_prior(&paths[0])?, &reuse) {
        (Some(p), Some(r)) => {
            let names: Vec<String> = p.keys().cloned().collect();
            let w: Vec<f64> = p.values().copied().collect();
            let leaf = crate::mixture::Mixture::new(names, w)?.align(&r.leaves)?;
            Some(r.reduce(&leaf)?.to_map())
        }
        (p, _) => p,
    };
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
        let mut law = match &points {
            Some(points) if name == "scaling" => {
                fit_scaling_law(&data, points, &target, &opts, args.at_tokens)
            }
            _ => fit_law(&data, &target, &opts),
        }
        .with_context(|| format!("fitting {name} law to {}", data.source))?;
        law.file.noise = noise_floor;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(prior) = &sidecar_prior {
            law.file = law
                .file
                .with_sidecar_prior(prior)
                .with_context(|| format!("prior in the sidecar of {}", paths[0].display()))?;
        }
        law.file.source = sources(&paths)?;
        law.file.reuse = reuse.clone();
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
        if let Some(e) = &f.extrapolation {
            println!("{}", line("tokens ×2", e));
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
    print_noise(&fitted[0].0.file);
    if let (Some(at), Some(proxy)) = (
        fitted.iter().find_map(|(l, _)| l.file.at_tokens),
        fitted.iter().find_map(|(l, _)| l.file.proxy_tokens),
    ) {
        println!(
            "scale: proxies trained on {proxy:.3e} tokens; the scaling law predicts at {at:.3e} ({:.1}× further)",
            at / proxy
        );
        if at > 100.0 * proxy {
            println!(
                "warning: extrapolating {:.0}× beyond the proxies' tokens: trust the ranking of nearby mixtures, not the values",
                at / proxy
            );
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

/// The target's noise floor beside its spread across mixtures and the law's
/// CV error: how far above the noise the law's ranking stands.
fn print_noise(f: &crate::law::LawFile) {
    let rmse = f.cv.mse.sqrt();
    match &f.noise {
        Some(n) => {
            println!(
                "noise: target sd over {} seeds of the prior {:.4}; sd of a same-seed difference {:.4}; \
                 spread across mixtures {:.4}; CV error (rmse) {:.4}",
                n.seeds, n.seed_sd, n.paired_sd, n.spread, rmse
            );
            let floor = if n.paired_sd.is_finite() { n.paired_sd } else { n.seed_sd };
            if n.spread < 2.0 * floor {
                println!(
                    "warning: the mixtures' spread ({:.4}) is within twice the noise ({floor:.4}): \
                     the runs barely tell mixtures apart; train longer proxies or more seeds",
                    n.spread
                );
            }
        }
        None => println!(
            "noise: not measured (no noise-floor runs; `mixopt sweep --noise-seeds N` adds them); CV error (rmse) {rmse:.4}"
        ),
    }
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
