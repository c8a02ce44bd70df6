//! Proxy training's batches: which domain each row comes from (by mixture
//! weight) and which window of that domain's training tokens it reads, from
//! seeded streams.

use crate::corpus::cache::TokenView;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Draws training windows of `seq_len + 1` tokens: domain by mixture weight,
/// offset uniformly within the domain's train tokens.
///
/// Common random numbers: the domain of each row comes from one stream (an
/// inverse-CDF draw, so two nearby mixtures pick the same domain for most
/// rows) and each domain's window offsets from a stream of its own, so the
/// k-th window drawn from a domain is the same whatever the mixture. Runs of
/// one seed on different mixtures then differ by the mixture, not by which
/// text they happened to see — the noise a mixing law must see through.
pub(crate) struct Batcher<'a> {
    views: Vec<TokenView<'a>>,
    /// Switched by a scheduled run's controller between steps.
    pub(crate) domain_dist: WeightedIndex<f64>,
    rng: StdRng,
    offset_rngs: Vec<StdRng>,
    window: usize,
    /// The domain of each row of the last batch.
    pub(crate) row_domains: Vec<usize>,
}

impl<'a> Batcher<'a> {
    pub(crate) fn new(
        views: Vec<TokenView<'a>>,
        domain_dist: WeightedIndex<f64>,
        data_seed: u64,
        window: usize,
    ) -> Self {
        let offset_rngs = (0..views.len() as u64)
            .map(|d| StdRng::seed_from_u64(data_seed.wrapping_add((d + 1).wrapping_mul(GOLDEN))))
            .collect();
        Batcher {
            views,
            domain_dist,
            rng: StdRng::seed_from_u64(data_seed),
            offset_rngs,
            window,
            row_domains: Vec::new(),
        }
    }

    pub(crate) fn next_batch(&mut self, batch_size: usize, buf: &mut Vec<u32>) {
        buf.resize(batch_size * self.window, 0);
        self.row_domains.clear();
        for row in buf.chunks_mut(self.window) {
            let d = self.domain_dist.sample(&mut self.rng);
            let view = self.views[d];
            let start = self.offset_rngs[d].random_range(0..=view.len() - self.window);
            view.copy_to(start, row);
            self.row_domains.push(d);
        }
    }
}

/// 2^64 / φ: spreads seeds of sibling streams apart.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
