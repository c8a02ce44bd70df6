//! `--format torchtitan`: TorchTitan has no mixture setting of its own; a
//! dataset is a `DatasetConfig(path, loader, sample_processor)` registered in
//! `DATASETS` and selected by name in the job's TOML (`dataset = "NAME"`).
//! The export is a Python module that registers `mixopt_mixture`, whose
//! loader interleaves the domains with `datasets.interleave_datasets`
//! (probabilities = the weights), plus the TOML lines in a comment.
//!
//! Syntax checked against TorchTitan `docs/datasets.md` (register a loader
//! and a sample processor, then set `dataset = "wikipedia"` in the
//! training `.toml`) and `torchtitan/hf_datasets/text_datasets.py`
//! (`DATASETS = {"c4": DatasetConfig(path=..., loader=...,
//! sample_processor=...)}`; loaders take the dataset path). No schedule:
//! one module per phase.

use super::hf::py_list;
use super::tree::quote;
use super::{header_comment, single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct TorchTitan;

impl super::Exporter for TorchTitan {
    fn name(&self) -> &'static str {
        "torchtitan"
    }
    fn summary(&self) -> &'static str {
        "Python: a TorchTitan DatasetConfig interleaving the domains, + TOML lines"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let wp = weighted_paths(plan, single(plan), false);
        let paths: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let probs: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let mut s = header_comment("#", "torchtitan", plan);
        s.push_str(
            "# In the job config (.toml):\n#   [training]\n#   dataset = \"mixopt_mixture\"\n",
        );
        s.push_str("from datasets import interleave_datasets, load_dataset\n\n");
        s.push_str("from torchtitan.hf_datasets import DatasetConfig\n");
        s.push_str("from torchtitan.hf_datasets.text_datasets import DATASETS\n\n");
        s.push_str(&format!("MIXOPT_PATHS = {}\n", py_list(&paths, "")));
        s.push_str(&format!(
            "MIXOPT_PROBABILITIES = {}\n\n\n",
            py_list(&probs, "")
        ));
        s.push_str("def load_mixopt_mixture(dataset_path: str):\n");
        s.push_str("    sources = [load_dataset(p, split=\"train\", streaming=True) for p in MIXOPT_PATHS]\n");
        s.push_str("    return interleave_datasets(\n");
        s.push_str("        sources,\n        probabilities=MIXOPT_PROBABILITIES,\n");
        s.push_str(&format!("        seed={},\n", plan.seed));
        s.push_str("        stopping_strategy=\"all_exhausted\",\n    )\n\n\n");
        s.push_str("DATASETS[\"mixopt_mixture\"] = DatasetConfig(\n");
        s.push_str("    path=\"mixopt\",\n    loader=load_mixopt_mixture,\n");
        s.push_str("    sample_processor=lambda sample: sample[\"text\"],\n)\n");
        Ok(vec![Artifact::main(s)])
    }
}
