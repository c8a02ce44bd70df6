//! Fitting data: the runs matrix (`RunsData`: one row per run, its mixture and
//! its metrics) that the `law` stage fits, whichever file it was read from
//! (`import`), and the column matching shared with `predict`.

use super::abbreviate;
use crate::error::{Error, Result};
use crate::mixture::Mixture;

/// Runs to fit: `weights[i]` (a validated mixture over `domains`) produced
/// `metrics[i]` (one finite value per `metric_names`). Rows keep file order.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsData {
    pub ids: Vec<String>,
    pub domains: Vec<String>,
    pub weights: Vec<Vec<f64>>,
    pub metric_names: Vec<String>,
    pub metrics: Vec<Vec<f64>>,
    /// Where the rows came from, for messages and provenance.
    pub source: String,
}

impl RunsData {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A target over these runs' metrics; `mean` is over the training domains'
    /// losses when the metrics include them (a sweep's runs table), else over
    /// every metric.
    pub fn target(&self, spec: &str) -> Result<crate::law::Target> {
        crate::law::Target::parse_scoped(spec, &self.metric_names, &self.domains)
    }

    /// The column-wise mean of the mixtures: the prior recorded in law.json
    /// when the runs come without a sweep sidecar.
    pub fn mean_mixture(&self) -> Result<Mixture> {
        let n = self.weights.len().max(1) as f64;
        let mut mean = vec![0.0; self.domains.len()];
        for row in &self.weights {
            for (m, w) in mean.iter_mut().zip(row) {
                *m += w / n;
            }
        }
        Mixture::from_scores(self.domains.clone(), &mean)
    }

    /// The runs in the reduced coordinates of a mixture reuse (the frozen
    /// domains summed into the virtual one); every run must have kept the
    /// frozen ratios.
    pub fn reduce(&self, reuse: &crate::mixture::reuse::Reuse) -> Result<RunsData> {
        reuse.check(&self.domains)?;
        let mut out = self.clone();
        out.domains = reuse.reduced_domains(&self.domains);
        out.weights = self
            .weights
            .iter()
            .zip(&self.ids)
            .map(|(w, id)| {
                reuse
                    .collapse(&self.domains, w, 1e-6)
                    .map_err(|e| Error::invalid(format!("{}: run {id:?}: {e}", self.source)))
            })
            .collect::<Result<_>>()?;
        Ok(out)
    }

    /// The same runs with their weight columns reordered to `domains`; a
    /// domain on one side only is an error naming it.
    pub fn align_domains(&self, domains: &[String]) -> Result<RunsData> {
        let idx = column_map(&self.source, &self.domains, domains)?;
        let mut out = self.clone();
        out.domains = domains.to_vec();
        out.weights = self
            .weights
            .iter()
            .map(|row| idx.iter().map(|&j| row[j]).collect())
            .collect();
        Ok(out)
    }
}

/// For each of `wanted`, its index in `have`; errors name the extra or the missing one.
pub fn column_map(source: &str, have: &[String], wanted: &[String]) -> Result<Vec<usize>> {
    if let Some(extra) = have.iter().find(|d| !wanted.contains(d)) {
        return Err(Error::invalid(format!(
            "{source}: domain column {extra:?} is not a domain of the law (law domains: {})",
            abbreviate(wanted, 20)
        )));
    }
    wanted
        .iter()
        .map(|d| {
            have.iter().position(|h| h == d).ok_or_else(|| {
                Error::invalid(format!("{source}: no column for the law's domain {d:?}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_domains_reorders_and_rejects() {
        let d = RunsData {
            ids: vec!["1".into()],
            domains: vec!["a".into(), "b".into()],
            weights: vec![vec![0.25, 0.75]],
            metric_names: vec!["y".into()],
            metrics: vec![vec![1.0]],
            source: "s".into(),
        };
        let r = d
            .align_domains(&["b".to_string(), "a".to_string()])
            .unwrap();
        assert_eq!(r.weights, vec![vec![0.75, 0.25]]);
        assert!(d.align_domains(&["a".to_string()]).is_err());
        assert!(d
            .align_domains(&["a".into(), "b".into(), "c".into()])
            .is_err());
        let m = d.mean_mixture().unwrap();
        assert_eq!(m.weights(), [0.25, 0.75]);
    }
}
