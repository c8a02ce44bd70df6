//! The gradient-boosted-trees mixing law (`gbdt`): RegMix's LightGBM
//! regressor, written here. Histogram splits (each feature's values cut into
//! at most `max_bin` bins), leaf-wise growth up to `num_leaves`, shrinkage
//! `learning_rate`, L2 leaf regularization `lambda_l2`, `min_data_in_leaf`,
//! squared-error boosting from the mean — LightGBM's defaults and RegMix's
//! settings (1000 rounds, learning rate 0.01).
//!
//! Early stopping never looks at the runs being scored: a seeded
//! `valid_fraction` of the *training* runs is held out, boosting stops after
//! `early_stopping_rounds` rounds without improvement on it, and the model is
//! refit on all training runs with the best round count.
//!
//! Why not a crate: linfa has no boosted trees, and of the pure-Rust options
//! (`perpetual`, `forust-ml`, smartcore) and bindings, `perpetual` needs
//! nightly Rust, `forust-ml` is no longer developed (its author moved to
//! perpetual) and grows depth-wise with its own loss-guided defaults,
//! smartcore's `XGRegressor` splits on exact values with no histogram, leaf
//! limit or early stopping, and `lightgbm3` needs cmake ≥ 3.28 and libclang
//! plus a 5-minute C++ build on every CI run. The algorithm is ~300 lines; on
//! 512 runs × 17 domains a full fit takes well under a second.
//!
//! Speed on large tables follows LightGBM: only the smaller child of a split
//! is counted (the larger is the parent's histogram minus it), histograms and
//! split search run per feature on every core (rayon), training rows take
//! their leaf's value without walking the tree, and histogram buffers are
//! recycled. Results do not depend on the number of threads.

use super::histogram::{Binned, Hist, Pool, Source, PARALLEL_WORK, STRIDE};
pub use super::trees::{FittedGbdt, Tree};
use super::{FittedLaw, Hyper, MixingLaw};
use crate::error::Result;
use crate::params::{ensure, Hyperparams};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Hyperparameters; defaults are LightGBM's (and RegMix's rounds/learning rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtLaw {
    /// Maximum boosting rounds (RegMix: 1000).
    pub rounds: usize,
    /// Shrinkage applied to every leaf value (RegMix: 0.01).
    pub learning_rate: f64,
    /// Leaves per tree (LightGBM default 31).
    pub num_leaves: usize,
    /// Depth limit; 0 = none (LightGBM default -1).
    pub max_depth: usize,
    /// Fewest runs in a leaf (LightGBM default 20).
    pub min_data_in_leaf: usize,
    /// L2 penalty on leaf values (LightGBM default 0).
    pub lambda_l2: f64,
    /// Histogram bins per feature (LightGBM default 255).
    pub max_bin: usize,
    /// Share of the training runs held out for early stopping (0 = no early stopping).
    pub valid_fraction: f64,
    /// Rounds without improvement on the held-out share before stopping.
    pub early_stopping_rounds: usize,
}

impl Default for GbdtLaw {
    fn default() -> Self {
        GbdtLaw {
            rounds: 1000,
            learning_rate: 0.01,
            num_leaves: 31,
            max_depth: 0,
            min_data_in_leaf: 20,
            lambda_l2: 0.0,
            max_bin: 255,
            valid_fraction: 0.2,
            early_stopping_rounds: 100,
        }
    }
}

impl Hyperparams for GbdtLaw {
    const OWNER: &'static str = "law gbdt";

    fn validate(&self) -> Result<()> {
        let o = Self::OWNER;
        for (name, v, min) in [
            ("rounds", self.rounds, 1),
            ("num_leaves", self.num_leaves, 2),
            ("min_data_in_leaf", self.min_data_in_leaf, 1),
            ("max_bin", self.max_bin, 2),
            ("early_stopping_rounds", self.early_stopping_rounds, 1),
        ] {
            ensure(
                v >= min && v <= 1_000_000_000,
                o,
                format!("{name} must be a whole number ≥ {min}, got {v}"),
            )?;
        }
        ensure(
            self.max_depth <= 1_000_000_000,
            o,
            format!(
                "max_depth must be a whole number ≥ 0, got {}",
                self.max_depth
            ),
        )?;
        ensure(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            o,
            format!("learning_rate must be > 0, got {}", self.learning_rate),
        )?;
        ensure(
            self.lambda_l2.is_finite() && self.lambda_l2 >= 0.0,
            o,
            format!("lambda_l2 must be ≥ 0, got {}", self.lambda_l2),
        )?;
        ensure(self.max_bin <= 255, o, "max_bin must be ≤ 255")?;
        ensure(
            (0.0..0.9).contains(&self.valid_fraction),
            o,
            format!(
                "valid_fraction must be in [0, 0.9), got {}",
                self.valid_fraction
            ),
        )
    }
}

pub fn build(hyper: &Hyper) -> Result<Box<dyn MixingLaw>> {
    Ok(Box::new(GbdtLaw::from_overrides(hyper)?))
}

pub fn load(params: &serde_json::Value, n_domains: usize) -> Result<Box<dyn FittedLaw>> {
    Ok(Box::new(FittedGbdt::from_params(params, n_domains)?))
}

/// A leaf during growth: its rows, gradient sum, depth, histograms and best split.
struct Leaf {
    node: usize,
    rows: Vec<u32>,
    sum_g: f64,
    depth: usize,
    /// Kept while the leaf may still be split (its children's come from it).
    hist: Option<Hist>,
    split: Option<Split>,
}

#[derive(Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    bin: usize,
}

impl GbdtLaw {
    /// Fill `out` from `src` and find the leaf's best split, feature by
    /// feature (in parallel for large leaves). Each feature's histogram and
    /// best bin are computed the same way on any number of threads, and ties
    /// go to the lowest feature, then the lowest bin: the result does not
    /// depend on threads. `None` when the leaf may not or cannot be split.
    fn histograms_and_split(
        &self,
        data: &Binned,
        src: Source,
        out: &mut Hist,
        n: usize,
        sum_g: f64,
        depth: usize,
    ) -> Option<Split> {
        use rayon::prelude::*;
        let d = data.bins.len();
        let splittable =
            n >= 2 * self.min_data_in_leaf && !(self.max_depth > 0 && depth >= self.max_depth);
        let one = |f: usize, hg: &mut [f64], hn: &mut [u32]| -> Option<(f64, usize)> {
            let nb = data.bounds[f].len() + 1;
            let (hg, hn) = (&mut hg[..nb], &mut hn[..nb]);
            src.fill(data, f, hg, hn);
            if splittable {
                self.best_bin(hg, hn, n, sum_g)
            } else {
                None
            }
        };
        let per_feature = |(f, (hg, hn)): (usize, (&mut [f64], &mut [u32]))| one(f, hg, hn);
        let chunks = out.g.chunks_mut(STRIDE).zip(out.n.chunks_mut(STRIDE));
        let work = match &src {
            Source::Rows(rows, _) => rows.len() * d,
            Source::Minus(..) => d * STRIDE,
        };
        let best: Vec<Option<(f64, usize)>> = if work >= PARALLEL_WORK {
            out.g
                .par_chunks_mut(STRIDE)
                .zip(out.n.par_chunks_mut(STRIDE))
                .enumerate()
                .map(per_feature)
                .collect()
        } else {
            chunks.enumerate().map(per_feature).collect()
        };
        let mut split: Option<Split> = None;
        for (feature, b) in best.into_iter().enumerate() {
            if let Some((gain, bin)) = b {
                if split.is_none_or(|s| gain > s.gain) {
                    split = Some(Split { gain, feature, bin });
                }
            }
        }
        split
    }

    /// Best threshold bin of one feature's histogram (unit hessians): the
    /// gain and the bin, first bin on ties.
    fn best_bin(&self, hg: &[f64], hn: &[u32], n: usize, sum_g: f64) -> Option<(f64, usize)> {
        let nb = hg.len();
        if nb < 2 {
            return None;
        }
        let lam = self.lambda_l2;
        let parent = sum_g * sum_g / (n as f64 + lam);
        let mut best: Option<(f64, usize)> = None;
        let (mut lg, mut ln) = (0.0, 0usize);
        for b in 0..nb - 1 {
            lg += hg[b];
            ln += hn[b] as usize;
            if hn[b] == 0 || ln < self.min_data_in_leaf {
                continue;
            }
            let rn = n - ln;
            if rn < self.min_data_in_leaf {
                break;
            }
            let rg = sum_g - lg;
            let gain = lg * lg / (ln as f64 + lam) + rg * rg / (rn as f64 + lam) - parent;
            if gain > 1e-12 && best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, b));
            }
        }
        best
    }

    /// Grow one tree on `rows` fitting gradients `g`; leaf values include
    /// shrinkage. Also returns each leaf's rows and value, so the caller can
    /// update its predictions without walking the tree.
    fn grow(
        &self,
        data: &Binned,
        rows: Vec<u32>,
        g: &[f64],
        pool: &mut Pool,
    ) -> (Tree, Vec<(Vec<u32>, f64)>) {
        let d = data.bins.len();
        let mut tree = Tree {
            feature: vec![-1],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![0.0],
        };
        let gather = |rows: &[u32]| -> Vec<f64> { rows.iter().map(|&r| g[r as usize]).collect() };
        let gl = gather(&rows);
        let sum_g: f64 = gl.iter().sum();
        let mut hist = pool.take(d);
        let split = self.histograms_and_split(
            data,
            Source::Rows(&rows, &gl),
            &mut hist,
            rows.len(),
            sum_g,
            0,
        );
        let keep = |h: Hist, split: Option<Split>, pool: &mut Pool| match split {
            Some(_) => Some(h),
            None => {
                pool.0.push(h);
                None
            }
        };
        let mut leaves = vec![Leaf {
            node: 0,
            rows,
            sum_g,
            depth: 0,
            hist: keep(hist, split, pool),
            split,
        }];
        while leaves.len() < self.num_leaves {
            // Leaf-wise: split the leaf whose best split gains most.
            let Some((li, _)) = leaves
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.split.map(|s| (i, s.gain)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                break;
            };
            let leaf = leaves.swap_remove(li);
            let s = leaf.split.expect("chosen leaf has a split");
            let parent = leaf.hist.expect("a splittable leaf keeps its histograms");
            let fb = &data.bins[s.feature];
            let (lrows, rrows): (Vec<u32>, Vec<u32>) = leaf
                .rows
                .iter()
                .partition(|&&r| (fb[r as usize] as usize) <= s.bin);
            let (l, r) = (tree.feature.len(), tree.feature.len() + 1);
            tree.feature[leaf.node] = s.feature as i32;
            tree.threshold[leaf.node] = data.bounds[s.feature][s.bin];
            tree.left[leaf.node] = l as u32;
            tree.right[leaf.node] = r as u32;
            for _ in 0..2 {
                tree.feature.push(-1);
                tree.threshold.push(0.0);
                tree.left.push(0);
                tree.right.push(0);
                tree.value.push(0.0);
            }
            let depth = leaf.depth + 1;
            // Count the smaller child; the larger is the parent minus it.
            let (small_node, small_rows, large_node, large_rows) = if lrows.len() <= rrows.len() {
                (l, lrows, r, rrows)
            } else {
                (r, rrows, l, lrows)
            };
            let small_g = gather(&small_rows);
            let small_sum: f64 = small_g.iter().sum();
            let large_sum: f64 = large_rows.iter().map(|&r| g[r as usize]).sum();
            let mut small_hist = pool.take(d);
            let small_split = self.histograms_and_split(
                data,
                Source::Rows(&small_rows, &small_g),
                &mut small_hist,
                small_rows.len(),
                small_sum,
                depth,
            );
            let mut large_hist = pool.take(d);
            let large_split = self.histograms_and_split(
                data,
                Source::Minus(&parent, &small_hist),
                &mut large_hist,
                large_rows.len(),
                large_sum,
                depth,
            );
            pool.0.push(parent);
            for (node, rows, sum_g, hist, split) in [
                (small_node, small_rows, small_sum, small_hist, small_split),
                (large_node, large_rows, large_sum, large_hist, large_split),
            ] {
                leaves.push(Leaf {
                    node,
                    rows,
                    sum_g,
                    depth,
                    hist: keep(hist, split, pool),
                    split,
                });
            }
            // Children in node order, as a plain left-then-right growth has them.
            let n = leaves.len();
            if leaves[n - 2].node > leaves[n - 1].node {
                leaves.swap(n - 2, n - 1);
            }
        }
        let mut out = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            // Newton step for squared error: −G / (H + λ), H = row count.
            let v = -self.learning_rate * leaf.sum_g / (leaf.rows.len() as f64 + self.lambda_l2);
            tree.value[leaf.node] = v;
            if let Some(h) = leaf.hist {
                pool.0.push(h);
            }
            out.push((leaf.rows, v));
        }
        (tree, out)
    }

    /// Boost on `rows` for at most `rounds`; with `valid`, stop early on its
    /// MSE and keep the best prefix. Returns the booster.
    fn boost(
        &self,
        x: &[Vec<f64>],
        data: &Binned,
        y: &[f64],
        rows: &[u32],
        valid: &[u32],
        rounds: usize,
    ) -> FittedGbdt {
        let init = rows.iter().map(|&r| y[r as usize]).sum::<f64>() / rows.len() as f64;
        let mut pred = vec![init; data.n];
        let mut g = vec![0.0; data.n];
        let mut trees = Vec::new();
        let mut pool = Pool::default();
        let (mut best_mse, mut best_len) = (f64::INFINITY, 0usize);
        for round in 0..rounds {
            for &r in rows {
                g[r as usize] = pred[r as usize] - y[r as usize];
            }
            let (tree, leaves) = self.grow(data, rows.to_vec(), &g, &mut pool);
            // Training rows: their leaf is known. Held-out rows walk the tree.
            for (leaf_rows, v) in &leaves {
                for &r in leaf_rows {
                    pred[r as usize] += v;
                }
            }
            for &r in valid {
                pred[r as usize] += tree.predict(&x[r as usize]);
            }
            trees.push(tree);
            if !valid.is_empty() {
                let mse = valid
                    .iter()
                    .map(|&r| (pred[r as usize] - y[r as usize]).powi(2))
                    .sum::<f64>()
                    / valid.len() as f64;
                if mse < best_mse {
                    (best_mse, best_len) = (mse, round + 1);
                } else if round + 1 - best_len >= self.early_stopping_rounds {
                    break;
                }
            }
        }
        if !valid.is_empty() {
            trees.truncate(best_len.max(1));
        }
        FittedGbdt::new(init, trees, x[0].len())
    }
}

impl MixingLaw for GbdtLaw {
    fn kind(&self) -> &'static str {
        "gbdt"
    }

    fn fit(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<Box<dyn FittedLaw>> {
        Ok(Box::new(self.fit_gbdt(x, y, seed)?))
    }
}

impl GbdtLaw {
    /// Fit and return the concrete booster (the ensemble keeps these).
    pub fn fit_gbdt(&self, x: &[Vec<f64>], y: &[f64], seed: u64) -> Result<FittedGbdt> {
        super::check_xy(x, y)?;
        let n = x.len();
        let data = Binned::new(x, self.max_bin);
        let all: Vec<u32> = (0..n as u32).collect();
        let n_valid = (self.valid_fraction * n as f64).round() as usize;
        let rounds = if n_valid >= 1 && n - n_valid >= 2 * self.min_data_in_leaf.min(n / 2) {
            let mut order = all.clone();
            order.shuffle(&mut StdRng::seed_from_u64(seed));
            let (valid, train) = order.split_at(n_valid);
            self.boost(x, &data, y, train, valid, self.rounds)
                .best_rounds
        } else {
            self.rounds
        };
        Ok(self.boost(x, &data, y, &all, &[], rounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn simplex(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let r: Vec<f64> = (0..d).map(|_| rng.random::<f64>()).collect();
                let s: f64 = r.iter().sum();
                r.iter().map(|v| v / s).collect()
            })
            .collect()
    }

    #[test]
    fn learns_a_step_and_a_smooth_function() {
        let x = simplex(400, 4, 1);
        let f = |r: &[f64]| if r[0] > 0.3 { 1.0 } else { 0.0 } + 2.0 * r[1];
        let y: Vec<f64> = x.iter().map(|r| f(r)).collect();
        let law = GbdtLaw {
            learning_rate: 0.1,
            ..GbdtLaw::default()
        };
        let fitted = law.fit(&x, &y, 0).unwrap();
        let test = simplex(200, 4, 2);
        let pred: Vec<f64> = test.iter().map(|r| fitted.predict(r)).collect();
        let truth: Vec<f64> = test.iter().map(|r| f(r)).collect();
        let mse = pred
            .iter()
            .zip(&truth)
            .map(|(p, t)| (p - t).powi(2))
            .sum::<f64>()
            / 200.0;
        assert!(mse < 0.01, "mse {mse}");
    }

    #[test]
    fn reloads_same_predictions_and_rejects_bad_trees() {
        let x = simplex(100, 3, 3);
        let y: Vec<f64> = x.iter().map(|r| r[0] * r[0]).collect();
        let f = GbdtLaw::default().fit(&x, &y, 7).unwrap();
        let g = load(&f.params(), 3).unwrap();
        assert_eq!(f.predict(&x[5]), g.predict(&x[5]));
        assert!(load(&f.params(), 4).is_err());
        let mut p = f.params();
        let tree = p["trees"][0].as_str().unwrap().to_string();
        let root = tree.split(' ').next().unwrap();
        if !root.starts_with('=') {
            // Point the root's left child at itself: a loop must be refused.
            let parts: Vec<&str> = root.split(':').collect();
            let looped = format!("{}:{}:0:{}", parts[0], parts[1], parts[3]);
            p["trees"][0] = serde_json::json!(tree.replacen(root, &looped, 1));
            assert!(load(&p, 3).is_err(), "self-loop must be refused");
        }
        p["trees"][0] = serde_json::json!("1:0.5:x:2");
        assert!(load(&p, 3).err().unwrap().to_string().contains("node 0"));
        let t = &FittedGbdt::from_params(&f.params(), 3).unwrap().trees[0];
        assert_eq!(
            &Tree::decode(&t.encode()).unwrap(),
            t,
            "round trip is exact"
        );
    }

    #[test]
    fn same_model_on_any_number_of_threads() {
        // 3000 rows x 12 features: the root and large leaves take the
        // parallel path (PARALLEL_WORK), small ones the serial one, and the
        // subtraction trick gives every larger child's histograms.
        let x = simplex(3000, 12, 9);
        let y: Vec<f64> = x
            .iter()
            .map(|r| (r[0] + 1e-3).ln() - 2.0 * r[3] * r[5] + r[7])
            .collect();
        let law = GbdtLaw {
            rounds: 60,
            ..GbdtLaw::default()
        };
        let fit_on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| law.fit(&x, &y, 3).unwrap().params())
        };
        let one = fit_on(1);
        assert_eq!(one, fit_on(4), "1 thread vs 4 threads");
        assert_eq!(one, fit_on(3), "1 thread vs 3 threads");
        // And it learned something: deep trees, not stumps.
        let n_trees = one["trees"].as_array().unwrap().len();
        assert!(n_trees > 10, "{n_trees} trees");
    }

    #[test]
    fn same_seed_same_model_and_bad_hyper_rejected() {
        let x = simplex(120, 3, 4);
        let y: Vec<f64> = x.iter().map(|r| r[1]).collect();
        let a = GbdtLaw::default().fit(&x, &y, 1).unwrap().params();
        let b = GbdtLaw::default().fit(&x, &y, 1).unwrap().params();
        assert_eq!(a, b);
        for (k, v) in [("rounds", 0.5), ("learning_rate", 0.0), ("depth", 1.0)] {
            let h: Hyper = [(k.to_string(), v.into())].into_iter().collect();
            assert!(GbdtLaw::from_overrides(&h).is_err(), "{k}={v}");
        }
    }
}
