//! `mixopt merge`: combine the runs tables of a sharded sweep (`sweep --shard
//! I/N` on several machines) into one, de-duplicating runs and refusing tables
//! that come from different sweep configurations. Rows are copied byte for
//! byte, in run-id order: the merged table is the one a single machine's
//! sweep writes. Shards' checkpoints tables (`<runs>.checkpoints.csv`) are
//! merged the same way. The checkpoints table and the sidecar are written
//! before the runs table, so a merge killed half-way leaves no table without
//! them (and its rerun proceeds).

use crate::store::checkpoints::read_checkpoints_raw;
use crate::store::checkpoints_path;
use crate::store::import::read_sidecar;
use crate::store::runs::{read_runs_raw, RawRow, RawTable, RunRecord, RunsLayout};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs tables to merge (e.g. runs-0.csv runs-1.csv …).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged runs table (a `.meta.json` sidecar is written beside it):
    /// CSV, or Parquet / Arrow IPC by extension (`.parquet`, `.arrow`).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// The sweep configuration hash a table was written under: from its rows, or
/// (for a shard with no finished run yet) from its sidecar.
fn config_hash_of(path: &Path, rows: &[RunRecord]) -> anyhow::Result<Option<String>> {
    if let Some(first) = rows.first() {
        if let Some(other) = rows.iter().find(|r| r.config_hash != first.config_hash) {
            bail!(
                "{}: mixes runs of two sweep configurations ({} in {}, {} in {})",
                path.display(),
                first.config_hash,
                first.run_id,
                other.config_hash,
                other.run_id
            );
        }
        return Ok(Some(first.config_hash.clone()));
    }
    Ok(read_sidecar(path)?.and_then(|(_, m)| {
        m.get("config_hash")
            .and_then(|h| h.as_str())
            .map(str::to_string)
    }))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.out.exists() && !args.force {
        bail!("{}: exists (use --force to replace it)", args.out.display());
    }
    if let Some(input) = args.inputs.iter().find(|p| **p == args.out) {
        bail!("{}: is both an input and --out", input.display());
    }
    let mut domains: Option<(PathBuf, RunsLayout)> = None;
    let mut config: Option<(PathBuf, String)> = None;
    let mut header: Vec<u8> = Vec::new();
    let mut merged: Vec<RawRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Which input each kept row came from (its checkpoints come from there too).
    let mut from: HashMap<String, usize> = HashMap::new();
    let (mut duplicates, mut conflicts) = (0usize, 0usize);
    for (input, path) in args.inputs.iter().enumerate() {
        let table = read_runs_raw(path)?;
        let records: Vec<RunRecord> = table.rows.iter().map(|r| r.record.clone()).collect();
        match &domains {
            None => {
                domains = Some((path.clone(), table.layout.clone()));
                header = table.header.clone();
            }
            Some((first, d)) if *d != table.layout => bail!(
                "{}: domains [{}] differ from {}'s [{}]",
                path.display(),
                table.layout.metric_names().join(", "),
                first.display(),
                d.metric_names().join(", ")
            ),
            Some(_) => {}
        }
        if let Some(hash) = config_hash_of(path, &records)? {
            match &config {
                None => config = Some((path.clone(), hash)),
                Some((first, h)) if *h != hash => bail!(
                    "{}: written by a different sweep configuration (config hash {hash}) than {} ({h}); \
                     only shards of one sweep can be merged",
                    path.display(),
                    first.display()
                ),
                Some(_) => {}
            }
        }
        for row in table.rows {
            match index.get(&row.record.run_id) {
                None => {
                    index.insert(row.record.run_id.clone(), merged.len());
                    from.insert(row.record.run_id.clone(), input);
                    merged.push(row);
                }
                Some(&i) => {
                    duplicates += 1;
                    let kept = &merged[i].record;
                    if kept.losses != row.record.losses || kept.mixture != row.record.mixture {
                        conflicts += 1;
                    }
                }
            }
        }
    }
    let Some((_, domains)) = domains else {
        bail!("no input files");
    };
    let mut table = RawTable {
        layout: domains,
        header,
        rows: merged,
    };
    table.sort_by_run_id();
    let checkpoints = merged_checkpoints(&args.inputs, &table, &from)?;

    // The checkpoints table and the sidecar first, the runs table last (each
    // atomically): a merge killed in between leaves no --out, so `fit` never
    // meets the table without the sweep's prior or checkpoints, and a rerun
    // is not refused.
    let ck_out = checkpoints_path(&args.out);
    match checkpoints {
        Some(bytes) => crate::mixture::write_atomic(&ck_out, &bytes)
            .with_context(|| format!("writing {}", ck_out.display()))?,
        // None to carry over: leave no stale one from an earlier --out.
        None => {
            let _ = std::fs::remove_file(&ck_out);
        }
    }
    if let Some((_, mut meta)) = read_sidecar(&args.inputs[0])? {
        if let Some(obj) = meta.as_object_mut() {
            obj.remove("shard");
            obj.insert(
                "merged_from".into(),
                args.inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        crate::mixture::write_json_atomic(&crate::store::meta_paths(&args.out)[0], &meta)?;
    } else {
        // No sidecar to carry over: leave no stale one (from an earlier
        // --out) to be read as this table's.
        for p in crate::store::meta_paths(&args.out) {
            let _ = std::fs::remove_file(p);
        }
    }
    if crate::store::is_columnar(&args.out) {
        crate::store::write_columnar_csv(&args.out, &table.to_bytes())
    } else {
        crate::mixture::write_atomic(&args.out, &table.to_bytes())
    }
    .with_context(|| format!("writing {}", args.out.display()))?;
    let merged = table.rows;
    println!(
        "merged {} files: {} runs ({duplicates} duplicates dropped) -> {}",
        args.inputs.len(),
        merged.len(),
        args.out.display()
    );
    if conflicts > 0 {
        eprintln!(
            "warning: {conflicts} duplicated run ids had different weights or losses; the first file's row was kept"
        );
    }
    Ok(())
}

/// The shards' checkpoints tables (`<runs>.checkpoints.csv`) merged like the
/// runs: each kept run's rows from the file its row came from, in the merged
/// table's order, bytes unchanged. None when no input has one; an error when
/// only some do, or their headers differ, or a kept run has no rows.
fn merged_checkpoints(
    inputs: &[PathBuf],
    table: &RawTable,
    from: &HashMap<String, usize>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let paths: Vec<PathBuf> = inputs.iter().map(|p| checkpoints_path(p)).collect();
    let tables = paths
        .iter()
        .map(|p| read_checkpoints_raw(p))
        .collect::<crate::Result<Vec<_>>>()?;
    let Some(first) = tables.iter().position(Option::is_some) else {
        return Ok(None);
    };
    if let Some(missing) = tables.iter().position(Option::is_none) {
        bail!(
            "{}: missing, but {} exists: merge needs every shard's checkpoints table or none",
            paths[missing].display(),
            paths[first].display()
        );
    }
    let tables: Vec<_> = tables.into_iter().flatten().collect();
    if let Some(i) = tables.iter().position(|t| t.header != tables[0].header) {
        bail!(
            "{}: header differs from {}'s",
            paths[i].display(),
            paths[0].display()
        );
    }
    let mut out = tables[0].header.clone();
    for row in &table.rows {
        let id = &row.record.run_id;
        let i = from[id];
        let rows = tables[i]
            .runs
            .get(id)
            .with_context(|| format!("{}: no checkpoints for run {id}", paths[i].display()))?;
        out.extend_from_slice(rows);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mixture::Mixture;
    use crate::proxy::train::Checkpoint;
    use crate::store::{CheckpointsWriter, RunsLayout, RunsWriter};

    /// A shard's runs table and checkpoints table holding runs `ids`.
    fn shard(dir: &Path, name: &str, ids: &[usize]) -> PathBuf {
        let path = dir.join(name);
        let domains = vec!["web".to_string(), "code".to_string()];
        let (mut w, _) = RunsWriter::open(&path, &RunsLayout::training(&domains)).unwrap();
        let mut c = CheckpointsWriter::open(&checkpoints_path(&path), &domains).unwrap();
        for &k in ids {
            let id = format!("run{k:05}");
            let ck = |steps: usize| Checkpoint {
                steps,
                n_tokens: 10 * steps as u64,
                losses: vec![3.0 - k as f64 * 0.01, 2.0 + steps as f64 * 0.001],
            };
            c.append(&id, &[ck(5), ck(10)]).unwrap();
            let w0 = 0.1 + 0.05 * k as f64;
            w.append(&RunRecord {
                run_id: id,
                seed: k as u64,
                proxy: "tiny".into(),
                n_tokens: 100,
                wall_s: 1.0,
                config_hash: "h".into(),
                version: "v".into(),
                mixture: Mixture::new(domains.clone(), vec![w0, 1.0 - w0]).unwrap(),
                losses: vec![2.5, 2.25],
            })
            .unwrap();
        }
        path
    }

    #[test]
    fn shards_checkpoints_are_merged_in_run_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = shard(dir.path(), "runs-0.csv", &[2, 0]);
        let b = shard(dir.path(), "runs-1.csv", &[1, 3]);
        let out = dir.path().join("runs.csv");
        let args = |inputs: Vec<PathBuf>, force: bool| Args {
            inputs,
            out: out.clone(),
            force,
        };
        run(args(vec![a.clone(), b.clone()], false)).unwrap();
        let merged = std::fs::read_to_string(checkpoints_path(&out)).unwrap();
        let ids: Vec<&str> = merged
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "run00000", "run00000", "run00001", "run00001", "run00002", "run00002", "run00003",
                "run00003"
            ]
        );
        // Rows' bytes are copied: every merged line is a line of a shard's table.
        let shards = std::fs::read_to_string(checkpoints_path(&a)).unwrap()
            + &std::fs::read_to_string(checkpoints_path(&b)).unwrap();
        assert!(merged.lines().all(|l| shards.lines().any(|s| s == l)));
        let (_, by_run) = crate::store::read_checkpoints(&checkpoints_path(&out))
            .unwrap()
            .unwrap();
        assert_eq!(by_run.len(), 4);
        // One shard without its checkpoints table: refused, naming it.
        std::fs::remove_file(checkpoints_path(&b)).unwrap();
        let e = run(args(vec![a, b], true)).unwrap_err().to_string();
        assert!(
            e.contains("runs-1.csv.checkpoints.csv") && e.contains("missing"),
            "{e}"
        );
    }
}
