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
//! The kernels share `fast_exp` (a vectorizable `e^x`), lane-parallel
//! reductions, and `wide` (the hot loop compiled for AVX2 and AVX-512, the best
//! the CPU has picked at run time).
//!
//! CPU only: on other devices the model uses the unfused ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Arc;

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

/// `e^x` in f32, within 2 ulp (relative error ≤ 1.2e-7) of `f32::exp` over
/// [-87.33, 88]; 0 below that range (where `f32::exp` is subnormal or 0, so
/// `-inf` → 0), `e^88` above it, NaN for NaN.
///
/// Why it exists: glibc's `expf` is a scalar call, ~10% of a tiny-proxy step
/// (softmax, cross-entropy, SiLU). This one is branch-free straight-line code
/// that LLVM vectorizes in slice loops: `x = n·ln2 + r` with `n` rounded by the
/// 1.5·2²³ trick and `ln2` split in two so `r` is exact, Cephes' degree-6
/// polynomial for `e^r` on |r| ≤ ln2/2, and `2^n` built from its exponent bits.
/// Plain mul/add only (no `mul_add`, which is a libm call without FMA), so the
/// result does not depend on the CPU's features.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    // e^LO ≈ 1.2e-38, the smallest normal f32; at HI, n ≤ 127 keeps 2^n normal.
    const LO: f32 = -87.33;
    const HI: f32 = 88.0;
    // 1.5·2²³: adding it rounds to an integer, held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // ln2 = LN2_HI + LN2_LO, LN2_HI = 355/512 so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Selects (not `clamp`), so NaN passes through and LLVM emits min/max.
    let xc = if x < LO { LO } else { x };
    let xc = if xc > HI { HI } else { xc };
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // t's low mantissa bits hold n; n + 127 is the biased exponent of 2^n.
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    let y = er * f32::from_bits(bits);
    if x < LO {
        0.0
    } else {
        y
    }
}

/// Appends `vals` to `out`: `Vec::extend` without its out-of-line call, so
/// the loop is inlined (and vectorized) inside `wide`.
#[inline(always)]
fn push_all(out: &mut Vec<f32>, vals: impl ExactSizeIterator<Item = f32>) {
    let (len, n) = (out.len(), vals.len());
    out.reserve(n);
    let mut written = 0;
    for (slot, v) in out.spare_capacity_mut()[..n].iter_mut().zip(vals) {
        slot.write(v);
        written += 1;
    }
    // SAFETY: the loop initialized the first `written` spare slots.
    unsafe { out.set_len(len + written) };
}

/// Lanes of the reductions below: independent partial results, so LLVM can
/// keep them in vector registers (a single accumulator is a serial chain it
/// may not reorder).
const LANES: usize = 8;

/// `Σ f(x_i)` with `LANES` partial sums.
#[inline(always)]
fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ a_i·b_i` with `LANES` partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Row maximum with `LANES` partial maxima; NaNs are skipped, like `f32::max`
/// (a NaN row still yields NaN probabilities through `x − max`).
#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in acc.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    chunks.remainder().iter().fold(m, |m, v| m.max(*v))
}

/// `1 / (1 + e^−x)`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// The instruction set the fused kernels' hot loops run with. The release
/// build targets baseline x86-64 (4-wide SSE2), so one binary serves every
/// x86-64 CPU; `wide` recompiles each hot loop for AVX2 and for AVX-512 and
/// picks the best the CPU has, once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelIsa {
    /// Whatever the build targets (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// 8-wide `ymm` vectors.
    Avx2,
    /// 16-wide `zmm` vectors (`avx512f`).
    Avx512,
}

impl KernelIsa {
    pub const ALL: [KernelIsa; 3] = [KernelIsa::Baseline, KernelIsa::Avx2, KernelIsa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            KernelIsa::Baseline => "baseline",
            KernelIsa::Avx2 => "avx2",
            KernelIsa::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown kernel set {s:?}: expected baseline, avx2 or avx512")
            })
    }

    /// Whether this CPU can run the kernels compiled for `self`.
    pub fn supported(self) -> bool {
        match self {
            KernelIsa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            KernelIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            KernelIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest kernel set this CPU supports.
    pub fn best() -> Self {
        *BEST.get_or_init(|| {
            Self::ALL
                .into_iter()
                .rev()
                .find(|isa| isa.supported())
                .unwrap_or(KernelIsa::Baseline)
        })
    }

    /// The kernel set in use on this thread: a test's `with_kernel_isa`, else
    /// the process-wide choice (`set_kernel_isa`), else `best()`.
    pub fn active() -> Self {
        FORCED
            .with(|f| f.get())
            .or_else(|| CHOSEN.get().copied())
            .unwrap_or_else(Self::best)
    }
}

static BEST: std::sync::OnceLock<KernelIsa> = std::sync::OnceLock::new();
static CHOSEN: std::sync::OnceLock<KernelIsa> = std::sync::OnceLock::new();
thread_local! {
    static FORCED: std::cell::Cell<Option<KernelIsa>> = const { std::cell::Cell::new(None) };
}

/// Fixes the process's kernel set (e.g. `bench train --kernels avx2` to
/// measure what AVX-512 buys); the first call wins. Errors when the CPU
/// cannot run it.
pub fn set_kernel_isa(isa: KernelIsa) -> anyhow::Result<()> {
    anyhow::ensure!(
        isa.supported(),
        "this CPU cannot run the {} kernels (best here: {})",
        isa.name(),
        KernelIsa::best().name()
    );
    let _ = CHOSEN.set(isa);
    Ok(())
}

/// Runs `f` with this thread's kernels forced to `isa` (tests compare the
/// dispatch paths with each other). `None` when the CPU cannot run `isa`.
pub fn with_kernel_isa<R>(isa: KernelIsa, f: impl FnOnce() -> R) -> Option<R> {
    if !isa.supported() {
        return None;
    }
    let before = FORCED.with(|c| c.replace(Some(isa)));
    let out = f();
    FORCED.with(|c| c.set(before));
    Some(out)
}

/// Runs `f` compiled for the active kernel set (`KernelIsa::active`). `f`
/// should be an `#[inline(always)]` closure holding the whole hot loop, its
/// helpers `#[inline(always)]` too and no out-of-line calls (hence `push_all`
/// over `Vec::extend`): only code inlined into the wrapper is compiled for the
/// wider vectors. (`perf`, AVX2 on AMD EPYC: the kernels here went from ~19%
/// to ~14% of a tiny step.)
///
/// The result is bit-identical on every path: Rust never contracts a
/// multiply and an add into an FMA on its own (AVX-512 implies FMA), so
/// every operation still rounds separately, and the reductions above keep
/// their fixed `LANES` order whatever the vector width
/// (`kernel_sets_agree_bit_for_bit`).
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match KernelIsa::active() {
            // SAFETY: `active` only yields sets `supported` by this CPU
            // (`best` checks, `set_kernel_isa` and `with_kernel_isa` refuse others).
            KernelIsa::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            KernelIsa::Avx2 => return unsafe { avx2(f) },
            KernelIsa::Baseline => {}
        }
    }
    f()
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

    #[test]
    fn fast_exp_matches_std_exp() {
        let n = 1_000_000;
        let mut worst = 0f64;
        for i in 0..=n {
            let x = -87.0 + 175.0 * i as f32 / n as f32;
            let e = x.exp() as f64;
            worst = worst.max(((fast_exp(x) as f64 - e) / e).abs());
        }
        assert!(worst <= 2e-7, "relative error {worst:e}");
        for x in [0.0f32, -1e-8, 1e-8, -0.5, 0.5, 1.0, -20.0] {
            let e = x.exp() as f64;
            assert!(((fast_exp(x) as f64 - e) / e).abs() <= 2e-7, "{x}");
        }
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-1e4), 0.0);
        assert!(fast_exp(1e4).is_finite() && fast_exp(1e4) >= 88f32.exp());
        assert!(fast_exp(f32::NAN).is_nan());
        // Vectorized (SSE2 here, AVX2 inside `wide`) and scalar forms agree
        // bit for bit.
        let xs: Vec<f32> = (0..1000).map(|i| -90.0 + 0.19 * i as f32).collect();
        let ys: Vec<f32> = xs.iter().map(|&x| fast_exp(x)).collect();
        let zs: Vec<f32> = wide(
            #[inline(always)]
            || {
                let mut zs = Vec::new();
                push_all(&mut zs, xs.iter().map(|&x| fast_exp(x)));
                zs
            },
        );
        for ((x, y), z) in xs.iter().zip(&ys).zip(&zs) {
            let e = fast_exp(std::hint::black_box(*x));
            assert_eq!(e.to_bits(), y.to_bits());
            assert_eq!(e.to_bits(), z.to_bits());
        }
    }

    #[test]
    fn swiglu_matches_unfused_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&Tensor::randn(0f32, 3.0, (3, 5, 8), &dev)?)?;
        let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev)?;
        let fused = g.as_tensor().apply_op2(u.as_tensor(), SwiGlu)?;
        let plain = (candle_nn::ops::silu(g.as_tensor())? * u.as_tensor())?;
        assert!(max_diff(&fused, &plain)? < 1e-5);
        let (gf, gp) = (grads(&fused, &w)?, grads(&plain, &w)?);
        for v in [&g, &u] {
            let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(max_diff(a, b)? < 1e-5, "{}", max_diff(a, b)?);
            let norm: f32 = b.abs()?.sum_all()?.to_scalar()?;
            assert!(norm > 1e-3, "the check must compare non-trivial gradients");
        }
        Ok(())
    }

    fn rope_tables(t: usize, hd: usize, dev: &Device) -> Result<(RopeTables, Tensor, Tensor)> {
        let half = hd / 2;
        let angle = |i: usize| (i / half) as f32 * 0.3f32.powi((i % half) as i32 + 1);
        let cos: Vec<f32> = (0..t * half).map(|i| angle(i).cos()).collect();
        let sin: Vec<f32> = (0..t * half).map(|i| angle(i).sin()).collect();
        let tables = RopeTables {
            cos: Arc::new(cos.clone()),
            sin: Arc::new(sin.clone()),
            half,
        };
        let cos = Tensor::from_vec(cos, (t, half), dev)?;
        let sin = Tensor::from_vec(sin, (t, half), dev)?;
        Ok((tables, cos, sin))
    }

    #[test]
    fn head_split_with_rope_matches_unfused_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, 5, 3, 8);
        let (tables, cos, sin) = rope_tables(t, hd, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b * t, h * hd), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev)?;
        let split = |rope: Option<RopeTables>| HeadSplit {
            seq: t,
            n_heads: h,
            rope,
        };
        let heads = x
            .as_tensor()
            .reshape((b, t, h, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let plain = candle_nn::rotary_emb::rope_slow(&heads, &cos, &sin)?;
        let fused = x.as_tensor().apply_op1(split(Some(tables)))?;
        assert_eq!(fused.dims(), &[b, h, t, hd]);
        assert!(max_diff(&fused, &plain)? < 1e-6);
        let (gf, gp) = (grads(&fused, &w)?, grads(&plain, &w)?);
        let (a, c) = (gf.get(&x).unwrap(), gp.get(&x).unwrap());
        assert!(max_diff(a, c)? < 1e-5, "{}", max_diff(a, c)?);
        // Without RoPE: the plain split, and a [B, T, H·hd] input works too.
        let x3 = x.as_tensor().reshape((b, t, h * hd))?;
        let fused = x3.apply_op1(split(None))?;
        assert!(max_diff(&fused, &heads)? < 1e-7);
        let (gf, gp) = (grads(&fused, &w)?, grads(&heads, &w)?);
        assert!(max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap())? < 1e-7);
        Ok(())
    }

    #[test]
    fn head_merge_matches_unfused_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, 5, 3, 4);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (b * t, h * hd), &dev)?;
        let fused = x.as_tensor().apply_op1(HeadMerge)?;
        let plain = x.as_tensor().transpose(1, 2)?.reshape((b * t, h * hd))?;
        assert!(max_diff(&fused, &plain)? < 1e-7);
        let (gf, gp) = (grads(&fused, &w)?, grads(&plain, &w)?);
        assert!(max_diff(gf.get(&x).unwrap(), gp.get(&x).unwrap())? < 1e-7);
        Ok(())
    }
    /// Every kernel set this CPU can run gives the baseline's outputs and
    /// gradients bit for bit, for every fused op (the attention too). On an
    /// AVX2 machine this checks baseline against AVX2; the AVX-512 path is
    /// checked on a CPU that has it, and its absence is printed, not hidden.
    #[test]
    fn kernel_sets_agree_bit_for_bit() -> Result<()> {
        use rand::{rngs::StdRng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(11);
        let mut randn = |shape: &[usize], std: f32| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let d = Normal::new(0f32, std).unwrap();
            let v: Vec<f32> = (0..n).map(|_| d.sample(&mut rng)).collect();
            Tensor::from_vec(v, shape, &dev)
        };
        // Odd sizes so the vector loops have remainders at every width.
        let (b, t, h, hd) = (2usize, 37usize, 3usize, 24usize);
        let d = h * hd;
        let x = Var::from_tensor(&randn(&[b * t, d], 1.5)?)?;
        let gain = Var::from_tensor(&(randn(&[d], 0.3)? + 1.0)?)?;
        let g = Var::from_tensor(&randn(&[b * t, d], 3.0)?)?;
        let logits = Var::from_tensor(&randn(&[b * t, 259], 3.0)?)?;
        let targets: Vec<u32> = (0..b * t).map(|i| (i * 37 % 259) as u32).collect();
        let targets = Tensor::from_vec(targets, b * t, &dev)?;
        let probe = randn(&[b * t, d], 1.0)?;
        let half = hd / 2;
        let angle = |i: usize| (i / half) as f32 * 0.3f32.powi((i % half) as i32 + 1);
        let tables = || RopeTables {
            cos: Arc::new((0..t * half).map(|i| angle(i).cos()).collect()),
            sin: Arc::new((0..t * half).map(|i| angle(i).sin()).collect()),
            half,
        };
        let bits = |t: &Tensor| -> Result<Vec<u32>> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f32::to_bits)
                .collect())
        };
        let run = || -> Result<Vec<Vec<u32>>> {
            let mut out = Vec::new();
            let y = x.as_tensor().apply_op2(&gain, RmsNorm { eps: 1e-5 })?;
            let gy = grads(&y, &probe)?;
            out.extend([
                bits(&y)?,
                bits(gy.get(&x).unwrap())?,
                bits(gy.get(&gain).unwrap())?,
            ]);
            let s = g.as_tensor().apply_op2(x.as_tensor(), SwiGlu)?;
            let gs = grads(&s, &probe)?;
            out.extend([
                bits(&s)?,
                bits(gs.get(&g).unwrap())?,
                bits(gs.get(&x).unwrap())?,
            ]);
            let ce = logits.as_tensor().apply_op2(&targets, CrossEntropy)?;
            let gc = ce.backward()?;
            out.extend([bits(&ce)?, bits(gc.get(&logits).unwrap())?]);
            let split = |rope| HeadSplit {
                seq: t,
                n_heads: h,
                rope,
            };
            let q = x.as_tensor().apply_op1(split(Some(tables())))?;
            let k = g.as_tensor().apply_op1(split(Some(tables())))?;
            let v = x.as_tensor().apply_op1(split(None))?;
            let scale = 1.0 / (hd as f32).sqrt();
            let a = q.apply_op3(&k, &v, crate::proxy::attention::CausalAttention { scale })?;
            let merged = a.apply_op1(HeadMerge)?;
            let ga = grads(&merged, &probe)?;
            out.extend([
                bits(&merged)?,
                bits(ga.get(&x).unwrap())?,
                bits(ga.get(&g).unwrap())?,
            ]);
            Ok(out)
        };
        let base = with_kernel_isa(KernelIsa::Baseline, run).unwrap()?;
        assert!(base.iter().all(|v| !v.is_empty()));
        let mut checked = Vec::new();
        for isa in [KernelIsa::Avx2, KernelIsa::Avx512] {
            match with_kernel_isa(isa, run) {
                Some(got) => {
                    let got = got?;
                    for (i, (a, c)) in base.iter().zip(&got).enumerate() {
                        assert!(a == c, "{}: output {i} differs from the baseline kernels", isa.name());
                    }
                    checked.push(isa.name());
                }
                None => eprintln!(
                    "kernel_sets_agree_bit_for_bit: NOT checked here: the {} kernels (this CPU lacks them)",
                    isa.name()
                ),
            }
        }
        eprintln!("kernel_sets_agree_bit_for_bit: baseline == {checked:?}");
        // The forced set is undone afterwards.
        assert_eq!(KernelIsa::active(), KernelIsa::best());
        Ok(())
    }
}
