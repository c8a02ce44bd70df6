//! A sweep's noise floor, from its noise-floor runs (`noise-natural-<j>`,
//! `noise-probe-<j>`: the prior and one sampled mixture at a few extra seeds):
//! how much the target moves with the seed alone, and how much a difference
//! between two mixtures trained with the same seed moves. `fit` prints these
//! beside the spread of the target across the sweep's mixtures and the law's
//! cross-validated error: a law can rank mixtures only where their differences
//! stand above the noise.

use super::Target;
use crate::store::RunsData;
use serde::{Deserialize, Serialize};

/// Run ids of noise-floor runs start with this (written by the sweep).
pub const NOISE_PREFIX: &str = crate::proxy::sweep::NOISE_PREFIX;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// Seeds of the prior mixture measured.
    pub seeds: usize,
    /// Standard deviation of the target over those seeds.
    pub seed_sd: f64,
    /// Standard deviation over seeds of target(probe) − target(prior), the
    /// two trained with the same seed each time (NaN without probe runs).
    #[serde(with = "super::cv::nan_as_null")]
    pub paired_sd: f64,
    /// Standard deviation of the target across the sweep's sampled mixtures.
    pub spread: f64,
}

/// Sample standard deviation (NaN for fewer than two values).
pub fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Split a runs table into the sampled runs and its noise-floor runs.
pub fn partition(data: &RunsData) -> (RunsData, RunsData) {
    let keep = |noise: bool| {
        let mut out = data.clone();
        let idx: Vec<usize> = (0..data.len())
            .filter(|&i| data.ids[i].starts_with(NOISE_PREFIX) == noise)
            .collect();
        out.ids = idx.iter().map(|&i| data.ids[i].clone()).collect();
        out.weights = idx.iter().map(|&i| data.weights[i].clone()).collect();
        out.metrics = idx.iter().map(|&i| data.metrics[i].clone()).collect();
        out
    };
    (keep(false), keep(true))
}

/// The noise floor from the noise rows, or None when there are fewer than
/// two seeds of the prior.
pub fn measure(sampled: &RunsData, noise: &RunsData, target: &Target) -> Option<NoiseFloor> {
    let value = |prefix: &str| -> Vec<(String, f64)> {
        noise
            .ids
            .iter()
            .zip(&noise.metrics)
            .filter_map(|(id, m)| {
                let j = id.strip_prefix(NOISE_PREFIX)?.strip_prefix(prefix)?;
                Some((j.to_string(), target.eval(m)))
            })
            .collect()
    };
    let natural = value("natural-");
    let probe = value("probe-");
    if natural.len() < 2 {
        return None;
    }
    let diffs: Vec<f64> = probe
        .iter()
        .filter_map(|(j, p)| natural.iter().find(|(k, _)| k == j).map(|(_, n)| p - n))
        .collect();
    let y: Vec<f64> = sampled.metrics.iter().map(|m| target.eval(m)).collect();
    Some(NoiseFloor {
        seeds: natural.len(),
        seed_sd: sd(&natural.iter().map(|(_, v)| *v).collect::<Vec<_>>()),
        paired_sd: sd(&diffs),
        spread: sd(&y),
    })
}
