//! `mixopt report`: runs table + law (+ weights, + online trajectory) → one
//! self-contained HTML file with inline SVG charts (see `crate::report`).

use crate::report::{write_report, ReportInputs};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs table written by `mixopt sweep` (the one the law was fit on).
    #[arg(long)]
    pub runs: PathBuf,
    /// Law written by `mixopt fit`.
    #[arg(long)]
    pub law: PathBuf,
    /// Optimized weights written by `mixopt optimize` (or a published mixture's name), shown beside uniform and natural.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Online trajectory CSV (step, w_<domain>…, loss_<domain>…).
    #[arg(long)]
    pub trajectory: Option<PathBuf>,
    /// Where to write the HTML.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let inputs = ReportInputs {
        runs: args.runs,
        law: args.law,
        weights: args.weights,
        trajectory: args.trajectory,
    };
    write_report(&inputs, &args.out).with_context(|| format!("building {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
