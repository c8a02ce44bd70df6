//! The checkpoints table: per-domain validation losses of each proxy run at
//! several points of its training (`steps`, `n_tokens`), the token axis a
//! scale-aware law fits. The sweep writes `<runs>.checkpoints.csv` beside the
//! runs table; `mixopt train --checkpoints-out` writes one run's rows.
//!
//! Header: `run_id,steps,n_tokens,` then `loss_<domain>` per evaluated domain.
//! Same crash discipline as the runs table: a run's rows go out in one write +
//! `sync_data`, before the run's row in the runs table, so every finished run
//! has its checkpoints. Rows of a run that never reached the runs table (killed
//! between the two writes, then trained again) are superseded: readers keep the
//! last rows of each run id.

use super::{parse_finite, parse_table, parse_u64};
use crate::error::{Error, IoContext, Result};
use crate::proxy::train::Checkpoint;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const FIXED: [&str; 3] = ["run_id", "steps", "n_tokens"];

/// `<runs>.checkpoints.csv`.
pub fn checkpoints_path(runs: &Path) -> PathBuf {
    let mut name = runs.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoints.csv");
    runs.with_file_name(name)
}

fn header(domains: &[String]) -> String {
    FIXED
        .iter()
        .map(|c| c.to_string())
        .chain(domains.iter().map(|d| format!("loss_{d}")))
        .collect::<Vec<_>>()
        .join(",")
}

fn rows(run_id: &str, checkpoints: &[Checkpoint]) -> String {
    let mut text = String::new();
    for c in checkpoints {
        text += &format!("{run_id},{},{}", c.steps, c.n_tokens);
        for l in &c.losses {
            text += &format!(",{l}");
        }
        text.push('\n');
    }
    text
}

/// One run's checkpoints as a whole CSV (`mixopt train --checkpoints-out`).
pub fn checkpoints_csv(domains: &[String], run_id: &str, checkpoints: &[Checkpoint]) -> String {
    format!("{}\n{}", header(domains), rows(run_id, checkpoints))
}

/// Appends each finished run's checkpoints (one write + fsync per run).
#[derive(Debug)]
pub struct CheckpointsWriter {
    path: PathBuf,
    file: File,
}

impl CheckpointsWriter {
    /// Open (creating with a header) the table for `domains`; an existing
    /// table must have the same header. A torn last line is cut.
    pub fn open(path: &Path, domains: &[String]) -> Result<Self> {
        let want = header(domains);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).at(path)?;
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep > 0 {
            let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            if String::from_utf8_lossy(first).trim_end() != want {
                return Err(Error::parse(
                    path,
                    1,
                    format!("checkpoints table header differs from this sweep's ({want})"),
                ));
            }
        }
        if keep < bytes.len() {
            file.set_len(keep as u64).at(path)?;
        }
        let mut file = OpenOptions::new().append(true).open(path).at(path)?;
        if keep == 0 {
            file.write_all(format!("{want}\n").as_bytes()).at(path)?;
            file.sync_data().at(path)?;
        }
        Ok(CheckpointsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, run_id: &str, checkpoints: &[Checkpoint]) -> Result<()> {
        if let Some(c) = checkpoints
            .iter()
            .find(|c| c.losses.iter().any(|l| !l.is_finite()))
        {
            return Err(Error::invalid(format!(
                "run {run_id:?}: non-finite loss at checkpoint {} steps",
                c.steps
            )));
        }
        self.file
            .write_all(rows(run_id, checkpoints).as_bytes())
            .and_then(|()| self.file.sync_data())
            .at(&self.path)
    }
}

/// A checkpoints table as bytes, for copying rows without re-formatting them
/// (`merge`, and the sweep's final ordering): the header line and, per run
/// id, the lines of its last block of rows (a run's rows go out in one
/// write; a later block supersedes an earlier one, as `read_checkpoints`
/// reads it).
#[derive(Debug, Clone)]
pub struct RawCheckpoints {
    pub header: Vec<u8>,
    pub runs: HashMap<String, Vec<u8>>,
}

impl RawCheckpoints {
    /// The table holding the runs `ids`, in that order (ids without rows are
    /// left out).
    pub fn to_bytes<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
        let mut out = self.header.clone();
        for id in ids {
            if let Some(rows) = self.runs.get(id) {
                out.extend_from_slice(rows);
            }
        }
        out
    }
}

/// The table at `path` as bytes (checked by `read_checkpoints` first), or
/// None when the file does not exist.
pub fn read_checkpoints_raw(path: &Path) -> Result<Option<RawCheckpoints>> {
    if read_checkpoints(path)?.is_none() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = bytes[..keep]
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty());
    let header = lines.next().unwrap_or_default().to_vec();
    let mut runs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in lines {
        let id = line.split(|&b| b == b',').next().unwrap_or_default();
        let id = String::from_utf8_lossy(id).into_owned();
        let block = runs.entry(id.clone()).or_default();
        if current.as_deref() != Some(id.as_str()) {
            // A new block of this run supersedes an earlier one.
            block.clear();
            current = Some(id);
        }
        block.extend_from_slice(line);
    }
    Ok(Some(RawCheckpoints { header, runs }))
}

/// End of a completed sweep: rewrite the table (atomically, rows' bytes
/// unchanged) with each run's rows in run-id order, as the runs table is, so
/// it does not depend on which worker finished first. Superseded blocks
/// are dropped. Nothing is written when it is already in that order.
pub fn finish_sorted(path: &Path) -> Result<()> {
    let Some(raw) = read_checkpoints_raw(path)? else {
        return Ok(());
    };
    let mut ids: Vec<&str> = raw.runs.keys().map(String::as_str).collect();
    ids.sort_by(|a, b| super::natural_cmp(a, b));
    let sorted = raw.to_bytes(ids);
    let now = std::fs::read(path).at(path)?;
    let keep = now.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if now[..keep] == sorted[..] {
        return Ok(());
    }
    super::fsio::write_atomic(path, &sorted)
}

/// A checkpoints table read whole: its loss columns' domains, and each run's
/// checkpoints (steps ascending) by run id.
pub type CheckpointTable = (Vec<String>, BTreeMap<String, Vec<Checkpoint>>);

/// The table at `path`, or None when the file does not exist.
pub fn read_checkpoints(path: &Path) -> Result<Option<CheckpointTable>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let table = parse_table(path, &bytes[..keep])?;
    if table.header.len() <= FIXED.len() || table.header[..FIXED.len()] != FIXED {
        return Err(Error::parse(
            path,
            1,
            format!(
                "not a checkpoints table: the header must start with {}",
                FIXED.join(",")
            ),
        ));
    }
    let mut domains = Vec::new();
    for (i, col) in table.header[FIXED.len()..].iter().enumerate() {
        let d = col.strip_prefix("loss_").ok_or_else(|| {
            Error::parse(
                path,
                1,
                format!(
                    "column {} is {col:?}, expected loss_<domain>",
                    FIXED.len() + i + 1
                ),
            )
        })?;
        domains.push(d.to_string());
    }
    // Rows of one run id are contiguous per write; a later write supersedes
    // an earlier one (a run trained again after a crash).
    let mut by_run: BTreeMap<String, Vec<Checkpoint>> = BTreeMap::new();
    let mut last_run: Option<String> = None;
    for (line, row) in &table.rows {
        let run_id = row[0].clone();
        let steps = parse_u64(path, *line, 1, "steps", &row[1])? as usize;
        let n_tokens = parse_u64(path, *line, 2, "n_tokens", &row[2])?;
        let mut losses = Vec::with_capacity(domains.len());
        for (i, (d, cell)) in domains.iter().zip(&row[FIXED.len()..]).enumerate() {
            losses.push(parse_finite(
                path,
                *line,
                FIXED.len() + i,
                &format!("loss_{d}"),
                cell,
            )?);
        }
        let list = by_run.entry(run_id.clone()).or_default();
        let restarted = last_run.as_deref() != Some(run_id.as_str())
            && list.last().is_some_and(|c: &Checkpoint| c.steps >= steps);
        if restarted {
            list.clear();
        }
        list.push(Checkpoint {
            steps,
            n_tokens,
            losses,
        });
        last_run = Some(run_id);
    }
    Ok(Some((domains, by_run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_sorted_orders_runs_and_drops_superseded_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv.checkpoints.csv");
        let domains = vec!["web".to_string()];
        let ck = |steps: usize, l: f64| Checkpoint {
            steps,
            n_tokens: steps as u64,
            losses: vec![l],
        };
        let mut w = CheckpointsWriter::open(&path, &domains).unwrap();
        w.append("run10", &[ck(1, 3.0), ck(2, 2.5)]).unwrap();
        w.append("run2", &[ck(1, 9.0)]).unwrap(); // killed, trained again below
        w.append("run1", &[ck(1, 3.5), ck(2, 2.75)]).unwrap();
        w.append("run2", &[ck(1, 3.25), ck(2, 2.0)]).unwrap();
        drop(w);
        let before = read_checkpoints(&path).unwrap().unwrap();
        finish_sorted(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "run_id,steps,n_tokens,loss_web\nrun1,1,1,3.5\nrun1,2,2,2.75\nrun2,1,1,3.25\n\
             run2,2,2,2\nrun10,1,1,3\nrun10,2,2,2.5\n"
        );
        assert_eq!(read_checkpoints(&path).unwrap().unwrap(), before);
    }
}
