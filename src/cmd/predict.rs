//! `mixopt predict`: law.json + mixtures → `id,prediction` CSV. Mixture
//! columns are matched to the law's domains by name; a runs table from
//! `sweep` works too (its `w_<domain>` columns, ids from `run_id`).

use crate::law::LoadedLaw;
use crate::store::import::{column_map, read_mixture_table};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fitted law (from `mixopt fit`).
    #[arg(long)]
    pub law: PathBuf,
    /// Mixtures CSV (id column + one weight column per law domain) or a runs table.
    #[arg(long)]
    pub mixtures: PathBuf,
    /// Id column of --mixtures (ignored for runs tables, which use run_id).
    #[arg(long, default_value = "index")]
    pub id: String,
    /// Write the predictions here instead of stdout: CSV, or Parquet / Arrow
    /// IPC by extension (`.parquet`, `.arrow`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let law = LoadedLaw::load(&args.law)
        .with_context(|| format!("loading law {}", args.law.display()))?;
    let table = read_mixture_table(&args.mixtures, &args.id)
        .with_context(|| format!("reading mixtures {}", args.mixtures.display()))?;
    for n in &table.notes {
        eprintln!("note: {n}");
    }
    let cols = column_map(&table.source, &table.domains, law.domains())?;

    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(["id", "prediction"])?;
    let mut x = vec![0.0; cols.len()];
    for (id, row) in table.ids.iter().zip(&table.weights) {
        for (xi, &j) in x.iter_mut().zip(&cols) {
            *xi = row[j];
        }
        let p = law.predict_weights(&x)?;
        w.write_record([id.as_str(), &p.to_string()])?;
    }
    let bytes = w.into_inner().context("formatting predictions")?;
    match &args.out {
        Some(path) if crate::store::is_columnar(path) => {
            crate::store::write_columnar_csv(path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?
        }
        Some(path) => crate::mixture::write_atomic(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}
