//! Fused CPU kernels for the proxy's hottest element-wise chains, each a candle
//! custom op with its own backward.
//!
//! Why they exist: built from basic ops, each element-wise chain is several
//! passes forward and more backward, each allocating a tensor; for the proxies'
//! small matrices those passes cost as much as the matmuls. Candle's own fused
//! `softmax_last_dim` and `rms_norm` have no backward (candle 0.11); RMSNorm
//! from basic ops is six passes. Fewer nodes also matter
//! backward: candle's backward allocates a zero tensor and adds into it for
//! every gradient a node receives. Each op here is tested against the unfused
//! composition, forward and gradient.
//!
//! The kernels share `simd`'s `fast_exp` (a vectorizable `e^x`),
//! lane-parallel reductions, and `wide` (the hot loop compiled for AVX2 and
//! AVX-512, the best the CPU has picked at run time). The attention heads'
//! split and merge are in `heads`.
//!
//! CPU only: on other devices the model uses the unfused ops.

use super::simd::{dot, fast_exp, max, push_all, sigmoid, sum_map, wide};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("{op}: expects f32"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// In place on one head's T×T block of raw scores `p`: row `i` becomes
/// `softmax(scale · p[i][..=i])`, zero beyond column `i` (the fused
/// attention's forward, and its backward's recomputation).
pub(crate) fn causal_softmax_block(p: &mut [f32], t: usize, scale: f32) {
    if t == 0 {
        return;
    }
    wide(
        #[inline(always)]
        || {
            for (i, row) in p.chunks_exact_mut(t).enumerate() {
                let (seen, future) = row.split_at_mut(i + 1);
                let m = max(seen) * scale;
                seen.iter_mut().for_each(|v| *v = fast_exp(*v * scale - m));
                let inv = 1.0 / sum_map(seen, |y| y);
                seen.iter_mut().for_each(|v| *v *= inv);
                future.fill(0.0);
            }
        },
    )
}

/// In place on one head's T×T block: `d` (∂loss/∂P) becomes the gradient of
/// the raw scores, `scale · P ⊙ (d − Σ_j P_j d_j)` per row, zero where masked.
pub(crate) fn causal_softmax_bwd_block(p: &[f32], d: &mut [f32], t: usize, scale: f32) {
    if t == 0 {
        return;
    }
    wide(
        #[inline(always)]
        || {
            for (i, (pr, dr)) in p.chunks_exact(t).zip(d.chunks_exact_mut(t)).enumerate() {
                let (ps, (ds, dfuture)) = (&pr[..i + 1], dr.split_at_mut(i + 1));
                let dot = dot(ps, ds);
                ds.iter_mut()
                    .zip(ps)
                    .for_each(|(g, &y)| *g = scale * y * (*g - dot));
                dfuture.fill(0.0);
            }
        },
    )
}

/// RMSNorm `y = x / sqrt(mean(x²) + eps) · gain` over the last dimension, in
/// one pass (the basic-op version is six, each with its own backward).
pub struct RmsNorm {
    pub eps: f32,
}

/// `1 / sqrt(mean(row²) + eps)`.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = sum_map(row, |v| v * v) / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let gain = contiguous_f32(s2, l2, self.name())?;
        let d = gain.len();
        if l1.dims().last() != Some(&d) {
            candle_core::bail!("rms-norm: gain of {d} for rows of {:?}", l1.dims());
        }
        whole_rows(x, d, self.name())?;
        let out = wide(
            #[inline(always)]
            || {
                let mut out = Vec::with_capacity(x.len());
                for xr in x.chunks_exact(d) {
                    let r = inv_rms(xr, self.eps);
                    push_all(&mut out, xr.iter().zip(gain).map(|(v, g)| v * r * g));
                }
                out
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gain: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        // Both gradients from one pass, packed: rows of dx, then dgain.
        let both = x.apply_op3_no_bwd(gain, &g, &RmsNormBwd { eps: self.eps })?;
        let (n, d) = (x.elem_count(), gain.elem_count());
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgain = both.narrow(0, n, d)?;
        Ok((Some(dx), Some(dgain)))
    }
}

/// RMSNorm backward in one pass over `x` and the incoming gradient `g`, both
/// gradients packed in one flat tensor `[dx…, dgain…]` with, per row and
/// `r = inv_rms(x)`:
/// `dx = r·(g⊙gain) − x·r³/d·Σ_k g_k gain_k x_k` and `dgain += g ⊙ x · r`.
struct RmsNormBwd {
    eps: f32,
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let gain = contiguous_f32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let d = gain.len();
        whole_rows(x, d, self.name())?;
        same_len(x, g, self.name())?;
        let out = wide(
            #[inline(always)]
            || {
                let mut out = Vec::with_capacity(x.len() + d);
                let mut dgain = vec![0f32; d];
                let mut gg = vec![0f32; d]; // g ⊙ gain for the current row
                for (xr, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
                    let r = inv_rms(xr, self.eps);
                    for ((o, a), b) in gg.iter_mut().zip(gr).zip(gain) {
                        *o = a * b;
                    }
                    let k = r * r * r * dot(xr, &gg) / d as f32;
                    push_all(&mut out, xr.iter().zip(&gg).map(|(a, b)| r * b - a * k));
                    for ((o, a), b) in dgain.iter_mut().zip(xr).zip(gr) {
                        *o += a * b * r;
                    }
                }
                out.extend_from_slice(&dgain);
                out
            },
        );
        Ok((CpuStorage::F32(out), Shape::from(x.len() + d)))
    }
}

/// Mean cross-entropy (nats) of logits `[N, V]` against target ids `[N]` (u32):
/// log-sum-exp and the target logit in one pass per row, instead of
/// `log_softmax` (six passes) plus a gather.
pub struct CrossEntropy;

fn targets_u32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    let data = match s {
        CpuStorage::U32(d) => d,
        _ => candle_core::bail!("{op}: targets must be u32"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects contiguous targets"),
    }
}

/// Rows of `logits` with their target ids, checked against each other.
fn rows<'a>(
    op: &str,
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<(&'a [f32], &'a [u32], usize)> {
    let x = contiguous_f32(s1, l1, op)?;
    let t = targets_u32(s2, l2, op)?;
    let (n, v) = l1.shape().dims2()?;
    if t.len() != n {
        candle_core::bail!("{op}: {n} rows of logits but {} targets", t.len());
    }
    if v == 0 {
        candle_core::bail!("{op}: empty vocabulary");
    }
    if let Some(bad) = t.iter().find(|&&id| id as usize >= v) {
        candle_core::bail!("{op}: target id {bad} outside the vocabulary of {v}");
    }
    Ok((x, t, v))
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, t, v) = rows(self.name(), s1, l1, s2, l2)?;
        let total = wide(
            #[inline(always)]
            || {
                let mut total = 0f64;
                for (row, &id) in x.chunks_exact(v).zip(t) {
                    let max = max(row);
                    let sum = sum_map(row, |v| fast_exp(v - max));
                    total += (max + sum.ln() - row[id as usize]) as f64;
                }
                total
            },
        );
        let mean = (total / t.len().max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The incoming gradient is a scalar: fold it into the kernel rather
        // than a broadcast multiply over the logits.
        let scale = grad_res.to_dtype(candle_core::DType::F32)?.to_scalar()?;
        let d = logits.apply_op2_no_bwd(targets, &CrossEntropyBwd { scale })?;
        Ok((Some(d), None))
    }
}

/// `scale · (softmax(x) − onehot(target)) / N` per row: the gradient of the
/// mean loss times the incoming (scalar) gradient `scale`.
struct CrossEntropyBwd {
    scale: f32,
}

impl CustomOp2 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "cross-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, t, v) = rows(self.name(), s1, l1, s2, l2)?;
        let k = self.scale / t.len().max(1) as f32;
        let out = wide(
            #[inline(always)]
            || {
                let mut out = Vec::with_capacity(x.len());
                for (row, &id) in x.chunks_exact(v).zip(t) {
                    let max = max(row);
                    let start = out.len();
                    push_all(&mut out, row.iter().map(|v| fast_exp(v - max)));
                    let dr = &mut out[start..];
                    let c = k / sum_map(dr, |d| d);
                    dr.iter_mut().for_each(|d| *d *= c);
                    dr[id as usize] -= k;
                }
                out
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// SwiGLU's gating `silu(g) ⊙ u = g·σ(g) ⊙ u` of two same-shape tensors (gate
/// and up projections), in one pass.
///
/// Why it exists: from basic ops it is a `silu` node and a `mul` node forward,
/// and candle's SiLU backward alone is seven passes (neg, exp, +1, recip, …)
/// with scalar `expf`; here the backward is one pass producing both gradients.
pub struct SwiGlu;

/// `x` must split into whole rows of `d > 0` values.
fn whole_rows(x: &[f32], d: usize, op: &str) -> Result<()> {
    if d == 0 || !x.len().is_multiple_of(d) {
        candle_core::bail!("{op}: {} values do not form rows of {d}", x.len());
    }
    Ok(())
}

fn same_len(a: &[f32], b: &[f32], op: &str) -> Result<()> {
    if a.len() != b.len() {
        candle_core::bail!("{op}: operands of {} and {} elements", a.len(), b.len());
    }
    Ok(())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, self.name())?;
        let u = contiguous_f32(s2, l2, self.name())?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: shapes {:?} and {:?}", l1.shape(), l2.shape());
        }
        let out = wide(
            #[inline(always)]
            || {
                let mut out = Vec::with_capacity(g.len());
                push_all(&mut out, g.iter().zip(u).map(|(a, b)| a * sigmoid(*a) * b));
                out
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let both = g.apply_op3_no_bwd(u, &grad, &SwiGluBwd)?;
        let n = g.elem_count();
        let dg = both.narrow(0, 0, n)?.reshape(g.shape())?;
        let du = both.narrow(0, n, n)?.reshape(u.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

/// SwiGLU backward in one pass, both gradients packed flat `[dg…, du…]`:
/// `dg = grad · u · σ(g)(1 + g(1 − σ(g)))`, `du = grad · g·σ(g)`.
struct SwiGluBwd;

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, self.name())?;
        let u = contiguous_f32(s2, l2, self.name())?;
        let d = contiguous_f32(s3, l3, self.name())?;
        same_len(g, u, self.name())?;
        same_len(g, d, self.name())?;
        let n = g.len();
        let mut out = Vec::with_capacity(2 * n);
        let (dg, du) = out.spare_capacity_mut()[..2 * n].split_at_mut(n);
        wide(
            #[inline(always)]
            || {
                for ((((og, ou), &a), &b), &c) in
                    dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(d)
                {
                    let s = sigmoid(a);
                    og.write(c * b * s * (1.0 + a * (1.0 - s)));
                    ou.write(c * a * s);
                }
            },
        );
        // SAFETY: `g`, `u`, `d`, `dg` and `du` all have `n` elements, so the
        // zip above wrote every one of the first `2n` slots.
        unsafe { out.set_len(2 * n) };
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
