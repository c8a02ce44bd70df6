//! Proxy presets: TOML files in `proxies/` deserialize into `ProxyConfig`
//! (unknown fields rejected), then `check()` validates them once.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the learning rate moves after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Linear warmup, then cosine decay to `lr_peak * lr_min_ratio`.
    Cosine,
    /// Linear warmup, then `lr_peak`.
    Constant,
}

/// One proxy preset: architecture, optimizer and evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub name: String,
    // Architecture (Llama-style: RMSNorm, RoPE, SwiGLU, untied embeddings).
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub seq_len: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    // Optimization (AdamW).
    pub batch_size: usize,
    pub n_steps: usize,
    pub lr_peak: f64,
    #[serde(default = "default_lr_min_ratio")]
    pub lr_min_ratio: f64,
    pub warmup_steps: usize,
    #[serde(default = "default_schedule")]
    pub schedule: LrSchedule,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    // Evaluation.
    /// Validation windows of `seq_len` tokens per domain (evenly spaced, the same for every run).
    pub eval_windows: usize,
    /// Evaluations per run, evenly spaced in steps, the last at the end (1 =
    /// the end only). The earlier ones give a scale-aware law its token axis.
    #[serde(default = "default_checkpoints")]
    pub checkpoints: usize,
}

// Defaults of RegMix's proxy training (its TinyLlama script,
// `model_training/pretrain/tinyllama.py`: AdamW β = (0.9, 0.95), weight decay
// 0.1, gradient clip 1.0, cosine decay) and of Llama (RoPE θ = 10⁴, init std 0.02).
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_init_std() -> f64 {
    0.02
}
fn default_lr_min_ratio() -> f64 {
    0.1
}
fn default_schedule() -> LrSchedule {
    LrSchedule::Cosine
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_checkpoints() -> usize {
    1
}

impl ProxyConfig {
    /// Load a preset: a path to a TOML file, or the name of a built-in preset
    /// (`tiny`, `1m`, … — the files in `proxies/`, compiled in).
    pub fn load(arg: &str) -> Result<Self> {
        let path = Path::new(arg);
        let (text, origin) = if path.exists() || arg.ends_with(".toml") {
            (crate::store::fsio::read_text(path)?, arg.to_string())
        } else if let Some(text) = builtin(arg) {
            (text.to_string(), format!("built-in preset {arg}"))
        } else {
            return Err(Error::invalid(format!(
                "proxy preset {arg:?}: no such file and no built-in preset of that name (built-in: {})",
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        };
        Self::from_toml(&text, &origin)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let cfg: ProxyConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            Error::parse(origin, line, e.message().to_string())
        })?;
        cfg.check()
            .map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// Validate once; only checked configs reach training.
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("seq_len", self.seq_len),
            ("batch_size", self.batch_size),
            ("n_steps", self.n_steps),
            ("eval_windows", self.eval_windows),
            ("checkpoints", self.checkpoints),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::invalid(format!("field {field} must be > 0")));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads)
            || !(self.d_model / self.n_heads).is_multiple_of(2)
        {
            return Err(Error::invalid(format!(
                "field n_heads: d_model ({}) / n_heads ({}) must be an even integer (RoPE rotates pairs)",
                self.d_model, self.n_heads
            )));
        }
        let finite_pos = [
            ("lr_peak", self.lr_peak),
            ("rope_theta", self.rope_theta),
            ("init_std", self.init_std),
        ];
        for (field, v) in finite_pos {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(format!(
                    "field {field} must be > 0, got {v}"
                )));
            }
        }
        let unit = [
            ("lr_min_ratio", self.lr_min_ratio),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
        ];
        for (field, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid(format!(
                    "field {field} must be in [0, 1], got {v}"
                )));
            }
        }
        if !(self.weight_decay >= 0.0 && self.grad_clip >= 0.0) {
            return Err(Error::invalid(
                "fields weight_decay and grad_clip must be >= 0 (grad_clip 0 = off)",
            ));
        }
        if self.checkpoints > self.n_steps {
            return Err(Error::invalid(format!(
                "field checkpoints ({}) exceeds n_steps ({})",
                self.checkpoints, self.n_steps
            )));
        }
        if self.warmup_steps > self.n_steps {
            return Err(Error::invalid(format!(
                "field warmup_steps ({}) exceeds n_steps ({})",
                self.warmup_steps, self.n_steps
            )));
        }
        Ok(())
    }

    /// Learning rate at 0-based `step`: linear warmup, then cosine or constant.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr_peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            LrSchedule::Constant => self.lr_peak,
            LrSchedule::Cosine => {
                let span = (self.n_steps - self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let lr_min = self.lr_peak * self.lr_min_ratio;
                lr_min
                    + 0.5
                        * (self.lr_peak - lr_min)
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Steps after which a run evaluates (1-based counts of steps taken):
    /// `checkpoints` evenly spaced values, the last being `n_steps`.
    pub fn checkpoint_steps(&self) -> Vec<usize> {
        let k = self.checkpoints.max(1);
        (1..=k).map(|i| i * self.n_steps / k).collect()
    }

    /// Tokens seen in training.
    pub fn n_tokens(&self) -> u64 {
        (self.n_steps * self.batch_size * self.seq_len) as u64
    }

    /// Non-embedding parameters (attention + MLP + norms), the figure RegMix quotes.
    pub fn n_params_non_embedding(&self) -> usize {
        let d = self.d_model;
        self.n_layers * (4 * d * d + 3 * d * self.d_ff + 2 * d) + d
    }
}

/// Presets compiled into the binary so `--proxy tiny` works from any directory.
const BUILTIN: &[(&str, &str)] = &[
    ("base", include_str!("../../proxies/base.toml")),
    ("tiny", include_str!("../../proxies/tiny.toml")),
    ("small", include_str!("../../proxies/small.toml")),
    ("1m", include_str!("../../proxies/1m.toml")),
    ("60m", include_str!("../../proxies/60m.toml")),
];

fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_parse_and_check() {
        for (name, _) in BUILTIN {
            let cfg = ProxyConfig::load(name).unwrap();
            assert_eq!(&cfg.name, name);
        }
        // RegMix's 1M proxy: 2 layers, d=256, FFN 512 (SwiGLU: 3 matrices) → ~1.3M
        // non-embedding params, the shape RegMix calls "1M".
        let m = ProxyConfig::load("1m").unwrap();
        let n = m.n_params_non_embedding();
        assert!((1_000_000..1_400_000).contains(&n), "{n}");
        // RegMix's 60M proxy (tinyllama_60M): 10 layers, d=768, FFN 1536 → ~59M.
        let m = ProxyConfig::load("60m").unwrap();
        let n = m.n_params_non_embedding();
        assert!((55_000_000..62_000_000).contains(&n), "{n}");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = include_str!("../../proxies/tiny.toml").to_string() + "\nlearning_rate = 1.0\n";
        let err = ProxyConfig::from_toml(&text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("learning_rate") && err.contains("x.toml"),
            "{err}"
        );
    }

    #[test]
    fn lr_schedule_warms_up_and_decays() {
        let cfg = ProxyConfig::load("tiny").unwrap();
        assert!(cfg.lr_at(0) < cfg.lr_at(cfg.warmup_steps - 1));
        assert!((cfg.lr_at(cfg.warmup_steps) - cfg.lr_peak).abs() < 1e-9);
        let last = cfg.lr_at(cfg.n_steps - 1);
        assert!(last < cfg.lr_peak * 0.2 && last >= cfg.lr_peak * cfg.lr_min_ratio - 1e-12);
    }
}
