//! `mixopt merge`: combine the runs tables of a sharded sweep (`sweep --shard
//! I/N` on several machines) into one, de-duplicating runs and refusing tables
//! that come from different sweep configurations.

use crate::store::import::read_sidecar;
use crate::store::runs::{read_runs, RunRecord, RunsLayout, RunsWriter};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
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
    let mut domains: Option<(PathBuf, RunsLayout)> = None;
    let mut config: Option<(PathBuf, String)> = None;
    let mut merged: BTreeMap<String, RunRecord> = BTreeMap::new();
    let (mut duplicates, mut conflicts) = (0usize, 0usize);
    for path in &args.inputs {
        let (doms, rows) = read_runs(path)?;
        match &domains {
            None => domains = Some((path.clone(), doms)),
            Some((first, d)) if *d != doms => bail!(
                "{}: domains [{}] differ from {}'s [{}]",
                path.display(),
                doms.metric_names().join(", "),
                first.display(),
                d.metric_names().join(", ")
            ),
            Some(_) => {}
        }
        if let Some(hash) = config_hash_of(path, &rows)? {
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
        for row in rows {
            match merged.get(&row.run_id) {
                None => {
                    merged.insert(row.run_id.clone(), row);
                }
                Some(kept) => {
                    duplicates += 1;
                    if kept.losses != row.losses || kept.mixture != row.mixture {
                        conflicts += 1;
                    }
                }
            }
        }
    }
    let Some((_, domains)) = domains else {
        bail!("no input files");
    };

    // Write beside the target, then rename: --out is either absent or complete.
    let tmp = args.out.with_extension("merge-tmp~");
    let _ = std::fs::remove_file(&tmp);
    {
        let (mut writer, _) = RunsWriter::open(&tmp, &domains)?;
        for row in merged.values() {
            writer.append(row)?;
        }
    }
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.out.display()))?;
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
    }
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
