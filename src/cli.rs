//! Command-line surface: one variant per subcommand, each with its own `Args`
//! struct in `cmd/<name>.rs`.

use crate::cmd;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mixopt",
    version,
    about = "Find the data mixture for LLM pre-training: train tiny proxies on sampled \
             mixtures, fit a mixing law, emit optimized weights."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on a built-in synthetic corpus.
    Demo(cmd::demo::Args),
    /// Tokenize domain corpora into a memory-mapped token cache.
    Prepare(cmd::prepare::Args),
    /// Train one proxy model on one mixture and print per-domain validation losses.
    Train(cmd::train::Args),
    /// Sample mixtures from the prior and train one proxy per mixture (resumable).
    Sweep(cmd::sweep::Args),
    /// Merge the runs tables of a sharded sweep.
    Merge(cmd::merge::Args),
    /// Fit a mixing law (loss as a function of proportions) to a runs table.
    Fit(cmd::fit::Args),
    /// Predict the target for mixtures with a fitted law.
    Predict(cmd::predict::Args),
    /// Find the mixture with the best predicted target.
    Optimize(cmd::optimize::Args),
    /// Train candidate mixtures at a larger scale, paired by seed, and say which wins.
    Validate(cmd::validate::Args),
    /// Write weights into a pretraining framework's config.
    Export(cmd::export::Args),
    /// Write a self-contained HTML report of runs, law, weights and trajectory.
    Report(cmd::report::Args),
    /// Serve mixture updates to a running trainer (JSON lines or HTTP).
    Online(cmd::online::Args),
    /// Benchmarks that print figures (proxy training throughput vs PyTorch).
    Bench(cmd::bench::Args),
    /// List the published mixtures usable by name (The Pile, DoReMi, RegMix, …) or show one.
    Mixtures(cmd::mixtures::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Prepare(a) => cmd::prepare::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Fit(a) => cmd::fit::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Optimize(a) => cmd::optimize::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Online(a) => cmd::online::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Mixtures(a) => cmd::mixtures::run(a),
    }
}
