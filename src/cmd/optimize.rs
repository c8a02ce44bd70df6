//! `mixopt optimize`: find the mixture a fitted law predicts is best and write
//! weights.json, printed beside the uniform and natural mixtures.

use crate::law::LawFile;
use crate::mixture::{write_json_atomic, Mixture};
use crate::optimize::simulate::Simulate;
use crate::optimize::{ProposeContext, Proposer};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Fitted law written by `mixopt fit`.
    #[arg(long)]
    pub law: PathBuf,
    /// Where to write the optimized weights.
    #[arg(long, default_value = "weights.json")]
    pub out: PathBuf,
    /// Proposer: `simulate` (RegMix: average the top-k of many prior samples).
    #[arg(long, default_value = "simulate")]
    pub proposer: String,
    /// Candidates the simulation scores.
    #[arg(long, default_value_t = 100_000)]
    pub candidates: usize,
    /// Best candidates averaged.
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prior to sample around ("a=0.5,b=0.5" or weights.json); default: the
    /// prior stored in the law (the sweep's natural token shares).
    #[arg(long)]
    pub prior: Option<String>,
    /// Maximize the target instead of minimizing it (e.g. an accuracy).
    #[arg(long)]
    pub maximize: bool,
}

/// The optimized mixture plus the reference mixtures it is compared against.
pub struct Outcome {
    pub optimized: Mixture,
    pub predicted: f64,
    pub uniform: (Mixture, f64),
    pub natural: (Mixture, f64),
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let law_file = LawFile::load(&args.law)?;
    let law = law_file.fitted()?;
    let domains = law_file.domains.clone();
    let natural = match &args.prior {
        Some(p) => Mixture::parse_or_load(p).with_context(|| format!("--prior {p}"))?,
        None => law_file.prior_mixture()?,
    }
    .align(&domains)
    .context("--prior")?;
    let proposer: Box<dyn Proposer> = match args.proposer.as_str() {
        "simulate" => Box::new(Simulate {
            n_candidates: args.candidates,
            top_k: args.top_k,
            ..Simulate::default()
        }),
        other => anyhow::bail!("--proposer {other:?}: unknown (known: simulate)"),
    };
    let ctx = ProposeContext {
        domains: &domains,
        prior: &natural,
        seed: args.seed,
        maximize: args.maximize,
    };
    let pb = crate::progress::bar(1, "optimize");
    let proposal = proposer.propose(law.as_ref(), &ctx)?;
    pb.finish_and_clear();
    let uniform = Mixture::uniform(domains.clone())?;
    let pred_uniform = law.predict(uniform.weights());
    let pred_natural = law.predict(natural.weights());

    let law_bytes = std::fs::read(&args.law).with_context(|| args.law.display().to_string())?;
    let provenance = serde_json::json!({
        "law": args.law.display().to_string(),
        "law_sha256": hex::encode(Sha256::digest(&law_bytes)),
        "law_kind": law_file.kind,
        "seed": args.seed,
        "prior": natural.to_map(),
        "predicted_uniform": pred_uniform,
        "predicted_natural": pred_natural,
        "search": proposal.details,
        "mixopt_version": crate::VERSION,
    });
    let file = proposal.mixture.to_weights_file(
        Some(law_file.target.clone()),
        Some(proposal.predicted),
        provenance,
    );
    write_json_atomic(&args.out, &file)?;

    println!(
        "target: {} (law {}, {})",
        law_file.target,
        law_file.kind,
        if args.maximize {
            "maximized"
        } else {
            "minimized"
        }
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "domain", "optimized", "uniform", "natural"
    );
    for (i, d) in domains.iter().enumerate() {
        println!(
            "{d:<28} {:>10.4} {:>10.4} {:>10.4}",
            proposal.mixture.weights()[i],
            uniform.weights()[i],
            natural.weights()[i]
        );
    }
    println!(
        "{:<28} {:>10.4} {:>10.4} {:>10.4}",
        "predicted target", proposal.predicted, pred_uniform, pred_natural
    );
    println!("wrote {}", args.out.display());
    Ok(Outcome {
        optimized: proposal.mixture,
        predicted: proposal.predicted,
        uniform: (uniform, pred_uniform),
        natural: (natural, pred_natural),
    })
}
