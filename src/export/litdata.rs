//! `--format litdata`: a Python snippet building LitData's
//! `CombinedStreamingDataset(datasets=[...], seed=..., weights=(...),
//! iterate_over_all=False)` from one `StreamingDataset(input_dir=...)` per path.
//!
//! Syntax checked against the LitData README ("Mix SlimPajama data and
//! Starcoder data with these proportions": `weights = (0.693584, 0.306416)`,
//! `CombinedStreamingDataset(datasets=train_datasets, seed=42,
//! weights=weights, iterate_over_all=False)`) and its tests (weights are
//! normalized; `iterate_over_all=False` is needed for the weights to apply).
//! No schedule: one snippet per phase.

use super::hf::py_list;
use super::tree::quote;
use super::{header_comment, single, weighted_paths, Artifact, Plan};
use crate::error::Result;

pub struct LitData;

impl super::Exporter for LitData {
    fn name(&self) -> &'static str {
        "litdata"
    }
    fn summary(&self) -> &'static str {
        "Python: litdata CombinedStreamingDataset(..., weights=(...))"
    }
    fn render(&self, plan: &Plan) -> Result<Vec<Artifact>> {
        let wp = weighted_paths(plan, single(plan), false);
        let dirs: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let weights: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let mut s = header_comment("#", "litdata", plan);
        s.push_str("from litdata import CombinedStreamingDataset, StreamingDataset\n\n");
        s.push_str(&format!("input_dirs = {}\n", py_list(&dirs, "")));
        // A one-element tuple needs its trailing comma.
        s.push_str(&format!("weights = ({},)\n", weights.join(", ")));
        s.push_str("datasets = [StreamingDataset(input_dir=d, shuffle=True, drop_last=True) for d in input_dirs]\n");
        s.push_str("combined_dataset = CombinedStreamingDataset(\n");
        s.push_str("    datasets=datasets,\n");
        s.push_str(&format!("    seed={},\n", plan.seed));
        s.push_str("    weights=weights,\n    iterate_over_all=False,\n)\n");
        Ok(vec![Artifact::main(s)])
    }
}
