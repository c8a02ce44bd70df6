//! Proxy language models: the tiny Llama-style decoders a sweep trains, one per
//! candidate mixture, to measure how the mixture moves per-domain validation loss.
//!
//! `config` (presets from `proxies/*.toml`), `model` (the decoder in candle),
//! `train` (the loop: sample a batch by mixture, step, evaluate per domain;
//! its batches in `batch`, its held-out evaluation in `eval`),
//! `ops`, `heads` and `optim` (fused CPU kernels and the fused AdamW step;
//! `simd` picks their instruction set at run time).

pub mod attention;
pub mod batch;
pub mod config;
pub mod device;
pub mod eval;
pub mod heads;
pub mod kernels;
pub mod linear;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod simd;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testing;
pub mod train;
pub mod validate;

pub use config::ProxyConfig;
pub use device::{parse_device, set_threads};
pub use eval::eval_offsets;
pub use train::{train_proxy, Checkpoint, TrainOptions, TrainReport};
