//! Report stage: one self-contained HTML file (inline SVG and CSS, no network)
//! that shows what a mixture search found, for people who would rather look
//! at a plot than a table:
//!
//! 1. predicted vs actual target over the cross-validation folds — the
//!    out-of-fold predictions are recomputed from the runs table with the
//!    law's kind, hyperparameters, folds and seed, exactly as `fit` made them
//!    (and checked against the CV figures stored in law.json);
//! 2. the optimized weights beside the uniform and natural mixtures, with the
//!    target the law predicts for each;
//! 3. each domain's validation loss against its weight across the runs;
//! 4. the online trajectory (weights and losses over steps), when given;
//!
//! and, between 2 and 3, the weights rolled up to sources (hierarchical
//! `source:topic` names) and the interaction matrix: which domain's weight
//! goes with lower or higher values of which metric (`interactions`).

pub mod interactions;
pub mod svg;

use crate::error::{Error, Result};
use crate::law::cv::score_predictions;
use crate::law::{law_by_name_with, LawFile, LoadedLaw, Score};
use crate::mixture::Mixture;
use crate::store::import::from_runs_csv;
use crate::store::trajectory::Trajectory;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use svg::{esc, grouped_bars, lines, scatter, Series};

/// What the report is built from.
#[derive(Debug, Clone)]
pub struct ReportInputs {
    pub runs: PathBuf,
    pub law: PathBuf,
    pub weights: Option<PathBuf>,
    pub trajectory: Option<PathBuf>,
}

/// Out-of-fold predictions for every run, recomputed exactly as
/// `law::cross_validate` made them (same folds, by run id and seed).
pub fn out_of_fold(law: &LawFile, x: &[Vec<f64>], y: &[f64], ids: &[String]) -> Result<Vec<f64>> {
    let model = law_by_name_with(&law.kind, &law.hyper)?;
    let (n, k) = (x.len(), law.cv.k);
    if k < 2 || n < k {
        return Err(Error::invalid(format!(
            "cannot recompute {k}-fold cross validation on {n} runs"
        )));
    }
    crate::law::cv::out_of_fold(model.as_ref(), x, y, ids, k, law.seed)
}

fn fmt_score(s: &Score) -> String {
    format!(
        "n = {}, Spearman ρ = {:.2}, Pearson r = {:.2}, MSE = {:.3e}, MAE = {:.3e}",
        s.n,
        100.0 * s.spearman,
        100.0 * s.pearson,
        s.mse,
        s.mae
    )
}

/// Build the report's HTML.
pub fn render(inputs: &ReportInputs) -> Result<String> {
    let law = LoadedLaw::load(&inputs.law)?;
    let file = &law.file;
    // Noise-floor runs (`sweep --noise-seeds`) are never fitted on.
    let data = crate::law::noise::partition(&from_runs_csv(&inputs.runs)?).0;
    // A law fit with mixture reuse is over the virtual domain + the changed ones.
    let data = match &file.reuse {
        Some(r) => data.reduce(r)?,
        None => data,
    }
    .align_domains(&file.domains)
    .map_err(|e| Error::invalid(format!("runs vs law {}: {e}", inputs.law.display())))?;
    let target = data.target(&file.target).map_err(|e| {
        Error::invalid(format!(
            "{}: target of {}: {e}",
            inputs.runs.display(),
            inputs.law.display()
        ))
    })?;
    // Every input is read and checked before the (slow) cross-validation refit.
    let uniform = Mixture::uniform(file.domains.clone())?;
    let natural = file.prior_mixture()?;
    let optimized = match &inputs.weights {
        Some(p) => Some(
            match &file.reuse {
                Some(r) => Mixture::resolve_for(&p.display().to_string(), &r.leaves)
                    .and_then(|m| r.reduce(&m)),
                None => Mixture::resolve_for(&p.display().to_string(), &file.domains),
            }
            .map_err(|e| Error::invalid(format!("{}: {e} (law domains)", p.display())))?,
        ),
        None => None,
    };
    let trajectory = match &inputs.trajectory {
        Some(p) => Some(Trajectory::load(p)?),
        None => None,
    };
    let y: Vec<f64> = data.metrics.iter().map(|m| target.eval(m)).collect();
    let oof = if file.kind == "scaling" {
        // The scale-aware law is fitted on every checkpoint of the runs.
        let points = crate::law::scaling_fit::points_from_runs(&inputs.runs, &data)?;
        crate::law::scaling_fit::out_of_fold(
            &<crate::law::scaling::ScalingLaw as crate::params::Hyperparams>::from_overrides(
                &file.hyper,
            )?,
            &data.ids,
            &points,
            &target,
            file.cv.k,
            file.seed,
        )?
    } else {
        out_of_fold(file, &data.weights, &y, &data.ids)?
    };
    let cv = score_predictions(&oof, &y);
    let stored = file.cv.score();
    let same =
        |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0) || (a.is_nan() && b.is_nan());
    let matches =
        cv.n == stored.n && same(cv.mse, stored.mse) && same(cv.spearman, stored.spearman);

    let mut html = String::new();
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<h1>mixopt report</h1><p class=\"meta\">law <b>{}</b> on {} runs × {} domains · target <code>{}</code> · runs <code>{}</code> · mixopt {}</p>",
        esc(&file.kind),
        data.len(),
        file.domains.len(),
        esc(&file.target),
        esc(&inputs.runs.display().to_string()),
        crate::VERSION
    );

    // 1. Predicted vs actual over the CV folds.
    let _ = write!(
        html,
        "<section><h2>Predicted vs actual target ({}-fold cross validation)</h2><p>Each point is one run, predicted by the law fit without its fold. {}.</p>",
        file.cv.k,
        esc(&fmt_score(&cv))
    );
    if !matches {
        let _ = write!(
            html,
            "<p class=\"warn\">These differ from the CV figures in law.json ({}): the runs table is not the one the law was fit on.</p>",
            esc(&fmt_score(&stored))
        );
    }
    let points: Vec<(f64, f64)> = y.iter().copied().zip(oof.iter().copied()).collect();
    html.push_str(&scatter(
        "cv-scatter",
        "predicted vs actual (out of fold)",
        "actual target",
        "predicted target",
        &points,
        true,
        460.0,
        380.0,
    ));
    html.push_str("</section>");

    // 2. Weights: optimized vs uniform vs natural.
    let mut mixes: Vec<(&str, &Mixture)> = Vec::new();
    if let Some(o) = &optimized {
        mixes.push(("optimized", o));
    }
    mixes.push(("uniform", &uniform));
    // "natural" only when the law's prior is the natural token shares.
    mixes.push((file.prior_label(), &natural));
    let series: Vec<Series> = mixes
        .iter()
        .map(|(name, m)| Series {
            name: name.to_string(),
            values: m.weights().to_vec(),
        })
        .collect();
    html.push_str("<section><h2>Mixture weights</h2>");
    if optimized.is_none() {
        let _ = write!(
            html,
            "<p>No weights file given (<code>--weights</code>): the uniform and {} mixtures only.</p>",
            file.prior_label()
        );
    }
    html.push_str(&grouped_bars(
        "weights-bars",
        "weight per domain",
        &file.domains,
        &series,
        720.0,
    ));
    html.push_str("<table><tr><th>mixture</th><th>predicted target</th>");
    for d in &file.domains {
        let _ = write!(html, "<th>{}</th>", esc(d));
    }
    html.push_str("</tr>");
    for (name, m) in &mixes {
        let pred = law.predict_mixture(m)?;
        let _ = write!(html, "<tr><td>{name}</td><td>{pred:.4}</td>");
        for w in m.weights() {
            let _ = write!(html, "<td>{w:.4}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></section>");
    html.push_str(&interactions::rollup_section(&mixes)?);
    html.push_str(&interactions::section(&data, &file.target, &y));

    // 3. Each domain's loss against its weight.
    html.push_str(
        "<section><h2>Each domain's loss vs its weight across the runs</h2><div class=\"grid\">",
    );
    for (j, d) in file.domains.iter().enumerate() {
        let Some(mi) = data.metric_names.iter().position(|m| m == d) else {
            continue;
        };
        let pts: Vec<(f64, f64)> = data
            .weights
            .iter()
            .zip(&data.metrics)
            .map(|(w, m)| (w[j], m[mi]))
            .collect();
        html.push_str(&scatter(
            &format!("domain-{d}"),
            d,
            &format!("weight of {d}"),
            &format!("loss on {d}"),
            &pts,
            false,
            300.0,
            240.0,
        ));
    }
    html.push_str("</div></section>");

    // 4. Online trajectory.
    if let Some(t) = &trajectory {
        let steps: Vec<f64> = t.rows.iter().map(|r| r.step as f64).collect();
        let w_series: Vec<Series> = t
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| Series {
                name: d.clone(),
                values: t.rows.iter().map(|r| r.weights[i]).collect(),
            })
            .collect();
        let l_series: Vec<Series> = t
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| Series {
                name: d.clone(),
                // A loss not observed at an update is a gap in the line.
                values: t
                    .rows
                    .iter()
                    .map(|r| r.losses[i].unwrap_or(f64::NAN))
                    .collect(),
            })
            .collect();
        let _ = write!(
            html,
            "<section><h2>Online trajectory</h2><p>{} rows, steps {}–{}.</p>",
            t.rows.len(),
            t.rows[0].step,
            t.rows[t.rows.len() - 1].step
        );
        html.push_str(&lines(
            "trajectory-weights",
            "weights over training",
            "step",
            "weight",
            &steps,
            &w_series,
            720.0,
            320.0,
        ));
        html.push_str(&lines(
            "trajectory-losses",
            "per-domain loss over training",
            "step",
            "loss",
            &steps,
            &l_series,
            720.0,
            320.0,
        ));
        html.push_str("</section>");
    }
    html.push_str(TAIL);
    Ok(html)
}

/// Render and write atomically.
pub fn write_report(inputs: &ReportInputs, out: &Path) -> Result<()> {
    let html = render(inputs)?;
    crate::mixture::write_atomic(out, html.as_bytes())
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mixopt report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:980px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}
.meta{color:#555;font-size:13px}.warn{color:#a33}
svg.chart{display:block;margin:8px 0;font-size:11px}
svg .title{font-size:13px;font-weight:600}svg .tick{fill:#555}svg .label{fill:#333}svg .legend{fill:#333}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid svg.chart{margin:0}
table{border-collapse:collapse;font-size:12px;margin-top:8px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
code{background:#f4f4f4;padding:0 3px}
</style></head><body>
"#;

/// A tiny check a headless browser can read back (`--dump-dom`): how many
/// charts got a non-empty layout box and how many marks they hold.
const TAIL: &str = r#"
<script>
window.addEventListener("load", function () {
  var charts = document.querySelectorAll("svg.chart"), shown = 0, marks = 0;
  charts.forEach(function (c) {
    var r = c.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) { shown += 1; }
    marks += c.querySelectorAll(".mark").length;
  });
  document.body.setAttribute("data-rendered-charts", String(shown));
  document.body.setAttribute("data-rendered-marks", String(marks));
});
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::law::{fit_law, FitOptions};
    use crate::store::RunsData;

    #[test]
    fn out_of_fold_reproduces_cross_validate() {
        let weights: Vec<Vec<f64>> = (0..23)
            .map(|i| {
                let a = (i as f64 * 0.37) % 1.0 * 0.9 + 0.05;
                let b = (1.0 - a) * ((i as f64 * 0.61) % 1.0);
                vec![a, b, 1.0 - a - b]
            })
            .collect();
        let metrics = weights
            .iter()
            .map(|w| vec![3.0 - w[0].sqrt(), 2.5 - w[1] + 0.3 * w[2] * w[0]])
            .collect();
        let data = RunsData {
            ids: (0..23).map(|i| i.to_string()).collect(),
            domains: vec!["a".into(), "b".into(), "c".into()],
            weights,
            metric_names: vec!["a".into(), "b".into()],
            metrics,
            source: "test".into(),
        };
        let target = crate::law::Target::parse("mean", &data.metric_names).unwrap();
        let opts = FitOptions {
            law: "loglinear".into(),
            folds: 4,
            seed: 7,
            ..FitOptions::default()
        };
        let law = fit_law(&data, &target, &opts).unwrap();
        let y: Vec<f64> = data.metrics.iter().map(|m| target.eval(m)).collect();
        let oof = out_of_fold(&law.file, &data.weights, &y, &data.ids).unwrap();
        let s = score_predictions(&oof, &y);
        assert_eq!(s, law.file.cv.score());
    }
}
