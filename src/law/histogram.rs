//! Histogram machinery of the `gbdt` law (LightGBM's): features cut into at
//! most 255 bins once per fit (`Binned`), per-leaf histograms of gradient
//! sums and row counts (`Hist`), counted from a leaf's rows or derived as
//! parent minus sibling (`Source`), with recycled buffers (`Pool`). The
//! growth and split search that use them are in `gbdt.rs`.

/// Per-feature bin boundaries: value v falls in bin `#{b : b < v}`, so
/// "bin ≤ k" is exactly "v ≤ bounds[k]".
pub(super) struct Binned {
    pub n: usize,
    /// bins[f][i]: bin of row i in feature f.
    pub bins: Vec<Vec<u8>>,
    pub bounds: Vec<Vec<f64>>,
}

impl Binned {
    pub fn new(x: &[Vec<f64>], max_bin: usize) -> Binned {
        use rayon::prelude::*;
        let d = x[0].len();
        let n = x.len();
        // Columns first: each row is read once, front to back (reading one
        // feature of every row per feature was a cache miss per value).
        let mut cols = vec![Vec::with_capacity(n); d];
        for r in x {
            for (c, &v) in cols.iter_mut().zip(r) {
                c.push(v);
            }
        }
        let (bins, bounds): (Vec<Vec<u8>>, Vec<Vec<f64>>) = cols
            .par_iter()
            .map(|col| Self::bin_feature(col, max_bin))
            .unzip();
        Binned { n, bins, bounds }
    }

    /// One feature's bins (per row) and bin boundaries.
    fn bin_feature(col: &[f64], max_bin: usize) -> (Vec<u8>, Vec<f64>) {
        let n = col.len();
        let mut vals: Vec<f64> = col.to_vec();
        vals.sort_by(f64::total_cmp);
        let mut distinct = vals.clone();
        distinct.dedup();
        // Cut points: every distinct value when they fit (as LightGBM
        // does for small data), else equal-count quantiles.
        let cuts: Vec<f64> = if distinct.len() <= max_bin {
            distinct.clone()
        } else {
            let mut c: Vec<f64> = (1..=max_bin)
                .map(|k| vals[(k * n / max_bin).min(n - 1)])
                .collect();
            c.dedup();
            c
        };
        // Boundary after each cut (but the last): midway to the next distinct value.
        let mut b = Vec::new();
        for &c in &cuts[..cuts.len().saturating_sub(1)] {
            let next = distinct.partition_point(|&v| v <= c);
            if next < distinct.len() {
                b.push(0.5 * (c + distinct[next]));
            }
        }
        b.dedup();
        let bins = col
            .iter()
            .map(|&v| b.partition_point(|&t| t < v) as u8)
            .collect();
        (bins, b)
    }
}

/// Bins per feature in a histogram (`max_bin` ≤ 255, so every feature fits).
pub(super) const STRIDE: usize = 256;

/// Per-feature histograms of one leaf, flat: feature `f`'s bins are
/// `[f·STRIDE, f·STRIDE + nb_f)`: gradient sum and row count per bin.
pub(super) struct Hist {
    pub g: Vec<f64>,
    pub n: Vec<u32>,
}

/// Leaves with fewer (rows × features) than this are done on one thread:
/// below it, handing features to rayon costs more than it saves.
pub(super) const PARALLEL_WORK: usize = 1 << 15;

/// How a child's histograms are obtained.
pub(super) enum Source<'a> {
    /// Counted from the child's rows (their gradients gathered in row order).
    Rows(&'a [u32], &'a [f64]),
    /// The parent's minus the sibling's: LightGBM's subtraction trick, so
    /// only the smaller child of a split is ever counted.
    Minus(&'a Hist, &'a Hist),
}

impl Source<'_> {
    /// Feature `f`'s histogram into `hg`, `hn` (its `nb_f` bins).
    pub fn fill(&self, data: &Binned, f: usize, hg: &mut [f64], hn: &mut [u32]) {
        match self {
            Source::Rows(rows, gl) => count_rows(&data.bins[f], rows, gl, hg, hn),
            Source::Minus(p, s) => {
                let o = f * STRIDE;
                for b in 0..hg.len() {
                    hg[b] = p.g[o + b] - s.g[o + b];
                    hn[b] = p.n[o + b] - s.n[o + b];
                }
            }
        }
    }
}

/// Rows at or above which a histogram is counted in four interleaved parts.
const SPLIT_COUNT_ROWS: usize = 2048;

/// One feature's histogram of `rows` (bins `fb`, gradients `gl` in row order).
fn count_rows(fb: &[u8], rows: &[u32], gl: &[f64], hg: &mut [f64], hn: &mut [u32]) {
    hg.fill(0.0);
    hn.fill(0);
    if rows.len() < SPLIT_COUNT_ROWS {
        for (&r, &gr) in rows.iter().zip(gl) {
            let b = fb[r as usize] as usize;
            hg[b] += gr;
            hn[b] += 1;
        }
        return;
    }
    // Four partial histograms, rows dealt round-robin: consecutive rows in
    // one bin (common: many mixtures give a domain weight 0) no longer wait
    // on each other's stores. (Summation order is fixed: same on any thread.)
    let mut pg = [[0.0f64; STRIDE]; 4];
    let mut pn = [[0u32; STRIDE]; 4];
    let mut r4 = rows.chunks_exact(4);
    let mut g4 = gl.chunks_exact(4);
    for (r, g) in (&mut r4).zip(&mut g4) {
        for k in 0..4 {
            let b = fb[r[k] as usize] as usize;
            pg[k][b] += g[k];
            pn[k][b] += 1;
        }
    }
    for (&r, &g) in r4.remainder().iter().zip(g4.remainder()) {
        let b = fb[r as usize] as usize;
        pg[0][b] += g;
        pn[0][b] += 1;
    }
    for b in 0..hg.len() {
        hg[b] = (pg[0][b] + pg[1][b]) + (pg[2][b] + pg[3][b]);
        hn[b] = pn[0][b] + pn[1][b] + pn[2][b] + pn[3][b];
    }
}

/// Recycled histogram buffers (fresh 200 KB buffers per leaf cost more in
/// page faults than the counting itself).
#[derive(Default)]
pub(super) struct Pool(pub Vec<Hist>);

impl Pool {
    pub fn take(&mut self, d: usize) -> Hist {
        self.0.pop().unwrap_or_else(|| Hist {
            g: vec![0.0; d * STRIDE],
            n: vec![0; d * STRIDE],
        })
    }
}
