//! `--format levanter`: a Levanter / Marin `data:` section with one
//! component per domain and `train_weights` — a constant map, or for a
//! schedule Levanter's native list of `[step, {name: weight}]` pairs.
//!
//! Syntax checked against Levanter's "How to Use Dataset Formats in Levanter"
//! guide (`data: components: NAME: source: {type: url, train_urls,
//! validation_urls}`, `train_weights: {NAME: w}` or
//! `train_weights: - [0, {...}] - [1000, {...}]`; weights are normalized and
//! 0 keeps a dataset for evaluation only) and `levanter/data/text.py`
//! (`train_weights: Union[Dict[str, float], List[Tuple[int, Dict[str, float]]]]`).
//! Every domain is kept, weight 0 included.

use super::tree::{to_yaml, Node};
use super::{header_comment, Artifact, Plan};
use crate::error::Result;

pub struct Levanter;

impl super::Exporter for Levanter {
    fn name(&self) -> &'static str {
        "levanter"
    }
    fn summary(&self) -> &'static str {
        "Levanter/Marin data components + train_weights (step schedule native)"
    }
    fn schedules(&self) -> bool {
        true
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let mut components = Vec::new();
        for d in &plan.domains {
            let e = plan.paths.get(d);
            let mut source = Node::map()
                .with("type", Node::str("url"))
                .with("train_urls", Node::strs(&e.train));
            if !e.valid.is_empty() {
                source = source.with("validation_urls", Node::strs(&e.valid));
            }
            components.push((d.clone(), Node::map().with("source", source)));
        }
        let weights = if plan.phases.len() == 1 {
            super::json::domain_map(&plan.phases[0])
        } else {
            Node::Seq(
                plan.phases
                    .iter()
                    .map(|p| {
                        Node::Flow(Box::new(Node::Seq(vec![
                            Node::int(p.start_step),
                            super::json::domain_map(p),
                        ])))
                    })
                    .collect(),
            )
        };
        let doc = Node::map().with(
            "data",
            Node::map()
                .with("components", Node::Map(components))
                .with("train_weights", weights),
        );
        let mut text = header_comment("#", "levanter", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
