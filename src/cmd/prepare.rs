//! `mixopt prepare`: tokenize domain corpora into a memory-mapped token cache
//! (the first step of the pipeline; `sweep` and `train` read the cache).
//!
//! ```text
//! mixopt prepare --domain web=data/web/*.jsonl.zst --domain code=data/code --cache cache/
//! mixopt prepare --domains-dir /tmp/mixcorpus --cache cache/ --tokenizer tokenizer.json
//! ```

use crate::corpus::cache::Role;
use crate::corpus::prepare::{
    self, DomainSource, PrepareReport, PrepareSpec, DEFAULT_MAX_VAL_TOKENS, DEFAULT_TEST_FRACTION,
    DEFAULT_TEXT_FIELD, DEFAULT_VAL_FRACTION,
};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Sources: .txt (one document per file), .jsonl, .jsonl.gz, .jsonl.zst, .parquet.\n\
                  A directory holding train.* and val.* files keeps its own split; otherwise\n\
                  --val-fraction of the documents, drawn with --seed, are held out. The held-out\n\
                  documents are dealt between a validation split (proxies are scored and choices\n\
                  made on it) and a test split (--test-fraction of them; for judging only).\n\
                  Re-running with unchanged sources and options does nothing."
)]
pub struct Args {
    /// A domain as NAME=PATH; PATH is a file, a directory or a quoted glob (repeatable).
    #[arg(long = "domain", value_name = "NAME=PATH")]
    pub domains: Vec<String>,
    /// Take every subdirectory of DIR as a domain (DIR/<domain>/{train,val}.jsonl or any sources).
    #[arg(long, value_name = "DIR")]
    pub domains_dir: Option<PathBuf>,
    /// An evaluation-only domain, NAME=PATH (or just NAME, one of --domains-dir's
    /// subdirectories, which is then not trained on): tokenized into validation
    /// and test splits, scored by every proxy, never sampled; a target can name it (repeatable).
    #[arg(long = "eval-domain", value_name = "NAME[=PATH]")]
    pub eval_domains: Vec<String>,
    /// Directory of the token cache to write.
    #[arg(long, value_name = "DIR")]
    pub cache: PathBuf,
    /// HuggingFace tokenizer.json (offline); byte-level when absent.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// JSON field or parquet column holding the text.
    #[arg(long, default_value = DEFAULT_TEXT_FIELD)]
    pub text_field: String,
    /// Share of documents held out for validation where a domain has no val files.
    #[arg(long, default_value_t = DEFAULT_VAL_FRACTION)]
    pub val_fraction: f64,
    /// Share of the held-out documents of each domain kept as a test split (0: none).
    #[arg(long, default_value_t = DEFAULT_TEST_FRACTION)]
    pub test_fraction: f64,
    /// Seed of the train/validation/test draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cap on each domain's validation tokens (keeps evaluation cheap).
    #[arg(long, default_value_t = DEFAULT_MAX_VAL_TOKENS)]
    pub max_val_tokens: u64,
    /// Rebuild even when the cache is up to date.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    /// The flags as a validated spec (no data read yet).
    fn spec(self) -> anyhow::Result<PrepareSpec> {
        let mut domains = Vec::new();
        if let Some(dir) = &self.domains_dir {
            // A cache kept inside the corpus directory is not a domain.
            let cache = std::fs::canonicalize(&self.cache).ok();
            domains.extend(
                prepare::domains_in_dir(dir)?
                    .into_iter()
                    .filter(|d| cache.is_none() || std::fs::canonicalize(&d.path).ok() != cache),
            );
        }
        for arg in &self.domains {
            domains.push(DomainSource::parse(arg)?);
        }
        for arg in &self.eval_domains {
            if arg.contains('=') {
                let mut d = DomainSource::parse(arg)?;
                d.role = Role::Eval;
                anyhow::ensure!(
                    !domains.iter().any(|e| e.name == d.name),
                    "--eval-domain {arg}: domain {:?} is also a training domain \
                     (give just --eval-domain {} to move a --domains-dir domain out of training)",
                    d.name,
                    d.name
                );
                domains.push(d);
            } else {
                let d = domains.iter_mut().find(|d| &d.name == arg).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--eval-domain {arg}: no such domain (give NAME=PATH, or NAME of a \
                         --domains-dir subdirectory)"
                    )
                })?;
                d.role = Role::Eval;
            }
        }
        let spec = PrepareSpec {
            domains,
            cache_dir: self.cache,
            tokenizer: self.tokenizer,
            text_field: self.text_field,
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            seed: self.seed,
            max_val_tokens: self.max_val_tokens,
            force: self.force,
        };
        spec.check()?;
        Ok(spec)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let report = prepare::prepare(&spec)?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &report)?;
    let m = &report.manifest;
    if m.test_fraction > 0.0 {
        for d in m.domains.iter().filter(|d| d.test_docs == 0) {
            eprintln!(
                "warning: domain {:?} has {} held-out document(s), all used for validation: \
                 it has no test split (judging on test will refuse it)",
                d.name, d.val_docs
            );
        }
    }
    Ok(())
}

fn print_report(out: &mut impl Write, report: &PrepareReport) -> std::io::Result<()> {
    let m = &report.manifest;
    let dir = report.cache_dir.display();
    if report.up_to_date {
        writeln!(out, "cache {dir} is up to date; nothing to do")?;
    } else {
        writeln!(out, "prepared {} domains into {dir}", m.domains.len())?;
    }
    writeln!(
        out,
        "tokenizer: {} (vocab {} incl. separator {}), u{} tokens",
        m.tokenizer.path.as_deref().unwrap_or(&m.tokenizer.kind),
        m.tokenizer.vocab_size,
        m.tokenizer.separator_id,
        m.token_width_bytes * 8
    )?;
    let name_width = m
        .domains
        .iter()
        .map(|d| d.name.len())
        .chain(["domain".len(), "total".len()])
        .max()
        .unwrap_or(6);
    let row = |out: &mut dyn Write, cells: [&str; 8]| {
        writeln!(
            out,
            "{:<name_width$}  {:>10}  {:>8}  {:>9}  {:>14}  {:>10}  {:>11}  {:>7}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        )
    };
    row(
        out,
        [
            "domain",
            "train_docs",
            "val_docs",
            "test_docs",
            "train_tokens",
            "val_tokens",
            "test_tokens",
            "share",
        ],
    )?;
    let total_train: u64 = m.domains.iter().map(|d| d.train_tokens).sum();
    for d in &m.domains {
        let share = match d.role {
            Role::Train => format!(
                "{:.2}%",
                100.0 * d.train_tokens as f64 / total_train.max(1) as f64
            ),
            Role::Eval => "eval".to_string(),
        };
        row(
            out,
            [
                &d.name,
                &d.train_docs.to_string(),
                &d.val_docs.to_string(),
                &d.test_docs.to_string(),
                &d.train_tokens.to_string(),
                &d.val_tokens.to_string(),
                &d.test_tokens.to_string(),
                &share,
            ],
        )?;
    }
    let sum = |f: fn(&crate::corpus::cache::DomainEntry) -> u64| {
        m.domains.iter().map(f).sum::<u64>().to_string()
    };
    row(
        out,
        [
            "total",
            &sum(|d| d.train_docs),
            &sum(|d| d.val_docs),
            &sum(|d| d.test_docs),
            &total_train.to_string(),
            &sum(|d| d.val_tokens),
            &sum(|d| d.test_tokens),
            "100.00%",
        ],
    )
}
