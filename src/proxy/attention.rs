//! Causal self-attention `softmax(scale · q·kᵀ + mask) · v` as one candle custom
//! op on the CPU, computed one (batch, head) at a time.
//!
//! Why it exists: from candle ops, attention materializes the `[B, H, T, T]`
//! scores and probabilities, and the backward pass materializes their
//! gradients too, each zero-filled and then added into by candle's gradient
//! store. For the `1m` preset (B=32, H=8, T=256) each of those tensors is
//! 67 MB, so the step streams several hundred MB through memory that the
//! arithmetic does not need. Here one head's T×T block lives in a scratch
//! buffer that stays in cache: forward computes scores, the causal softmax and
//! the output per head; backward recomputes that head's probabilities
//! (cheaper than storing them) and produces dq, dk, dv. The products go
//! through the same `gemm` crate candle uses.
//!
//! CPU only; other devices use candle's ops (see `model.rs`).

use super::linear::gemm_into;
use super::ops::contiguous_f32;
use super::ops::{causal_softmax_block, causal_softmax_bwd_block};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};

/// (B·H, T, hd) of a `[B, H, T, hd]` layout.
fn heads_dims(l: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[b, h, t, hd] => Ok((b * h, t, hd)),
        d => candle_core::bail!("attention: {what} must be [B, H, T, hd], got {d:?}"),
    }
}

/// Row blocks `(r0, r1)` of one head: rows `r0..r1` attend to keys `0..r1`
/// only, so each product is taken block by block over the causal part (about
/// 5/8 of the full T×T work at T = 256, 3/4 at T = 64), not the whole square.
fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    let bs = if t <= 128 { 32 } else { 64 };
    (0..t).step_by(bs).map(move |r0| (r0, (r0 + bs).min(t)))
}

/// Raw scores `q·kᵀ` into rows of the T×T block `p`, causal blocks only (row
/// `i` is written at least up to column `i`; the rest is left as it was).
///
/// # Safety
/// `p` holds T·T values, `q` and `k` T·hd each (checked by the callers).
unsafe fn scores(p: &mut [f32], q: &[f32], k: &[f32], t: usize, hd: usize) {
    for (r0, r1) in row_blocks(t) {
        let (m, qr) = (r1 - r0, &q[r0 * hd..]);
        gemm_into(
            p.as_mut_ptr().add(r0 * t),
            t,
            m,
            r1,
            hd,
            qr,
            (hd, 1),
            k,
            (1, hd),
        );
    }
}

/// `y = softmax(scale · q·kᵀ, causal) · v` for q, k, v `[B, H, T, hd]`.
pub struct CausalAttention {
    pub scale: f32,
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (bh, t, hd) = heads_dims(ql, "q")?;
        if kl.dims() != ql.dims() || vl.dims() != ql.dims() {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} differ",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let (q, k, v) = (
            contiguous_f32(qs, ql, "attention q")?,
            contiguous_f32(ks, kl, "attention k")?,
            contiguous_f32(vs, vl, "attention v")?,
        );
        let block = t * hd;
        let mut p = vec![0f32; t * t];
        let mut y: Vec<f32> = Vec::with_capacity(bh * block);
        for g in 0..bh {
            let r = g * block..(g + 1) * block;
            let (qg, kg, vg) = (&q[r.clone()], &k[r.clone()], &v[r]);
            // SAFETY: `p` holds T·T values and `y` has capacity for bh·T·hd, of
            // which this writes block g; q/k/v blocks are T×hd row-major.
            unsafe {
                scores(&mut p, qg, kg, t, hd);
                causal_softmax_block(&mut p, t, self.scale);
                let yg = y.as_mut_ptr().add(g * block);
                for (r0, r1) in row_blocks(t) {
                    // y[r0..r1] = P[r0..r1, ..r1] · v[..r1].
                    let (m, pr) = (r1 - r0, &p[r0 * t..]);
                    gemm_into(yg.add(r0 * hd), hd, m, hd, r1, pr, (t, 1), vg, (hd, 1));
                }
            }
        }
        // SAFETY: every block 0..bh was written above.
        unsafe { y.set_len(bh * block) };
        Ok((CpuStorage::F32(y), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = CausalAttentionBwd {
            scale: self.scale,
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
        };
        // One pass yields all three gradients, stacked [3, B, H, T, hd].
        let grads = dy.contiguous()?.apply_op1_no_bwd(&op)?;
        Ok((
            Some(grads.get(0)?),
            Some(grads.get(1)?),
            Some(grads.get(2)?),
        ))
    }
}

/// Backward of [`CausalAttention`]: applied to dy, returns dq, dk, dv stacked.
struct CausalAttentionBwd {
    scale: f32,
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

impl CustomOp1 for CausalAttentionBwd {
    fn name(&self) -> &'static str {
        "causal-attention-bwd"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (bh, t, hd) = heads_dims(gl, "dy")?;
        let dy = contiguous_f32(gs, gl, "attention dy")?;
        let (q_store, ql) = self.q.storage_and_layout();
        let (k_store, kl) = self.k.storage_and_layout();
        let (v_store, vl) = self.v.storage_and_layout();
        // Borrow the forward inputs' storage (read locks) rather than copy it.
        let (q, k, v) = match (&*q_store, &*k_store, &*v_store) {
            (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c)) => (
                contiguous_f32(a, ql, "attention q")?,
                contiguous_f32(b, kl, "attention k")?,
                contiguous_f32(c, vl, "attention v")?,
            ),
            _ => candle_core::bail!("attention backward: inputs must be on the CPU"),
        };
        if [ql.dims(), kl.dims(), vl.dims()]
            .iter()
            .any(|d| *d != gl.dims())
        {
            candle_core::bail!("attention backward: shapes differ from dy {:?}", gl.dims());
        }
        let block = t * hd;
        let n = bh * block;
        let mut p = vec![0f32; t * t];
        let mut ds = vec![0f32; t * t];
        let mut out: Vec<f32> = Vec::with_capacity(3 * n);
        let dst = out.as_mut_ptr();
        for g in 0..bh {
            let r = g * block..(g + 1) * block;
            let (qg, kg, vg, dyg) = (&q[r.clone()], &k[r.clone()], &v[r.clone()], &dy[r]);
            let (dq, dk, dv) = (g * block, n + g * block, 2 * n + g * block);
            // SAFETY: `p`/`ds` hold T·T values; `out` has capacity 3·n and this
            // writes block g of each of its three thirds; blocks are T×hd.
            unsafe {
                // Probabilities again: P = causal softmax(scale · q·kᵀ).
                scores(&mut p, qg, kg, t, hd);
                causal_softmax_block(&mut p, t, self.scale);
                for (c0, c1) in row_blocks(t) {
                    // dv[c0..c1] = P[c0.., c0..c1]ᵀ · dy[c0..] (rows above c0 see none of them).
                    let (m, pt) = (c1 - c0, &p[c0 * t + c0..]);
                    let dyc = &dyg[c0 * hd..];
                    gemm_into(
                        dst.add(dv + c0 * hd),
                        hd,
                        m,
                        hd,
                        t - c0,
                        pt,
                        (1, t),
                        dyc,
                        (hd, 1),
                    );
                }
                // dP = dy·vᵀ on the causal blocks.
                for (r0, r1) in row_blocks(t) {
                    let (m, dyr) = (r1 - r0, &dyg[r0 * hd..]);
                    gemm_into(
                        ds.as_mut_ptr().add(r0 * t),
                        t,
                        m,
                        r1,
                        hd,
                        dyr,
                        (hd, 1),
                        vg,
                        (1, hd),
                    );
                }
            }
            // dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)), zero where masked.
            causal_softmax_bwd_block(&p, &mut ds, t, self.scale);
            // SAFETY: as above.
            unsafe {
                for (r0, r1) in row_blocks(t) {
                    // dq[r0..r1] = dS[r0..r1, ..r1] · k[..r1].
                    let (m, dsr) = (r1 - r0, &ds[r0 * t..]);
                    gemm_into(
                        dst.add(dq + r0 * hd),
                        hd,
                        m,
                        hd,
                        r1,
                        dsr,
                        (t, 1),
                        kg,
                        (hd, 1),
                    );
                }
                for (c0, c1) in row_blocks(t) {
                    // dk[c0..c1] = dS[c0.., c0..c1]ᵀ · q[c0..].
                    let (m, dst_t) = (c1 - c0, &ds[c0 * t + c0..]);
                    let qc = &qg[c0 * hd..];
                    gemm_into(
                        dst.add(dk + c0 * hd),
                        hd,
                        m,
                        hd,
                        t - c0,
                        dst_t,
                        (1, t),
                        qc,
                        (hd, 1),
                    );
                }
            }
        }
        // SAFETY: all three thirds were written, block by block, above.
        unsafe { out.set_len(3 * n) };
        let mut shape = vec![3];
        shape.extend_from_slice(gl.dims());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()
    }

    /// Forward and the three gradients equal the basic-op composition
    /// (matmul, scale, additive −∞ mask, softmax, matmul).
    #[test]
    fn matches_unfused_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::proxy::testing::rng(3);
        let mut randn =
            |shape: &[usize]| crate::proxy::testing::randn(&mut rng, 0.0, 1.0, shape, &dev);
        // 70 positions: three causal row blocks, the last one partial.
        for (b, h, t, hd) in [(2, 3, 7, 4), (1, 2, 70, 8)] {
            let scale = 1.0 / (hd as f64).sqrt();
            let mut mk = || -> Result<Var> { Var::from_tensor(&randn(&[b, h, t, hd])?) };
            let (q, k, v) = (mk()?, mk()?, mk()?);
            let probe = randn(&[b, h, t, hd])?;
            let fused = q.as_tensor().apply_op3(
                k.as_tensor(),
                v.as_tensor(),
                CausalAttention {
                    scale: scale as f32,
                },
            )?;
            let mask = crate::proxy::model::causal_mask(t, &dev)?;
            let scores =
                (q.as_tensor().matmul(&k.as_tensor().t()?)? * scale)?.broadcast_add(&mask)?;
            let plain = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(v.as_tensor())?;
            assert!(max_diff(&fused, &plain)? < 1e-5);
            let gf = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, c) = (
                    gf.get(var.as_tensor()).unwrap(),
                    gp.get(var.as_tensor()).unwrap(),
                );
                let d = max_diff(a, c)?;
                assert!(d < 1e-4, "d{name}: {d}");
            }
        }
        Ok(())
    }

    /// Position i's output depends on positions ≤ i only.
    #[test]
    fn is_causal() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::proxy::testing::rng(5);
        let mut randn = || crate::proxy::testing::randn(&mut rng, 0.0, 1.0, (1, 1, 5, 2), &dev);
        let (q, k, v) = (randn()?, randn()?, randn()?);
        let v2 = v.slice_assign(
            &[0..1, 0..1, 4..5, 0..2],
            &Tensor::ones((1, 1, 1, 2), candle_core::DType::F32, &dev)?,
        )?;
        let op = || CausalAttention { scale: 0.7 };
        let a = q.apply_op3(&k, &v, op())?.narrow(2, 0, 4)?;
        let c = q.apply_op3(&k, &v2, op())?.narrow(2, 0, 4)?;
        assert!(max_diff(&a, &c)? == 0.0);
        Ok(())
    }
}
