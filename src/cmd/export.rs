//! `mixopt export`: weights.json (or an online trajectory cut into phases) →
//! a pretraining framework's config. Flags are checked before any file is
//! read; every error names the file, line or flag at fault.

use crate::export::{
    artifact_path, export, exporter, PathMap, Phase, Plan, RoundingSpec, Trajectory, EXPORTERS,
};
use crate::mixture::Mixture;
use anyhow::{bail, Context};
use std::path::PathBuf;

/// Phases of a trajectory schedule unless `--phases` says otherwise: enough
/// to follow a trend, few enough to read.
pub const DEFAULT_PHASES: usize = 4;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["weights", "trajectory"])))]
#[command(after_help = formats_help())]
pub struct Args {
    /// Weights file written by `mixopt optimize` (or any `{"domains": {...}}` JSON), or a published mixture's name (`mixopt mixtures`).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Online trajectory CSV (step, w_<domain>…, loss_<domain>…) to export as a schedule.
    #[arg(long, conflicts_with = "weights")]
    pub trajectory: Option<PathBuf>,
    /// Phases to cut the trajectory into, each the mean mixture of its span of steps [default: 4].
    #[arg(long, requires = "trajectory")]
    pub phases: Option<usize>,
    /// Rescale the trajectory's steps to a run of this many steps.
    #[arg(long, requires = "trajectory")]
    pub total_steps: Option<u64>,
    /// Output format (see the list below).
    #[arg(long)]
    pub format: String,
    /// TOML mapping each domain to its dataset path(s); without it, domain names stand in.
    #[arg(long)]
    pub paths: Option<PathBuf>,
    /// Output file (extra files go beside it: FILE.per_split.json, FILE.phase2.yaml, …); stdout if absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Round weights to this many decimals; largest-remainder keeps the sum exactly 1.
    #[arg(long, value_name = "D")]
    pub round: Option<u32>,
    /// Zero out weights below W and renormalize (applied before --round).
    #[arg(long, value_name = "W")]
    pub min_weight: Option<f64>,
    /// Seed written into formats whose sampler takes one (hf, litdata, torchtitan, nanotron, llm-foundry).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Token cache whose manifest gives each domain's mean document length,
    /// to convert token shares for samplers that draw documents (hf, litdata).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Mean tokens per document of a domain, repeatable (`--doc-tokens books=5000`); overrides --cache.
    #[arg(long = "doc-tokens", value_name = "NAME=N")]
    pub doc_tokens: Vec<String>,
    /// Sequences per optimizer step of the real run: Levanter schedule phases
    /// start at steps whose sequence index is a multiple of --mixture-block-size.
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Levanter's mixture_block_size (written into the config).
    #[arg(long, default_value_t = crate::export::DEFAULT_MIXTURE_BLOCK_SIZE)]
    pub mixture_block_size: u64,
}

/// Each domain's mean tokens per document from --cache and --doc-tokens;
/// None when neither is given.
fn doc_tokens(args: &Args, domains: &[String]) -> anyhow::Result<Option<Vec<f64>>> {
    if args.cache.is_none() && args.doc_tokens.is_empty() {
        return Ok(None);
    }
    let mut lengths: Vec<Option<f64>> = vec![None; domains.len()];
    if let Some(dir) = &args.cache {
        let m = crate::corpus::cache::Manifest::load(dir)
            .with_context(|| format!("--cache {}", dir.display()))?;
        for e in &m.domains {
            if let Some(i) = domains.iter().position(|d| *d == e.name) {
                if e.train_docs > 0 {
                    lengths[i] = Some(e.train_tokens as f64 / e.train_docs as f64);
                }
            }
        }
    }
    for item in &args.doc_tokens {
        let (k, v) = item
            .rsplit_once('=')
            .with_context(|| format!("--doc-tokens {item:?}: expected NAME=N"))?;
        let i = domains
            .iter()
            .position(|d| d == k.trim())
            .with_context(|| {
                format!(
                    "--doc-tokens {item:?}: unknown domain (domains: {})",
                    domains.join(", ")
                )
            })?;
        let n: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .with_context(|| {
                format!(
                    "--doc-tokens {item:?}: {:?} is not a positive number",
                    v.trim()
                )
            })?;
        lengths[i] = Some(n);
    }
    let missing: Vec<&str> = domains
        .iter()
        .zip(&lengths)
        .filter(|(_, l)| l.is_none())
        .map(|(d, _)| d.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "no mean document length for {} (not in --cache, no --doc-tokens)",
            missing.join(", ")
        );
    }
    Ok(Some(
        lengths.into_iter().map(|l| l.unwrap_or(1.0)).collect(),
    ))
}

fn formats_help() -> String {
    let mut s = String::from("Formats:\n");
    for e in EXPORTERS {
        s.push_str(&format!("  {:<12} {}\n", e.name(), e.summary()));
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    exporter(&args.format).context("--format")?;
    if args.trajectory.is_none() && (args.phases.is_some() || args.total_steps.is_some()) {
        bail!("--phases and --total-steps cut a schedule from --trajectory; give --trajectory");
    }
    let rounding = RoundingSpec {
        min_weight: args.min_weight,
        decimals: args.round,
    };
    rounding.check()?;

    let phases: Vec<(u64, Mixture)> = match (&args.weights, &args.trajectory) {
        (Some(w), _) => vec![(
            0,
            Mixture::parse_or_load(&w.display().to_string())
                .with_context(|| format!("--weights {}", w.display()))?,
        )],
        (None, Some(t)) => Trajectory::load(t)?
            .phases(args.phases.unwrap_or(DEFAULT_PHASES), args.total_steps)?
            .into_iter()
            .map(|p| (p.start_step, p.mixture))
            .collect(),
        (None, None) => bail!("give --weights or --trajectory"),
    };
    let Some((_, first)) = phases.first() else {
        bail!("nothing to export: the trajectory gave no phases");
    };
    let domains = first.domains().to_vec();
    let paths = match &args.paths {
        Some(p) => PathMap::load(p, &domains)?,
        None => PathMap::names_only(&domains),
    };
    let phases = phases
        .iter()
        .map(|(start, m)| {
            Ok(Phase {
                start_step: *start,
                weights: rounding.apply(m)?,
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    if args.batch_size == Some(0) || args.mixture_block_size == 0 {
        bail!("--batch-size and --mixture-block-size must be at least 1");
    }
    let doc_tokens = doc_tokens(&args, &domains)?;
    let plan = Plan {
        domains,
        phases,
        paths,
        seed: args.seed,
        batch_size: args.batch_size,
        mixture_block_size: args.mixture_block_size,
        doc_tokens,
    };
    let artifacts = export(&args.format, &plan)?;
    for n in crate::export::notes(&args.format, &plan)? {
        eprintln!("note: {n}");
    }
    if plan.phases.len() > 1 {
        for (i, p) in plan.phases.iter().enumerate() {
            eprintln!("phase {}: from step {}", i + 1, p.start_step);
        }
    }
    match &args.out {
        Some(out) => {
            for a in &artifacts {
                let path = artifact_path(out, a);
                crate::mixture::write_atomic(&path, a.text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let several = artifacts.len() > 1;
            for a in &artifacts {
                if several {
                    let name = artifact_path(std::path::Path::new(&args.format), a);
                    println!("# ==> {} <==", name.display());
                }
                print!("{}", a.text);
            }
        }
    }
    Ok(())
}
