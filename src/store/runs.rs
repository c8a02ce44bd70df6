//! The runs table: one CSV row per finished proxy run, written by `sweep`,
//! read by `fit` (through `import`) and by `merge`.
//!
//! Header: `run_id,seed,proxy,n_tokens,wall_s,config_hash,mixopt_version,`
//! then `w_<domain>` for each training domain, then `loss_<domain>` for the
//! same domains in the same order, then `loss_<domain>` for each
//! evaluation-only domain (scored by every run, never trained on).
//!
//! Crash safety: the table is append-only. Each row goes out as one `write`
//! of the whole line followed by `sync_data`, so after a crash the file holds
//! every finished row plus at most one partial last line (no trailing
//! newline). Readers ignore such a torn line; `RunsWriter::open` truncates it
//! away before appending, so a killed sweep loses at most the run in progress.
//!
//! One writer: `RunsWriter::open` locks the table (`store::fsio`) and a second
//! writer of the same file is refused, so two sweeps on one `--out` cannot
//! both train and append every run. The lock dies with its process.

use crate::error::{Error, IoContext, Result};
use crate::mixture::{check_domain_name, Mixture};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::runs_read::{parse_runs, raw_table};
pub use super::runs_read::{read_runs, read_runs_raw, RawRow, RawTable};

/// The fixed columns before the per-domain ones.
pub const FIXED_COLUMNS: [&str; 7] = [
    "run_id",
    "seed",
    "proxy",
    "n_tokens",
    "wall_s",
    "config_hash",
    "mixopt_version",
];

/// The domains of a runs table: the training domains a mixture weighs, and
/// the evaluation-only domains that only have losses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunsLayout {
    pub domains: Vec<String>,
    pub eval_only: Vec<String>,
}

impl RunsLayout {
    /// A layout of training domains only.
    pub fn training(domains: &[String]) -> Self {
        RunsLayout {
            domains: domains.to_vec(),
            eval_only: Vec::new(),
        }
    }

    /// The layout of a token cache's evaluated domains.
    pub fn of_cache(cache: &crate::corpus::cache::TokenCache) -> Self {
        RunsLayout {
            domains: cache.domains().to_vec(),
            eval_only: cache.eval_domains()[cache.domains().len()..].to_vec(),
        }
    }

    /// Names of the loss columns: training domains, then evaluation-only ones.
    pub fn metric_names(&self) -> Vec<String> {
        self.domains
            .iter()
            .chain(&self.eval_only)
            .cloned()
            .collect()
    }

    fn describe(&self) -> String {
        let mut s = format!("domains [{}]", self.domains.join(", "));
        if !self.eval_only.is_empty() {
            s += &format!(" and evaluation-only [{}]", self.eval_only.join(", "));
        }
        s
    }
}

/// One finished proxy run. Invariant (checked on write and read): `losses`
/// has one finite value per loss column of the table's layout (the domains of
/// `mixture`, then the evaluation-only domains), in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub seed: u64,
    pub proxy: String,
    pub n_tokens: u64,
    pub wall_s: f64,
    pub config_hash: String,
    pub version: String,
    pub mixture: Mixture,
    pub losses: Vec<f64>,
}

/// Appends rows to a runs table. Used from one thread; each `append` is
/// durable when it returns.
#[derive(Debug)]
pub struct RunsWriter {
    path: PathBuf,
    file: File,
    /// The handle holding the table's exclusive lock (kept open for it).
    _lock: File,
    layout: RunsLayout,
    /// Length of the file up to the last finished row: a failed write is
    /// truncated back to it so later rows never follow a torn line.
    len: u64,
}

/// The header columns for a layout.
pub fn header(layout: &RunsLayout) -> Vec<String> {
    FIXED_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(layout.domains.iter().map(|d| format!("w_{d}")))
        .chain(layout.metric_names().iter().map(|d| format!("loss_{d}")))
        .collect()
}

/// Length of the prefix of `bytes` that ends with a newline (0 if none).
pub(super) fn finished_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

impl RunsWriter {
    /// Open `path` for appending, creating it with a header if absent. If the
    /// file exists its header must name the same domains in the same order; a
    /// torn last line (no trailing newline) is truncated away. Returns the
    /// finished rows already in the file.
    pub fn open(path: &Path, layout: &RunsLayout) -> Result<(RunsWriter, Vec<RunRecord>)> {
        check_domains(layout)?;
        if super::parquet::is_parquet(path) {
            return Err(Error::invalid(format!(
                "{}: runs tables are appended to as CSV (crash-safe, one row per run); \
                 write a .csv and convert it afterwards (`mixopt merge runs.csv --out runs.parquet`)",
                path.display()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        super::fsio::try_lock_file(
            &file,
            path,
            "sweep (or merge)",
            "wait for it to finish, or give this one another --out",
        )?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).at(path)?;
        let keep = finished_len(&bytes);

        // Validate what is there before touching it.
        let records = if keep == 0 {
            Vec::new()
        } else {
            let (found, records) = parse_runs(path, &bytes[..keep])?;
            if &found != layout {
                return Err(Error::parse(
                    path,
                    1,
                    format!(
                        "this runs table has {} but the sweep has {}; \
                         use another --out or the same domains in the same order",
                        found.describe(),
                        layout.describe()
                    ),
                ));
            }
            records
        };
        if keep < bytes.len() {
            file.set_len(keep as u64).at(path)?;
            file.sync_data().at(path)?;
        }
        let lock = file;
        let mut file = OpenOptions::new().append(true).open(path).at(path)?;
        let mut len = keep as u64;
        if keep == 0 {
            let line = format!("{}\n", header(layout).join(","));
            file.write_all(line.as_bytes()).at(path)?;
            file.sync_data().at(path)?;
            len = line.len() as u64;
            if created {
                super::fsio::sync_dir(super::fsio::parent_dir(path))?;
            }
        }
        Ok((
            RunsWriter {
                path: path.to_path_buf(),
                file,
                _lock: lock,
                layout: layout.clone(),
                len,
            },
            records,
        ))
    }

    /// The domains of this table, in column order.
    pub fn layout(&self) -> &RunsLayout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one row (one write of the whole line, then `sync_data`).
    /// Rejects rows the reader would reject (non-finite losses, bad ids), so
    /// the table stays readable.
    pub fn append(&mut self, rec: &RunRecord) -> Result<()> {
        let line = self.format_row(rec)?;
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial line behind for the next row to follow.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(&self.path, e));
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// End of a completed sweep: put the rows in run-id order, so the table
    /// does not depend on which worker finished first. The rows' bytes are
    /// kept; the file is replaced atomically (old order or new, never a mix)
    /// and only when out of order.
    pub fn finish_sorted(self) -> Result<()> {
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .at(&self.path)?;
        let mut table = raw_table(&self.path, &bytes)?;
        if table.is_sorted_by_run_id() {
            return Ok(());
        }
        table.sort_by_run_id();
        // Still holding the lock on the old file while the new one replaces it.
        super::fsio::write_atomic(&self.path, &table.to_bytes())
    }

    fn format_row(&self, rec: &RunRecord) -> Result<Vec<u8>> {
        let what = format!("run {:?}", rec.run_id);
        for (field, value) in [
            ("run_id", &rec.run_id),
            ("proxy", &rec.proxy),
            ("config_hash", &rec.config_hash),
            ("mixopt_version", &rec.version),
        ] {
            if value.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "{what}: {field} contains a control character"
                )));
            }
        }
        if rec.run_id.is_empty() {
            return Err(Error::invalid("run_id is empty"));
        }
        if !(rec.wall_s.is_finite() && rec.wall_s >= 0.0) {
            return Err(Error::invalid(format!("{what}: wall_s is {}", rec.wall_s)));
        }
        let domains = &self.layout.domains;
        let mixture = if rec.mixture.domains() == domains.as_slice() {
            rec.mixture.clone()
        } else {
            rec.mixture
                .align(domains)
                .map_err(|e| Error::invalid(format!("{what}: {e}")))?
        };
        let metrics = self.layout.metric_names();
        if rec.losses.len() != metrics.len() {
            return Err(Error::invalid(format!(
                "{what}: {} losses for {} evaluated domains",
                rec.losses.len(),
                metrics.len()
            )));
        }
        for (d, l) in metrics.iter().zip(&rec.losses) {
            if !(l.is_finite() && *l >= 0.0) {
                return Err(Error::invalid(format!("{what}: loss of {d:?} is {l}")));
            }
        }
        let mut fields: Vec<String> = vec![
            rec.run_id.clone(),
            rec.seed.to_string(),
            rec.proxy.clone(),
            rec.n_tokens.to_string(),
            rec.wall_s.to_string(),
            rec.config_hash.clone(),
            rec.version.clone(),
        ];
        // `{}` on f64 prints the shortest string that parses back to the same value.
        fields.extend(mixture.weights().iter().map(f64::to_string));
        fields.extend(rec.losses.iter().map(f64::to_string));
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.write_record(&fields)
            .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
        w.into_inner()
            .map_err(|e| Error::invalid(format!("{what}: {e}")))
    }
}

pub(super) fn check_domains(layout: &RunsLayout) -> Result<()> {
    if layout.domains.is_empty() {
        return Err(Error::invalid("runs table: no domains"));
    }
    let all = layout.metric_names();
    for (i, d) in all.iter().enumerate() {
        check_domain_name(d)?;
        if all[..i].contains(d) {
            return Err(Error::invalid(format!("runs table: domain {d:?} twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["web".into(), "code".into()]
    }

    fn layout() -> RunsLayout {
        RunsLayout::training(&domains())
    }

    fn record(id: &str, w: f64, loss: f64) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            seed: 7,
            proxy: "tiny".into(),
            n_tokens: 1_000_000,
            wall_s: 12.5,
            config_hash: "abc123".into(),
            version: "0.1.0".into(),
            mixture: Mixture::new(domains(), vec![w, 1.0 - w]).unwrap(),
            losses: vec![loss, 0.1 + 1.0 / 3.0],
        }
    }

    #[test]
    fn append_then_read_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (mut w, old) = RunsWriter::open(&path, &layout()).unwrap();
        assert!(old.is_empty());
        let recs = vec![
            record("r0", 0.3, 2.0 / 3.0),
            record("r,1", 0.123456789, 1e-9),
        ];
        for r in &recs {
            w.append(r).unwrap();
        }
        drop(w);
        let (d, back) = read_runs(&path).unwrap();
        assert_eq!(d, layout());
        assert_eq!(back.len(), 2);
        for (a, b) in recs.iter().zip(&back) {
            assert_eq!(a.run_id, b.run_id);
            assert_eq!(a.losses, b.losses, "losses round-trip bit for bit");
            for (x, y) in a.mixture.weights().iter().zip(b.mixture.weights()) {
                assert!((x - y).abs() <= 1e-15);
            }
            assert_eq!(
                (a.seed, a.n_tokens, a.wall_s),
                (b.seed, b.n_tokens, b.wall_s)
            );
        }
        // Reopening returns the finished rows and keeps appending.
        let (mut w, old) = RunsWriter::open(&path, &layout()).unwrap();
        assert_eq!(old.len(), 2);
        w.append(&record("r2", 0.5, 3.0)).unwrap();
        assert_eq!(read_runs(&path).unwrap().1.len(), 3);
    }

    #[test]
    fn torn_last_line_is_ignored_then_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (mut w, _) = RunsWriter::open(&path, &layout()).unwrap();
        w.append(&record("r0", 0.3, 2.0)).unwrap();
        drop(w);
        // A write cut by kill -9 mid-line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"r1,7,tiny,10,1.0,abc,0.1.0,0.5,0.").unwrap();
        drop(f);
        assert_eq!(read_runs(&path).unwrap().1.len(), 1);
        let (mut w, old) = RunsWriter::open(&path, &layout()).unwrap();
        assert_eq!(old.len(), 1);
        w.append(&record("r1", 0.5, 2.5)).unwrap();
        let (_, back) = read_runs(&path).unwrap();
        assert_eq!(
            back.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r0", "r1"]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn torn_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        std::fs::write(&path, "run_id,se").unwrap();
        let (_, old) = RunsWriter::open(&path, &layout()).unwrap();
        assert!(old.is_empty());
        assert!(read_runs(&path).unwrap().1.is_empty());
    }

    #[test]
    fn header_mismatch_is_rejected_and_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (mut w, _) = RunsWriter::open(&path, &layout()).unwrap();
        w.append(&record("r0", 0.3, 2.0)).unwrap();
        drop(w);
        let before = std::fs::read(&path).unwrap();
        let other = vec!["code".to_string(), "web".to_string()];
        let e = RunsWriter::open(&path, &RunsLayout::training(&other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs.csv:1") && e.contains("web, code"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn append_rejects_what_read_would_reject() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let (mut w, _) = RunsWriter::open(&path, &layout()).unwrap();
        let mut r = record("r0", 0.3, f64::NAN);
        assert!(w.append(&r).is_err());
        r.losses = vec![1.0];
        assert!(w.append(&r).is_err());
        r = record("a\nb", 0.3, 1.0);
        assert!(w.append(&r).is_err());
        assert!(read_runs(&path).unwrap().1.is_empty());
    }

    #[test]
    fn evaluation_only_domains_have_loss_columns_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let layout = RunsLayout {
            domains: domains(),
            eval_only: vec!["held".into()],
        };
        let (mut w, _) = RunsWriter::open(&path, &layout).unwrap();
        let mut r = record("r0", 0.3, 2.0);
        assert!(w.append(&r).is_err(), "one loss short");
        r.losses.push(4.25);
        w.append(&r).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "run_id,seed,proxy,n_tokens,wall_s,config_hash,mixopt_version,\
             w_web,w_code,loss_web,loss_code,loss_held\n"
        ));
        let (found, back) = read_runs(&path).unwrap();
        assert_eq!(found, layout);
        assert_eq!(back[0].losses[2], 4.25);
        // A sweep without the evaluation-only domain refuses this table.
        let e = RunsWriter::open(&path, &RunsLayout::training(&domains()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("evaluation-only [held]"), "{e}");
    }
}
