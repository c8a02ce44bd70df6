//! A bias-free linear layer `y = x · Wᵀ` as one candle custom op on the CPU.
//!
//! Why it exists: `candle_nn::Linear` on a `[B, T, in]` input is four graph
//! nodes (reshape, transpose of W, matmul, reshape back). Candle's backward
//! pass allocates a zero tensor and adds into it for every gradient each node
//! receives, and its matmul zero-fills every output before the product
//! overwrites it; for the proxies' small matrices that zeroing and adding cost
//! as much as the products (`perf`: `memset` and `binary_map` ~25% of a tiny
//! step). Here forward and backward are one node each way and call the same
//! `gemm` crate candle uses, writing straight into fresh buffers.
//!
//! CPU only; on other devices the model uses `candle_nn::Linear`.

use super::ops::contiguous_f32;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `dst[m×n] = lhs · rhs`, `lhs` an m×k and `rhs` a k×n matrix given by their
/// (row, column) strides, `dst` row-major. Returns a fresh buffer.
fn product(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) -> Vec<f32> {
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `dst` has room for m·n values, which `gemm_into` writes, each once.
    unsafe {
        gemm_into(
            dst.as_mut_ptr(),
            n,
            m,
            n,
            k,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
        );
        dst.set_len(m * n);
    }
    dst
}

/// Writes `lhs · rhs` (m×k by k×n, given by (row, column) strides) to `dst`
/// (rows `dst_rs` apart, columns adjacent), overwriting (never reading) it. Matrix-product threads follow
/// candle's setting (`RAYON_NUM_THREADS`).
///
/// Panics if `lhs` or `rhs` is too short for its shape and strides.
///
/// # Safety
/// `dst` must be valid for writing the m×n block it addresses (it need not be
/// initialized), and no other thread may access that block meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in 0..m {
            std::ptr::write_bytes(dst.add(row * dst_rs), 0, n);
        }
        return;
    }
    // Real asserts (two multiply-adds per product): gemm reads through raw
    // pointers, so an operand too short for its shape would be read out of bounds.
    assert!(
        (m - 1) * lhs_strides.0 + (k - 1) * lhs_strides.1 < lhs.len(),
        "gemm_into: lhs of {} values is too short for {m}x{k} with strides {lhs_strides:?}",
        lhs.len()
    );
    assert!(
        (k - 1) * rhs_strides.0 + (n - 1) * rhs_strides.1 < rhs.len(),
        "gemm_into: rhs of {} values is too short for {k}x{n} with strides {rhs_strides:?}",
        rhs.len()
    );
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // With `read_dst = false` gemm computes dst = 1·(lhs·rhs), writing every
    // element of dst and never reading it, so `dst` may be uninitialized.
    // Checked in the source of gemm 0.19.0 (gemm-common's `gemm_basic_generic`
    // sets alpha to zero when `read_dst` is false, and its kernels load dst
    // only when alpha is non-zero, or after an earlier depth block has written
    // it); Cargo.toml pins `gemm = "=0.19.0"` so an upgrade is a deliberate
    // re-check of this, not a silent one.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs.as_ptr(),
        lhs_strides.1 as isize,
        lhs_strides.0 as isize,
        rhs.as_ptr(),
        rhs_strides.1 as isize,
        rhs_strides.0 as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// Rows, inputs and outputs of `x [..., in] · W[out, in]ᵀ`, checked.
fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let xd = x.dims();
    let wd = w.dims();
    if xd.is_empty() || wd.len() != 2 || xd[xd.len() - 1] != wd[1] || wd[0] == 0 || wd[1] == 0 {
        candle_core::bail!("linear: input {xd:?} does not match weight {wd:?}");
    }
    let inp = wd[1];
    Ok((x.shape().elem_count() / inp.max(1), inp, wd[0]))
}

/// `y = x · Wᵀ` for `x [..., in]`, `W [out, in]` (contiguous f32).
pub struct FusedLinear;

impl CustomOp2 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inp, out) = dims(xl, wl)?;
        let x = contiguous_f32(xs, xl, "linear input")?;
        let w = contiguous_f32(ws, wl, "linear weight")?;
        // Wᵀ as an in×out matrix: row stride 1, column stride `in`.
        let y = product(rows, out, inp, x, (inp, 1), w, (1, inp));
        let mut shape = xl.dims().to_vec();
        *shape.last_mut().expect("checked non-empty") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &LinearGradInput)?;
        let dw = dy.apply_op2_no_bwd(x, &LinearGradWeight)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx = dy · W` (`dy [..., out]`, `W [out, in]`).
struct LinearGradInput;

impl CustomOp2 for LinearGradInput {
    fn name(&self) -> &'static str {
        "fused-linear-grad-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let wd = wl.dims();
        let gd = gl.dims();
        if wd.len() != 2 || gd.last() != Some(&wd[0]) || wd[0] == 0 || wd[1] == 0 {
            candle_core::bail!("linear backward: gradient {gd:?} vs weight {wd:?}");
        }
        let (out, inp) = (wd[0], wd[1]);
        let rows = gl.shape().elem_count() / out.max(1);
        let g = contiguous_f32(gs, gl, "linear gradient")?;
        let w = contiguous_f32(ws, wl, "linear weight")?;
        let dx = product(rows, inp, out, g, (out, 1), w, (inp, 1));
        let mut shape = gd.to_vec();
        *shape.last_mut().expect("checked non-empty") = inp;
        Ok((CpuStorage::F32(dx), Shape::from(shape)))
    }
}

/// `dW = dyᵀ · x` summed over all rows (`dy [..., out]`, `x [..., in]`).
struct LinearGradWeight;

impl CustomOp2 for LinearGradWeight {
    fn name(&self) -> &'static str {
        "fused-linear-grad-weight"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (gd, xd) = (gl.dims(), xl.dims());
        let empty = |d: &[usize]| d.last().is_none_or(|&n| n == 0);
        if empty(gd) || empty(xd) || gd[..gd.len() - 1] != xd[..xd.len() - 1] {
            candle_core::bail!("linear backward: gradient {gd:?} vs input {xd:?}");
        }
        let (out, inp) = (gd[gd.len() - 1], xd[xd.len() - 1]);
        let rows = xl.shape().elem_count() / inp.max(1);
        let g = contiguous_f32(gs, gl, "linear gradient")?;
        let x = contiguous_f32(xs, xl, "linear input")?;
        // dyᵀ as an out×rows matrix: row stride 1, column stride `out`.
        let dw = product(out, inp, rows, g, (1, out), x, (inp, 1));
        Ok((CpuStorage::F32(dw), Shape::from((out, inp))))
    }
}

/// `x · Wᵀ` through the fused op (CPU tensors; `model.rs` picks candle's
/// `Linear` on other devices).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(w, FusedLinear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()
    }

    /// Forward and both gradients equal candle's `x.matmul(Wᵀ)` on 3-D and 2-D inputs.
    #[test]
    fn matches_candle_matmul_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::proxy::testing::rng(11);
        let mut randn =
            |shape: &[usize]| crate::proxy::testing::randn(&mut rng, 0.0, 1.0, shape, &dev);
        for xshape in [vec![3usize, 5, 7], vec![4, 7]] {
            let x = Var::from_tensor(&randn(&xshape)?)?;
            let w = Var::from_tensor(&randn(&[6, 7])?)?;
            let mut oshape = xshape.clone();
            *oshape.last_mut().unwrap() = 6;
            let probe = randn(&oshape)?;
            let fused = x.as_tensor().apply_op2(w.as_tensor(), FusedLinear)?;
            let flat = x.as_tensor().reshape(((), 7))?;
            let plain = flat
                .matmul(&w.as_tensor().t()?)?
                .reshape(oshape.as_slice())?;
            assert!(max_diff(&fused, &plain)? < 1e-5);
            let gf = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let (a, b) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gp.get(v.as_tensor()).unwrap(),
                );
                assert_eq!(a.dims(), b.dims());
                assert!(max_diff(a, b)? < 1e-4, "{:?}", v.dims());
            }
        }
        Ok(())
    }

    /// An operand shorter than its shape says is refused before gemm reads it.
    #[test]
    #[should_panic(expected = "too short")]
    fn gemm_into_refuses_a_short_operand() {
        let (lhs, rhs) = (vec![1f32; 5], vec![1f32; 6]);
        let mut dst = vec![0f32; 4];
        // 2x3 · 3x2 needs 6 lhs values.
        unsafe { gemm_into(dst.as_mut_ptr(), 2, 2, 2, 3, &lhs, (3, 1), &rhs, (2, 1)) };
    }

    #[test]
    fn gemm_into_overwrites_dst() {
        let lhs = [1f32, 2., 3., 4., 5., 6.];
        let rhs = [1f32, 0., 0., 1., 1., 1.];
        let mut dst = vec![f32::NAN; 4];
        unsafe { gemm_into(dst.as_mut_ptr(), 2, 2, 2, 3, &lhs, (3, 1), &rhs, (2, 1)) };
        assert_eq!(dst, vec![4., 5., 10., 11.]);
    }

    #[test]
    fn rejects_mismatched_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, &dev)?;
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &dev)?;
        assert!(x.apply_op2(&w, FusedLinear).is_err());
        Ok(())
    }
}
