//! How good a fitted mixing law is: rank and value agreement between its
//! predictions and the true target on runs it did not see. k-fold cross
//! validation on the training runs (`cross_validate`), or one score on a
//! held-out set (`score`, RegMix's 512-train / 256-test split).
//!
//! Spearman ρ is the figure RegMix reports (×100); MSE/MAE are in the
//! target's units (nats).

use super::{FittedLaw, MixingLaw};
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Agreement of predictions with truth over `n` runs. Correlations are NaN
/// where undefined (constant predictions or targets); JSON stores NaN as null.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub n: usize,
    #[serde(with = "nan_as_null")]
    pub spearman: f64,
    #[serde(with = "nan_as_null")]
    pub pearson: f64,
    pub mse: f64,
    pub mae: f64,
}

/// A k-fold cross-validation result: the `Score` of the pooled out-of-fold
/// predictions (each run predicted by the model fit without its fold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    pub k: usize,
    pub n: usize,
    #[serde(with = "nan_as_null")]
    pub spearman: f64,
    #[serde(with = "nan_as_null")]
    pub pearson: f64,
    pub mse: f64,
    pub mae: f64,
}

impl CvReport {
    pub fn score(&self) -> Score {
        Score {
            n: self.n,
            spearman: self.spearman,
            pearson: self.pearson,
            mse: self.mse,
            mae: self.mae,
        }
    }
}

/// Score predictions against truth.
pub fn score_predictions(pred: &[f64], truth: &[f64]) -> Score {
    let n = pred.len().min(truth.len());
    let (mut se, mut ae) = (0.0, 0.0);
    for (p, t) in pred.iter().zip(truth) {
        se += (p - t) * (p - t);
        ae += (p - t).abs();
    }
    let nf = n.max(1) as f64;
    Score {
        n,
        spearman: spearman(&pred[..n], &truth[..n]),
        pearson: pearson(&pred[..n], &truth[..n]),
        mse: se / nf,
        mae: ae / nf,
    }
}

/// Score a fitted law on held-out runs `x` (mixtures) with targets `y`.
pub fn score(fitted: &dyn FittedLaw, x: &[Vec<f64>], y: &[f64]) -> Score {
    let pred: Vec<f64> = x.iter().map(|row| fitted.predict(row)).collect();
    score_predictions(&pred, y)
}

/// Row indices in run-id order (`store::natural_cmp`; stable for equal ids).
pub fn id_order(ids: &[String]) -> Vec<usize> {
    let mut by_id: Vec<usize> = (0..ids.len()).collect();
    by_id.sort_by(|&a, &b| crate::store::natural_cmp(&ids[a], &ids[b]));
    by_id
}

/// The held-out runs of each of `k` folds over the runs named `ids`: the ids
/// sorted (`store::natural_cmp`), then shuffled with `seed`; fold f holds
/// positions [f·n/k, (f+1)·n/k). Folds therefore depend on the run ids and
/// the seed only, never on the order the rows came in (a sweep appends runs
/// as workers finish); for rows already in id order this is the plain seeded
/// shuffle of the row indices. Every law's cross-validation uses these, so
/// laws are compared on the same folds.
pub fn folds(ids: &[String], k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    let n = ids.len();
    if k < 2 {
        return Err(Error::invalid(format!(
            "--folds {k}: need at least 2 folds"
        )));
    }
    if n < k {
        return Err(Error::invalid(format!(
            "{k}-fold cross validation needs at least {k} runs, have {n}"
        )));
    }
    let by_id = id_order(ids);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let order: Vec<usize> = order.into_iter().map(|p| by_id[p]).collect();
    Ok((0..k)
        .map(|fold| order[fold * n / k..(fold + 1) * n / k].to_vec())
        .collect())
}

/// The training runs of fold `f`: every other fold's, in fold order.
pub fn rest(folds: &[Vec<usize>], f: usize) -> Vec<usize> {
    folds
        .iter()
        .enumerate()
        .filter(|(g, _)| *g != f)
        .flat_map(|(_, v)| v.iter().copied())
        .collect()
}

/// The report for pooled out-of-fold predictions, scored in run-id order
/// (float sums then do not depend on row order).
pub fn cv_report(k: usize, pred: &[f64], y: &[f64], ids: &[String]) -> CvReport {
    let by_id = id_order(ids);
    let pred: Vec<f64> = by_id.iter().map(|&i| pred[i]).collect();
    let y: Vec<f64> = by_id.iter().map(|&i| y[i]).collect();
    let s = score_predictions(&pred, &y);
    CvReport {
        k,
        n: s.n,
        spearman: s.spearman,
        pearson: s.pearson,
        mse: s.mse,
        mae: s.mae,
    }
}

/// Out-of-fold predictions over [`folds`]: each run predicted by the law fit
/// (seed `seed + fold`) on the other folds, the training rows given in fold
/// order.
pub fn out_of_fold(
    law: &dyn MixingLaw,
    x: &[Vec<f64>],
    y: &[f64],
    ids: &[String],
    k: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let n = x.len();
    if ids.len() != n || y.len() != n {
        return Err(Error::invalid(format!(
            "cross validation: {n} mixtures, {} targets, {} run ids",
            y.len(),
            ids.len()
        )));
    }
    let folds = folds(ids, k, seed)?;
    // Folds are fit in parallel (each is independent and seeded by its
    // index, so the result does not depend on the number of threads).
    use rayon::prelude::*;
    let per_fold: Vec<Vec<(usize, f64)>> = (0..k)
        .into_par_iter()
        .map(|fold| {
            let train = rest(&folds, fold);
            let tx: Vec<Vec<f64>> = train.iter().map(|&i| x[i].clone()).collect();
            let ty: Vec<f64> = train.iter().map(|&i| y[i]).collect();
            let fitted = law.fit(&tx, &ty, seed.wrapping_add(fold as u64))?;
            Ok(folds[fold]
                .iter()
                .map(|&i| (i, fitted.predict(&x[i])))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut pred = vec![0.0; n];
    for (i, p) in per_fold.into_iter().flatten() {
        pred[i] = p;
    }
    Ok(pred)
}

/// k-fold cross validation on [`folds`]; all out-of-fold predictions are
/// scored together.
pub fn cross_validate(
    law: &dyn MixingLaw,
    x: &[Vec<f64>],
    y: &[f64],
    ids: &[String],
    k: usize,
    seed: u64,
) -> Result<CvReport> {
    let pred = out_of_fold(law, x, y, ids, k, seed)?;
    Ok(cv_report(k, &pred, y, ids))
}

/// Pearson correlation; NaN if either side is constant or the lengths differ.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 {
        return f64::NAN;
    }
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman ρ: Pearson correlation of the ranks, tied values sharing their
/// average rank (as scipy.stats.spearmanr).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    pearson(&ranks(a), &ranks(b))
}

/// 1-based ranks, ties given the mean of the ranks they span.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut start = 0;
    while start < idx.len() {
        let mut end = start + 1;
        while end < idx.len() && v[idx[end]] == v[idx[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let avg = (start + 1 + end) as f64 / 2.0;
        for &i in &idx[start..end] {
            r[i] = avg;
        }
        start = end;
    }
    r
}

/// serde for f64 fields that may be NaN: JSON has no NaN, so write null and
/// read null back as NaN.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), [2.0, 3.5, 3.5, 1.0]);
        assert_eq!(ranks(&[1.0, 1.0, 1.0]), [2.0, 2.0, 2.0]);
    }

    #[test]
    fn spearman_with_ties_matches_hand_computation() {
        // a ranks [1, 2.5, 2.5, 4], b ranks [1, 3, 2, 4]; centered:
        // a' = [-1.5, 0, 0, 1.5], b' = [-1.5, 0.5, -0.5, 1.5];
        // ρ = 4.5 / sqrt(4.5 · 5) = sqrt(0.9) (scipy.stats.spearmanr agrees: 0.9486832980505138).
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((rho - 0.9_f64.sqrt()).abs() < 1e-12, "{rho}");
        // Monotone but non-linear: ρ = 1, Pearson < 1.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = a.map(|x: f64| x.exp());
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        assert!(pearson(&a, &b) < 0.95);
        assert!((spearman(&a, &b.map(|x| -x)) + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0; 5]).is_nan());
    }

    #[test]
    fn pearson_matches_hand_computation() {
        // x' = [-1, 0, 1], y' = [-2, 1, 1]: Σx'y' = 3, Σx'² = 2, Σy'² = 6.
        let r = pearson(&[1.0, 2.0, 3.0], &[0.0, 3.0, 3.0]);
        assert!((r - 3.0 / 12f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn folds_follow_run_ids_not_row_order() {
        // 12 runs given in four orders: before folds followed the row order
        // and linear CV ρ ranged from −13 to +14 on one such table.
        let ids: Vec<String> = (0..12).map(|i| format!("run{i:05}")).collect();
        let x: Vec<Vec<f64>> = (0..12)
            .map(|i| {
                let a = ((i * 7) % 12) as f64 / 12.0 * 0.8 + 0.1;
                vec![a, 1.0 - a]
            })
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, w)| 2.0 - w[0] + 0.05 * ((i * 5 % 3) as f64))
            .collect();
        let law = super::super::linear::LinearLaw { alpha: 1e-4 };
        let base = cross_validate(&law, &x, &y, &ids, 4, 3).unwrap();
        for perm_seed in 0..4u64 {
            let mut perm: Vec<usize> = (0..12).collect();
            perm.shuffle(&mut StdRng::seed_from_u64(100 + perm_seed));
            let px: Vec<Vec<f64>> = perm.iter().map(|&i| x[i].clone()).collect();
            let py: Vec<f64> = perm.iter().map(|&i| y[i]).collect();
            let pid: Vec<String> = perm.iter().map(|&i| ids[i].clone()).collect();
            let r = cross_validate(&law, &px, &py, &pid, 4, 3).unwrap();
            assert_eq!(r, base, "row order {perm:?} changed the CV result");
        }
        // Rows already in id order keep the plain seeded shuffle.
        let mut plain: Vec<usize> = (0..12).collect();
        plain.shuffle(&mut StdRng::seed_from_u64(3));
        let want: Vec<Vec<usize>> = (0..4).map(|f| plain[f * 3..(f + 1) * 3].to_vec()).collect();
        assert_eq!(folds(&ids, 4, 3).unwrap(), want);
    }

    #[test]
    fn nan_scores_survive_json() {
        let s = score_predictions(&[1.0, 1.0], &[1.0, 2.0]);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"spearman\":null"), "{text}");
        let back: Score = serde_json::from_str(&text).unwrap();
        assert!(back.spearman.is_nan());
        assert_eq!(back.mse, 0.5);
    }
}
