//! mixopt: find the data mixture for LLM pre-training.
//!
//! The pipeline, one module per stage:
//! `corpus` (prepare: documents → token cache) → `mixture` (what a mixture is,
//! and the RegMix prior sampler) → `proxy` (train a tiny LM on a mixture) →
//! `store` (the runs table) → `law` (fit loss as a function of proportions) →
//! `optimize` (propose the mixture the law likes best) → `export` (write it
//! into a pretraining framework's config). `online` updates a mixture while a
//! model trains; `report` renders everything as one HTML file.
//! `cmd` holds one file per subcommand; `cli` the argument types.

pub mod cli;
pub mod cmd;
pub mod corpus;
pub mod error;
pub mod export;
pub mod law;
pub mod mixture;
pub mod online;
pub mod optimize;
pub mod params;
pub mod progress;
pub mod proxy;
pub mod report;
pub mod store;

pub use error::{Error, Result};
pub use mixture::Mixture;

/// Version recorded in every stored result.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
