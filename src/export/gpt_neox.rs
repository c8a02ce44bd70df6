//! `--format gpt-neox`: GPT-NeoX's weighted datasets, as a YAML config
//! fragment to merge into a NeoX `.yml` config.
//!
//! Syntax checked against GPT-NeoX `megatron/neox_arguments/neox_args.py`
//! (`train_data_paths: list`, `train_data_weights: list` — "should be a list
//! the same length as `train_data_paths`", likewise `valid_*`) and its
//! `configs/` examples, which spell the keys with hyphens
//! (`"train-data-paths"`, `"train-data-weights"`). NeoX has no weight
//! schedule: a schedule becomes one fragment per phase.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct GptNeox;

impl super::Exporter for GptNeox {
    fn name(&self) -> &'static str {
        "gpt-neox"
    }
    fn summary(&self) -> &'static str {
        "GPT-NeoX train-data-paths + train-data-weights (YAML fragment)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let train = weighted_paths(plan, phase, false);
        let valid = weighted_paths(plan, phase, true);
        let paths = |v: &[super::WeightedPath]| {
            Node::Seq(v.iter().map(|p| Node::str(p.path.as_str())).collect())
        };
        let weights = |v: &[super::WeightedPath]| {
            Node::Seq(v.iter().map(|p| Node::num(p.weight.as_str())).collect())
        };
        let mut doc = Node::map()
            .with("train-data-paths", paths(&train))
            .with("train-data-weights", weights(&train));
        if !valid.is_empty() {
            doc = doc
                .with("valid-data-paths", paths(&valid))
                .with("valid-data-weights", weights(&valid));
        }
        let mut text = header_comment("#", "gpt-neox", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
