//! `mixopt merge`: combine the runs tables of a sharded sweep (`sweep --shard
//! I/N` on several machines) into one, de-duplicating runs and refusing tables
//! that come from different sweep configurations. Rows are copied byte for
//! byte, in run-id order: the merged table is the one a single machine's
//! sweep writes. The sidecar is written before the table, so a merge killed
//! half-way leaves no table without its sidecar (and its rerun proceeds).

use crate::store::import::read_sidecar;
use crate::store::runs::{read_runs_raw, RawRow, RawTable, RunRecord};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs tables to merge (e.g. runs-0.csv runs-1.csv …).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged runs table (a `.meta.json` sidecar is written beside it).
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
    let mut domains: Option<(PathBuf, Vec<String>)> = None;
    let mut config: Option<(PathBuf, String)> = None;
    let mut header: Vec<u8> = Vec::new();
    let mut merged: Vec<RawRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let (mut duplicates, mut conflicts) = (0usize, 0usize);
    for path in &args.inputs {
        let table = read_runs_raw(path)?;
        let records: Vec<RunRecord> = table.rows.iter().map(|r| r.record.clone()).collect();
        match &domains {
            None => {
                domains = Some((path.clone(), table.domains.clone()));
                header = table.header.clone();
            }
            Some((first, d)) if *d != table.domains => bail!(
                "{}: domains [{}] differ from {}'s [{}]",
                path.display(),
                table.domains.join(", "),
                first.display(),
                d.join(", ")
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
        domains,
        header,
        rows: merged,
    };
    table.sort_by_run_id();

    // The sidecar first, the table last (each atomically): a merge killed in
    // between leaves no --out, so `fit` never meets the table without the
    // sweep's prior and a rerun is not refused.
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
    crate::mixture::write_atomic(&args.out, &table.to_bytes())
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
