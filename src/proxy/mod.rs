//! Proxy language models: the tiny Llama-style decoders a sweep trains, one per
//! candidate mixture, to measure how the mixture moves per-domain validation loss.
//!
//! `config` (presets from `proxies/*.toml`), `model` (the decoder in candle),
//! `train` (the loop: sample a batch by mixture, step, evaluate per domain),
//! `ops` and `optim` (fused CPU kernels and the fused AdamW step).

pub mod attention;
pub mod config;
pub mod device;
pub mod kernels;
pub mod linear;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod sweep;
pub mod train;
pub mod validate;

pub use config::ProxyConfig;
pub use device::parse_device;
pub use train::{train_proxy, Checkpoint, TrainOptions, TrainReport};
