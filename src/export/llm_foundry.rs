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
//!
//! Stream names are keys of one YAML map, which OmegaConf (llm-foundry's
//! config loader) refuses to hold twice: a domain with several paths gets
//! `NAME_0`, `NAME_1`, …, skipping any name another stream already has.

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
        let several = |d: &str| wp.iter().filter(|q| q.domain == d).count() > 1;
        // Single-path domains keep their names; numbered names avoid them
        // and each other.
        let mut taken: std::collections::HashSet<String> = wp
            .iter()
            .filter(|p| !several(&p.domain))
            .map(|p| p.domain.clone())
            .collect();
        let mut streams = Vec::new();
        for (i, p) in wp.iter().enumerate() {
            let name = if several(&p.domain) {
                let mut k = wp[..i].iter().filter(|q| q.domain == p.domain).count();
                let mut name = format!("{}_{k}", p.domain);
                while taken.contains(&name) {
                    k += 1;
                    name = format!("{}_{k}", p.domain);
                }
                taken.insert(name.clone());
                name
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{Exporter, PathMap};

    #[test]
    fn numbered_stream_names_never_collide() {
        let mut plan = crate::export::testing::plan("code=0.5,code_0=0.25,code_1=0.25");
        plan.paths = PathMap::parse(
            std::path::Path::new("p.toml"),
            "code = [\"a\", \"b\"]\ncode_0 = \"c\"\ncode_1 = \"d\"\n",
            &plan.domains,
        )
        .unwrap();
        let text = &LlmFoundry.render(&plan).unwrap()[0].text;
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
        let streams = v["train_loader"]["dataset"]["streams"]
            .as_mapping()
            .unwrap();
        assert_eq!(streams.len(), 4, "{text}");
        assert_eq!(streams[&serde_yaml_ng::Value::from("code_0")]["local"], "c");
        assert_eq!(streams[&serde_yaml_ng::Value::from("code_2")]["local"], "a");
    }
}
