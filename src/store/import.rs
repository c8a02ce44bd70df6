//! Fitting data in: the runs matrix (`RunsData`: one row per run, its
//! mixture and its metrics) that the `law` stage fits, read either from our
//! runs table or from two external CSVs joined on an id column (RegMix's
//! published `train_mixture_1m.csv` + `train_pile_loss_1m.csv` are read as
//! they are). Also the mixtures-only table `predict` scores, and the prior
//! a sweep leaves in its sidecar.
//!
//! Every error names the file and, where there is one, the line and column.

use super::runs::{read_runs, FIXED_COLUMNS};
use super::{abbreviate, meta_paths, parse_finite, parse_loss, read_table};
use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, Mixture};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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

/// Mixtures to score: `weights[i]` over `domains`, the row starting at 1-based `lines[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureTable {
    pub ids: Vec<String>,
    pub domains: Vec<String>,
    pub weights: Vec<Vec<f64>>,
    pub lines: Vec<usize>,
    pub source: String,
}

/// For each of `wanted`, its index in `have`; errors name the extra or the missing one.
pub(crate) fn column_map(source: &str, have: &[String], wanted: &[String]) -> Result<Vec<usize>> {
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

/// Fitting data from a runs table: the metrics are the per-domain losses,
/// named by domain (`web`, not `loss_web`).
pub fn from_runs_csv(path: &Path) -> Result<RunsData> {
    let (domains, records) = read_runs(path)?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(j) = seen.insert(&r.run_id, i) {
            return Err(Error::parse(
                path,
                0,
                format!(
                    "run_id {:?} appears twice (rows {} and {})",
                    r.run_id,
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(RunsData {
        ids: records.iter().map(|r| r.run_id.clone()).collect(),
        weights: records
            .iter()
            .map(|r| r.mixture.weights().to_vec())
            .collect(),
        metrics: records.iter().map(|r| r.losses.clone()).collect(),
        metric_names: domains.clone(),
        domains,
        source: path.display().to_string(),
    })
}

/// Fitting data from a mixtures CSV (id + one weight column per domain) and a
/// metrics CSV (id + one column per metric), joined on `id_col`. Every id must
/// be in both files exactly once; rows keep the mixtures file's order.
pub fn from_two_csvs(mixtures: &Path, losses: &Path, id_col: &str) -> Result<RunsData> {
    let mix = read_plain_mixtures(mixtures, id_col)?;
    let met = read_metrics(losses, id_col)?;
    let by_id: HashMap<&str, usize> = met
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut metrics = Vec::with_capacity(mix.ids.len());
    for (id, line) in mix.ids.iter().zip(&mix.lines) {
        let i = by_id.get(id.as_str()).ok_or_else(|| {
            Error::parse(
                losses,
                0,
                format!(
                    "no row with {id_col} {id:?} (it is in {}:{line})",
                    mixtures.display()
                ),
            )
        })?;
        metrics.push(met.values[*i].clone());
    }
    if metrics.len() != met.ids.len() {
        let have: std::collections::HashSet<&str> = mix.ids.iter().map(String::as_str).collect();
        if let Some((id, line)) = met
            .ids
            .iter()
            .zip(&met.lines)
            .find(|(id, _)| !have.contains(id.as_str()))
        {
            return Err(Error::parse(
                mixtures,
                0,
                format!(
                    "no row with {id_col} {id:?} (it is in {}:{line})",
                    losses.display()
                ),
            ));
        }
    }
    Ok(RunsData {
        ids: mix.ids,
        domains: mix.domains,
        weights: mix.weights,
        metric_names: met.names,
        metrics,
        source: format!("{} + {}", mixtures.display(), losses.display()),
    })
}

/// Mixtures to score, from either a plain mixtures CSV (`id_col` + one weight
/// column per domain) or a runs table (recognized by its header: ids from
/// `run_id`, domains from the `w_<domain>` columns, the rest ignored).
pub fn read_mixture_table(path: &Path, id_col: &str) -> Result<MixtureTable> {
    if is_runs_table(path)? {
        let (domains, records) = read_runs(path)?;
        return Ok(MixtureTable {
            ids: records.iter().map(|r| r.run_id.clone()).collect(),
            weights: records
                .iter()
                .map(|r| r.mixture.weights().to_vec())
                .collect(),
            // Runs rows are single lines after the header (the writer rejects
            // control characters in every field).
            lines: (2..records.len() + 2).collect(),
            domains,
            source: path.display().to_string(),
        });
    }
    read_plain_mixtures(path, id_col)
}

/// Whether the file's first line starts like a runs-table header.
fn is_runs_table(path: &Path) -> Result<bool> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).at(path)?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut first)
        .at(path)?;
    let first = first.trim_start_matches('\u{feff}');
    Ok(first.starts_with(&format!("{},", FIXED_COLUMNS[0])))
}

fn read_plain_mixtures(path: &Path, id_col: &str) -> Result<MixtureTable> {
    let table = read_table(path)?;
    let idc = table.column(path, id_col)?;
    let cols: Vec<usize> = (0..table.header.len()).filter(|&c| c != idc).collect();
    if cols.is_empty() {
        return Err(Error::parse(
            path,
            1,
            "no weight columns besides the id column",
        ));
    }
    let domains: Vec<String> = cols.iter().map(|&c| table.header[c].clone()).collect();
    for (d, &c) in domains.iter().zip(&cols) {
        check_domain_name(d)
            .map_err(|e| Error::parse(path, 1, format!("column {} as a domain: {e}", c + 1)))?;
    }
    let ids = unique_ids(path, &table.rows, idc, id_col)?;
    let mut weights = Vec::with_capacity(table.rows.len());
    let mut lines = Vec::with_capacity(table.rows.len());
    for (line, f) in &table.rows {
        let w = cols
            .iter()
            .map(|&c| parse_finite(path, *line, c, &table.header[c], &f[c]))
            .collect::<Result<Vec<f64>>>()?;
        let m = Mixture::new_in(domains.clone(), w, "mixture")
            .map_err(|e| Error::parse(path, *line, e.to_string()))?;
        weights.push(m.weights().to_vec());
        lines.push(*line);
    }
    Ok(MixtureTable {
        ids,
        domains,
        weights,
        lines,
        source: path.display().to_string(),
    })
}

struct Metrics {
    ids: Vec<String>,
    names: Vec<String>,
    values: Vec<Vec<f64>>,
    lines: Vec<usize>,
}

fn read_metrics(path: &Path, id_col: &str) -> Result<Metrics> {
    let table = read_table(path)?;
    let idc = table.column(path, id_col)?;
    let cols: Vec<usize> = (0..table.header.len()).filter(|&c| c != idc).collect();
    if cols.is_empty() {
        return Err(Error::parse(
            path,
            1,
            "no metric columns besides the id column",
        ));
    }
    let ids = unique_ids(path, &table.rows, idc, id_col)?;
    let mut values = Vec::with_capacity(table.rows.len());
    for (line, f) in &table.rows {
        values.push(
            cols.iter()
                .map(|&c| parse_loss(path, *line, c, &table.header[c], &f[c]))
                .collect::<Result<Vec<f64>>>()?,
        );
    }
    Ok(Metrics {
        ids,
        names: cols.iter().map(|&c| table.header[c].clone()).collect(),
        values,
        lines: table.rows.iter().map(|(l, _)| *l).collect(),
    })
}

fn unique_ids(
    path: &Path,
    rows: &[(usize, Vec<String>)],
    idc: usize,
    id_col: &str,
) -> Result<Vec<String>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (line, f) in rows {
        let id = f[idc].as_str();
        if id.is_empty() {
            return Err(Error::parse(
                path,
                *line,
                format!("column {} ({id_col}): empty id", idc + 1),
            ));
        }
        if let Some(first) = seen.insert(id, *line) {
            return Err(Error::parse(
                path,
                *line,
                format!("{id_col} {id:?} appears twice (first at line {first})"),
            ));
        }
    }
    Ok(rows.iter().map(|(_, f)| f[idc].clone()).collect())
}

/// The sidecar a sweep writes beside its runs table (`<runs>.meta.json`, see
/// `store::meta_paths`) as JSON, with the file it came from; None if absent.
pub fn read_sidecar(data: &Path) -> Result<Option<(std::path::PathBuf, serde_json::Value)>> {
    let Some(meta) = meta_paths(data).into_iter().find(|m| m.is_file()) else {
        return Ok(None);
    };
    let text = super::fsio::read_text(&meta)?;
    let value = serde_json::from_str(&text)
        .map_err(|e| Error::parse(&meta, e.line(), format!("not JSON: {e}")))?;
    Ok(Some((meta, value)))
}

/// The `"prior": {domain: weight}` a sweep records in the sidecar of its runs
/// table, if there is one.
pub fn read_sidecar_prior(data: &Path) -> Result<Option<BTreeMap<String, f64>>> {
    let Some((meta, value)) = read_sidecar(data)? else {
        return Ok(None);
    };
    let Some(prior) = value.get("prior") else {
        return Ok(None);
    };
    let prior: BTreeMap<String, f64> = serde_json::from_value(prior.clone()).map_err(|e| {
        Error::parse(
            &meta,
            0,
            format!("\"prior\" must map domain to weight: {e}"),
        )
    })?;
    Ok(Some(prior))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn joins_on_id_in_mixture_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(dir.path(), "m.csv", "index,a,b\n2,0.25,0.75\n1,1.0,0.0\n");
        let l = write(dir.path(), "l.csv", "index,metric/x_loss\n1,3.5\n2,4.5\n");
        let d = from_two_csvs(&m, &l, "index").unwrap();
        assert_eq!(d.ids, ["2", "1"]);
        assert_eq!(d.domains, ["a", "b"]);
        assert_eq!(d.metric_names, ["metric/x_loss"]);
        assert_eq!(d.metrics, vec![vec![4.5], vec![3.5]]);
        assert_eq!(d.weights[0], vec![0.25, 0.75]);
    }

    #[test]
    fn join_errors_name_the_id_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(dir.path(), "m.csv", "index,a,b\n1,0.5,0.5\n2,0.5,0.5\n");
        let l = write(dir.path(), "l.csv", "index,y\n1,3.5\n");
        let e = from_two_csvs(&m, &l, "index").unwrap_err().to_string();
        assert!(
            e.contains("l.csv") && e.contains("\"2\"") && e.contains("m.csv:3"),
            "{e}"
        );
        let l = write(dir.path(), "l.csv", "index,y\n1,3.5\n2,1\n3,1\n");
        let e = from_two_csvs(&m, &l, "index").unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains("\"3\""), "{e}");
        let e = from_two_csvs(&m, &l, "id").unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains("\"id\""), "{e}");
        let l = write(dir.path(), "l.csv", "index,y\n1,3.5\n1,1\n");
        let e = from_two_csvs(&m, &l, "index").unwrap_err().to_string();
        assert!(e.contains("l.csv:3") && e.contains("twice"), "{e}");
    }

    #[test]
    fn regmix_files_load_as_they_are() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/regmix");
        let m = root.join("train_mixture_1m.csv");
        if !m.exists() {
            return;
        }
        let d = from_two_csvs(&m, &root.join("train_pile_loss_1m.csv"), "index").unwrap();
        assert_eq!(
            (d.len(), d.domains.len(), d.metric_names.len()),
            (512, 17, 13)
        );
        for row in &d.weights {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn mixture_table_reads_runs_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runs.csv");
        let text =
            "run_id,seed,proxy,n_tokens,wall_s,config_hash,mixopt_version,w_a,w_b,loss_a,loss_b\n\
                    r0,1,p,10,1.0,h,v,0.5,0.5,1.0,2.0\n";
        std::fs::write(&p, text).unwrap();
        let t = read_mixture_table(&p, "index").unwrap();
        assert_eq!(
            (t.ids.clone(), t.domains.clone()),
            (
                vec!["r0".to_string()],
                vec!["a".to_string(), "b".to_string()]
            )
        );
        let d = from_runs_csv(&p).unwrap();
        assert_eq!(d.metric_names, ["a", "b"]);
        assert_eq!(d.metrics, vec![vec![1.0, 2.0]]);
    }

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
