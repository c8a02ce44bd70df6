//! The runs table, read side: a table's layout from its header and its
//! finished rows, each checked (errors name file, line and column); also the
//! exact bytes of each line (`RawTable`) for `merge` and the sweep's final
//! ordering. The format and the writer are in `runs`.

use super::runs::{check_domains, finished_len, RunRecord, RunsLayout, FIXED_COLUMNS};
use super::{parse_finite, parse_loss, parse_table_checked, parse_u64, Table};
use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, Mixture};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Read a runs table: its layout and finished rows. A torn last line (no
/// trailing newline) is ignored; any other malformed row is an error naming
/// file, line and column.
pub fn read_runs(path: &Path) -> Result<(RunsLayout, Vec<RunRecord>)> {
    if super::parquet::is_parquet(path) {
        // A runs table exported to Parquet (e.g. with pandas) for scale:
        // the same columns, the same checks.
        let table = super::parquet::read(path)?;
        let layout = header_layout(path, &table.header)?;
        let (layout, rows) = runs_from_table(path, table, layout)?;
        return Ok((layout, rows.into_iter().map(|(_, r)| r).collect()));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    let keep = finished_len(&bytes);
    if keep == 0 {
        return Err(Error::parse(path, 0, "empty runs table: no header line"));
    }
    parse_runs(path, &bytes[..keep])
}

/// A runs table as its exact bytes: the header line and each finished row's
/// line (newline included) beside its parsed record. `merge` and the sweep's
/// final ordering copy these bytes, so a row is never re-formatted (weights
/// read back are renormalized, which can move them by an ulp).
#[derive(Debug, Clone)]
pub struct RawTable {
    pub layout: RunsLayout,
    pub header: Vec<u8>,
    pub rows: Vec<RawRow>,
}

#[derive(Debug, Clone)]
pub struct RawRow {
    pub record: RunRecord,
    pub line: Vec<u8>,
}

impl RawTable {
    /// Rows in run-id order (`natural_cmp`; stable, so rows of one id keep
    /// their order).
    pub fn sort_by_run_id(&mut self) {
        self.rows
            .sort_by(|a, b| super::natural_cmp(&a.record.run_id, &b.record.run_id));
    }

    /// Whether the rows are already in run-id order.
    pub fn is_sorted_by_run_id(&self) -> bool {
        self.rows
            .windows(2)
            .all(|w| super::natural_cmp(&w[0].record.run_id, &w[1].record.run_id).is_le())
    }

    /// The table's bytes: header, then each row as read.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        for r in &self.rows {
            out.extend_from_slice(&r.line);
        }
        out
    }
}

/// Read a runs table keeping every line's bytes (see `RawTable`).
pub fn read_runs_raw(path: &Path) -> Result<RawTable> {
    if super::parquet::is_parquet(path) {
        // A Parquet / Arrow IPC table's rows as the CSV lines a sweep writes.
        return raw_table(path, &super::parquet::to_csv_bytes(path)?);
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    raw_table(path, &bytes)
}

pub(super) fn raw_table(path: &Path, bytes: &[u8]) -> Result<RawTable> {
    let keep = finished_len(bytes);
    if keep == 0 {
        return Err(Error::parse(path, 0, "empty runs table: no header line"));
    }
    let bytes = &bytes[..keep];
    let (layout, records) = parse_runs_at(path, bytes)?;
    // Line i (1-based) is lines[i - 1]; rows never span lines (the writer
    // refuses control characters in every field).
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let header_line = lines
        .iter()
        .position(|l| !l.trim_ascii().is_empty())
        .ok_or_else(|| Error::parse(path, 0, "empty runs table: no header line"))?;
    let non_blank = lines[header_line + 1..]
        .iter()
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    if non_blank != records.len() {
        return Err(Error::parse(
            path,
            0,
            "a row spans several lines (a quoted field holds a line break)",
        ));
    }
    let mut rows = Vec::with_capacity(records.len());
    for (line, record) in records {
        let text = lines
            .get(line.wrapping_sub(1))
            .ok_or_else(|| Error::parse(path, line, "row past the end of the file"))?;
        rows.push(RawRow {
            record,
            line: text.to_vec(),
        });
    }
    Ok(RawTable {
        layout,
        header: lines[header_line].to_vec(),
        rows,
    })
}

/// The layout a runs-table header names, or an error saying what is wrong.
fn header_layout(path: &Path, h: &[String]) -> Result<RunsLayout> {
    let bad = |msg: String| Error::parse(path, 1, msg);
    let nf = FIXED_COLUMNS.len();
    if h.len() < nf || h[..nf] != FIXED_COLUMNS {
        return Err(bad(format!(
            "not a runs table: the header must start with {}",
            FIXED_COLUMNS.join(",")
        )));
    }
    let rest = &h[nf..];
    if let Some((i, col)) = rest
        .iter()
        .enumerate()
        .find(|(_, c)| !(c.starts_with("w_") || c.starts_with("loss_")))
    {
        return Err(bad(format!(
            "column {} is {col:?}: after {} a runs table has only w_<domain> and loss_<domain> columns",
            nf + i + 1,
            FIXED_COLUMNS.join(",")
        )));
    }
    let n = rest.iter().take_while(|c| c.starts_with("w_")).count();
    if n == 0 || rest.len() < 2 * n {
        let w = rest.iter().filter(|c| c.starts_with("w_")).count();
        return Err(bad(format!(
            "a runs table has one w_<domain> and one loss_<domain> column per training domain, \
             then loss_<domain> per evaluation-only domain; this header has {w} w_ and {} loss_ columns",
            rest.len() - w
        )));
    }
    let mut layout = RunsLayout {
        domains: Vec::with_capacity(n),
        eval_only: Vec::new(),
    };
    for (i, col) in rest[..n].iter().enumerate() {
        let d = &col["w_".len()..];
        check_domain_name(d).map_err(|e| bad(format!("column {}: {e}", nf + i + 1)))?;
        let loss_col = &rest[n + i];
        if loss_col.strip_prefix("loss_") != Some(d) {
            return Err(bad(format!(
                "column {} is {loss_col:?}, expected loss_{d}",
                nf + n + i + 1
            )));
        }
        layout.domains.push(d.to_string());
    }
    for (i, col) in rest[2 * n..].iter().enumerate() {
        let c = nf + 2 * n + i + 1;
        let d = col
            .strip_prefix("loss_")
            .ok_or_else(|| bad(format!("column {c} is {col:?}, expected loss_<domain>")))?;
        check_domain_name(d).map_err(|e| bad(format!("column {c}: {e}")))?;
        layout.eval_only.push(d.to_string());
    }
    check_domains(&layout).map_err(|e| bad(e.to_string()))?;
    Ok(layout)
}

pub(super) fn parse_runs(path: &Path, bytes: &[u8]) -> Result<(RunsLayout, Vec<RunRecord>)> {
    let (layout, rows) = parse_runs_at(path, bytes)?;
    Ok((layout, rows.into_iter().map(|(_, r)| r).collect()))
}

/// As `parse_runs`, each record with the 1-based line it is on.
type LinedRecords = Vec<(usize, RunRecord)>;

fn parse_runs_at(path: &Path, bytes: &[u8]) -> Result<(RunsLayout, LinedRecords)> {
    let (table, layout) = parse_table_checked(path, bytes, |h| header_layout(path, h))?;
    runs_from_table(path, table, layout)
}

fn runs_from_table(
    path: &Path,
    table: Table,
    layout: RunsLayout,
) -> Result<(RunsLayout, LinedRecords)> {
    let Table {
        header,
        rows,
        offset,
    } = table;
    if offset != 0 {
        return Err(Error::parse(
            path,
            1,
            "a runs table has no index column (its first column is run_id)",
        ));
    }
    let nf = FIXED_COLUMNS.len();
    let n = layout.domains.len();
    let n_metrics = n + layout.eval_only.len();
    let mut records = Vec::with_capacity(rows.len());
    for (line, f) in rows {
        if f[0].is_empty() {
            return Err(Error::parse(path, line, "column 1 (run_id): empty"));
        }
        let seed = parse_u64(path, line, 1, &header[1], &f[1])?;
        let n_tokens = parse_u64(path, line, 3, &header[3], &f[3])?;
        let wall_s = parse_finite(path, line, 4, &header[4], &f[4])?;
        let mut weights = Vec::with_capacity(n);
        for c in nf..nf + n {
            weights.push(parse_finite(path, line, c, &header[c], &f[c])?);
        }
        let mut losses = Vec::with_capacity(n_metrics);
        for c in nf + n..nf + n + n_metrics {
            losses.push(parse_loss(path, line, c, &header[c], &f[c])?);
        }
        let mixture = Mixture::new_in(layout.domains.clone(), weights, "mixture")
            .map_err(|e| Error::parse(path, line, e.to_string()))?;
        records.push((
            line,
            RunRecord {
                run_id: f[0].clone(),
                seed,
                proxy: f[2].clone(),
                n_tokens,
                wall_s,
                config_hash: f[5].clone(),
                version: f[6].clone(),
                mixture,
                losses,
            },
        ));
    }
    Ok((layout, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs::header;

    fn layout() -> RunsLayout {
        RunsLayout::training(&["web".to_string(), "code".to_string()])
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let head = header(&layout()).join(",");
        std::fs::write(
            &path,
            format!("{head}\nr0,1,p,10,1.0,h,v,0.5,0.5,NaN,2.0\n"),
        )
        .unwrap();
        let e = read_runs(&path).unwrap_err().to_string();
        assert!(
            e.contains("runs.csv:2") && e.contains("column 10 (loss_web)"),
            "{e}"
        );
        std::fs::write(
            &path,
            format!("{head}\nr0,1,p,10,1.0,h,v,0.5,0.7,1.0,2.0\n"),
        )
        .unwrap();
        let e = read_runs(&path).unwrap_err().to_string();
        assert!(e.contains("runs.csv:2") && e.contains("sum"), "{e}");
        std::fs::write(
            &path,
            format!("{head}\nr0,x,p,10,1.0,h,v,0.5,0.5,1.0,2.0\n"),
        )
        .unwrap();
        let e = read_runs(&path).unwrap_err().to_string();
        assert!(e.contains("column 2 (seed)"), "{e}");
        std::fs::write(&path, "run_id,seed\n").unwrap();
        assert!(read_runs(&path).is_err());
    }
}
