//! `--format hf`: a Python snippet that mixes Hugging Face datasets with
//! `datasets.interleave_datasets(..., probabilities=[...], seed=...)`.
//!
//! Syntax checked against Hugging Face Datasets `src/datasets/combine.py`
//! (`interleave_datasets(datasets, probabilities=None, seed=None, info=None,
//! split=None, stopping_strategy="first_exhausted")`; with probabilities,
//! "the new dataset is constructed by sampling examples from one source at a
//! time according to these probabilities"), and loaded with datasets 5.2 by
//! `bench/frameworks_check.sh`. `all_exhausted` is chosen so a small domain
//! is repeated rather than ending the mixture early. One path per source;
//! no schedule (one snippet per phase).
//!
//! The sampler draws *examples* (documents), so the probabilities are the
//! token shares divided by each domain's mean document length and
//! renormalized (`docs`), when `--cache`/`--doc-tokens` give the lengths;
//! the token shares are printed too (`token_shares`, right for sources that
//! are already packed into fixed-length token blocks). Without lengths the
//! probabilities are the token shares, and the file and a note say so.

use super::tree::quote;
use super::{docs, header_comment, single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct Hf;

/// `[\n    a,\n    b,\n]` with each item on its own line.
pub(crate) fn py_list(items: &[String], indent: &str) -> String {
    let mut s = String::from("[\n");
    for i in items {
        s.push_str(indent);
        s.push_str("    ");
        s.push_str(i);
        s.push_str(",\n");
    }
    s.push_str(indent);
    s.push(']');
    s
}

/// The comment saying which unit the sampling weights are in.
pub(crate) fn units_comment(plan: &Plan, what: &str) -> String {
    match &plan.doc_tokens {
        Some(l) => format!(
            "# `token_shares` are mixopt's weights (shares of training tokens). {what} draws\n\
             # documents, so `{}` are token shares / mean document length, renormalized\n\
             # (mean tokens per document: {}).\n",
            if what == "interleave_datasets" {
                "probabilities"
            } else {
                "weights"
            },
            plan.domains
                .iter()
                .zip(l)
                .map(|(d, n)| format!("{d} {n:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "# NOTE: these are shares of training tokens, but {what} draws documents:\n\
             # a domain with longer documents gets more than its share. Re-export with\n\
             # --cache CACHE (or --doc-tokens NAME=N) to convert them.\n"
        ),
    }
}

impl super::Exporter for Hf {
    fn name(&self) -> &'static str {
        "hf"
    }
    fn summary(&self) -> &'static str {
        "Python: datasets.interleave_datasets(..., probabilities=[...], seed=...)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let wp = weighted_paths(plan, phase, false);
        let paths: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let shares: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let mut s = header_comment("#", "hf", plan);
        s.push_str(&units_comment(plan, "interleave_datasets"));
        s.push_str("from datasets import interleave_datasets, load_dataset\n\n");
        s.push_str(&format!("paths = {}\n", py_list(&paths, "")));
        s.push_str(&format!("token_shares = {}\n", py_list(&shares, "")));
        match docs::doc_path_weights(plan, phase) {
            Some(q) => s.push_str(&format!("probabilities = {}\n", py_list(&q, ""))),
            None => s.push_str("probabilities = token_shares\n"),
        }
        s.push_str(
            "sources = [load_dataset(path, split=\"train\", streaming=True) for path in paths]\n",
        );
        s.push_str("mixture = interleave_datasets(\n");
        s.push_str("    sources,\n    probabilities=probabilities,\n");
        s.push_str(&format!("    seed={},\n", plan.seed));
        s.push_str("    stopping_strategy=\"all_exhausted\",\n)\n");
        Ok(vec![Artifact::main(s)])
    }
    fn notes(&self, plan: &Plan) -> Vec<String> {
        match plan.doc_tokens {
            Some(_) => Vec::new(),
            None => vec![docs::unknown_lengths_note("hf")],
        }
    }
}
