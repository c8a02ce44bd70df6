//! `--format nanotron`: nanotron's `data_stages`, one stage per phase (a
//! native schedule: each stage has a `start_training_step`), each a Nanoset
//! with `dataset_folder` + `dataset_weights`.
//!
//! Syntax checked against nanotron `docs/nanoset.md` (`data_stages: - name,
//! start_training_step, data: {dataset: {dataset_folder: ...}, seed,
//! num_loading_workers}`) and `src/nanotron/config/config.py`
//! (`NanosetDatasetsArgs.dataset_folder: List[str]`, `dataset_weights:
//! Optional[List[float]]`). nanotron counts steps from 1, so a phase starting
//! at step s starts at `start_training_step: s + 1`.

use super::tree::{to_yaml, Node};
use super::{header_comment, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct Nanotron;

impl super::Exporter for Nanotron {
    fn name(&self) -> &'static str {
        "nanotron"
    }
    fn summary(&self) -> &'static str {
        "nanotron data_stages with dataset_folder / dataset_weights (native schedule)"
    }
    fn schedules(&self) -> bool {
        true
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let mut stages = Vec::new();
        for (i, phase) in plan.phases.iter().enumerate() {
            let wp = weighted_paths(plan, phase, false);
            let name = if plan.phases.len() == 1 {
                "mixopt mixture".to_string()
            } else {
                format!("mixopt phase {}", i + 1)
            };
            stages.push(
                Node::map()
                    .with("name", Node::str(name))
                    .with("start_training_step", Node::int(phase.start_step + 1))
                    .with(
                        "data",
                        Node::map()
                            .with(
                                "dataset",
                                Node::map()
                                    .with(
                                        "dataset_folder",
                                        Node::Seq(
                                            wp.iter().map(|p| Node::str(p.path.as_str())).collect(),
                                        ),
                                    )
                                    .with(
                                        "dataset_weights",
                                        Node::Seq(
                                            wp.iter()
                                                .map(|p| Node::num(p.weight.as_str()))
                                                .collect(),
                                        ),
                                    ),
                            )
                            .with("num_loading_workers", Node::int(1))
                            .with("seed", Node::int(plan.seed)),
                    ),
            );
        }
        let doc = Node::map().with("data_stages", Node::Seq(stages));
        let mut text = header_comment("#", "nanotron", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
}
