//! The two sets of ops the proxy decoder can be built from, chosen once when
//! the model is built (`ProxyModel::new` picks by device):
//!
//! - [`Kernels::FusedCpu`]: our fused CPU ops — RMSNorm, RoPE fused with the
//!   head split, SwiGLU, head merge and cross-entropy (`ops.rs`, `heads.rs`), causal
//!   attention (`attention.rs`) and the linear projection (`linear.rs`). Each
//!   is one graph node with its own backward, which candle's fused CPU ops
//!   (`rms_norm`, `softmax_last_dim`, `rope`) lack.
//! - [`Kernels::Basic`]: candle's basic ops, which have a backward on every
//!   device: the only choice off the CPU, and on the CPU the reference the
//!   fused set is tested against.

use super::heads::RopeTables;
use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::Linear;

/// Which kernel set to build a model with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    /// The fused CPU set on the CPU, the basic set elsewhere.
    Auto,
    /// candle's basic ops on any device.
    Basic,
}

/// A kernel set and the tables it needs.
pub(crate) enum Kernels {
    FusedCpu {
        /// RoPE cos/sin for the fused head split.
        rope: RopeTables,
    },
    Basic {
        /// RoPE cos/sin `[T, head_dim/2]`.
        cos: Tensor,
        sin: Tensor,
        /// Additive causal mask `[T, T]`.
        mask: Tensor,
    },
}

impl Kernels {
    /// The set for `device` and `choice`, with RoPE tables for `seq_len`
    /// positions.
    pub(crate) fn new(
        choice: KernelChoice,
        device: &Device,
        seq_len: usize,
        head_dim: usize,
        theta: f64,
    ) -> Result<Kernels> {
        let rope = rope_tables(seq_len, head_dim, theta);
        if choice == KernelChoice::Auto && device.is_cpu() {
            return Ok(Kernels::FusedCpu { rope });
        }
        let half = rope.half;
        let cos = Tensor::from_vec(rope.cos.to_vec(), (seq_len, half), device)?;
        let sin = Tensor::from_vec(rope.sin.to_vec(), (seq_len, half), device)?;
        Ok(Kernels::Basic {
            cos,
            sin,
            mask: causal_mask(seq_len, device)?,
        })
    }

    /// RMSNorm with gain `gain` over the last dimension (eps 1e-5).
    pub(crate) fn rms_norm(&self, x: &Tensor, gain: &Tensor) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => x
                .contiguous()?
                .apply_op2(gain, super::ops::RmsNorm { eps: 1e-5 }),
            Kernels::Basic { .. } => {
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(ms + 1e-5)?.sqrt()?)?.broadcast_mul(gain)
            }
        }
    }

    /// `x · Wᵀ`.
    pub(crate) fn proj(&self, x: &Tensor, lin: &Linear) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => super::linear::linear(x, lin.weight()),
            Kernels::Basic { .. } => lin.forward(x),
        }
    }

    /// `silu(gate) ⊙ up`.
    pub(crate) fn swiglu(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => gate
                .contiguous()?
                .apply_op2(&up.contiguous()?, super::ops::SwiGlu),
            Kernels::Basic { .. } => candle_nn::ops::silu(gate)? * up,
        }
    }

    /// Splits a projection `[B·T, H·hd]` into heads `[B, H, T, hd]`,
    /// rotating them with RoPE (positions `0..t`) when `rotate`.
    pub(crate) fn heads(
        &self,
        x: &Tensor,
        (b, t, n_heads, head_dim): (usize, usize, usize, usize),
        rotate: bool,
    ) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { rope } => {
                let op = super::heads::HeadSplit {
                    seq: t,
                    n_heads,
                    rope: rotate.then(|| rope.clone()),
                };
                x.contiguous()?.apply_op1(op)
            }
            Kernels::Basic { cos, sin, .. } => {
                let x = x
                    .reshape((b, t, n_heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?;
                if rotate {
                    let cos = cos.narrow(0, 0, t)?;
                    let sin = sin.narrow(0, 0, t)?;
                    candle_nn::rotary_emb::rope_slow(&x, &cos, &sin)
                } else {
                    Ok(x)
                }
            }
        }
    }

    /// `softmax(scale · q·kᵀ, causal) · v` for q, k, v `[B, H, T, hd]`.
    pub(crate) fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => q.apply_op3(
                k,
                v,
                super::attention::CausalAttention {
                    scale: scale as f32,
                },
            ),
            Kernels::Basic { mask, .. } => {
                let t = q.dim(2)?;
                let mask = mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
                let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
                candle_nn::ops::softmax(&att, D::Minus1)?.matmul(v)
            }
        }
    }

    /// Heads `[B, H, T, hd]` back to `[B·T, H·hd]`.
    pub(crate) fn merge_heads(&self, y: &Tensor) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => y.contiguous()?.apply_op1(super::heads::HeadMerge),
            Kernels::Basic { .. } => {
                let (b, h, t, hd) = y.dims4()?;
                y.transpose(1, 2)?.reshape((b * t, h * hd))
            }
        }
    }

    /// Mean cross-entropy (nats) of `logits [N, V]` against `targets [N]`.
    pub(crate) fn cross_entropy(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Kernels::FusedCpu { .. } => logits.apply_op2(targets, super::ops::CrossEntropy),
            Kernels::Basic { .. } => candle_nn::loss::cross_entropy(logits, targets),
        }
    }
}

/// Additive causal mask `[T, T]`: 0 where column ≤ row, −∞ above (the
/// basic-op attention; the fused op needs none).
pub(crate) fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// RoPE cos/sin of positions `0..t` for `head_dim`.
fn rope_tables(t: usize, head_dim: usize, theta: f64) -> RopeTables {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for pos in 0..t {
        for i in 0..half {
            let freq = 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64);
            let angle = pos as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    RopeTables {
        cos: std::sync::Arc::new(cos),
        sin: std::sync::Arc::new(sin),
        half,
    }
}
