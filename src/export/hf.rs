//! `--format hf`: a Python snippet that mixes Hugging Face datasets with
//! `datasets.interleave_datasets(..., probabilities=[...], seed=...)`.
//!
//! Syntax checked against Hugging Face Datasets `src/datasets/combine.py`
//! (`interleave_datasets(datasets, probabilities=None, seed=None, info=None,
//! split=None, stopping_strategy="first_exhausted")`; with probabilities,
//! "the new dataset is constructed by sampling examples from one source at a
//! time according to these probabilities"). `all_exhausted` is chosen so a
//! small domain is repeated rather than ending the mixture early. One path
//! per source; no schedule (one snippet per phase).

use super::tree::quote;
use super::{header_comment, single, weighted_paths, Artifact, Plan};
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

impl super::Exporter for Hf {
    fn name(&self) -> &'static str {
        "hf"
    }
    fn summary(&self) -> &'static str {
        "Python: datasets.interleave_datasets(..., probabilities=[...], seed=...)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let wp = weighted_paths(plan, single(plan), false);
        let paths: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let probs: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let mut s = header_comment("#", "hf", plan);
        s.push_str("from datasets import interleave_datasets, load_dataset\n\n");
        s.push_str(&format!("paths = {}\n", py_list(&paths, "")));
        s.push_str(&format!("probabilities = {}\n", py_list(&probs, "")));
        s.push_str(
            "sources = [load_dataset(path, split=\"train\", streaming=True) for path in paths]\n",
        );
        s.push_str("mixture = interleave_datasets(\n");
        s.push_str("    sources,\n    probabilities=probabilities,\n");
        s.push_str(&format!("    seed={},\n", plan.seed));
        s.push_str("    stopping_strategy=\"all_exhausted\",\n)\n");
        Ok(vec![Artifact::main(s)])
    }
}
