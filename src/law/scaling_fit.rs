//! Fitting the scale-aware law (`law::scaling`) from a sweep: its runs table
//! plus the checkpoints table beside it (each run's losses at several token
//! counts; the final losses alone when the sweep kept no checkpoints).
//! Cross-validation holds out whole runs (all their checkpoints) on the same
//! folds as every other law and scores each held-out run's final target; a
//! second check fits on the first half of every run's tokens only and scores
//! the final checkpoints — how far the law can be trusted along the token axis.

use super::cv::{cv_report, folds, rest, score_predictions};
use super::scaling::{fit_scaling, FittedScaling, ScalePoints, ScalingLaw};
use super::{FitOptions, FittedLaw, Hyper, LawFile, LoadedLaw, MixingLaw, Target};
use crate::error::{Error, Result};
use crate::params::Hyperparams;
use crate::store::{checkpoints_path, read_checkpoints, read_runs, RunsData};
use std::collections::HashMap;
use std::path::Path;

/// The registry's constructor: the scaling law cannot be fit from mixtures
/// and one target value each; `fit` routes it here with checkpoints.
pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    ScalingLaw::from_overrides(hyper)?;
    Err(Error::invalid(
        "law scaling needs each run's losses and token counts: fit it on a sweep's runs table \
         (mixopt fit --runs runs.csv --law scaling), not on mixtures and metrics CSVs",
    ))
}

/// The points of `data`'s runs: every checkpoint when `runs` has a
/// checkpoints table, else each run's final losses at its token count.
pub fn points_from_runs(runs: &Path, data: &RunsData) -> Result<ScalePoints> {
    let index: HashMap<&str, usize> = data
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut points = ScalePoints {
        weights: data.weights.clone(),
        ..Default::default()
    };
    let ck_path = checkpoints_path(runs);
    if let Some((names, by_run)) = read_checkpoints(&ck_path)? {
        if names != data.metric_names {
            return Err(Error::invalid(format!(
                "{}: loss columns [{}] differ from the runs table's [{}]",
                ck_path.display(),
                names.join(", "),
                data.metric_names.join(", ")
            )));
        }
        for (id, list) in by_run {
            let Some(&r) = index.get(id.as_str()) else {
                continue; // a noise run, or a run that never finished
            };
            for c in list {
                points.run.push(r);
                points.n_tokens.push(c.n_tokens as f64);
                points.metrics.push(c.losses);
            }
        }
    }
    let (_, records) = read_runs(runs)?;
    let have: Vec<bool> = (0..data.len()).map(|r| points.run.contains(&r)).collect();
    for rec in records {
        if let Some(&r) = index.get(rec.run_id.as_str()) {
            if !have[r] {
                points.run.push(r);
                points.n_tokens.push(rec.n_tokens as f64);
                points.metrics.push(rec.losses);
            }
        }
    }
    if points.run.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no runs to fit the scaling law on",
            runs.display()
        )));
    }
    Ok(points)
}

/// Cross-validate, check the token extrapolation, fit on everything. The
/// law predicts at `at_tokens` (default: the proxies' own token count).
/// Cross-validation on whole runs (all their checkpoints held out together),
/// predicting each held-out run's target at its own final token count: the
/// out-of-fold prediction of every run, in run order. `fit` scores these;
/// the report redraws them.
pub fn out_of_fold(
    law: &ScalingLaw,
    ids: &[String],
    points: &ScalePoints,
    target: &Target,
    k: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let finals = points.finals();
    let proxy_tokens = finals
        .iter()
        .map(|&i| points.n_tokens[i])
        .fold(0.0, f64::max);
    // Folds by run id and seed, as every law's (`cv::folds`).
    let folds = folds(ids, k, seed)?;
    let mut pred = vec![0.0; ids.len()];
    for (f, held) in folds.iter().enumerate() {
        let train = rest(&folds, f);
        let fitted = fit_scaling(law, &points.subset(&train), target, proxy_tokens)?;
        for &r in held {
            let n = finals
                .iter()
                .copied()
                .find(|&i| points.run[i] == r)
                .map_or(proxy_tokens, |i| points.n_tokens[i]);
            pred[r] = fitted.predict_at(&points.weights[r], n);
        }
    }
    Ok(pred)
}

pub fn fit_scaling_law(
    data: &RunsData,
    points: &ScalePoints,
    target: &Target,
    opts: &FitOptions,
    at_tokens: Option<f64>,
) -> Result<LoadedLaw> {
    let law = ScalingLaw::from_overrides(&opts.hyper)?;
    let finals = points.finals();
    let proxy_tokens = finals
        .iter()
        .map(|&i| points.n_tokens[i])
        .fold(0.0, f64::max);
    let at = at_tokens.unwrap_or(proxy_tokens);
    let final_of = |r: usize| finals.iter().copied().find(|&i| points.run[i] == r);
    let y: Vec<f64> = (0..data.len())
        .map(|r| final_of(r).map_or(f64::NAN, |i| target.eval(&points.metrics[i])))
        .collect();

    let pred = out_of_fold(&law, &data.ids, points, target, opts.folds, opts.seed)?;
    let cv = cv_report(opts.folds, &pred, &y, &data.ids);

    // Token extrapolation: fit on checkpoints up to half of each run's tokens.
    let extrapolation = {
        let mut early = points.clone();
        let keep: Vec<usize> = (0..points.run.len())
            .filter(|&i| {
                let last = final_of(points.run[i]).map_or(0.0, |j| points.n_tokens[j]);
                points.n_tokens[i] <= 0.5 * last
            })
            .collect();
        early.run = keep.iter().map(|&i| points.run[i]).collect();
        early.n_tokens = keep.iter().map(|&i| points.n_tokens[i]).collect();
        early.metrics = keep.iter().map(|&i| points.metrics[i].clone()).collect();
        let distinct_n = {
            let mut n: Vec<u64> = early.n_tokens.iter().map(|v| *v as u64).collect();
            n.sort_unstable();
            n.dedup();
            n.len()
        };
        if distinct_n >= 2 {
            let mut half = law.clone();
            half.min_fraction = 0.0;
            let fitted = fit_scaling(&half, &early, target, at)?;
            let p: Vec<f64> = (0..data.len())
                .map(|r| {
                    let n = final_of(r).map_or(proxy_tokens, |i| points.n_tokens[i]);
                    fitted.predict_at(&points.weights[r], n)
                })
                .collect();
            Some(score_predictions(&p, &y))
        } else {
            None
        }
    };

    let fitted: FittedScaling = fit_scaling(&law, points, target, at)?;
    let mut file = LawFile::fitted_on("scaling", data, target, fitted.params(), opts, cv, &y)?;
    file.at_tokens = Some(at);
    file.proxy_tokens = Some(proxy_tokens);
    file.extrapolation = extrapolation;
    Ok(LoadedLaw {
        file,
        fitted: Box::new(fitted),
    })
}
