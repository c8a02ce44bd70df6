//! `mixopt online --trajectory FILE`: one CSV row per committed update, in
//! the format `mixopt train --trajectory` writes and `mixopt export
//! --schedule` reads: `step,w_<domain>…,loss_<domain>…`, an empty cell where
//! a loss was not observed.
//!
//! The state file is the commit point; a row is appended after the state
//! holding its update is on disk. A crash between the two loses that row
//! (never adds one for an update that did not happen); a row cut short by a
//! crash is dropped when the file is opened again.

use crate::error::{Error, Result};
pub use crate::store::trajectory::{header, TrajectoryRow as Row};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open trajectory file, appended to.
#[derive(Debug)]
pub struct TrajectoryLog {
    path: PathBuf,
    file: File,
}

impl TrajectoryLog {
    /// Open `path` for appending rows over `domains`, and whether it has no
    /// rows yet. A new or empty file gets the header; an existing one must
    /// have the same header, and must have no rows when the state is new
    /// (`fresh_state`): its steps would not follow.
    pub fn open(path: &Path, domains: &[String], fresh_state: bool) -> Result<(Self, bool)> {
        let want = header(domains);
        let existing = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        // Keep whole lines only: a crash mid-append leaves a partial last row.
        let whole = existing
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&existing[..whole])
            .map_err(|_| Error::parse(path, 0, "trajectory is not UTF-8 text"))?;
        let mut lines = text.lines();
        let mut empty = true;
        if let Some(first) = lines.next() {
            if first.trim_end() != want {
                return Err(Error::parse(
                    path,
                    1,
                    format!("--trajectory: header {first:?} is not this server's {want:?} (give another file)"),
                ));
            }
            empty = !lines.any(|l| !l.trim().is_empty());
            if fresh_state && !empty {
                return Err(Error::invalid(format!(
                    "--trajectory {}: already has rows but the state is new (its steps would not follow); give another file, or the --state it was written with",
                    path.display()
                )));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if whole < existing.len() {
            file.set_len(whole as u64).map_err(|e| Error::io(path, e))?;
        }
        let log = TrajectoryLog {
            path: path.to_path_buf(),
            file,
        };
        if whole == 0 {
            log.write(format!("{want}\n").as_bytes())?;
        }
        Ok((log, empty))
    }

    fn write(&self, bytes: &[u8]) -> Result<()> {
        (&self.file)
            .write_all(bytes)
            .and_then(|_| (&self.file).flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Append `rows` in one write.
    pub fn append(&self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let text: String = rows.iter().map(Row::csv_line).collect();
        self.write(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_append_resume_and_a_cut_row_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let domains = vec!["a".to_string(), "b".to_string()];
        let (log, empty) = TrajectoryLog::open(&path, &domains, true).unwrap();
        assert!(empty);
        log.append(&[Row {
            step: 3,
            weights: vec![0.25, 0.75],
            losses: vec![Some(2.5), None],
        }])
        .unwrap();
        drop(log);
        // A crash mid-append leaves half a row.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"4,0.5").unwrap();
        drop(f);
        assert!(TrajectoryLog::open(&path, &domains, true).is_err());
        let (log, empty) = TrajectoryLog::open(&path, &domains, false).unwrap();
        assert!(!empty);
        log.append(&[Row {
            step: 5,
            weights: vec![0.5, 0.5],
            losses: vec![Some(1.0), Some(2.0)],
        }])
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "step,w_a,w_b,loss_a,loss_b\n3,0.25,0.75,2.5,\n5,0.5,0.5,1,2\n"
        );
        let other = vec!["a".to_string(), "c".to_string()];
        let err = TrajectoryLog::open(&path, &other, false).unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }
}
