//! Head split and merge for the fused attention path: one pass from a
//! projection `[B·T, H·hd]` to contiguous heads `[B, H, T, hd]` with RoPE
//! applied on the way, one pass back, each with its own backward.

use super::ops::contiguous_f32;
use super::simd::wide;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// RoPE tables: `cos`/`sin` of position `p` and frequency `i` at `p·half + i`
/// (`half = head_dim / 2`), for positions `0..max_seq`.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    pub half: usize,
}

/// Splits a projection `[B·T, H·hd]` (or `[B, T, H·hd]`) into heads
/// `[B, H, T, hd]`, contiguous, applying rotate-half RoPE (when `rope` is set)
/// in the same pass: for `i < hd/2`, `y_i = x_i·cos − x_{i+hd/2}·sin` and
/// `y_{i+hd/2} = x_{i+hd/2}·cos + x_i·sin`.
///
/// Why it exists: from basic ops this is reshape, transpose, a strided copy and
/// then RoPE's six nodes (two broadcast multiplies, two narrows, neg, cat, add)
/// over the `[B, H, T, hd]` tensor, each with its own allocation and backward;
/// here it is one pass each way (backward: rotate by −θ and merge the heads).
pub struct HeadSplit {
    pub seq: usize,
    pub n_heads: usize,
    pub rope: Option<RopeTables>,
}

/// Merges heads `[B, H, T, hd]` back into `[B·T, H·hd]`: one copy instead of
/// transpose + reshape (a strided copy), and one op to backprop through.
pub struct HeadMerge;

/// The kernel of `HeadSplit`/`HeadMerge` and their backwards: copies `x` from
/// `[B, T, H, hd]` to `[B, H, T, hd]` (`to_heads`) or back, rotating each
/// row by +θ (`inverse == false`) or −θ with the RoPE tables if given.
#[inline(always)]
fn permute_heads(
    x: &[f32],
    (b, t, h, hd): (usize, usize, usize, usize),
    to_heads: bool,
    rope: Option<&RopeTables>,
    inverse: bool,
) -> Result<Vec<f32>> {
    if hd == 0 || x.len() != b * t * h * hd {
        candle_core::bail!("heads: {} elements for [{b}, {t}, {h}, {hd}]", x.len());
    }
    if let Some(r) = rope {
        if 2 * r.half != hd || r.cos.len() < t * r.half || r.sin.len() < t * r.half {
            candle_core::bail!("heads: RoPE tables do not cover T={t}, head_dim={hd}");
        }
    }
    let n = x.len();
    let mut out = Vec::with_capacity(n);
    // Output rows in order, each written once in full (no zero-fill first).
    let mut rows = out.spare_capacity_mut()[..n].chunks_exact_mut(hd);
    let (outer, inner) = if to_heads { (h, t) } else { (t, h) };
    let sign = if inverse { -1.0f32 } else { 1.0 };
    for bi in 0..b {
        for o in 0..outer {
            for i in 0..inner {
                let (hi, ti) = if to_heads { (o, i) } else { (i, o) };
                let src = if to_heads {
                    ((bi * t + ti) * h + hi) * hd
                } else {
                    ((bi * h + hi) * t + ti) * hd
                };
                let row = &x[src..src + hd];
                let dst = rows.next().expect("b·outer·inner rows of hd");
                match rope {
                    None => {
                        for (d, v) in dst.iter_mut().zip(row) {
                            d.write(*v);
                        }
                    }
                    Some(r) => {
                        let half = r.half;
                        let cos = &r.cos[ti * half..(ti + 1) * half];
                        let sin = &r.sin[ti * half..(ti + 1) * half];
                        let (x1, x2) = row.split_at(half);
                        let (d1, d2) = dst.split_at_mut(half);
                        let ends = d1.iter_mut().zip(d2.iter_mut());
                        for ((((o1, o2), a), b), (c, s)) in
                            ends.zip(x1).zip(x2).zip(cos.iter().zip(sin))
                        {
                            let s = sign * s; // −θ: sin flips, cos does not
                            o1.write(a * c - b * s);
                            o2.write(b * c + a * s);
                        }
                    }
                }
            }
        }
    }
    assert!(rows.next().is_none(), "heads: rows left unwritten");
    // SAFETY: the loops took all n/hd rows of the first n slots and wrote every
    // element of each (hd = 2·half with RoPE, checked above).
    unsafe { out.set_len(n) };
    Ok(out)
}

impl HeadSplit {
    fn dims(&self, elems: usize, last: usize) -> Result<(usize, usize, usize, usize)> {
        let (t, h) = (self.seq, self.n_heads);
        if t == 0
            || h == 0
            || last == 0
            || !last.is_multiple_of(h)
            || !elems.is_multiple_of(t * last)
        {
            candle_core::bail!("head-split: {elems} elements, rows of {last}, T={t}, H={h}");
        }
        Ok((elems / (t * last), t, h, last / h))
    }
}

impl CustomOp1 for HeadSplit {
    fn name(&self) -> &'static str {
        "head-split"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let dims = self.dims(x.len(), *l.dims().last().unwrap_or(&0))?;
        let out = wide(
            #[inline(always)]
            || permute_heads(x, dims, true, self.rope.as_ref(), false),
        )?;
        let (b, t, h, hd) = dims;
        Ok((CpuStorage::F32(out), Shape::from((b, h, t, hd))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = self.dims(arg.elem_count(), arg.dim(candle_core::D::Minus1)?)?;
        let op = HeadsBwd {
            dims,
            to_heads: false,
            rope: self.rope.clone(),
            shape: arg.shape().clone(),
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for HeadMerge {
    fn name(&self) -> &'static str {
        "head-merge"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (b, h, t, hd) = l.shape().dims4()?;
        let out = wide(
            #[inline(always)]
            || permute_heads(x, (b, t, h, hd), false, None, false),
        )?;
        Ok((CpuStorage::F32(out), Shape::from((b * t, h * hd))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, h, t, hd) = arg.dims4()?;
        let op = HeadsBwd {
            dims: (b, t, h, hd),
            to_heads: true,
            rope: None,
            shape: arg.shape().clone(),
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// Backward of `HeadSplit` (merge, rotating by −θ) and of `HeadMerge` (split).
struct HeadsBwd {
    dims: (usize, usize, usize, usize),
    to_heads: bool,
    rope: Option<RopeTables>,
    shape: Shape,
}

impl CustomOp1 for HeadsBwd {
    fn name(&self) -> &'static str {
        "heads-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let out = wide(
            #[inline(always)]
            || permute_heads(x, self.dims, self.to_heads, self.rope.as_ref(), true),
        )?;
        Ok((CpuStorage::F32(out), self.shape.clone()))
    }
}
