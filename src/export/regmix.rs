//! `--format regmix`: RegMix's mixture config YAML: `train:` maps each
//! training dataset (the domain's path) to its weight, `valid:` each
//! validation dataset to 1.0.
//!
//! Syntax checked against RegMix `mixture_config/config_1b/regmix.yaml`
//! (`train: {train_the_pile_arxiv: 0.0012, ...}`, `valid:
//! {valid_the_pile_pile_cc: 1.0}`, `model_name: ...`) and
//! `mixture_config/synthesize_mixture.py`, which writes the same keys. The
//! `valid:` map lists the domains' `valid` paths from paths.toml, or the
//! training keys when there are none. Every domain is kept. No schedule:
//! one file per phase.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, Artifact, Plan};
use crate::error::Result;

pub struct RegMix;

impl super::Exporter for RegMix {
    fn name(&self) -> &'static str {
        "regmix"
    }
    fn summary(&self) -> &'static str {
        "RegMix mixture YAML (train: / valid:)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let mut train = Vec::new();
        let mut valid = Vec::new();
        for ((d, v), t) in phase
            .weights
            .domains
            .iter()
            .zip(&phase.weights.values)
            .zip(&phase.weights.text)
        {
            let e = plan.paths.get(d);
            let n = e.train.len();
            for p in &e.train {
                let w = if n == 1 {
                    t.clone()
                } else {
                    super::rounding::plain(v / n as f64)
                };
                train.push((p.clone(), Node::num(w)));
            }
            let vlist = if plan.paths.has_valid() {
                &e.valid
            } else {
                &e.train
            };
            for p in vlist {
                valid.push((p.clone(), Node::num("1.0")));
            }
        }
        let doc = Node::map()
            .with("train", Node::Map(train))
            .with("valid", Node::Map(valid));
        let mut text = header_comment("#", "regmix", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
