//! `--format litdata`: a Python snippet building LitData's
//! `CombinedStreamingDataset(datasets=[...], seed=..., weights=(...),
//! iterate_over_all=False)` from one `StreamingDataset(input_dir=...)` per path.
//!
//! Syntax checked against the LitData README ("Mix SlimPajama data and
//! Starcoder data with these proportions": `weights = (0.693584, 0.306416)`,
//! `CombinedStreamingDataset(datasets=train_datasets, seed=42,
//! weights=weights, iterate_over_all=False)`) and its tests (weights are
//! normalized; `iterate_over_all=False` is needed for the weights to apply),
//! and loaded with litdata 0.2.76 by `bench/frameworks_check.sh`. No
//! schedule: one snippet per phase.
//!
//! The weights pick *items*: documents for data optimized one document per
//! item — converted from token shares with the mean document lengths when
//! known (`docs`) — or fixed token blocks for data optimized with
//! `TokensLoader`, for which `token_shares` (also printed) are right.

use super::hf::{py_list, units_comment};
use super::tree::quote;
use super::{docs, header_comment, single, weighted_paths, Artifact, Plan};
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
        let phase = single(plan);
        let wp = weighted_paths(plan, phase, false);
        let dirs: Vec<String> = wp.iter().map(|p| quote(&p.path)).collect();
        let shares: Vec<String> = wp.iter().map(|p| p.weight.clone()).collect();
        let mut s = header_comment("#", "litdata", plan);
        s.push_str(&units_comment(plan, "CombinedStreamingDataset"));
        s.push_str("# For data optimized with TokensLoader (fixed token blocks) use weights = token_shares.\n");
        s.push_str("from litdata import CombinedStreamingDataset, StreamingDataset\n\n");
        s.push_str(&format!("input_dirs = {}\n", py_list(&dirs, "")));
        // A one-element tuple needs its trailing comma.
        s.push_str(&format!("token_shares = ({},)\n", shares.join(", ")));
        match docs::doc_path_weights(plan, phase) {
            Some(q) => s.push_str(&format!("weights = ({},)\n", q.join(", "))),
            None => s.push_str("weights = token_shares\n"),
        }
        s.push_str("datasets = [StreamingDataset(input_dir=d, shuffle=True, drop_last=True) for d in input_dirs]\n");
        s.push_str("combined_dataset = CombinedStreamingDataset(\n");
        s.push_str("    datasets=datasets,\n");
        s.push_str(&format!("    seed={},\n", plan.seed));
        s.push_str("    weights=weights,\n    iterate_over_all=False,\n)\n");
        Ok(vec![Artifact::main(s)])
    }
    fn notes(&self, plan: &Plan) -> Vec<String> {
        match plan.doc_tokens {
            Some(_) => Vec::new(),
            None => vec![
                docs::unknown_lengths_note("litdata")
                    + " (right as they are for TokensLoader-optimized data)",
            ],
        }
    }
}
