//! `--format doremi`: DoReMi's domain-weights config,
//! `{"train_domain_weights": {name: w}, "eval_domain_weights": {name: w}}`.
//!
//! Syntax checked against DoReMi (`scripts/create_config.py` and
//! `doremi/train.py`, which write exactly these two keys, the evaluation
//! weights equal to the training ones). Every domain is kept. No schedule:
//! one file per phase.

use super::json::domain_map;
use super::tree::{to_json, Node};
use super::{single, Artifact, Plan};
use crate::error::Result;

pub struct DoReMi;

impl super::Exporter for DoReMi {
    fn name(&self) -> &'static str {
        "doremi"
    }
    fn summary(&self) -> &'static str {
        "DoReMi train_domain_weights / eval_domain_weights JSON"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let weights = domain_map(single(plan));
        let doc = Node::map()
            .with("train_domain_weights", weights.clone())
            .with("eval_domain_weights", weights);
        Ok(vec![Artifact::main(to_json(&doc))])
    }
}
