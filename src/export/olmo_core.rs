//! `--format olmo-core`: OLMo-core's source mixture as YAML — a
//! `SourceMixtureList` (`sources:` of `source_name`, `target_ratio`, `paths`,
//! `max_repetition_ratio`), the part of `SourceMixtureDatasetConfig` that
//! OLMo-core documents as meant to live in a YAML file.
//!
//! Syntax checked against OLMo-core `src/olmo_core/data/source_mixture.py`
//! (`SourceMixtureConfig` fields; `target_ratio` must be in (0, 1] and the
//! ratios must sum to 1; `max_repetition_ratio` ≥ 1, default 1.0) and
//! `docs/source/guides/data_mixing.rst`. Zero-weight domains are left out (a
//! ratio of 0 slips past OLMo-core's range check but selects no tokens).
//! `max_repetition_ratio` comes from paths.toml's `max_repetition`
//! (default 1.0). No schedule: one list per phase.

use super::tree::{to_yaml, Node};
use super::{header_comment, single, Artifact, Plan};
use crate::error::Result;

pub struct OlmoCore;

impl super::Exporter for OlmoCore {
    fn name(&self) -> &'static str {
        "olmo-core"
    }
    fn summary(&self) -> &'static str {
        "OLMo-core SourceMixtureList (source_name, target_ratio, paths, max_repetition_ratio)"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let phase = single(plan);
        let mut sources = Vec::new();
        for ((d, v), t) in phase
            .weights
            .domains
            .iter()
            .zip(&phase.weights.values)
            .zip(&phase.weights.text)
        {
            if *v <= 0.0 {
                continue;
            }
            let entry = plan.paths.get(d);
            let rep = entry.max_repetition.unwrap_or(1.0);
            sources.push(
                Node::map()
                    .with("source_name", Node::str(d.as_str()))
                    .with("target_ratio", Node::num(t.as_str()))
                    .with("paths", Node::strs(&entry.train))
                    .with("max_repetition_ratio", Node::num(format!("{rep:?}"))),
            );
        }
        let doc = Node::map().with("sources", Node::Seq(sources));
        let mut text = header_comment("#", "olmo-core", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
