//! `--format llm-foundry`: LLM Foundry's `train_loader.dataset.streams`, one
//! stream per path with its `proportion`.
//!
//! Syntax checked against llm-foundry's `scripts/train/yamls/pretrain/*.yaml`
//! (`train_loader: {name: text, dataset: {streams: {NAME: {local | remote,
//! split, proportion}}}}`) and MosaicML Streaming's `streaming.Stream` docs
//! ("at least one of remote and local must exist"; `proportion` is relative
//! and must then be given for every stream). A path with `://` is a
//! `remote`, anything else a `local` directory. No schedule: one config per
//! phase.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct LlmFoundry;

impl super::Exporter for LlmFoundry {
    fn name(&self) -> &'static str {
        "llm-foundry"
    }
    fn summary(&self) -> &'static str {
        "LLM Foundry train_loader streams with proportion"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let wp = weighted_paths(plan, phase, false);
        let mut streams = Vec::new();
        for (i, p) in wp.iter().enumerate() {
            let several = wp.iter().filter(|q| q.domain == p.domain).count() > 1;
            let name = if several {
                let k = wp[..i].iter().filter(|q| q.domain == p.domain).count();
                format!("{}_{k}", p.domain)
            } else {
                p.domain.clone()
            };
            let key = if p.path.contains("://") {
                "remote"
            } else {
                "local"
            };
            streams.push((
                name,
                Node::map()
                    .with(key, Node::str(p.path.as_str()))
                    .with("split", Node::str("train"))
                    .with("proportion", Node::num(p.weight.as_str())),
            ));
        }
        let doc = Node::map().with(
            "train_loader",
            Node::map().with("name", Node::str("text")).with(
                "dataset",
                Node::map()
                    .with("shuffle", Node::Bool(true))
                    .with("shuffle_seed", Node::int(plan.seed))
                    .with("streams", Node::Map(streams)),
            ),
        );
        let mut text = header_comment("#", "llm-foundry", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
