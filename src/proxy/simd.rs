//! The SIMD side of the fused CPU kernels (`ops`, `heads`, `attention`):
//! `fast_exp` (a vectorizable `e^x`), reductions with fixed lane-parallel
//! order, and `wide`, which runs a hot loop compiled for the widest
//! instruction set the CPU has (`KernelIsa`, chosen at run time, so one
//! baseline x86-64 binary uses AVX2 or AVX-512 where they exist).

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
pub(crate) fn push_all(out: &mut Vec<f32>, vals: impl ExactSizeIterator<Item = f32>) {
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
pub(crate) const LANES: usize = 8;

/// `Σ f(x_i)` with `LANES` partial sums.
#[inline(always)]
pub(crate) fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
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
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
pub(crate) fn max(xs: &[f32]) -> f32 {
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
pub(crate) fn sigmoid(x: f32) -> f32 {
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
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
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
