//! The fit stage: runs → law.json. Reads a runs table (or a mixtures CSV plus
//! a metrics CSV joined on an id column), cross-validates the chosen law on
//! the target, fits it on all runs, optionally scores it on a held-out test
//! set and writes law.json for `predict` and `optimize`. Law `all` fits every
//! registered law on the same folds and writes the one with the best CV
//! Spearman ρ.
//!
//! In three steps — [`read`], [`FitData::fit`], [`FitOutcome::save`] — or all
//! at once with the usual messages by [`run`] (what `mixopt fit` and the demo
//! call).

use super::noise::{self, NoiseFloor};
use super::scaling::{ScalePoints, ScalingLaw};
use super::scaling_fit::{fit_scaling_law, points_from_runs};
use super::{
    fit_law, known_laws, FitOptions, HashedFile, HeldOut, Hyper, LawFile, LoadedLaw, Score, Target,
};
use crate::mixture::reuse::Reuse;
use crate::params::Hyperparams;
use crate::store::import::{
    from_runs_csv, from_two_tables, read_sidecar_prior, read_sidecar_reuse, RunsData,
};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where runs come from.
#[derive(Debug, Clone)]
pub enum RunsInput {
    /// A runs table written by `mixopt sweep` (metrics = per-domain losses).
    Table(PathBuf),
    /// A mixtures CSV and a metrics CSV, joined on the spec's id column.
    Tables { mixtures: PathBuf, losses: PathBuf },
}

/// Everything the fit stage needs.
#[derive(Debug, Clone)]
pub struct FitSpec {
    /// The runs to fit on.
    pub input: RunsInput,
    /// Id column joining mixtures and metrics CSVs (those of `test` too).
    pub id: String,
    /// What the law predicts: a metric, `mean`, or a weighted sum (`Target`).
    pub target: String,
    /// A registered law's name, `all` (compare them, keep the best by CV ρ)
    /// or `auto` (scaling for a runs table, loglinear for CSVs).
    pub law: String,
    /// Token budget the scaling law predicts at (default: the proxies').
    pub at_tokens: Option<f64>,
    /// Where law.json goes.
    pub out: PathBuf,
    /// Cross-validation folds.
    pub folds: usize,
    /// Seed of the fold shuffle and of any randomness in the law.
    pub seed: u64,
    /// Hyperparameters of the one law fitted (none with `all`).
    pub hyper: Hyper,
    /// Held-out runs to score the fitted law on.
    pub test: Option<RunsInput>,
}

impl FitSpec {
    /// A fit of `input` with `mixopt fit`'s defaults: id column `index`,
    /// target `mean`, law `auto`, out `law.json`, 5 folds, seed 0, no
    /// hyperparameters and no test set.
    pub fn new(input: RunsInput) -> FitSpec {
        FitSpec {
            input,
            id: "index".into(),
            target: "mean".into(),
            law: "auto".into(),
            at_tokens: None,
            out: PathBuf::from("law.json"),
            folds: 5,
            seed: 0,
            hyper: Hyper::default(),
            test: None,
        }
    }

    fn runs_table(&self) -> Option<&Path> {
        match &self.input {
            RunsInput::Table(p) => Some(p),
            RunsInput::Tables { .. } => None,
        }
    }
}

/// Fitting data from either input form, and the files it came from (the
/// first one's sidecar may hold the sweep's prior).
fn load_data(input: &RunsInput, id: &str) -> anyhow::Result<(RunsData, Vec<PathBuf>)> {
    match input {
        RunsInput::Table(r) => Ok((
            from_runs_csv(r).with_context(|| format!("reading runs table {}", r.display()))?,
            vec![r.to_path_buf()],
        )),
        RunsInput::Tables { mixtures, losses } => {
            let (data, notes) =
                from_two_tables(mixtures, losses, id).context("reading mixtures and losses")?;
            for n in notes {
                eprintln!("note: {n}");
            }
            Ok((data, vec![mixtures.clone(), losses.clone()]))
        }
    }
}

fn sources(paths: &[PathBuf]) -> anyhow::Result<Vec<HashedFile>> {
    paths
        .iter()
        .map(|p| HashedFile::of(p).map_err(anyhow::Error::from))
        .collect()
}

/// The runs read and checked, ready to fit.
pub struct FitData<'a> {
    spec: &'a FitSpec,
    /// The laws to fit: one, or every registered law for `all`.
    laws: Vec<String>,
    /// The sampled runs (noise-floor runs set apart).
    data: RunsData,
    target: Target,
    noise_floor: Option<NoiseFloor>,
    points: Option<ScalePoints>,
    test: Option<(RunsData, Vec<PathBuf>)>,
    sidecar_prior: Option<BTreeMap<String, f64>>,
    paths: Vec<PathBuf>,
    reuse: Option<Reuse>,
}

/// Check the spec (law name, hyperparameters, token budget) before reading
/// anything, then read the runs, the test set and the sweep's sidecar.
pub fn read(spec: &FitSpec) -> anyhow::Result<FitData<'_>> {
    let hyper = &spec.hyper;
    if let Some(n) = spec.at_tokens {
        anyhow::ensure!(n.is_finite() && n > 0.0, "--at-tokens {n}: must be > 0");
    }
    let runs_table = spec.runs_table();
    let auto = if runs_table.is_some() {
        "scaling"
    } else {
        "loglinear"
    };
    let law_name = if spec.law == "auto" {
        auto
    } else {
        spec.law.as_str()
    };
    if law_name == "scaling" && runs_table.is_none() {
        bail!("--law scaling needs a sweep's runs table (--runs): mixtures and metrics CSVs carry no token counts");
    }
    if spec.at_tokens.is_some() && law_name != "scaling" && law_name != "all" {
        bail!("--at-tokens applies to the scaling law (--law scaling or auto)");
    }
    let laws: Vec<String> = if law_name == "all" {
        if !hyper.is_empty() {
            bail!("--law all: --param/--alpha apply to one law; fit that law on its own");
        }
        known_laws()
            .into_iter()
            .filter(|l| *l != "scaling" || runs_table.is_some())
            .map(String::from)
            .collect()
    } else if law_name == "scaling" {
        ScalingLaw::from_overrides(hyper).context("--param")?;
        vec![law_name.to_string()]
    } else {
        // Fail on a bad law name or hyperparameter before reading any data.
        super::law_by_name_with(law_name, hyper).context("--law")?;
        vec![law_name.to_string()]
    };
    let (data, paths) = load_data(&spec.input, &spec.id)?;
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
        .target(&spec.target)
        .with_context(|| format!("--target (metrics of {})", data.source))?;
    // A sweep's noise-floor runs measure noise; the law is fit on the rest.
    let (data, noise_runs) = noise::partition(&data);
    anyhow::ensure!(!data.is_empty(), "{}: no sampled runs to fit", data.source);
    let noise_floor = noise::measure(&data, &noise_runs, &target);
    let points = match runs_table {
        Some(r) if laws.iter().any(|l| l == "scaling") => Some(points_from_runs(r, &data)?),
        _ => None,
    };
    let test = match &spec.test {
        Some(input) => {
            let (t, p) = load_data(input, &spec.id)?;
            let t = match &reuse {
                Some(r) => t.reduce(r)?,
                None => t,
            };
            Some((t, p))
        }
        None => None,
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
    Ok(FitData {
        spec,
        laws,
        data,
        target,
        noise_floor,
        points,
        test,
        sidecar_prior,
        paths,
        reuse,
    })
}

/// A fitted law and the seconds its CV and final fits took.
pub struct TimedLaw {
    pub law: LoadedLaw,
    pub seconds: f64,
}

/// The laws fitted, in the order they were asked for.
pub struct FitOutcome {
    pub fitted: Vec<TimedLaw>,
    /// Whether the laws were scored on a held-out test set.
    pub tested: bool,
}

impl FitData<'_> {
    /// Which prior law.json gets (it decides where `optimize` starts and
    /// what its KL terms pull toward), as one line.
    pub fn prior_message(&self) -> String {
        match &self.sidecar_prior {
            Some(_) => format!(
                "prior: the sweep's natural token shares (from the sidecar of {})",
                self.paths[0].display()
            ),
            None => format!(
                "prior: the mean of the {} runs' mixtures (no sidecar {} beside {}; \
                 give optimize --prior for the natural token shares)",
                self.data.len(),
                crate::store::meta_paths(&self.paths[0])[0].display(),
                self.paths[0].display()
            ),
        }
    }

    /// Cross-validate and fit each law on all runs, score it on the test set.
    pub fn fit(&self) -> anyhow::Result<FitOutcome> {
        let spec = self.spec;
        let data = &self.data;
        let mut fitted = Vec::new();
        for name in &self.laws {
            let opts = FitOptions {
                law: name.clone(),
                hyper: spec.hyper.clone(),
                folds: spec.folds,
                seed: spec.seed,
            };
            let started = Instant::now();
            let mut law = match &self.points {
                Some(points) if name == "scaling" => {
                    fit_scaling_law(data, points, &self.target, &opts, spec.at_tokens)
                }
                _ => fit_law(data, &self.target, &opts),
            }
            .with_context(|| format!("fitting {name} law to {}", data.source))?;
            law.file.noise = self.noise_floor;
            let seconds = started.elapsed().as_secs_f64();
            if let Some(prior) = &self.sidecar_prior {
                law.file = law.file.with_sidecar_prior(prior).with_context(|| {
                    format!("prior in the sidecar of {}", self.paths[0].display())
                })?;
            }
            law.file.source = sources(&self.paths)?;
            law.file.reuse = self.reuse.clone();
            if let Some((test_data, test_paths)) = &self.test {
                let score = law
                    .score_runs(test_data)
                    .with_context(|| format!("scoring on {}", test_data.source))?;
                law.file.test = Some(HeldOut {
                    score,
                    source: sources(test_paths)?,
                });
            }
            fitted.push(TimedLaw { law, seconds });
        }
        Ok(FitOutcome {
            fitted,
            tested: self.test.is_some(),
        })
    }
}

impl FitOutcome {
    /// The law to write: the only one, or the best by CV ρ (never by test
    /// ρ, which would leak the held-out runs into the choice).
    pub fn best(&self) -> anyhow::Result<&LawFile> {
        let key = |t: &&TimedLaw| {
            let r = t.law.file.cv.spearman;
            if r.is_nan() {
                f64::NEG_INFINITY
            } else {
                r
            }
        };
        let best = self
            .fitted
            .iter()
            .max_by(|a, b| key(a).total_cmp(&key(b)))
            .map(|t| &t.law.file)
            .context("no law fitted")?;
        if self.fitted.len() > 1 && best.cv.spearman.is_nan() {
            bail!(
                "no law has a defined CV ρ on target {} (every law's out-of-fold predictions are constant); \
                 nothing to choose between — fit one law by name",
                best.target
            );
        }
        Ok(best)
    }

    /// Write the [`best`](Self::best) law to `out`.
    pub fn save(&self, out: &Path) -> anyhow::Result<&LawFile> {
        let best = self.best()?;
        best.save(out)
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(best)
    }

    /// The figures: one law's CV (and test) scores, or the comparison table
    /// of `all`; then the noise floor and the token scale.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let fitted = &self.fitted;
        let f0 = &fitted[0].law.file;
        if fitted.len() == 1 {
            let f = f0;
            let _ = writeln!(
                s,
                "law {} on {} runs × {} domains, target {}  (spearman ρ and pearson r ×100)",
                f.kind,
                f.n_runs,
                f.domains.len(),
                f.target
            );
            let _ = writeln!(s, "{}", line(&format!("{}-fold CV", f.cv.k), &f.cv.score()));
            if let Some(t) = &f.test {
                let _ = writeln!(s, "{}", line("train→test", &t.score));
            }
            if let Some(e) = &f.extrapolation {
                let _ = writeln!(s, "{}", line("tokens ×2", e));
            }
            let _ = writeln!(
                s,
                "  fit time     {:.2} s ({} CV fits + 1 on all runs; {:.2} s per fit)",
                fitted[0].seconds,
                f.cv.k,
                fitted[0].seconds / (f.cv.k + 1) as f64
            );
        } else {
            let _ = writeln!(
                s,
                "{} laws on {} runs × {} domains, target {}, {}-fold CV on the same folds (ρ, r ×100)",
                fitted.len(),
                f0.n_runs,
                f0.domains.len(),
                f0.target,
                f0.cv.k
            );
            let _ = write!(
                s,
                "{:<10} {:>7} {:>7} {:>10} {:>9}",
                "law", "cv ρ", "cv r", "cv mse", "cv mae"
            );
            if self.tested {
                let _ = write!(
                    s,
                    " {:>8} {:>8} {:>10} {:>9}",
                    "test ρ", "test r", "test mse", "test mae"
                );
            }
            let _ = writeln!(s, " {:>8} {:>8}", "time s", "per fit");
            for t in fitted {
                let f = &t.law.file;
                let _ = write!(
                    s,
                    "{:<10} {:>7.2} {:>7.2} {:>10.6} {:>9.6}",
                    f.kind,
                    100.0 * f.cv.spearman,
                    100.0 * f.cv.pearson,
                    f.cv.mse,
                    f.cv.mae
                );
                if let Some(test) = &f.test {
                    let held = test.score;
                    let _ = write!(
                        s,
                        " {:>8.2} {:>8.2} {:>10.6} {:>9.6}",
                        100.0 * held.spearman,
                        100.0 * held.pearson,
                        held.mse,
                        held.mae
                    );
                }
                let seconds = t.seconds;
                let _ = writeln!(s, " {seconds:>8.2} {:>8.3}", seconds / (f.cv.k + 1) as f64);
            }
        }
        noise_lines(&mut s, f0);
        if let (Some(at), Some(proxy)) = (
            fitted.iter().find_map(|t| t.law.file.at_tokens),
            fitted.iter().find_map(|t| t.law.file.proxy_tokens),
        ) {
            let _ = writeln!(
                s,
                "scale: proxies trained on {proxy:.3e} tokens; the scaling law predicts at {at:.3e} ({:.1}× further)",
                at / proxy
            );
            if at > 100.0 * proxy {
                let _ = writeln!(
                    s,
                    "warning: extrapolating {:.0}× beyond the proxies' tokens: trust the ranking of nearby mixtures, not the values",
                    at / proxy
                );
            }
        }
        s
    }

    /// The line that says where `law` went (and, after a comparison, which).
    pub fn wrote_message(&self, out: &Path, law: &LawFile) -> String {
        if self.fitted.len() > 1 {
            format!("wrote {} (law {}, best CV ρ)", out.display(), law.kind)
        } else {
            format!("wrote {}", out.display())
        }
    }
}

/// The target's noise floor beside its spread across mixtures and the law's
/// CV error: how far above the noise the law's ranking stands.
fn noise_lines(s: &mut String, f: &LawFile) {
    let rmse = f.cv.mse.sqrt();
    match &f.noise {
        Some(n) => {
            let _ = writeln!(
                s,
                "noise: target sd over {} seeds of the prior {:.4}; sd of a same-seed difference {:.4}; \
                 spread across mixtures {:.4}; CV error (rmse) {:.4}",
                n.seeds, n.seed_sd, n.paired_sd, n.spread, rmse
            );
            let floor = if n.paired_sd.is_finite() {
                n.paired_sd
            } else {
                n.seed_sd
            };
            if n.spread < 2.0 * floor {
                let _ = writeln!(
                    s,
                    "warning: the mixtures' spread ({:.4}) is within twice the noise ({floor:.4}): \
                     the runs barely tell mixtures apart; train longer proxies or more seeds",
                    n.spread
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "noise: not measured (no noise-floor runs; `mixopt sweep --noise-seeds N` adds them); CV error (rmse) {rmse:.4}"
            );
        }
    }
}

fn line(label: &str, s: &Score) -> String {
    format!(
        "  {label:<12} n={:<5} spearman {:6.2}  pearson {:6.2}  mse {:.6}  mae {:.6}",
        s.n,
        100.0 * s.spearman,
        100.0 * s.pearson,
        s.mse,
        s.mae
    )
}

/// The whole stage with its messages: read, say which prior law.json gets,
/// fit, print the figures, write the best law to `spec.out`.
pub fn run(spec: &FitSpec) -> anyhow::Result<FitOutcome> {
    let data = read(spec)?;
    println!("{}", data.prior_message());
    let outcome = data.fit()?;
    print!("{}", outcome.summary());
    let best = outcome.save(&spec.out)?;
    println!("{}", outcome.wrote_message(&spec.out, best));
    Ok(outcome)
}
