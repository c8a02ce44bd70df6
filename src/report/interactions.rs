//! The interaction matrix of the report: which domain helps which target.
//! For every domain and every metric (and the law's target), the Spearman
//! correlation across the runs between the domain's weight and the metric.
//! Negative means runs with more of that domain had a lower value of the
//! metric — it helps, when lower is better (losses); positive means it
//! hurts (or helps, for a metric where higher is better). A correlation,
//! not a causal effect: weights on a simplex trade off against each other.
//! Also the roll-up of mixtures to sources for hierarchical domain names.

use super::svg::esc;
use crate::law::spearman;
use crate::mixture::hierarchy::{is_hierarchical, rollup};
use crate::mixture::Mixture;
use crate::store::RunsData;
use std::fmt::Write;

/// Background colour for a correlation: blue when negative (lower metric
/// with more weight), red when positive, white near 0.
fn colour(r: f64) -> String {
    if !r.is_finite() {
        return "#eeeeee".into();
    }
    let a = r.abs().min(1.0);
    let (base, full) = if r < 0.0 {
        ((255.0, 255.0, 255.0), (49.0, 110.0, 200.0))
    } else {
        ((255.0, 255.0, 255.0), (210.0, 70.0, 60.0))
    };
    let mix = |b: f64, f: f64| (b + (f - b) * a).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(base.0, full.0),
        mix(base.1, full.1),
        mix(base.2, full.2)
    )
}

/// The matrix as an HTML section: rows = domains, columns = the target then
/// each metric.
pub fn section(data: &RunsData, target_name: &str, target: &[f64]) -> String {
    let mut cols: Vec<(String, Vec<f64>)> =
        vec![(format!("target: {target_name}"), target.to_vec())];
    for (k, m) in data.metric_names.iter().enumerate() {
        cols.push((m.clone(), data.metrics.iter().map(|row| row[k]).collect()));
    }
    let mut html = String::from(
        "<section><h2>Which domain helps which target</h2><p>Spearman ρ across the runs between each \
         domain's weight (rows) and each metric (columns). <span style=\"background:#316ec8;color:#fff;padding:0 4px\">negative</span>: \
         runs with more of the domain had lower values — it helps a loss; \
         <span style=\"background:#d2463c;color:#fff;padding:0 4px\">positive</span>: higher values. \
         A correlation over the sweep, not a causal effect.</p><table class=\"interactions\"><tr><th>domain</th>",
    );
    for (name, _) in &cols {
        let _ = write!(html, "<th>{}</th>", esc(name));
    }
    html.push_str("</tr>");
    for (j, d) in data.domains.iter().enumerate() {
        let w: Vec<f64> = data.weights.iter().map(|row| row[j]).collect();
        let _ = write!(html, "<tr><td style=\"text-align:left\">{}</td>", esc(d));
        for (_, values) in &cols {
            let r = spearman(&w, values);
            let text = if r.is_finite() {
                format!("{r:+.2}")
            } else {
                "–".into()
            };
            let fg = if r.is_finite() && r.abs() > 0.6 {
                "#fff"
            } else {
                "#222"
            };
            let _ = write!(
                html,
                "<td style=\"background:{};color:{fg}\">{text}</td>",
                colour(r)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></section>");
    html
}

/// Mixtures rolled up to their sources, as a table (empty when the domain
/// names are not hierarchical).
pub fn rollup_section(mixes: &[(&str, &Mixture)]) -> crate::Result<String> {
    let Some((_, first)) = mixes.first() else {
        return Ok(String::new());
    };
    if !is_hierarchical(first.domains()) {
        return Ok(String::new());
    }
    let rolled: Vec<(&str, Mixture)> = mixes
        .iter()
        .map(|(n, m)| Ok((*n, rollup(m, 1)?)))
        .collect::<crate::Result<_>>()?;
    let sources = rolled[0].1.domains().to_vec();
    let mut html = String::from(
        "<section><h2>Weights rolled up to sources</h2><p>Each source's weight is the sum of its \
         <code>source:…</code> domains.</p><table><tr><th>mixture</th>",
    );
    for s in &sources {
        let _ = write!(html, "<th>{}</th>", esc(s));
    }
    html.push_str("</tr>");
    for (name, m) in &rolled {
        let _ = write!(html, "<tr><td>{}</td>", esc(name));
        for w in m.weights() {
            let _ = write!(html, "<td>{w:.4}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></section>");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_signs_follow_the_runs() {
        let weights: Vec<Vec<f64>> = (0..10)
            .map(|i| {
                let a = i as f64 / 10.0;
                vec![a, 1.0 - a]
            })
            .collect();
        let data = RunsData {
            ids: (0..10).map(|i| i.to_string()).collect(),
            domains: vec!["a".into(), "b".into()],
            metrics: weights.iter().map(|w| vec![3.0 - w[0]]).collect(),
            weights,
            metric_names: vec!["loss_a".into()],
            source: "t".into(),
        };
        let y: Vec<f64> = data.metrics.iter().map(|m| m[0]).collect();
        let html = section(&data, "loss_a", &y);
        // a helps loss_a (ρ = −1), b hurts it (ρ = +1).
        assert!(
            html.contains(">-1.00<") && html.contains(">+1.00<"),
            "{html}"
        );
        assert_eq!(colour(0.0), "#ffffff");
    }
}
