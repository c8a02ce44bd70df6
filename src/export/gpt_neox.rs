//! `--format gpt-neox`: GPT-NeoX's weighted datasets, as a YAML config
//! fragment to merge into a NeoX `.yml` config.
//!
//! Syntax checked against GPT-NeoX `megatron/neox_arguments/neox_args.py`
//! (`train_data_paths: list`, `train_data_weights: list` — "should be a list
//! the same length as `train_data_paths`", likewise `valid_*`, `test_*`),
//! its `configs/` examples, which spell the keys with hyphens
//! (`"train-data-paths"`, `"train-data-weights"`), and
//! `arguments.py::validate_values`, which asserts that train, valid *and*
//! test paths are given together, each with as many weights as paths. NeoX
//! has no weight schedule: a schedule becomes one fragment per phase.
//!
//! Valid and test paths come from paths.toml's `valid` / `test`; a split
//! no domain has falls back (valid → train paths, test → valid paths) with a
//! comment in the file and a note, because NeoX refuses a config without it.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, weighted_split, Artifact, Plan, Split, WeightedPath};
use crate::error::Result;

pub struct GptNeox;

impl super::Exporter for GptNeox {
    fn name(&self) -> &'static str {
        "gpt-neox"
    }
    fn summary(&self) -> &'static str {
        "GPT-NeoX train/valid/test-data-paths + -weights (YAML fragment)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let train = weighted_split(plan, phase, Split::Train);
        let mut valid = weighted_split(plan, phase, Split::Valid);
        let mut test = weighted_split(plan, phase, Split::Test);
        let mut comments = Vec::new();
        if valid.is_empty() {
            valid = train.clone();
            comments.push("# valid-data-*: no domain has `valid` paths in paths.toml; the training paths stand in\n");
        }
        if test.is_empty() {
            test = valid.clone();
            comments.push("# test-data-*: no domain has `test` paths in paths.toml; the validation paths stand in\n");
        }
        let paths =
            |v: &[WeightedPath]| Node::Seq(v.iter().map(|p| Node::str(p.path.as_str())).collect());
        let weights = |v: &[WeightedPath]| {
            Node::Seq(v.iter().map(|p| Node::num(p.weight.as_str())).collect())
        };
        let doc = Node::map()
            .with("train-data-paths", paths(&train))
            .with("train-data-weights", weights(&train))
            .with("valid-data-paths", paths(&valid))
            .with("valid-data-weights", weights(&valid))
            .with("test-data-paths", paths(&test))
            .with("test-data-weights", weights(&test));
        let mut text = header_comment("#", "gpt-neox", plan);
        for c in comments {
            text.push_str(c);
        }
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
    fn notes(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        if !plan.paths.has_valid() {
            out.push("gpt-neox: NeoX needs valid paths; no domain has `valid` in paths.toml, so the training paths stand in".into());
        }
        if !plan.paths.has_test() {
            out.push("gpt-neox: NeoX needs test paths; no domain has `test` in paths.toml, so the validation paths stand in".into());
        }
        out
    }
}
