//! hearth: a local inference runtime for small quantized models, with a cost ledger against
//! cloud APIs.
//!
//! - [`model`]: GGUF files, architectures, the decoder, KV caches, tokenizers, prompt formats.
//! - [`engine`]: sampling, stop conditions and generation.
//! - [`catalog`]: known models, pulling and verifying them, resolving `--model`.
//! - [`bench`]: perplexity and other measurements.
//! - [`ledger`]: local cost against cloud-API cost per request, in SQLite.

pub mod api;
pub mod bench;
pub mod catalog;
pub mod engine;
pub mod ledger;
pub mod model;
