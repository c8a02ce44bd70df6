//! Corpus stage, the first step of the pipeline: domain corpora (txt, jsonl,
//! compressed jsonl, parquet) → a token cache of flat per-domain token files
//! plus a manifest, which training memory-maps.
//!
//! - `source`: resolve domain paths to files;
//! - `documents`: stream a file's documents (txt, jsonl, parquet);
//! - `tokenizer`: byte-level or HuggingFace `tokenizer.json`, plus a separator id;
//! - `cache`: the on-disk layout, `TokenCache` for readers, `TokenWriter`;
//! - `manifest`: the cache's `manifest.json` and its content fingerprint;
//! - `spec`: what to prepare (domains, options) and its checks;
//! - `fingerprint`: source stamps and hashes, the inputs fingerprint;
//! - `prepare`: the driver behind `mixopt prepare` (and the demo);
//! - `split`: one domain's documents → its train, validation and test bins;
//! - `synthetic`: the built-in demo corpus.

pub mod cache;
pub mod documents;
pub mod fingerprint;
pub mod manifest;
mod parquet_text;
pub mod prepare;
pub mod source;
pub mod spec;
pub mod split;
pub mod synthetic;
pub mod tokenizer;

pub use cache::{Manifest, TokenCache, TokenView};
pub use prepare::{prepare, PrepareReport, PrepareSpec};
pub use tokenizer::TextTokenizer;
