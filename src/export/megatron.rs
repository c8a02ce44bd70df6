//! `--format megatron`: Megatron-LM's weighted blend.
//!
//! Syntax checked against Megatron-LM `megatron/training/arguments.py`
//! (`--data-path`: "a list of weight prefix pairs e.g. weight1 prefix1 weight2
//! prefix2"; `--data-args-path`: a file holding that argument;
//! `--per-split-data-args-path`: "a json file with `train`, `valid`, `test`
//! keys") and `megatron/training/utils.py::get_blend_and_blend_per_split`
//! (the data-args file is read with `f.read().split()`; each per-split value
//! may be a whitespace-separated string; a null split has no data).
//!
//! Artifacts: the data-args file (main; one `weight prefix` pair per line),
//! `<out>.per_split.json` (train = the blend, valid = the domains' `valid`
//! paths with the same weights or null, test = null) and
//! `<out>.data_path.txt` (the `--data-path …` flag to paste on a command line).
//! Megatron has no blend schedule: a schedule becomes one set per phase.

use super::tree::{to_json, Node};
use super::{single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct Megatron;

fn blend(pairs: &[super::WeightedPath], sep: &str) -> String {
    pairs
        .iter()
        .map(|p| format!("{} {}", p.weight, p.path))
        .collect::<Vec<_>>()
        .join(sep)
}

impl super::Exporter for Megatron {
    fn name(&self) -> &'static str {
        "megatron"
    }
    fn summary(&self) -> &'static str {
        "Megatron-LM --data-args-path file, per-split JSON and --data-path string"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let train = weighted_paths(plan, phase, false);
        let valid = weighted_paths(plan, phase, true);
        let per_split = Node::map()
            .with("train", Node::str(blend(&train, " ")))
            .with(
                "valid",
                if valid.is_empty() {
                    Node::Null
                } else {
                    Node::str(blend(&valid, " "))
                },
            )
            .with("test", Node::Null);
        Ok(vec![
            Artifact::main(format!("{}\n", blend(&train, "\n"))),
            Artifact::extra("per_split", "json", to_json(&per_split)),
            Artifact::extra(
                "data_path",
                "txt",
                format!("--data-path {}\n", blend(&train, " ")),
            ),
        ])
    }
}
