//! `--format json`: the weights as mixopt's own weights file
//! (`{"domains": {name: w}, "order": [...]}`, readable by `mixopt train
//! --mixture` and `Mixture::load`), or for a schedule
//! `{"order": [...], "phases": [{"start_step": s, "domains": {...}}, ...]}`.
//! Reference: docs/guide.md ("Weights file"); JSON itself per RFC 8259.

use super::tree::{to_json, Node};
use super::{Artifact, Phase, Plan};
use crate::error::Result;

pub struct Json;

/// `{name: weight}` for every domain of a phase, in mixture order.
pub(crate) fn domain_map(phase: &Phase) -> Node {
    Node::Map(
        phase
            .weights
            .domains
            .iter()
            .zip(&phase.weights.text)
            .map(|(d, t)| (d.clone(), Node::num(t.as_str())))
            .collect(),
    )
}

/// The document json and yaml share.
pub(crate) fn document(plan: &Plan) -> Node {
    if plan.phases.len() == 1 {
        Node::map()
            .with("domains", domain_map(&plan.phases[0]))
            .with("order", Node::strs(&plan.domains))
    } else {
        Node::map().with("order", Node::strs(&plan.domains)).with(
            "phases",
            Node::Seq(
                plan.phases
                    .iter()
                    .map(|p| {
                        Node::map()
                            .with("start_step", Node::int(p.start_step))
                            .with("domains", domain_map(p))
                    })
                    .collect(),
            ),
        )
    }
}

impl super::Exporter for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn summary(&self) -> &'static str {
        "mixopt weights file (domains + order); a schedule as phases"
    }
    fn schedules(&self) -> bool {
        true
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        Ok(vec![Artifact::main(to_json(&document(plan)))])
    }
}
