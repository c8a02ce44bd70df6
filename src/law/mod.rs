//! Law stage: fit a mixing law — the target loss as a function of the domain
//! proportions — to the runs of a sweep (or runs produced elsewhere), report
//! how well it predicts unseen mixtures, and store it as law.json for
//! `predict` and `optimize`.
//!
//! The seam is `MixingLaw` (hyperparameters → `fit` → `FittedLaw`). Adding a
//! law is one file implementing it plus one line in `LAWS`: its name, how to
//! build it from hyperparameters, and how to rebuild a fitted one from the
//! `params` it wrote.

pub mod cv;
pub mod dml;
pub mod elasticnet;
pub mod ensemble;
pub mod fit_stage;
pub mod gbdt;
mod histogram;
pub mod linear;
pub mod loglinear;
pub mod noise;
pub mod objective;
pub mod scaling;
pub mod scaling_fit;
pub mod target;
pub mod trees;

pub use cv::{cross_validate, pearson, score, spearman, CvReport, Score};
pub use target::Target;

use crate::error::{Error, Result};
use crate::mixture::{write_json_atomic, Mixture};
use crate::store::RunsData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Hyperparameter overrides by name (`alpha`, …), as given to `fit --param`
/// and stored in law.json; each law lays them over its typed parameters
/// (`crate::params`), rejecting names it does not know.
pub type Hyper = crate::params::Overrides;

/// A family of mixing laws with its hyperparameters set.
pub trait MixingLaw: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Fit to rows `x` (proportions, one column per domain) and targets `y`.
    /// `seed` drives any randomness, so a fit is reproducible.
    fn fit(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Box<dyn FittedLaw>>;
}

/// A fitted law: predicts the target for one mixture (weights in the
/// domain order it was fit on).
pub trait FittedLaw: Send + Sync {
    fn predict(&self, x: &[f64]) -> f64;
    /// Everything needed to rebuild it (stored as law.json's `params`).
    fn params(&self) -> serde_json::Value;
    /// Spread (standard deviation across members) of the prediction, for
    /// laws that carry an uncertainty estimate (`ensemble`); None otherwise.
    fn predict_spread(&self, _x: &[f64]) -> Option<f64> {
        None
    }
    /// Predict many mixtures at once (same results as `predict` row by row);
    /// laws with a faster batched evaluation (trees) override it.
    fn predict_batch(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        rows.iter().map(|r| self.predict(r)).collect()
    }
}

/// One registered law: its name, constructor, and loader from stored params
/// (given the number of domains, to check dimensions).
struct Entry {
    name: &'static str,
    build: fn(&Hyper) -> Result<Box<dyn MixingLaw>>,
    load: fn(&serde_json::Value, usize) -> Result<Box<dyn FittedLaw>>,
}

/// The registry: one line per law.
const LAWS: &[Entry] = &[
    Entry {
        name: "linear",
        build: linear::build,
        load: linear::load,
    },
    Entry {
        name: "loglinear",
        build: loglinear::build,
        load: loglinear::load,
    },
    Entry {
        name: "elasticnet",
        build: elasticnet::build,
        load: elasticnet::load,
    },
    Entry {
        name: "gbdt",
        build: gbdt::build,
        load: gbdt::load,
    },
    Entry {
        name: "dml",
        build: dml::build,
        load: dml::load,
    },
    Entry {
        name: "ensemble",
        build: ensemble::build,
        load: ensemble::load,
    },
    Entry {
        name: "scaling",
        build: scaling_fit::build,
        load: scaling::load,
    },
];

/// Names of the registered laws.
pub fn known_laws() -> Vec<&'static str> {
    LAWS.iter().map(|e| e.name).collect()
}

fn entry(name: &str) -> Result<&'static Entry> {
    LAWS.iter().find(|e| e.name == name).ok_or_else(|| {
        Error::invalid(format!(
            "unknown law {name:?} (known: {})",
            known_laws().join(", ")
        ))
    })
}

/// The law `name` with default hyperparameters.
pub fn law_by_name(name: &str) -> Result<Box<dyn MixingLaw>> {
    law_by_name_with(name, &Hyper::new())
}

/// The law `name` with the given hyperparameters (validated here).
pub fn law_by_name_with(name: &str, hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    (entry(name)?.build)(hyper)
}

/// Check a training set: non-empty, rectangular, finite. Returns the width.
pub(crate) fn check_xy(x: &[Vec<f64>], y: &[f64]) -> Result<usize> {
    if x.is_empty() {
        return Err(Error::invalid("no runs to fit"));
    }
    if x.len() != y.len() {
        return Err(Error::invalid(format!(
            "{} mixtures but {} targets",
            x.len(),
            y.len()
        )));
    }
    let d = x[0].len();
    if d == 0 {
        return Err(Error::invalid("mixtures have no domains"));
    }
    for (i, (row, t)) in x.iter().zip(y).enumerate() {
        if row.len() != d {
            return Err(Error::invalid(format!(
                "run {i}: {} weights, expected {d}",
                row.len()
            )));
        }
        if row.iter().any(|v| !v.is_finite()) || !t.is_finite() {
            return Err(Error::invalid(format!(
                "run {i}: non-finite weight or target"
            )));
        }
    }
    Ok(d)
}

/// A file a law was fit (or scored) on, with its hash (the corpus's own
/// source files are `corpus::cache::SourceFile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedFile {
    pub path: String,
    pub sha256: String,
}

impl HashedFile {
    pub fn of(path: &Path) -> Result<Self> {
        Ok(HashedFile {
            path: path.display().to_string(),
            sha256: crate::store::sha256_file(path)?,
        })
    }
}

/// A train → test score on runs the law never saw, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub score: Score,
    pub source: Vec<HashedFile>,
}

/// law.json: what was fit, to what, how well, and from which data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LawFile {
    /// Bumped on incompatible changes; `load` accepts only `LAW_FORMAT`.
    pub format: u32,
    pub kind: String,
    /// Column order of `params` (and of `predict`'s input).
    pub domains: Vec<String>,
    /// The target spec (`Target::spec`).
    pub target: String,
    pub params: serde_json::Value,
    /// Hyperparameters the law was built with (defaults omitted).
    #[serde(default)]
    pub hyper: Hyper,
    pub cv: CvReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<HeldOut>,
    pub n_runs: usize,
    /// Reference mixture for `optimize` (closeness, repetition limits): the
    /// sweep's natural token shares from its sidecar, else the mean of the
    /// training mixtures.
    pub prior: Option<BTreeMap<String, f64>>,
    /// Which of the two `prior` is (absent in files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_kind: Option<PriorKind>,
    pub seed: u64,
    pub source: Vec<HashedFile>,
    pub mixopt_version: String,
    /// The sweep's noise floor (from its noise-floor runs), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<noise::NoiseFloor>,
    /// Lowest and highest target among the runs fitted: predictions outside
    /// are extrapolations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_range: Option<(f64, f64)>,
    /// Scale-aware laws: the token budget predictions are for, the proxies'
    /// own tokens, and how well the law extrapolates in tokens (fit on the
    /// first half of every run's tokens, scored on the final checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extrapolation: Option<Score>,
    /// Mixture reuse: the law is over the virtual domain + the changed ones;
    /// `optimize` composes the leaf weights from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<crate::mixture::reuse::Reuse>,
}

pub const LAW_FORMAT: u32 = 1;

impl LawFile {
    /// Read and validate a law.json (format, domains, params rebuild).
    pub fn load(path: &Path) -> Result<LawFile> {
        let text = crate::store::fsio::read_text(path)?;
        let file: LawFile = serde_json::from_str(&text)
            .map_err(|e| Error::parse(path, e.line(), format!("not a law file: {e}")))?;
        if file.format != LAW_FORMAT {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "law format {} (this mixopt reads format {LAW_FORMAT})",
                    file.format
                ),
            ));
        }
        Mixture::uniform(file.domains.clone())
            .map_err(|e| Error::parse(path, 0, format!("domains: {e}")))?;
        file.fitted()
            .map_err(|e| Error::parse(path, 0, e.to_string()))?;
        Ok(file)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    /// Rebuild the fitted law from `kind` and `params`.
    pub fn fitted(&self) -> Result<Box<dyn FittedLaw>> {
        (entry(&self.kind)?.load)(&self.params, self.domains.len())
    }

    /// Predict one mixture (aligned to the law's domains; a domain the law does
    /// not know is an error, one it knows but the mixture lacks counts as 0).
    /// Rebuilds the law on each call: for many mixtures use `LoadedLaw`.
    pub fn predict_mixture(&self, m: &Mixture) -> Result<f64> {
        let fitted = self.fitted()?;
        Ok(fitted.predict(m.align(&self.domains)?.weights()))
    }

    /// `prior` as a mixture over the law's domains; uniform if the file has
    /// none (every law this version writes has one).
    pub fn prior_mixture(&self) -> Result<Mixture> {
        match &self.prior {
            Some(p) => prior_to_mixture(p, &self.domains),
            None => Mixture::uniform(self.domains.clone()),
        }
    }
}

fn prior_to_mixture(prior: &BTreeMap<String, f64>, domains: &[String]) -> Result<Mixture> {
    let names: Vec<String> = prior.keys().cloned().collect();
    let weights: Vec<f64> = prior.values().copied().collect();
    Mixture::new_in(names, weights, "prior")?.align(domains)
}

/// What a law file's `prior` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorKind {
    /// The sweep's natural token shares (recorded in its sidecar).
    Natural,
    /// The mean of the fitted runs' mixtures: runs imported without a sweep's
    /// sidecar, whose natural token shares are unknown.
    RunsMean,
}

impl LawFile {
    /// The name `optimize` and `report` print for the prior mixture:
    /// "natural" only when it is the natural token shares.
    pub fn prior_label(&self) -> &'static str {
        match (&self.prior, self.prior_kind) {
            (Some(_), Some(PriorKind::Natural)) => "natural",
            (Some(_), Some(PriorKind::RunsMean)) => "runs mean",
            _ => "prior",
        }
    }
}

/// A law file with its fitted law rebuilt once.
pub struct LoadedLaw {
    pub file: LawFile,
    pub fitted: Box<dyn FittedLaw>,
}

impl LoadedLaw {
    pub fn load(path: &Path) -> Result<LoadedLaw> {
        let file = LawFile::load(path)?;
        let fitted = file.fitted()?;
        Ok(LoadedLaw { file, fitted })
    }

    pub fn domains(&self) -> &[String] {
        &self.file.domains
    }

    /// Predict weights already in the law's domain order.
    pub fn predict_weights(&self, w: &[f64]) -> Result<f64> {
        if w.len() != self.file.domains.len() {
            return Err(Error::invalid(format!(
                "{} weights for a law over {} domains",
                w.len(),
                self.file.domains.len()
            )));
        }
        Ok(self.fitted.predict(w))
    }

    /// Predict one mixture after aligning it to the law's domains.
    pub fn predict_mixture(&self, m: &Mixture) -> Result<f64> {
        Ok(self.fitted.predict(m.align(&self.file.domains)?.weights()))
    }

    /// Score on other runs: their weight columns are matched to the law's
    /// domains by name and the law's target is re-resolved on their metrics.
    pub fn score_runs(&self, data: &RunsData) -> Result<Score> {
        let data = data.align_domains(&self.file.domains)?;
        let target = data
            .target(&self.file.target)
            .map_err(|e| Error::invalid(format!("{}: {e}", data.source)))?;
        let y: Vec<f64> = data.metrics.iter().map(|m| target.eval(m)).collect();
        Ok(score(self.fitted.as_ref(), &data.weights, &y))
    }
}

/// How to fit: which law, its hyperparameters, CV folds, seed.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub law: String,
    pub hyper: Hyper,
    pub folds: usize,
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            law: "linear".into(),
            hyper: Hyper::new(),
            folds: 5,
            seed: 0,
        }
    }
}

/// Cross-validate, then fit on all runs. The returned law file has the mean
/// training mixture as `prior` and no `source`; callers that read the runs
/// from files set both (`with_sidecar_prior`, `HashedFile::of`).
pub fn fit_law(data: &RunsData, target: &Target, opts: &FitOptions) -> Result<LoadedLaw> {
    let law = law_by_name_with(&opts.law, &opts.hyper)?;
    let y: Vec<f64> = data.metrics.iter().map(|m| target.eval(m)).collect();
    if let Some(first) = y.first().filter(|&&v| y.iter().all(|&w| w == v)) {
        return Err(Error::invalid(format!(
            "target {} is {first} in every one of the {} runs: a constant has no law to fit \
             (and cross-validated correlations would be undefined)",
            target.spec(),
            y.len()
        )));
    }
    let cv = cross_validate(
        law.as_ref(),
        &data.weights,
        &y,
        &data.ids,
        opts.folds,
        opts.seed,
    )?;
    // The final fit sees the runs in id order too, so a law (bagging, tie
    // breaks, float sums) never depends on the order of the table's rows.
    let by_id = cv::id_order(&data.ids);
    let xs: Vec<Vec<f64>> = by_id.iter().map(|&i| data.weights[i].clone()).collect();
    let ys: Vec<f64> = by_id.iter().map(|&i| y[i]).collect();
    let fitted = law.fit(&xs, &ys, opts.seed)?;
    let file = LawFile::fitted_on(law.kind(), data, target, fitted.params(), opts, cv, &y)?;
    Ok(LoadedLaw { file, fitted })
}

impl LawFile {
    /// The law.json of a law of `kind` fitted on `data`'s runs (targets `y`),
    /// before any scale, noise or reuse fields are filled in.
    pub(crate) fn fitted_on(
        kind: &str,
        data: &RunsData,
        target: &Target,
        params: serde_json::Value,
        opts: &FitOptions,
        cv: CvReport,
        y: &[f64],
    ) -> Result<LawFile> {
        let prior = data.mean_mixture()?;
        Ok(LawFile {
            format: LAW_FORMAT,
            kind: kind.to_string(),
            domains: data.domains.clone(),
            target: target.spec().to_string(),
            params,
            hyper: opts.hyper.clone(),
            cv,
            test: None,
            n_runs: data.len(),
            prior: Some(prior.iter().map(|(d, w)| (d.to_string(), w)).collect()),
            prior_kind: Some(PriorKind::RunsMean),
            seed: opts.seed,
            source: Vec::new(),
            mixopt_version: crate::VERSION.to_string(),
            noise: None,
            target_range: range(y),
            at_tokens: None,
            proxy_tokens: None,
            extrapolation: None,
            reuse: None,
        })
    }
}

/// Lowest and highest value (None when empty).
pub(crate) fn range(y: &[f64]) -> Option<(f64, f64)> {
    let lo = y.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo <= hi).then_some((lo, hi))
}

impl LawFile {
    /// Replace `prior` with a sweep's recorded prior, aligned to the law's
    /// domains (a domain the law lacks is an error).
    pub fn with_sidecar_prior(mut self, prior: &BTreeMap<String, f64>) -> Result<Self> {
        let m = prior_to_mixture(prior, &self.domains)?;
        self.prior = Some(m.iter().map(|(d, w)| (d.to_string(), w)).collect());
        self.prior_kind = Some(PriorKind::Natural);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> RunsData {
        let weights: Vec<Vec<f64>> = (0..20)
            .map(|i| {
                let a = (i as f64 + 0.5) / 20.0;
                vec![a, (1.0 - a) * 0.5, (1.0 - a) * 0.5]
            })
            .collect();
        let metrics = weights
            .iter()
            .map(|w| vec![2.0 - w[0], 3.0 + w[1]])
            .collect();
        RunsData {
            ids: (0..20).map(|i| i.to_string()).collect(),
            domains: vec!["a".into(), "b".into(), "c".into()],
            weights,
            metric_names: vec!["la".into(), "lb".into()],
            metrics,
            source: "test".into(),
        }
    }

    #[test]
    fn unknown_law_lists_known_ones() {
        let e = law_by_name("gbdtx").err().unwrap().to_string();
        assert!(e.contains("gbdtx") && e.contains("linear"), "{e}");
    }

    #[test]
    fn fit_save_load_predict_round_trip() {
        let d = data();
        let t = Target::parse("la", &d.metric_names).unwrap();
        let law = fit_law(&d, &t, &FitOptions::default()).unwrap();
        assert!(law.file.cv.spearman > 0.99, "{:?}", law.file.cv);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("law.json");
        law.file.save(&p).unwrap();
        let back = LoadedLaw::load(&p).unwrap();
        let m = Mixture::parse_spec("c=0.5,a=0.5").unwrap();
        let pred = back.predict_mixture(&m).unwrap();
        assert!((pred - 1.5).abs() < 1e-3, "{pred}");
        assert_eq!(back.file.predict_mixture(&m).unwrap(), pred);
        assert!(back
            .predict_mixture(&Mixture::parse_spec("z=1").unwrap())
            .is_err());
        let s = back.score_runs(&d).unwrap();
        assert!(s.mse < 1e-6);
        let prior = back.file.prior_mixture().unwrap();
        assert!((prior.weights()[0] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn load_rejects_bad_files() {
        let d = data();
        let t = Target::parse("mean", &d.metric_names).unwrap();
        let law = fit_law(&d, &t, &FitOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("law.json");
        let mut f = law.file.clone();
        f.format = 9;
        f.save(&p).unwrap();
        assert!(LawFile::load(&p)
            .unwrap_err()
            .to_string()
            .contains("format 9"));
        let mut f = law.file.clone();
        f.domains.pop();
        f.save(&p).unwrap();
        assert!(LawFile::load(&p).is_err());
        std::fs::write(&p, "{").unwrap();
        assert!(LawFile::load(&p)
            .unwrap_err()
            .to_string()
            .contains("law.json:"));
    }

    #[test]
    fn sidecar_prior_is_aligned() {
        let d = data();
        let t = Target::parse("mean", &d.metric_names).unwrap();
        let law = fit_law(&d, &t, &FitOptions::default()).unwrap();
        let prior: BTreeMap<String, f64> = [("a".to_string(), 0.5), ("b".to_string(), 0.5)].into();
        let f = law.file.clone().with_sidecar_prior(&prior).unwrap();
        assert_eq!(f.prior.as_ref().unwrap()["c"], 0.0);
        let bad: BTreeMap<String, f64> = [("z".to_string(), 1.0)].into();
        assert!(law.file.with_sidecar_prior(&bad).is_err());
    }
}
