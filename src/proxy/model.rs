//! The proxy decoder: Llama-style (RMSNorm, RoPE, causal self-attention, SwiGLU,
//! untied input/output embeddings), built from candle ops that all have a
//! backward pass.
//!
//! Pitfalls this file avoids (candle 0.11): candle's fused
//! `rms_norm`/`softmax_last_dim`/`rope` have no backward, so on the CPU
//! RMSNorm, RoPE (fused with the head split), SwiGLU and the cross-entropy are
//! our own fused ops (`ops.rs`), attention is one op (`attention.rs`) and every
//! projection is one linear op (`linear.rs`); other devices use basic ops. Candle's CPU
//! RNG cannot be seeded, so every weight is drawn from our own seeded generator.

use super::attention::CausalAttention;
use super::config::ProxyConfig;
use crate::error::Result;
use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Embedding, Linear};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Parameters in a fixed order, with whether AdamW's weight decay applies
/// (matrices yes, norm gains no).
pub struct Params {
    pub vars: Vec<(String, Var, bool)>,
}

struct Block {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    mlp_norm: Tensor,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

pub struct ProxyModel {
    tok_emb: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// The same tables for the CPU's fused head split.
    rope_cpu: super::ops::RopeTables,
    mask: Tensor,
    n_heads: usize,
    head_dim: usize,
    /// Our fused CPU ops (the default on the CPU) or candle's basic ops (the
    /// only choice on other devices; on the CPU, the reference they are tested
    /// against).
    fused: bool,
}

/// Seeded weight factory: every tensor is drawn from one `StdRng` in a fixed order.
struct Init<'a> {
    rng: StdRng,
    device: &'a Device,
    params: Vec<(String, Var, bool)>,
}

impl Init<'_> {
    fn normal(&mut self, name: &str, shape: (usize, usize), std: f64) -> Result<Tensor> {
        let dist =
            Normal::new(0.0f32, std as f32).expect("std validated > 0 by ProxyConfig::check");
        let n = shape.0 * shape.1;
        let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, self.device)?)?;
        let t = var.as_tensor().clone();
        self.params.push((name.to_string(), var, true));
        Ok(t)
    }

    fn ones(&mut self, name: &str, n: usize) -> Result<Tensor> {
        let var = Var::ones(n, DType::F32, self.device)?;
        let t = var.as_tensor().clone();
        self.params.push((name.to_string(), var, false));
        Ok(t)
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, std: f64) -> Result<Linear> {
        Ok(Linear::new(self.normal(name, (out, inp), std)?, None))
    }
}

/// RMSNorm: our fused op on the CPU, basic ops elsewhere (candle's own fused
/// norm has no backward).
fn rms_norm(x: &Tensor, gain: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
    if fused {
        return x
            .contiguous()?
            .apply_op2(gain, super::ops::RmsNorm { eps: 1e-5 });
    }
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + 1e-5)?.sqrt()?)?.broadcast_mul(gain)
}

/// `x · Wᵀ`: our fused linear op on the CPU, `candle_nn::Linear` elsewhere.
fn proj(x: &Tensor, lin: &Linear, fused: bool) -> candle_core::Result<Tensor> {
    if fused {
        super::linear::linear(x, lin.weight())
    } else {
        lin.forward(x)
    }
}

/// `silu(gate) ⊙ up`: our fused op on the CPU (one node, one pass each way),
/// basic ops elsewhere.
fn swiglu(gate: &Tensor, up: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
    if fused {
        return gate
            .contiguous()?
            .apply_op2(&up.contiguous()?, super::ops::SwiGlu);
    }
    candle_nn::ops::silu(gate)? * up
}

/// Heads `[B, H, T, hd]` back to `[B·T, H·hd]`: our fused op on the CPU
/// (one copy, one node), transpose + reshape elsewhere.
fn merge_heads(y: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
    if fused {
        return y.contiguous()?.apply_op1(super::ops::HeadMerge);
    }
    let (b, h, t, hd) = y.dims4()?;
    y.transpose(1, 2)?.reshape((b * t, h * hd))
}

impl ProxyModel {
    pub fn new(
        cfg: &ProxyConfig,
        vocab_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, Params)> {
        let d = cfg.d_model;
        let std = cfg.init_std;
        // GPT-2 style: residual output projections shrink with depth so the
        // residual stream's variance does not grow with the number of layers.
        let std_out = std / (2.0 * cfg.n_layers as f64).sqrt();
        let mut init = Init {
            rng: StdRng::seed_from_u64(seed),
            device,
            params: Vec::new(),
        };
        let tok_emb = Embedding::new(init.normal("tok_emb", (vocab_size, d), std)?, d);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = |s: &str| format!("blocks.{l}.{s}");
            blocks.push(Block {
                attn_norm: init.ones(&p("attn_norm"), d)?,
                wq: init.linear(&p("wq"), d, d, std)?,
                wk: init.linear(&p("wk"), d, d, std)?,
                wv: init.linear(&p("wv"), d, d, std)?,
                wo: init.linear(&p("wo"), d, d, std_out)?,
                mlp_norm: init.ones(&p("mlp_norm"), d)?,
                w_gate: init.linear(&p("w_gate"), cfg.d_ff, d, std)?,
                w_up: init.linear(&p("w_up"), cfg.d_ff, d, std)?,
                w_down: init.linear(&p("w_down"), d, cfg.d_ff, std_out)?,
            });
        }
        let final_norm = init.ones("final_norm", d)?;
        let lm_head = init.linear("lm_head", vocab_size, d, std)?;

        let head_dim = d / cfg.n_heads;
        let (cos, sin, rope_cpu) = rope_tables(cfg.seq_len, head_dim, cfg.rope_theta, device)?;
        let mask = causal_mask(cfg.seq_len, device)?;
        let model = ProxyModel {
            tok_emb,
            blocks,
            final_norm,
            lm_head,
            cos,
            sin,
            rope_cpu,
            mask,
            n_heads: cfg.n_heads,
            head_dim,
            fused: device.is_cpu(),
        };
        Ok((model, Params { vars: init.params }))
    }

    /// Use candle's basic ops instead of the fused CPU ops (tests compare the
    /// two; off the CPU the basic ops are always used).
    pub fn use_basic_ops(&mut self) {
        self.fused = false;
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (T ≤ the configured seq_len).
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let logits = self.forward_flat(ids)?;
        logits.reshape((b, t, logits.dim(1)?))
    }

    /// Logits `[B·T, V]`. The residual stream is kept as `[B·T, d]` so that
    /// each projection is one matmul node: `Linear` on `[B, T, d]` adds two
    /// reshape nodes, and candle's backward allocates, zero-fills and adds a
    /// gradient tensor for every node.
    fn forward_flat(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut h = self
            .tok_emb
            .embeddings()
            .index_select(&ids.flatten_all()?, 0)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let f = self.fused;
        for blk in &self.blocks {
            let x = rms_norm(&h, &blk.attn_norm, f)?;
            let q = self.heads(&proj(&x, &blk.wq, f)?, b, t, Some((&cos, &sin)))?;
            let k = self.heads(&proj(&x, &blk.wk, f)?, b, t, Some((&cos, &sin)))?;
            let v = self.heads(&proj(&x, &blk.wv, f)?, b, t, None)?;
            let y = if f {
                q.apply_op3(
                    &k,
                    &v,
                    CausalAttention {
                        scale: scale as f32,
                    },
                )?
            } else {
                let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
                let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
                candle_nn::ops::softmax(&att, D::Minus1)?.matmul(&v)?
            };
            let y = merge_heads(&y, f)?;
            h = (h + proj(&y, &blk.wo, f)?)?;
            let x = rms_norm(&h, &blk.mlp_norm, f)?;
            let gate = proj(&x, &blk.w_gate, f)?;
            let up = proj(&x, &blk.w_up, f)?;
            h = (h + proj(&swiglu(&gate, &up, f)?, &blk.w_down, f)?)?;
        }
        proj(&rms_norm(&h, &self.final_norm, f)?, &self.lm_head, f)
    }

    /// Splits a projection `[B·T, H·hd]` into heads `[B, H, T, hd]`, rotating
    /// them with RoPE when `rope` (the cos/sin tables for `0..t`) is given: our
    /// fused op on the CPU, basic ops elsewhere.
    fn heads(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: Option<(&Tensor, &Tensor)>,
    ) -> candle_core::Result<Tensor> {
        if self.fused {
            let op = super::ops::HeadSplit {
                seq: t,
                n_heads: self.n_heads,
                rope: rope.map(|_| self.rope_cpu.clone()),
            };
            return x.contiguous()?.apply_op1(op);
        }
        let x = x
            .reshape((b, t, self.n_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        match rope {
            Some((cos, sin)) => candle_nn::rotary_emb::rope_slow(&x, cos, sin),
            None => Ok(x),
        }
    }

    /// Mean next-token cross-entropy (nats) of `ids[:, :-1] → ids[:, 1:]`.
    pub fn loss(&self, window: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t1) = window.dims2()?;
        let inputs = window.narrow(1, 0, t1 - 1)?;
        let targets = window.narrow(1, 1, t1 - 1)?;
        let logits = self.forward_flat(&inputs)?;
        let targets = targets.contiguous()?.reshape(b * (t1 - 1))?;
        if self.fused {
            logits.apply_op2(&targets, super::ops::CrossEntropy)
        } else {
            candle_nn::loss::cross_entropy(&logits, &targets)
        }
    }
}

/// Additive causal mask `[T, T]`: 0 where column ≤ row, −∞ above (the
/// basic-op attention; the fused op needs none).
pub(crate) fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
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

/// RoPE cos/sin tables `[T, head_dim/2]`, as tensors and as plain vectors for
/// the CPU's fused head split.
fn rope_tables(
    t: usize,
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor, super::ops::RopeTables)> {
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
    let tables = super::ops::RopeTables {
        cos: std::sync::Arc::new(cos.clone()),
        sin: std::sync::Arc::new(sin.clone()),
        half,
    };
    Ok((
        Tensor::from_vec(cos, (t, half), device)?,
        Tensor::from_vec(sin, (t, half), device)?,
        tables,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ProxyConfig {
        let mut cfg = ProxyConfig::load("tiny").unwrap();
        cfg.seq_len = 8;
        cfg
    }

    #[test]
    fn every_parameter_gets_a_nonzero_gradient() {
        let cfg = tiny();
        let dev = Device::Cpu;
        let (model, params) = ProxyModel::new(&cfg, 20, 3, &dev).unwrap();
        let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 7 % 20) as u32).collect();
        let window = Tensor::from_vec(ids, (2, 9), &dev).unwrap();
        let loss = model.loss(&window).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var, _) in &params.vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no grad for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "zero gradient for {name}");
        }
    }

    /// The fused CPU model computes the same loss and gradients as the
    /// basic-op model (the path every non-CPU device takes), so the GPU path
    /// is checked here too, on the CPU.
    #[test]
    fn fused_ops_match_the_basic_op_model() {
        let mut cfg = tiny();
        cfg.seq_len = 40; // two causal row blocks in the fused attention
        let dev = Device::Cpu;
        let (fused, params) = ProxyModel::new(&cfg, 20, 7, &dev).unwrap();
        // The same seed draws the same weights into the second model's own variables.
        let (mut basic, basic_params) = ProxyModel::new(&cfg, 20, 7, &dev).unwrap();
        basic.use_basic_ops();
        let ids: Vec<u32> = (0..3 * 41).map(|i| ((i * 7 + i / 5) % 20) as u32).collect();
        let window = Tensor::from_vec(ids, (3, 41), &dev).unwrap();
        let lf = fused.loss(&window).unwrap();
        let lb = basic.loss(&window).unwrap();
        let (a, b): (f32, f32) = (lf.to_scalar().unwrap(), lb.to_scalar().unwrap());
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        let (gf, gb) = (lf.backward().unwrap(), lb.backward().unwrap());
        for ((name, var, _), (_, other, _)) in params.vars.iter().zip(&basic_params.vars) {
            let x = gf.get(var.as_tensor()).unwrap();
            let y = gb
                .get(other.as_tensor())
                .unwrap_or_else(|| panic!("no basic grad for {name}"));
            let diff: f32 = (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            let scale: f32 = y.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "{name}: {diff} (max |g| {scale})"
            );
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let cfg = tiny();
        let dev = Device::Cpu;
        let (_, a) = ProxyModel::new(&cfg, 20, 11, &dev).unwrap();
        let (_, b) = ProxyModel::new(&cfg, 20, 11, &dev).unwrap();
        let (_, c) = ProxyModel::new(&cfg, 20, 12, &dev).unwrap();
        let flat = |p: &Params| -> Vec<f32> {
            p.vars[0]
                .1
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let cfg = tiny();
        let dev = Device::Cpu;
        let (model, _) = ProxyModel::new(&cfg, 20, 5, &dev).unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &dev).unwrap();
        let b = Tensor::new(&[[1u32, 2, 3, 9, 9, 9]], &dev).unwrap();
        let la = model.forward(&a).unwrap().narrow(1, 0, 3).unwrap();
        let lb = model.forward(&b).unwrap().narrow(1, 0, 3).unwrap();
        let diff: f32 = (la - lb)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
