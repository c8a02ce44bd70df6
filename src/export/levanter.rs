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
//!
//! Levanter's `MixtureDataset` (levanter/data/mixture.py) asserts that each
//! stage's start, in sequences (step × batch size, from
//! `rescale_mixture_schedule_for_batch_schedule`), is a multiple of
//! `mixture_block_size`. A schedule is therefore exported only with
//! `--batch-size`; each phase start is moved to the nearest step where
//! step × batch size is a multiple of the block size (a note says by how
//! much), and `mixture_block_size` is written into the config.

use super::tree::{to_yaml, Node};
use super::{header_comment, Artifact, Plan};
use crate::error::{Error, Result};

pub struct Levanter;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Each phase's start step moved to the nearest step s with s·batch a
/// multiple of the block size (phases must stay in strictly increasing order).
fn aligned_starts(plan: &Plan) -> Result<Vec<u64>> {
    let starts: Vec<u64> = plan.phases.iter().map(|p| p.start_step).collect();
    if plan.phases.len() == 1 {
        return Ok(starts);
    }
    let batch = plan.batch_size.ok_or_else(|| {
        Error::invalid(
            "levanter: a schedule needs --batch-size (sequences per step): Levanter starts each \
             phase at a sequence index that must be a multiple of mixture_block_size",
        )
    })?;
    let block = plan.mixture_block_size;
    let step_unit = block / gcd(block, batch);
    let mut out: Vec<u64> = Vec::with_capacity(starts.len());
    for (i, s) in starts.iter().enumerate() {
        let a = ((*s as f64 / step_unit as f64).round() as u64) * step_unit;
        if let Some(prev) = out.last() {
            if a <= *prev {
                return Err(Error::invalid(format!(
                    "levanter: phases {} and {} both start at step {a} once aligned to multiples of \
                     {step_unit} steps ({block}-sequence blocks at batch size {batch}); use fewer \
                     --phases or a longer --total-steps",
                    i,
                    i + 1
                )));
            }
        }
        out.push(a);
    }
    Ok(out)
}

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
        let starts = aligned_starts(plan)?;
        let weights = if plan.phases.len() == 1 {
            super::json::domain_map(&plan.phases[0])
        } else {
            Node::Seq(
                plan.phases
                    .iter()
                    .zip(&starts)
                    .map(|(p, s)| {
                        Node::Flow(Box::new(Node::Seq(vec![
                            Node::int(*s),
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
                .with("train_weights", weights)
                .with("mixture_block_size", Node::int(plan.mixture_block_size)),
        );
        let mut text = header_comment("#", "levanter", plan);
        text.push_str(&to_yaml(&doc));
        Ok(vec![Artifact::main(text)])
    }
    fn notes(&self, plan: &Plan) -> Vec<String> {
        let Ok(starts) = aligned_starts(plan) else {
            return Vec::new();
        };
        plan.phases
            .iter()
            .zip(starts)
            .enumerate()
            .filter(|(_, (p, s))| p.start_step != *s)
            .map(|(i, (p, s))| {
                format!(
                    "levanter: phase {} starts at step {s}, not {}: the nearest step whose sequence \
                     index is a multiple of mixture_block_size {}",
                    i + 1,
                    p.start_step,
                    plan.mixture_block_size
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{Exporter, Phase};

    #[test]
    fn phase_starts_align_to_mixture_blocks() {
        let mut plan = crate::export::testing::plan("a=0.5,b=0.5");
        let second = Phase {
            start_step: 967,
            ..plan.phases[0].clone()
        };
        plan.phases.push(second);
        assert!(aligned_starts(&plan).is_err());
        plan.batch_size = Some(256);
        // 2048 / gcd(2048, 256) = 8 steps per block: 967 → 968.
        assert_eq!(aligned_starts(&plan).unwrap(), [0, 968]);
        assert_eq!((968 * 256) % 2048, 0);
        assert_eq!(Levanter.notes(&plan).len(), 1);
        plan.phases[1].start_step = 3;
        assert!(aligned_starts(&plan).is_err());
    }
}
