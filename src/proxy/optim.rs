//! AdamW for CPU proxies as one in-place pass per parameter.
//!
//! Why it exists: candle's `AdamW` updates each parameter with about fourteen
//! tensor ops (each allocating a tensor of the parameter's size) plus three
//! copies through `Var::set`, and our global-norm clipping added three more ops
//! and a device sync per parameter. For the tiny preset's ~20 small parameters
//! that was a few hundred allocations per step. Here the update is one loop over
//! each parameter's storage (candle's `inplace_op1`), with the moments kept as
//! plain vectors. It also sums the gradients of several data-parallel shards and
//! applies the clipping scale in the same pass, so neither needs a tensor.
//!
//! Same arithmetic as `candle_nn::AdamW` (decoupled weight decay
//! `θ ← θ·(1 − lr·λ) − lr·m̂/(√v̂ + ε)`, bias-corrected moments), tested against it.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Result, Storage, Tensor, Var};
use std::cell::RefCell;

/// AdamW hyper-parameters (the learning rate is passed per step).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    var: Var,
    decay: bool,
    m: Vec<f32>,
    v: Vec<f32>,
    /// This step's gradient, summed over shards (reused buffer).
    g: Vec<f32>,
    has_grad: bool,
}

/// Fused AdamW over a fixed parameter list (CPU tensors only).
pub struct FusedAdamW {
    slots: Vec<Slot>,
    cfg: AdamWConfig,
    t: i32,
}

/// Copy (`first`) or add a contiguous f32 CPU tensor's values into `dst`.
fn accumulate(dst: &mut [f32], grad: &Tensor, first: bool) -> Result<()> {
    let grad = grad.contiguous()?;
    let (storage, layout) = grad.storage_and_layout();
    let data = match &*storage {
        Storage::Cpu(CpuStorage::F32(d)) => d,
        _ => candle_core::bail!("fused AdamW: gradients must be f32 CPU tensors"),
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused AdamW: non-contiguous gradient")
    };
    let src = &data[start..end];
    if src.len() != dst.len() {
        candle_core::bail!(
            "fused AdamW: gradient has {} values, parameter {}",
            src.len(),
            dst.len()
        );
    }
    if first {
        dst.copy_from_slice(src);
    } else {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }
    Ok(())
}

/// One parameter's update, run on its storage in place.
struct Update<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    g: &'a [f32],
    /// Clipping scale applied to `g`.
    g_scale: f32,
    beta1: f32,
    beta2: f32,
    /// Bias corrections 1/(1 − βᵗ).
    scale_m: f32,
    scale_v: f32,
    lr: f32,
    /// 1 − lr·λ.
    shrink: f32,
    eps: f32,
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let theta = match storage {
            CpuStorage::F32(d) => d,
            _ => candle_core::bail!("fused AdamW: parameters must be f32"),
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused AdamW: non-contiguous parameter")
        };
        let theta = &mut theta[start..end];
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let (b1, b2) = (self.beta1, self.beta2);
        for (((th, m), v), &g) in theta
            .iter_mut()
            .zip(m.iter_mut())
            .zip(v.iter_mut())
            .zip(self.g)
        {
            let g = g * self.g_scale;
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            let m_hat = *m * self.scale_m;
            let v_hat = *v * self.scale_v;
            *th = *th * self.shrink - m_hat / (v_hat.sqrt() + self.eps) * self.lr;
        }
        Ok(())
    }
}

impl FusedAdamW {
    /// `params`: (name, variable, whether weight decay applies).
    pub fn new(params: &[(String, Var, bool)], cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, var, decay) in params {
            if !var.as_tensor().device().is_cpu() {
                candle_core::bail!("fused AdamW: parameter {name} is not on the CPU");
            }
            let n = var.as_tensor().elem_count();
            slots.push(Slot {
                var: var.clone(),
                decay: *decay,
                m: vec![0.0; n],
                v: vec![0.0; n],
                g: vec![0.0; n],
                has_grad: false,
            });
        }
        Ok(FusedAdamW { slots, cfg, t: 0 })
    }

    /// One step at learning rate `lr` on the sum of `shards`' gradients, after
    /// scaling that sum to global L2 norm `clip` if it is larger (`clip` ≤ 0: no
    /// clipping). Parameters without a gradient are left alone. Returns the
    /// gradient norm before clipping.
    pub fn step(&mut self, shards: &[GradStore], lr: f64, clip: f64) -> Result<f64> {
        let mut sq = 0.0f64;
        for slot in &mut self.slots {
            slot.has_grad = false;
            for grads in shards {
                if let Some(g) = grads.get(slot.var.as_tensor()) {
                    accumulate(&mut slot.g, g, !slot.has_grad)?;
                    slot.has_grad = true;
                }
            }
            if slot.has_grad {
                // Per-parameter sum in f32, as the tensor version did.
                sq += slot.g.iter().map(|x| x * x).sum::<f32>() as f64;
            }
        }
        let norm = sq.sqrt();
        let g_scale = if clip > 0.0 && norm > clip {
            (clip / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        self.t += 1;
        let c = self.cfg;
        for slot in &mut self.slots {
            if !slot.has_grad {
                continue;
            }
            let lambda = if slot.decay { c.weight_decay } else { 0.0 };
            let update = Update {
                m: RefCell::new(&mut slot.m),
                v: RefCell::new(&mut slot.v),
                g: &slot.g,
                g_scale,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                scale_m: (1.0 / (1.0 - c.beta1.powi(self.t))) as f32,
                scale_v: (1.0 / (1.0 - c.beta2.powi(self.t))) as f32,
                lr: lr as f32,
                shrink: (1.0 - lr * lambda) as f32,
                eps: c.eps as f32,
            };
            slot.var.as_tensor().inplace_op1(&update)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Same trajectory as candle's AdamW (two groups: decay and none) over a few
    /// steps with changing learning rates, including gradients summed from two
    /// shards and a clipped step.
    #[test]
    fn matches_candle_adamw() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::proxy::testing::rng(7);
        let mut randn =
            |shape: &[usize]| crate::proxy::testing::randn(&mut rng, 0.0, 1.0, shape, &dev);
        let init_a = randn(&[5, 7])?;
        let init_b = randn(&[7])?;
        let mk = || -> Result<Vec<(String, Var, bool)>> {
            Ok(vec![
                ("a".into(), Var::from_tensor(&init_a)?, true),
                ("b".into(), Var::from_tensor(&init_b)?, false),
            ])
        };
        let (ours, theirs) = (mk()?, mk()?);
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut fused = FusedAdamW::new(&ours, cfg)?;
        let group = |i: usize, wd: f64| {
            AdamW::new(
                vec![theirs[i].1.clone()],
                ParamsAdamW {
                    lr: 1e-2,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    weight_decay: wd,
                },
            )
        };
        let (mut ref_a, mut ref_b) = (group(0, 0.1)?, group(1, 0.0)?);
        for step in 0..4 {
            let lr = 1e-2 * (step + 1) as f64;
            let clip = if step == 2 { 0.5 } else { 0.0 };
            let target = randn(&[5, 7])?;
            // Reference: one loss over everything, clipped by hand.
            let loss_of = |p: &[(String, Var, bool)], half: Option<usize>| -> Result<Tensor> {
                let a = p[0].1.as_tensor();
                let b = p[1].1.as_tensor();
                let pred = a.broadcast_mul(b)?;
                let err = (pred - &target)?.sqr()?;
                match half {
                    None => err.sum_all(),
                    Some(h) => err.narrow(0, h * 2, if h == 0 { 2 } else { 3 })?.sum_all(),
                }
            };
            let mut g = loss_of(&theirs, None)?.backward()?;
            let norm: f64 = theirs
                .iter()
                .map(|(_, v, _)| {
                    let gv = values(g.get(v.as_tensor()).unwrap());
                    gv.iter().map(|x| x * x).sum::<f32>() as f64
                })
                .sum::<f64>()
                .sqrt();
            if clip > 0.0 && norm > clip {
                for (_, v, _) in &theirs {
                    let scaled = (g.get(v.as_tensor()).unwrap() * (clip / (norm + 1e-6)))?;
                    g.insert(v.as_tensor(), scaled);
                }
            }
            ref_a.set_learning_rate(lr);
            ref_b.set_learning_rate(lr);
            ref_a.step(&g)?;
            ref_b.step(&g)?;
            // Ours: the same loss split into two shards.
            let shards = vec![
                loss_of(&ours, Some(0))?.backward()?,
                loss_of(&ours, Some(1))?.backward()?,
            ];
            let got_norm = fused.step(&shards, lr, clip)?;
            assert!(
                (got_norm - norm).abs() < 1e-4 * norm.max(1.0),
                "{got_norm} vs {norm}"
            );
            for ((_, mine, _), (_, reference, _)) in ours.iter().zip(&theirs) {
                for (x, y) in values(mine.as_tensor())
                    .iter()
                    .zip(values(reference.as_tensor()))
                {
                    assert!((x - y).abs() < 1e-5, "step {step}: {x} vs {y}");
                }
            }
        }
        Ok(())
    }
}
