//! Token shares → document probabilities, for samplers that draw whole
//! documents (HF `interleave_datasets` on raw text, LitData over documents).
//! mixopt's weights are shares of training *tokens*; a sampler that picks a
//! document from domain i with probability q_i gives domain i a token share
//! q_i·L_i / Σ_j q_j·L_j, where L_i is the mean tokens per document. So the
//! probabilities that give token shares w are q_i ∝ w_i / L_i. Without the
//! lengths (`--cache` or `--doc-tokens`) the conversion cannot be made, and
//! the exporters say so.

use super::{rounding, Phase, Plan};

/// Document probabilities for a phase (plan domain order), or None when the
/// mean document lengths are unknown.
pub fn doc_probabilities(plan: &Plan, phase: &Phase) -> Option<Vec<f64>> {
    let lengths = plan.doc_tokens.as_ref()?;
    let raw: Vec<f64> = phase
        .weights
        .values
        .iter()
        .zip(lengths)
        .map(|(w, l)| if *w > 0.0 { w / l } else { 0.0 })
        .collect();
    let z: f64 = raw.iter().sum();
    Some(raw.iter().map(|r| r / z).collect())
}

/// The phase's document probabilities as printed weights (full precision).
pub fn doc_weights_text(plan: &Plan, phase: &Phase) -> Option<Vec<String>> {
    doc_probabilities(plan, phase).map(|q| q.iter().map(|v| rounding::plain(*v)).collect())
}

/// The note every document-sampling format gives when lengths are unknown.
pub fn unknown_lengths_note(format: &str) -> String {
    format!(
        "{format}: the weights are token shares but this sampler draws documents; \
         give --cache CACHE (or --doc-tokens NAME=N) to convert them with each domain's \
         mean document length — unconverted, a domain with longer documents gets more tokens"
    )
}

/// Per-path document probabilities in `weighted_paths` order (a domain's
/// probability split equally among its paths), or None when unknown.
pub fn doc_path_weights(plan: &Plan, phase: &Phase) -> Option<Vec<String>> {
    let q = doc_probabilities(plan, phase)?;
    let wp = super::weighted_paths(plan, phase, false);
    Some(
        wp.iter()
            .map(|p| {
                let i = plan
                    .domains
                    .iter()
                    .position(|d| *d == p.domain)
                    .unwrap_or(0);
                let n = plan.paths.get(&p.domain).train.len().max(1) as f64;
                rounding::plain(q[i] / n)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_ten_times_longer_get_a_tenth_of_the_draws() {
        let mut plan = crate::export::testing::plan("web=0.8,books=0.2");
        plan.doc_tokens = Some(vec![100.0, 1000.0]);
        let q = doc_probabilities(&plan, &plan.phases[0]).unwrap();
        // q ∝ (0.8/100, 0.2/1000) = (0.008, 0.0002)
        assert!((q[1] - 0.0002 / 0.0082).abs() < 1e-12);
        // And those draws give back the token shares.
        let tokens = [q[0] * 100.0, q[1] * 1000.0];
        let share = tokens[1] / (tokens[0] + tokens[1]);
        assert!((share - 0.2).abs() < 1e-12);
    }
}
