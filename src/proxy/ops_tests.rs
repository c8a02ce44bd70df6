//! The fused kernels against their unfused compositions, forward and
//! gradient, and the kernel sets against each other.

use super::*;
use crate::proxy::heads::{HeadMerge, HeadSplit, RopeTables};
use crate::proxy::simd::{fast_exp, push_all, wide, with_kernel_isa, KernelIsa};
use crate::proxy::testing::{randn, rng};
use candle_core::backprop::GradStore;
use candle_core::{Device, Var, D};
use std::sync::Arc;

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
    let mut rng = rng(1);
    let x = Var::from_tensor(&randn(&mut rng, 0f32, 1.5, (2, 3, 8), &dev)?)?;
    let gain = Var::from_tensor(&randn(&mut rng, 1f32, 0.3, 8, &dev)?)?;
    let w = randn(&mut rng, 0f32, 1.0, (2, 3, 8), &dev)?;
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
    let mut rng = rng(2);
    let x = Var::from_tensor(&randn(&mut rng, 0f32, 3.0, (7, 11), &dev)?)?;
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
    let mut rng = rng(3);
    let g = Var::from_tensor(&randn(&mut rng, 0f32, 3.0, (3, 5, 8), &dev)?)?;
    let u = Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (3, 5, 8), &dev)?)?;
    let w = randn(&mut rng, 0f32, 1.0, (3, 5, 8), &dev)?;
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
    let mut rng = rng(4);
    let (b, t, h, hd) = (2, 5, 3, 8);
    let (tables, cos, sin) = rope_tables(t, hd, &dev)?;
    let x = Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (b * t, h * hd), &dev)?)?;
    let w = randn(&mut rng, 0f32, 1.0, (b, h, t, hd), &dev)?;
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
    let mut rng = rng(5);
    let (b, t, h, hd) = (2, 5, 3, 4);
    let x = Var::from_tensor(&randn(&mut rng, 0f32, 1.0, (b, h, t, hd), &dev)?)?;
    let w = randn(&mut rng, 0f32, 1.0, (b * t, h * hd), &dev)?;
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
    let dev = Device::Cpu;
    let mut rng = rng(11);
    let mut randn = |shape: &[usize], std: f32| randn(&mut rng, 0f32, std, shape, &dev);
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
