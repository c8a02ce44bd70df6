//! `--format torchtitan`: a Python module for TorchTitan ≥ 0.3.0. It
//! registers one `DatasetConfig` per path in
//! `torchtitan.hf_datasets.text_datasets.DATASETS` (names `mixopt_0`,
//! `mixopt_1`, …: TorchTitan lower-cases dataset names) and builds
//! `MIXOPT_DATALOADER`, an `InterleavedHuggingFaceTextDataLoader.Config`
//! whose `sources` are `HFDataSource(dataset=..., weight=...)`, for a
//! `config_registry` function's `dataloader=` (TorchTitan 0.3 configures
//! jobs as Python functions run with `--module M --config F`; its TOML job
//! files are gone, and 0.2 has no `torchtitan.hf_datasets`).
//!
//! Checked against torchtitan 0.3.0 `hf_datasets/text_datasets.py`
//! (`DATASETS`, `HFDataSource(weight=...)`, `InterleavedHuggingFaceTextDataLoader.Config(sources, seed,
//! stopping_strategy)`; each source is packed into seq_len token sequences
//! before interleaving, "making interleaved weights a token mixture ratio")
//! and `hf_datasets/__init__.py` (`DatasetConfig(path, loader,
//! sample_processor)`), and loaded by `bench/frameworks_check.sh`. The
//! weights are therefore token shares as they are. No schedule: one module
//! per phase.

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
        "Python (TorchTitan ≥ 0.3): DatasetConfigs + an InterleavedHuggingFaceTextDataLoader.Config"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let wp = weighted_paths(plan, single(plan), false);
        let paths: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let weights: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let domains: Vec<String> = wp.iter().map(|p| quote(&p.domain)).collect();
        let mut s = header_comment("#", "torchtitan", plan);
        s.push_str(
            "# For TorchTitan >= 0.3.0. In your config_registry function:\n\
             #     from mixopt_mixture import MIXOPT_DATALOADER\n\
             #     ... Trainer.Config(..., dataloader=MIXOPT_DATALOADER, ...)\n\
             # then run with --module <model> --config <that function>. Each source is packed\n\
             # into seq_len token sequences before interleaving, so the weights are token shares.\n",
        );
        s.push_str("from datasets import load_dataset\n\n");
        s.push_str("from torchtitan.hf_datasets import DatasetConfig\n");
        s.push_str("from torchtitan.hf_datasets.text_datasets import (\n    DATASETS,\n    HFDataSource,\n    InterleavedHuggingFaceTextDataLoader,\n)\n\n");
        s.push_str(&format!("MIXOPT_PATHS = {}\n", py_list(&paths, "")));
        s.push_str(&format!("MIXOPT_DOMAINS = {}\n", py_list(&domains, "")));
        s.push_str(&format!("MIXOPT_WEIGHTS = {}\n\n\n", py_list(&weights, "")));
        s.push_str("def _load(path):\n");
        s.push_str("    return load_dataset(path, split=\"train\", streaming=True)\n\n\n");
        s.push_str("for _i, _path in enumerate(MIXOPT_PATHS):\n");
        s.push_str("    DATASETS[f\"mixopt_{_i}\"] = DatasetConfig(\n");
        s.push_str("        path=_path,\n        loader=_load,\n");
        s.push_str("        sample_processor=lambda sample: sample[\"text\"],\n    )\n\n");
        s.push_str("MIXOPT_DATALOADER = InterleavedHuggingFaceTextDataLoader.Config(\n");
        s.push_str("    sources=[\n        HFDataSource(dataset=f\"mixopt_{i}\", weight=w)\n        for i, w in enumerate(MIXOPT_WEIGHTS)\n    ],\n");
        s.push_str(&format!("    seed={},\n", plan.seed));
        s.push_str("    stopping_strategy=\"all_exhausted\",\n)\n");
        Ok(vec![Artifact::main(s)])
    }
}
