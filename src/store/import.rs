//! Fitting data in: the runs matrix (`RunsData`: one row per run, its
//! mixture and its metrics) that the `law` stage fits, read either from our
//! runs table or from two external CSVs joined on an id column (RegMix's
//! published `train_mixture_1m.csv` + `train_pile_loss_1m.csv` are read as
//! they are). Also the mixtures-only table `predict` scores, and the prior
//! a sweep leaves in its sidecar.
//!
//! Every error names the file and, where there is one, the line and column.

use super::runs::{read_runs, FIXED_COLUMNS};
use super::{parse_finite, parse_loss, read_table, Table};
use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, Mixture};
use std::collections::HashMap;
use std::path::Path;

pub use super::runs_data::{column_map, RunsData};
pub use super::sidecar::{read_sidecar, read_sidecar_prior, read_sidecar_reuse};

/// Mixtures to score: `weights[i]` over `domains`, the row starting at 1-based `lines[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureTable {
    pub ids: Vec<String>,
    pub domains: Vec<String>,
    pub weights: Vec<Vec<f64>>,
    pub lines: Vec<usize>,
    pub source: String,
    /// Columns skipped and why (pandas index, bookkeeping, non-numeric), one
    /// line each, for the command to print.
    pub notes: Vec<String>,
}

/// Olmix's bookkeeping columns beside its weights and metrics (`run`,
/// `name`, `index`): in a mixtures file read alone they are never domains.
pub const BOOKKEEPING_COLUMNS: [&str; 3] = ["run", "name", "index"];

/// Fitting data from a runs table: the metrics are the per-domain losses,
/// named by domain (`web`, not `loss_web`).
pub fn from_runs_csv(path: &Path) -> Result<RunsData> {
    let (layout, records) = read_runs(path)?;
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
        metric_names: layout.metric_names(),
        domains: layout.domains,
        source: path.display().to_string(),
    })
}

/// Fitting data from a mixtures CSV (id + one weight column per domain) and a
/// metrics CSV (id + one column per metric), joined on `id_col`. Every id must
/// be in both files exactly once; rows keep the mixtures file's order.
pub fn from_two_csvs(mixtures: &Path, losses: &Path, id_col: &str) -> Result<RunsData> {
    from_two_tables(mixtures, losses, id_col).map(|(d, _)| d)
}

/// As `from_two_csvs` (CSV or Parquet files), also returning one note per
/// column skipped: pandas' unnamed index column, a column the two files share
/// with the same value for every id (Olmix's `name`, `index`: join
/// bookkeeping, not a domain or a metric), a non-numeric column.
pub fn from_two_tables(
    mixtures: &Path,
    losses: &Path,
    id_col: &str,
) -> Result<(RunsData, Vec<String>)> {
    let mt = read_table(mixtures)?;
    let lt = read_table(losses)?;
    let shared = shared_columns(mixtures, &mt, losses, &lt, id_col)?;
    let mut notes = Vec::new();
    for (path, t) in [(mixtures, &mt), (losses, &lt)] {
        if t.offset == 1 {
            notes.push(format!(
                "{}: column 1 has no name (pandas' index); skipped",
                path.display()
            ));
        }
    }
    for name in &shared {
        notes.push(format!(
            "column {name:?} is in both {} and {} with the same value for every {id_col}: join bookkeeping; skipped",
            mixtures.display(),
            losses.display()
        ));
    }
    let mix = mixtures_from_table(mixtures, mt, id_col, &shared, &mut notes)?;
    let met = metrics_from_table(losses, lt, id_col, &shared, &mut notes)?;
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
    Ok((
        RunsData {
            ids: mix.ids,
            domains: mix.domains,
            weights: mix.weights,
            metric_names: met.names,
            metrics,
            source: format!("{} + {}", mixtures.display(), losses.display()),
        },
        notes,
    ))
}

/// The runs a law was fit on, read again from its recorded sources: one
/// runs table, or a mixtures + metrics pair joined on the first column both
/// files have whose values are unique and the same set in both (law.json
/// does not record the `--id` it was given).
pub fn from_sources(paths: &[std::path::PathBuf]) -> Result<RunsData> {
    match paths {
        [runs] => from_runs_csv(runs),
        [m, l] => {
            let (mt, lt) = (read_table(m)?, read_table(l)?);
            let ids = |t: &Table, c: usize| -> Option<std::collections::BTreeSet<String>> {
                let set: std::collections::BTreeSet<String> =
                    t.rows.iter().map(|(_, f)| f[c].clone()).collect();
                (set.len() == t.rows.len()).then_some(set)
            };
            let id = mt
                .header
                .iter()
                .enumerate()
                .find(|(c, h)| {
                    lt.header
                        .iter()
                        .position(|x| x == *h)
                        .is_some_and(|lc| ids(&mt, *c).is_some_and(|a| Some(a) == ids(&lt, lc)))
                })
                .map(|(_, h)| h.clone())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{} and {}: no column joins them (unique ids in both)",
                        m.display(),
                        l.display()
                    ))
                })?;
            from_two_tables(m, l, &id).map(|(d, _)| d)
        }
        _ => Err(Error::invalid(format!(
            "expected one runs table or a mixtures and a metrics file, got {} files",
            paths.len()
        ))),
    }
}

/// Columns (besides the id) both tables have, holding the same text for
/// every id present in both.
fn shared_columns(
    mpath: &Path,
    mt: &Table,
    lpath: &Path,
    lt: &Table,
    id_col: &str,
) -> Result<Vec<String>> {
    let (mi, li) = (mt.column(mpath, id_col)?, lt.column(lpath, id_col)?);
    let lrow: HashMap<&str, &Vec<String>> =
        lt.rows.iter().map(|(_, f)| (f[li].as_str(), f)).collect();
    let mut out = Vec::new();
    for (c, name) in mt.header.iter().enumerate() {
        if c == mi {
            continue;
        }
        let Some(lc) = lt.header.iter().position(|h| h == name) else {
            continue;
        };
        let same = mt
            .rows
            .iter()
            .all(|(_, f)| lrow.get(f[mi].as_str()).is_none_or(|lf| lf[lc] == f[c]));
        if same {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Whether a column holds text rather than numbers: no cell of it is a
/// number (so a typo in a numeric column stays an error naming its cell).
fn is_text_column(t: &Table, c: usize) -> bool {
    !t.rows.is_empty() && t.rows.iter().all(|(_, f)| f[c].parse::<f64>().is_err())
}

/// The data columns of `t` (not the id, not `skip`, not text), with notes.
fn data_columns(
    path: &Path,
    t: &Table,
    idc: usize,
    skip: &[String],
    notes: &mut Vec<String>,
) -> Vec<usize> {
    let mut cols = Vec::new();
    for (c, name) in t.header.iter().enumerate() {
        if c == idc || skip.contains(name) {
            continue;
        }
        if is_text_column(t, c) {
            notes.push(format!(
                "{}: column {} ({name:?}) holds no number (first row: {:?}); skipped",
                path.display(),
                t.file_col(c) + 1,
                t.rows[0].1[c]
            ));
            continue;
        }
        cols.push(c);
    }
    cols
}

/// Mixtures to score, from either a plain mixtures CSV (`id_col` + one weight
/// column per domain) or a runs table (recognized by its header: ids from
/// `run_id`, domains from the `w_<domain>` columns, the rest ignored).
pub fn read_mixture_table(path: &Path, id_col: &str) -> Result<MixtureTable> {
    if is_runs_table(path)? {
        let (layout, records) = read_runs(path)?;
        let domains = layout.domains;
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
            notes: Vec::new(),
        });
    }
    let table = read_table(path)?;
    let mut notes = Vec::new();
    if table.offset == 1 {
        notes.push(format!(
            "{}: column 1 has no name (pandas' index); skipped",
            path.display()
        ));
    }
    let skip: Vec<String> = BOOKKEEPING_COLUMNS
        .iter()
        .filter(|c| **c != id_col && table.header.iter().any(|h| h == *c))
        .map(|c| {
            notes.push(format!(
                "{}: column {c:?} is bookkeeping (Olmix's run/name/index); skipped",
                path.display()
            ));
            c.to_string()
        })
        .collect();
    let mut t = mixtures_from_table(path, table, id_col, &skip, &mut notes)?;
    t.notes = notes;
    Ok(t)
}

/// Whether the file's first line starts like a runs-table header.
fn is_runs_table(path: &Path) -> Result<bool> {
    use std::io::BufRead;
    if super::parquet::is_parquet(path) {
        let t = read_table(path)?;
        return Ok(t.header.first().map(String::as_str) == Some(FIXED_COLUMNS[0]));
    }
    let file = std::fs::File::open(path).at(path)?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut first)
        .at(path)?;
    let first = first.trim_start_matches('\u{feff}');
    Ok(first.starts_with(&format!("{},", FIXED_COLUMNS[0])))
}

fn mixtures_from_table(
    path: &Path,
    table: Table,
    id_col: &str,
    skip: &[String],
    notes: &mut Vec<String>,
) -> Result<MixtureTable> {
    let idc = table.column(path, id_col)?;
    let cols = data_columns(path, &table, idc, skip, notes);
    if cols.is_empty() {
        return Err(Error::parse(
            path,
            1,
            "no weight columns besides the id column",
        ));
    }
    let domains: Vec<String> = cols.iter().map(|&c| table.header[c].clone()).collect();
    for (d, &c) in domains.iter().zip(&cols) {
        check_domain_name(d).map_err(|e| {
            Error::parse(
                path,
                1,
                format!("column {} as a domain: {e}", table.file_col(c) + 1),
            )
        })?;
    }
    let ids = unique_ids(path, &table, idc, id_col)?;
    let mut weights = Vec::with_capacity(table.rows.len());
    let mut lines = Vec::with_capacity(table.rows.len());
    for (line, f) in &table.rows {
        let w = cols
            .iter()
            .map(|&c| parse_finite(path, *line, table.file_col(c), &table.header[c], &f[c]))
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
        notes: Vec::new(),
    })
}

struct Metrics {
    ids: Vec<String>,
    names: Vec<String>,
    values: Vec<Vec<f64>>,
    lines: Vec<usize>,
}

fn metrics_from_table(
    path: &Path,
    table: Table,
    id_col: &str,
    skip: &[String],
    notes: &mut Vec<String>,
) -> Result<Metrics> {
    let idc = table.column(path, id_col)?;
    let cols = data_columns(path, &table, idc, skip, notes);
    if cols.is_empty() {
        return Err(Error::parse(
            path,
            1,
            "no metric columns besides the id column",
        ));
    }
    let ids = unique_ids(path, &table, idc, id_col)?;
    let mut values = Vec::with_capacity(table.rows.len());
    for (line, f) in &table.rows {
        values.push(
            cols.iter()
                .map(|&c| parse_loss(path, *line, table.file_col(c), &table.header[c], &f[c]))
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

fn unique_ids(path: &Path, table: &Table, idc: usize, id_col: &str) -> Result<Vec<String>> {
    let rows = &table.rows;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (line, f) in rows {
        let id = f[idc].as_str();
        if id.is_empty() {
            return Err(Error::parse(
                path,
                *line,
                format!("column {} ({id_col}): empty id", table.file_col(idc) + 1),
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/regmix");
        let m = root.join("train_mixture_1m.csv");
        let d = from_two_csvs(&m, &root.join("train_pile_loss_1m.csv"), "index").unwrap();
        assert_eq!(
            (d.len(), d.domains.len(), d.metric_names.len()),
            (512, 17, 13)
        );
        for row in &d.weights {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    /// Olmix's swarm format as pandas writes it (tests/data/olmix/make.py).
    #[test]
    fn olmix_pandas_csv_and_parquet_read_as_they_are() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/olmix");
        for ext in ["csv", "parquet"] {
            let (d, notes) = from_two_tables(
                &dir.join(format!("ratios.{ext}")),
                &dir.join(format!("metrics.{ext}")),
                "run",
            )
            .unwrap();
            assert_eq!(d.len(), 32, "{ext}");
            assert_eq!(d.domains.len(), 5);
            assert_eq!(d.domains[2], "dclm:software development");
            assert_eq!(d.metric_names[0], "arc_challenge:rc::olmes");
            assert_eq!(d.metric_names.len(), 4);
            let all = notes.join("\n");
            assert!(
                all.contains("\"name\"") && all.contains("\"index\""),
                "{all}"
            );
            if ext == "csv" {
                assert!(all.contains("pandas' index"), "{all}");
            }
        }
        let csv = from_two_csvs(&dir.join("ratios.csv"), &dir.join("metrics.csv"), "run").unwrap();
        let pq = from_two_csvs(
            &dir.join("ratios.parquet"),
            &dir.join("metrics.parquet"),
            "run",
        )
        .unwrap();
        assert_eq!(csv.weights, pq.weights);
        assert_eq!(csv.metrics, pq.metrics);
        let t = read_mixture_table(&dir.join("ratios.parquet"), "run").unwrap();
        assert_eq!(t.domains.len(), 5);
        assert_eq!(t.lines[0], 2);
    }

    #[test]
    fn same_named_weight_and_metric_columns_are_both_kept() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(dir.path(), "m.csv", "id,web,code\n1,0.5,0.5\n2,0.25,0.75\n");
        let l = write(
            dir.path(),
            "l.csv",
            "id,web,code,note\n1,3.1,2.0,x\n2,3.3,1.9,y\n",
        );
        let (d, notes) = from_two_tables(&m, &l, "id").unwrap();
        assert_eq!(d.domains, ["web", "code"]);
        assert_eq!(d.metric_names, ["web", "code"]);
        assert!(
            notes.len() == 1 && notes[0].contains("\"note\""),
            "{notes:?}"
        );
        // A numeric column with a bad cell further down is an error, not skipped.
        let l = write(dir.path(), "l.csv", "id,web\n1,3.1\n2,abc\n");
        let e = from_two_csvs(&m, &l, "id").unwrap_err().to_string();
        assert!(e.contains("l.csv:3") && e.contains("column 2 (web)"), "{e}");
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
}
