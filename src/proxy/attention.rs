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
use super::ops::{causal_softmax_block, causal_softmax_bwd_block};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};

fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("attention: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("attention: {what} must be contiguous"),
    }
}

/// (B·H, T, hd) of a `[B, H, T, hd]` layout.
fn heads_dims(l: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[b, h, t, hd] => Ok((b * h, t, hd)),
        d => candle_core::bail!("attention: {what} must be [B, H, T, hd], got {d:?}"),
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
            f32_data(qs, ql, "q")?,
            f32_data(ks, kl, "k")?,
            f32_data(vs, vl, "v")?,
        );
        let block = t * hd;
        let mut p = vec![0f32; t * t];
        let mut y: Vec<f32> = Vec::with_capacity(bh * block);
        for g in 0..bh {
            let (qg, kg, vg) = (
                &q[g * block..(g + 1) * block],
                &k[g * block..(g + 1) * block],
                &v[g * block..(g + 1) * block],
            );
            // SAFETY: `p` holds T·T values and `y` has capacity for bh·T·hd, of
            // which this writes block g; q/k/v blocks are T×hd row-major.
            unsafe {
                gemm_into(p.as_mut_ptr(), t, t, hd, qg, (hd, 1), kg, (1, hd));
                causal_softmax_block(&mut p, t, self.scale);
                gemm_into(
                    y.as_mut_ptr().add(g * block),
                    t,
                    hd,
                    t,
                    &p,
                    (t, 1),
                    vg,
                    (hd, 1),
                );
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
        let dy = f32_data(gs, gl, "dy")?;
        let (q_store, ql) = self.q.storage_and_layout();
        let (k_store, kl) = self.k.storage_and_layout();
        let (v_store, vl) = self.v.storage_and_layout();
        // Borrow the forward inputs' storage (read locks) rather than copy it.
        let (q, k, v) = match (&*q_store, &*k_store, &*v_store) {
            (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c)) => (
                f32_data(a, ql, "q")?,
                f32_data(b, kl, "k")?,
                f32_data(c, vl, "v")?,
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
            // SAFETY: `p`/`ds` hold T·T values; `out` has capacity 3·n and this
            // writes block g of each of its three thirds; blocks are T×hd.
            unsafe {
                // Probabilities again: P = causal softmax(scale · q·kᵀ).
                gemm_into(p.as_mut_ptr(), t, t, hd, qg, (hd, 1), kg, (1, hd));
                causal_softmax_block(&mut p, t, self.scale);
                // dv = Pᵀ·dy.
                gemm_into(
                    dst.add(2 * n + g * block),
                    t,
                    hd,
                    t,
                    &p,
                    (1, t),
                    dyg,
                    (hd, 1),
                );
                // dP = dy·vᵀ, then dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)).
                gemm_into(ds.as_mut_ptr(), t, t, hd, dyg, (hd, 1), vg, (1, hd));
            }
            causal_softmax_bwd_block(&p, &mut ds, t, self.scale);
            // SAFETY: as above.
            unsafe {
                // dq = dS·k, dk = dSᵀ·q.
                gemm_into(dst.add(g * block), t, hd, t, &ds, (t, 1), kg, (hd, 1));
                gemm_into(dst.add(n + g * block), t, hd, t, &ds, (1, t), qg, (hd, 1));
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
        let (b, h, t, hd) = (2, 3, 7, 4);
        let scale = 1.0 / (hd as f64).sqrt();
        let mk =
            || -> Result<Var> { Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev)?) };
        let (q, k, v) = (mk()?, mk()?, mk()?);
        let probe = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev)?;
        let fused = q.as_tensor().apply_op3(
            k.as_tensor(),
            v.as_tensor(),
            CausalAttention {
                scale: scale as f32,
            },
        )?;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev)?;
        let scores = (q.as_tensor().matmul(&k.as_tensor().t()?)? * scale)?.broadcast_add(&mask)?;
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
        Ok(())
    }

    /// Position i's output depends on positions ≤ i only.
    #[test]
    fn is_causal() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 1, 5, 2), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 1, 5, 2), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 1, 5, 2), &dev)?;
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
