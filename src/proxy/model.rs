//! The proxy decoder: Llama-style (RMSNorm, RoPE, causal self-attention, SwiGLU,
//! untied input/output embeddings), built from candle ops that all have a
//! backward pass.
//!
//! The ops come from a kernel set chosen once when the model is built
//! (`kernels.rs`: our fused CPU ops, or candle's basic ops elsewhere).
//! Candle's CPU RNG cannot be seeded, so every weight is drawn from our own
//! seeded generator. Parameters are named (`tok_emb`, `blocks.{l}.wq`, …) in a
//! candle `VarMap`, so a trained proxy saves to and loads from safetensors.

use super::config::ProxyConfig;
use super::kernels::{KernelChoice, Kernels};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Embedding, Linear, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// The basic-op attention's mask (the fused attention's tests compare against it).
#[cfg(test)]
pub(crate) use super::kernels::causal_mask;

/// The model's parameters: in a fixed order (the optimizer's), with whether
/// AdamW's weight decay applies (matrices yes, norm gains no), and by name.
pub struct Params {
    pub vars: Vec<(String, Var, bool)>,
    /// The same variables by name: what `save` writes and `load` reads.
    pub map: VarMap,
}

impl Params {
    /// Write every parameter to `path` as safetensors (f32, named as in `vars`).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.map
            .save(path)
            .map_err(|e| Error::invalid(format!("{}: cannot save the proxy: {e}", path.display())))
    }

    /// Overwrite every parameter with the tensor of the same name in the
    /// safetensors file `path`. The file must hold exactly these names, each
    /// with its parameter's shape and dtype (a proxy of the same config and
    /// vocabulary); on error no parameter has changed.
    pub fn load(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::invalid(format!("{}: {msg}", path.display()));
        let device = match self.vars.first() {
            Some((_, v, _)) => v.device().clone(),
            None => return Err(bad("the model has no parameters".into())),
        };
        let file = candle_core::safetensors::load(path, &device)
            .map_err(|e| bad(format!("cannot read it as safetensors: {e}")))?;
        for (name, var, _) in &self.vars {
            let t = file.get(name).ok_or_else(|| {
                bad(format!(
                    "no tensor {name:?} (saved from another proxy config?)"
                ))
            })?;
            if t.dims() != var.dims() || t.dtype() != var.dtype() {
                return Err(bad(format!(
                    "tensor {name:?} is {:?} {:?}, this proxy's is {:?} {:?} (another proxy config or vocabulary?)",
                    t.dtype(),
                    t.dims(),
                    var.dtype(),
                    var.dims()
                )));
            }
        }
        if let Some(extra) = file
            .keys()
            .find(|k| !self.vars.iter().any(|(n, _, _)| n == *k))
        {
            return Err(bad(format!(
                "tensor {extra:?} is not a parameter of this proxy"
            )));
        }
        for (name, var, _) in &self.vars {
            var.set(&file[name])
                .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
        }
        Ok(())
    }
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
    n_heads: usize,
    head_dim: usize,
    /// The ops, chosen once (`kernels.rs`).
    kernels: Kernels,
}

/// Seeded weight factory: every tensor is drawn from one `StdRng` in a fixed
/// order and registered under its name.
struct Init<'a> {
    rng: StdRng,
    device: &'a Device,
    params: Vec<(String, Var, bool)>,
    map: VarMap,
}

impl Init<'_> {
    fn register(&mut self, name: &str, var: Var, decay: bool) -> Tensor {
        let t = var.as_tensor().clone();
        self.map
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), var.clone());
        self.params.push((name.to_string(), var, decay));
        t
    }

    fn normal(&mut self, name: &str, shape: (usize, usize), std: f64) -> Result<Tensor> {
        let dist =
            Normal::new(0.0f32, std as f32).expect("std validated > 0 by ProxyConfig::check");
        let n = shape.0 * shape.1;
        let data: Vec<f32> = (0..n).map(|_| dist.sample(&mut self.rng)).collect();
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, self.device)?)?;
        Ok(self.register(name, var, true))
    }

    fn ones(&mut self, name: &str, n: usize) -> Result<Tensor> {
        let var = Var::ones(n, DType::F32, self.device)?;
        Ok(self.register(name, var, false))
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, std: f64) -> Result<Linear> {
        Ok(Linear::new(self.normal(name, (out, inp), std)?, None))
    }
}

impl ProxyModel {
    /// A model with seeded weights, on the kernel set for `device`.
    pub fn new(
        cfg: &ProxyConfig,
        vocab_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, Params)> {
        Self::with_kernels(cfg, vocab_size, seed, device, KernelChoice::Auto)
    }

    /// A model with the weights saved by [`Params::save`] in `path` (a proxy
    /// of the same config and vocabulary).
    pub fn load(
        cfg: &ProxyConfig,
        vocab_size: usize,
        path: &Path,
        device: &Device,
    ) -> Result<(Self, Params)> {
        let (model, params) = Self::new(cfg, vocab_size, 0, device)?;
        params.load(path)?;
        Ok((model, params))
    }

    /// As `new`, with the kernel set chosen explicitly (tests compare the sets).
    pub fn with_kernels(
        cfg: &ProxyConfig,
        vocab_size: usize,
        seed: u64,
        device: &Device,
        choice: KernelChoice,
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
            map: VarMap::new(),
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
        let kernels = Kernels::new(choice, device, cfg.seq_len, head_dim, cfg.rope_theta)?;
        let model = ProxyModel {
            tok_emb,
            blocks,
            final_norm,
            lm_head,
            n_heads: cfg.n_heads,
            head_dim,
            kernels,
        };
        let params = Params {
            vars: init.params,
            map: init.map,
        };
        Ok((model, params))
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
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let k = &self.kernels;
        let shape = (b, t, self.n_heads, self.head_dim);
        for blk in &self.blocks {
            let x = k.rms_norm(&h, &blk.attn_norm)?;
            let q = k.heads(&k.proj(&x, &blk.wq)?, shape, true)?;
            let kk = k.heads(&k.proj(&x, &blk.wk)?, shape, true)?;
            let v = k.heads(&k.proj(&x, &blk.wv)?, shape, false)?;
            let y = k.merge_heads(&k.attention(&q, &kk, &v, scale)?)?;
            h = (h + k.proj(&y, &blk.wo)?)?;
            let x = k.rms_norm(&h, &blk.mlp_norm)?;
            let gate = k.proj(&x, &blk.w_gate)?;
            let up = k.proj(&x, &blk.w_up)?;
            h = (h + k.proj(&k.swiglu(&gate, &up)?, &blk.w_down)?)?;
        }
        k.proj(&k.rms_norm(&h, &self.final_norm)?, &self.lm_head)
    }

    /// Mean next-token cross-entropy (nats) of `ids[:, :-1] → ids[:, 1:]`.
    pub fn loss(&self, window: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t1) = window.dims2()?;
        let inputs = window.narrow(1, 0, t1 - 1)?;
        let targets = window.narrow(1, 1, t1 - 1)?;
        let logits = self.forward_flat(&inputs)?;
        let targets = targets.contiguous()?.reshape(b * (t1 - 1))?;
        self.kernels.cross_entropy(&logits, &targets)
    }
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
        let (basic, basic_params) =
            ProxyModel::with_kernels(&cfg, 20, 7, &dev, KernelChoice::Basic).unwrap();
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

    /// A saved proxy loads back with every parameter and the loss bit for bit;
    /// a file from another config is refused with the tensor named.
    #[test]
    fn save_and_load_round_trip() {
        let cfg = tiny();
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.safetensors");
        let (model, params) = ProxyModel::new(&cfg, 20, 3, &dev).unwrap();
        params.save(&path).unwrap();
        let (loaded, loaded_params) = ProxyModel::load(&cfg, 20, &path, &dev).unwrap();
        assert_eq!(params.vars.len(), loaded_params.vars.len());
        for ((name, a, _), (other, b, _)) in params.vars.iter().zip(&loaded_params.vars) {
            assert_eq!(name, other);
            let a: Vec<f32> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "{name}");
        }
        let ids: Vec<u32> = (0..2 * 9).map(|i| (i * 5 % 20) as u32).collect();
        let window = Tensor::from_vec(ids, (2, 9), &dev).unwrap();
        let l0: f32 = model.loss(&window).unwrap().to_scalar().unwrap();
        let l1: f32 = loaded.loss(&window).unwrap().to_scalar().unwrap();
        assert_eq!(l0.to_bits(), l1.to_bits());
        // Another seed's model differs until it loads the file.
        let (fresh, fresh_params) = ProxyModel::new(&cfg, 20, 4, &dev).unwrap();
        let l2: f32 = fresh.loss(&window).unwrap().to_scalar().unwrap();
        assert_ne!(l0.to_bits(), l2.to_bits());
        fresh_params.load(&path).unwrap();
        let l3: f32 = fresh.loss(&window).unwrap().to_scalar().unwrap();
        assert_eq!(l0.to_bits(), l3.to_bits());
        // Another vocabulary: refused, naming the tensor; nothing changed.
        let (_, other) = ProxyModel::new(&cfg, 21, 3, &dev).unwrap();
        let before: Vec<f32> = other.vars[0]
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = other.load(&path).unwrap_err().to_string();
        assert!(err.contains("tok_emb"), "{err}");
        let after: Vec<f32> = other.vars[0]
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(before, after);
        // Not a safetensors file: a clear error, not a panic.
        std::fs::write(dir.path().join("bad.safetensors"), b"nope").unwrap();
        let err = params
            .load(&dir.path().join("bad.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
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
