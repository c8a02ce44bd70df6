//! Store stage: where finished proxy runs live and how fitting data gets in.
//!
//! `runs` is the append-only, crash-safe runs table the sweep writes (one CSV
//! row per finished proxy run; `runs_read` reads it back). `import` turns either that table or a pair of
//! externally produced CSVs (mixtures + metrics joined on an id column, e.g.
//! RegMix's published runs) into the `RunsData` matrix the `law` stage fits.
//!
//! `trajectory` is the file an online mixing run writes (one row per policy
//! update) and `export`/`report` read.
//!
//! The helpers here are the CSV plumbing they share: reading a whole table with
//! 1-based line numbers, parsing cells into numbers with errors that name
//! file, line and column, and hashing a source file for provenance.

pub mod checkpoints;
pub mod fsio;
pub mod import;
pub(crate) mod parquet;
pub mod runs;
pub mod runs_data;
pub mod runs_read;
pub mod sidecar;
pub mod trajectory;

pub use checkpoints::{checkpoints_csv, checkpoints_path, read_checkpoints, CheckpointsWriter};
pub use import::{from_runs_csv, from_two_csvs, read_mixture_table, MixtureTable, RunsData};
pub use runs::{read_runs, RunRecord, RunsLayout, RunsWriter};
pub use trajectory::{Trajectory, TrajectoryRow};

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// A CSV table read whole: trimmed header cells and each data row with the
/// 1-based line it starts on. pandas writes its index as a first column with
/// an empty header: that column is dropped, and `offset` (1 then, else 0)
/// keeps the column numbers in messages those of the file.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
    pub offset: usize,
}

impl Table {
    /// The 0-based column index `c` of this table as the file numbers it
    /// (0-based, for `parse_finite` and friends, which print it + 1).
    pub fn file_col(&self, c: usize) -> usize {
        c + self.offset
    }

    /// Index of a header column, or an error naming the column and the file.
    pub fn column(&self, path: &Path, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::parse(
                path,
                1,
                format!(
                    "no column {name:?} (columns: {})",
                    abbreviate(&self.header, 20)
                ),
            )
        })
    }
}

/// Parse CSV bytes (already read from `path`) into a `Table`. Every row must
/// have as many fields as the header; blank lines are skipped.
pub(crate) fn parse_table(path: &Path, bytes: &[u8]) -> Result<Table> {
    parse_table_checked(path, bytes, |_| Ok(())).map(|(t, ())| t)
}

/// As `parse_table`, running `check` on the header as soon as it is read, so a
/// file of the wrong kind is named as such before its rows are judged.
pub(crate) fn parse_table_checked<T>(
    path: &Path,
    bytes: &[u8],
    check: impl FnOnce(&[String]) -> Result<T>,
) -> Result<(Table, T)> {
    let mut check = Some(check);
    let mut checked = None;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    // pandas' unnamed index column (an empty first header cell), dropped.
    let mut offset = 0usize;
    let mut record = csv::StringRecord::new();
    let mut lines = LineCounter {
        bytes,
        at: 0,
        line: 1,
    };
    loop {
        let more = rdr.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(0, |p| lines.line_of(p.byte() as usize));
            Error::parse(path, line, format!("malformed CSV: {e}"))
        })?;
        if !more {
            break;
        }
        // csv's own line counter does not count skipped blank lines.
        let line = record
            .position()
            .map_or(0, |p| lines.line_of(p.byte() as usize));
        let fields: Vec<String> = record.iter().map(str::to_string).collect();
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        match &header {
            None => {
                let mut h = fields;
                // A UTF-8 byte-order mark (Excel) is not part of the first name.
                if let Some(first) = h.first_mut() {
                    *first = first.trim_start_matches('\u{feff}').to_string();
                }
                if h.len() > 1 && h[0].is_empty() {
                    h.remove(0);
                    offset = 1;
                }
                for (i, name) in h.iter().enumerate() {
                    if name.is_empty() {
                        return Err(Error::parse(
                            path,
                            line,
                            format!("header column {} has no name", i + 1 + offset),
                        ));
                    }
                    if h[..i].contains(name) {
                        return Err(Error::parse(
                            path,
                            line,
                            format!("header names column {name:?} twice"),
                        ));
                    }
                }
                if let Some(check) = check.take() {
                    checked = Some(check(&h)?);
                }
                header = Some(h);
            }
            Some(h) => {
                let mut fields = fields;
                if offset == 1 && !fields.is_empty() {
                    fields.remove(0);
                }
                if fields.len() != h.len() {
                    return Err(Error::parse(
                        path,
                        line,
                        format!(
                            "{} fields, but the header has {} columns",
                            fields.len() + offset,
                            h.len() + offset
                        ),
                    ));
                }
                rows.push((line, fields));
            }
        }
    }
    let header = header.ok_or_else(|| Error::parse(path, 0, "empty file: no header row"))?;
    let checked = checked.ok_or_else(|| Error::parse(path, 0, "empty file: no header row"))?;
    Ok((
        Table {
            header,
            rows,
            offset,
        },
        checked,
    ))
}

/// Maps byte offsets (non-decreasing) to 1-based line numbers in one pass.
struct LineCounter<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
}

impl LineCounter<'_> {
    /// Line of the first non-blank byte at or after `offset` (a record's
    /// reported start may include the blank lines skipped before it).
    fn line_of(&mut self, offset: usize) -> usize {
        let mut start = offset.min(self.bytes.len());
        while start < self.bytes.len() && matches!(self.bytes[start], b'\n' | b'\r') {
            start += 1;
        }
        if start >= self.at {
            self.line += self.bytes[self.at..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.at = start;
        }
        self.line
    }
}

/// Whether `path` names a Parquet or Arrow IPC table (by its extension).
pub fn is_columnar(path: &Path) -> bool {
    parquet::is_parquet(path)
}

/// Write CSV bytes (header line, rows) as the Parquet or Arrow IPC table
/// `path` names, with typed columns (see `store::parquet`).
pub fn write_columnar_csv(path: &Path, csv_bytes: &[u8]) -> Result<()> {
    parquet::write_csv_bytes(path, csv_bytes)
}

/// Read and parse a whole CSV file, or a Parquet / Arrow IPC file (by its extension).
pub(crate) fn read_table(path: &Path) -> Result<Table> {
    if parquet::is_parquet(path) {
        return parquet::read(path);
    }
    let bytes = std::fs::read(path).at(path)?;
    parse_table(path, &bytes)
}

/// Parse one cell as a finite number. `col` is the 0-based column index and
/// `name` its header, both named in the error (columns are 1-based there).
pub(crate) fn parse_finite(
    path: &Path,
    line: usize,
    col: usize,
    name: &str,
    cell: &str,
) -> Result<f64> {
    let v = parse_number(path, line, col, name, cell)?;
    if !v.is_finite() {
        return Err(Error::parse(
            path,
            line,
            format!(
                "column {} ({name}): value is {cell:?}, not a finite number",
                col + 1
            ),
        ));
    }
    Ok(v)
}

/// Parse one cell as a loss: finite and not negative (a mean token
/// cross-entropy in nats cannot be below 0; a negative one is a sign flip or
/// a different metric, and would silently bend the fitted law).
pub(crate) fn parse_loss(
    path: &Path,
    line: usize,
    col: usize,
    name: &str,
    cell: &str,
) -> Result<f64> {
    let v = parse_finite(path, line, col, name, cell)?;
    if v < 0.0 {
        return Err(Error::parse(
            path,
            line,
            format!(
                "column {} ({name}): loss {cell} is negative; losses are cross-entropies in nats (>= 0)",
                col + 1
            ),
        ));
    }
    Ok(v)
}

/// Parse one cell as an f64 (NaN and inf pass; callers decide).
pub(crate) fn parse_number(
    path: &Path,
    line: usize,
    col: usize,
    name: &str,
    cell: &str,
) -> Result<f64> {
    if cell.is_empty() {
        return Err(Error::parse(
            path,
            line,
            format!("column {} ({name}): empty cell, expected a number", col + 1),
        ));
    }
    cell.parse::<f64>().map_err(|_| {
        Error::parse(
            path,
            line,
            format!("column {} ({name}): {cell:?} is not a number", col + 1),
        )
    })
}

/// Parse one cell as an unsigned integer.
pub(crate) fn parse_u64(
    path: &Path,
    line: usize,
    col: usize,
    name: &str,
    cell: &str,
) -> Result<u64> {
    cell.parse::<u64>().map_err(|_| {
        Error::parse(
            path,
            line,
            format!(
                "column {} ({name}): {cell:?} is not a non-negative integer",
                col + 1
            ),
        )
    })
}

/// Hex SHA-256 of a file's bytes (recorded in law.json as provenance).
pub use crate::corpus::source::sha256_file;

/// Candidate sidecar paths of a runs file: `runs.csv.meta.json`, then
/// `runs.meta.json`. The sweep writes the first; both are read.
pub fn meta_paths(runs: &Path) -> [PathBuf; 2] {
    let mut appended = runs.as_os_str().to_os_string();
    appended.push(".meta.json");
    [PathBuf::from(appended), runs.with_extension("meta.json")]
}

/// Order of run ids: digit runs compare as numbers (`run2` < `run10`, `9` <
/// `10`), everything else byte-wise; ids equal that way (`run07`, `run7`)
/// fall back to plain byte order, so the order is total. A sweep's ids
/// (`run00000`, …) and RegMix's indices (`0`, `1`, …) come out in the order
/// they were made. Tables, merges and cross-validation folds all use it, so
/// results never depend on the order rows happened to be written in.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let si = i;
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            // Compare the digit runs as numbers of any length: strip leading
            // zeros, then the longer is larger, then byte order.
            let trim = |d: &[u8]| -> usize { d.iter().take_while(|&&c| c == b'0').count() };
            let (dx, dy) = (&x[si..i], &y[sj..j]);
            let (dx, dy) = (&dx[trim(dx)..], &dy[trim(dy)..]);
            let ord = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| a.cmp(b))
}

/// `a, b, c, … (N in all)` for long lists in error messages.
pub(crate) fn abbreviate(names: &[String], max: usize) -> String {
    if names.len() <= max {
        names.join(", ")
    } else {
        format!("{}, … ({} in all)", names[..max].join(", "), names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_reports_lines_and_ragged_rows() {
        let p = Path::new("t.csv");
        let t = parse_table(p, b"a,b\n1,2\n\n3,4\n").unwrap();
        assert_eq!(t.header, ["a", "b"]);
        assert_eq!(t.rows[1].0, 4);
        let e = parse_table(p, b"a,b\n1,2\n3\n").unwrap_err().to_string();
        assert!(e.contains("t.csv:3"), "{e}");
        let e = parse_table(p, b"a,a\n").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn pandas_index_column_is_dropped_and_columns_keep_their_numbers() {
        let p = Path::new("t.csv");
        let t = parse_table(p, b",run,a\n0,x,1\n1,y,2\n").unwrap();
        assert_eq!(t.header, ["run", "a"]);
        assert_eq!(t.rows[1].1, ["y", "2"]);
        assert_eq!(t.file_col(1), 2);
        let e = parse_table(p, b",run,a\n0,x\n").unwrap_err().to_string();
        assert!(
            e.contains("t.csv:2") && e.contains("2 fields") && e.contains("3 columns"),
            "{e}"
        );
        let e = parse_table(p, b"run,,a\n").unwrap_err().to_string();
        assert!(e.contains("header column 2 has no name"), "{e}");
    }

    #[test]
    fn cells_name_their_column() {
        let p = Path::new("t.csv");
        let e = parse_finite(p, 7, 2, "x", "abc").unwrap_err().to_string();
        assert!(e.contains("t.csv:7") && e.contains("column 3 (x)"), "{e}");
        assert!(parse_finite(p, 7, 2, "x", "NaN").is_err());
        assert!(parse_finite(p, 7, 2, "x", "inf").is_err());
        assert_eq!(parse_finite(p, 7, 2, "x", "1e-3").unwrap(), 1e-3);
    }

    #[test]
    fn run_ids_sort_naturally_and_totally() {
        let mut ids = vec![
            "run10", "run2", "run00001", "10", "9", "b", "a10", "a9", "run1", "run01",
        ];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            ["9", "10", "a9", "a10", "b", "run00001", "run01", "run1", "run2", "run10"]
        );
        let mut big = vec!["run100000", "run99999", "run00000"];
        big.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(big, ["run00000", "run99999", "run100000"]);
    }

    #[test]
    fn sidecar_candidates() {
        let [a, b] = meta_paths(Path::new("out/runs.csv"));
        assert_eq!(a, Path::new("out/runs.csv.meta.json"));
        assert_eq!(b, Path::new("out/runs.meta.json"));
    }
}
