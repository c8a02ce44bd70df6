//! Fused CPU kernels for the proxy's hottest element-wise chains, each a candle
//! custom op with its own backward.
//!
//! Why they exist: built from basic ops, the attention softmax is seven passes
//! over the `[B, H, T, T]` score tensor forward (scale, mask add, max, sub, exp,
//! sum, div) and more backward, each allocating a tensor of that size; on the
//! CPU those passes cost more than the attention matmuls. Candle's own fused
//! `softmax_last_dim` and `rms_norm` have no backward (DESIGN.md, "Known
//! pitfalls"); RMSNorm from basic ops is six passes. Each op
//! here is tested against the unfused composition, forward and gradient.
//!
//! CPU only: on other devices the model uses the unfused ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("{op}: expects f32"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// `softmax(scale · x + causal mask)` over the last dimension of a `[…, T, T]`
/// score tensor: row `i` attends to columns `0..=i`; masked entries are 0.
pub struct CausalSoftmax {
    pub scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let dims = l.dims();
        let t = dims[dims.len() - 1];
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            candle_core::bail!("causal-softmax: expects [..., T, T], got {dims:?}");
        }
        let mut out = vec![0f32; x.len()];
        for (row_idx, (xr, yr)) in x.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
            let n = row_idx % t + 1; // visible columns in this row
            let max = xr[..n].iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * self.scale;
            let mut sum = 0f32;
            for (y, v) in yr[..n].iter_mut().zip(&xr[..n]) {
                *y = (v * self.scale - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            yr[..n].iter_mut().for_each(|y| *y *= inv);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(
            res.apply_op2_no_bwd(&g, &SoftmaxBwd { scale: self.scale })?,
        ))
    }
}

/// Softmax backward in one pass: `dx = scale · y ⊙ (g − Σ_j g_j y_j)` per row.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let t = l1.dims()[l1.dims().len() - 1];
        let mut out = vec![0f32; y.len()];
        for ((yr, gr), dr) in y
            .chunks_exact(t)
            .zip(g.chunks_exact(t))
            .zip(out.chunks_exact_mut(t))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((d, a), b) in dr.iter_mut().zip(yr).zip(gr) {
                *d = self.scale * a * (b - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// RMSNorm `y = x / sqrt(mean(x²) + eps) · gain` over the last dimension, in
/// one pass (the basic-op version is six, each with its own backward).
pub struct RmsNorm {
    pub eps: f32,
}

/// `1 / sqrt(mean(row²) + eps)`.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
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
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = inv_rms(xr, self.eps);
            for ((y, v), g) in yr.iter_mut().zip(xr).zip(gain) {
                *y = v * r * g;
            }
        }
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
        let dx = x.apply_op3_no_bwd(gain, &g, &RmsNormBwdX { eps: self.eps })?;
        let dgain = x.apply_op2_no_bwd(&g, &RmsNormBwdGain { eps: self.eps })?;
        Ok((Some(dx), Some(dgain)))
    }
}

/// `dx = r·(g⊙gain) − x·r³/d·Σ_k g_k gain_k x_k` per row, `r = inv_rms(x)`.
struct RmsNormBwdX {
    eps: f32,
}

impl candle_core::CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "rms-norm-bwd-x"
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
        let mut out = vec![0f32; x.len()];
        for ((xr, gr), dr) in x
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(out.chunks_exact_mut(d))
        {
            let r = inv_rms(xr, self.eps);
            let dot: f32 = xr
                .iter()
                .zip(gr)
                .zip(gain)
                .map(|((a, b), c)| a * b * c)
                .sum();
            let k = r * r * r * dot / d as f32;
            for (((o, a), b), c) in dr.iter_mut().zip(xr).zip(gr).zip(gain) {
                *o = r * b * c - a * k;
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `dgain_j = Σ_rows g_j · x_j · r`.
struct RmsNormBwdGain {
    eps: f32,
}

impl CustomOp2 for RmsNormBwdGain {
    fn name(&self) -> &'static str {
        "rms-norm-bwd-gain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let d = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; d];
        for (xr, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
            let r = inv_rms(xr, self.eps);
            for ((o, a), b) in out.iter_mut().zip(xr).zip(gr) {
                *o += a * b * r;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(d)))
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
        let mut total = 0f64;
        for (row, &id) in x.chunks_exact(v).zip(t) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            total += (max + sum.ln() - row[id as usize]) as f64;
        }
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
        let d = logits.apply_op2_no_bwd(targets, &CrossEntropyBwd)?;
        Ok((Some(d.broadcast_mul(grad_res)?), None))
    }
}

/// `(softmax(x) − onehot(target)) / N` per row: the gradient of the mean loss.
struct CrossEntropyBwd;

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
        let inv_n = 1.0 / t.len().max(1) as f32;
        let mut out = vec![0f32; x.len()];
        for ((row, &id), dr) in x.chunks_exact(v).zip(t).zip(out.chunks_exact_mut(v)) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let mut sum = 0f32;
            for (d, v) in dr.iter_mut().zip(row) {
                *d = (v - max).exp();
                sum += *d;
            }
            let scale = inv_n / sum;
            dr.iter_mut().for_each(|d| *d *= scale);
            dr[id as usize] -= inv_n;
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::backprop::GradStore;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar()
    }

    /// Gradients of the random linear functional `Σ y ⊙ w` (an incoming
    /// gradient that is not all ones).
    fn grads(y: &Tensor, w: &Tensor) -> Result<GradStore> {
        (y * w)?.sum_all()?.backward()
    }

    fn unfused_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
        let t = x.dim(D::Minus1)?;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), x.device())?;
        candle_nn::ops::softmax(&(x * scale)?.broadcast_add(&mask)?, D::Minus1)
    }

    #[test]
    fn causal_softmax_matches_unfused_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 3, 5, 5), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &dev)?;
        let scale = 0.37;
        let fused = x.as_tensor().apply_op1(CausalSoftmax {
            scale: scale as f32,
        })?;
        let plain = unfused_softmax(x.as_tensor(), scale)?;
        assert!(max_diff(&fused, &plain)? < 1e-6);
        let (gf, gp) = (grads(&fused, &w)?, grads(&plain, &w)?);
        let (gf, gp) = (gf.get(&x).unwrap(), gp.get(&x).unwrap());
        assert!(max_diff(gf, gp)? < 1e-5);
        let norm: f32 = gp.abs()?.sum_all()?.to_scalar()?;
        assert!(norm > 1e-3, "the check must compare non-trivial gradients");
        Ok(())
    }

    #[test]
    fn rms_norm_matches_unfused_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.5, (2, 3, 8), &dev)?)?;
        let gain = Var::from_tensor(&Tensor::randn(1f32, 0.3, 8, &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev)?;
        let fused = x.as_tensor().apply_op2(&gain, RmsNorm { eps: 1e-5 })?;
        let ms = x.as_tensor().sqr()?.mean_keepdim(D::Minus1)?;
        let plain = x
            .as_tensor()
            .broadcast_div(&(ms + 1e-5)?.sqrt()?)?
            .broadcast_mul(&gain)?;
        assert!(max_diff(&fused, &plain)? < 1e-5);
        let (gf, gp) = (grads(&fused, &w)?, grads(&plain, &w)?);
        for v in [&x, &gain] {
            let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(max_diff(a, b)? < 1e-4, "{}", max_diff(a, b)?);
        }
        Ok(())
    }

    #[test]
    fn cross_entropy_matches_candle_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (7, 11), &dev)?)?;
        let t = Tensor::new(&[0u32, 3, 10, 5, 5, 1, 9], &dev)?;
        let fused = x.as_tensor().apply_op2(&t, CrossEntropy)?;
        let plain = candle_nn::loss::cross_entropy(&x, &t)?;
        assert!(max_diff(&fused, &plain)? < 1e-5);
        // Scale the loss so the incoming gradient is not 1.
        let scale = Tensor::new(2.5f32, &dev)?;
        let (gf, gp) = (grads(&fused, &scale)?, grads(&plain, &scale)?);
        assert!(max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap())? < 1e-6);
        let bad = Tensor::new(&[0u32, 3, 11, 5, 5, 1, 9], &dev)?;
        assert!(x.as_tensor().apply_op2(&bad, CrossEntropy).is_err());
        Ok(())
    }
}
