//! hearth: a local inference runtime for small quantized models, with a cost ledger against
//! cloud APIs.
//!
//! - [`model`]: GGUF files, architectures, the decoder, KV caches, tokenizers, prompt formats.
//! - [`engine`]: the batching scheduler, sampling, stop conditions; one token loop for all callers.
//! - [`catalog`]: known models, pulling and verifying them, resolving `--model`.
//! - [`bench`]: perplexity and other measurements.
//! - [`energy`]: the energy the engine's steps use (RAPL or a CPU-time estimate).
//! - [`ledger`]: local cost against cloud-API cost per request, in SQLite.
//! - [`api`]: the HTTP API (OpenAI-compatible, llama.cpp's infill) over the engine.
//! - [`cli`]: the `hearth` command line, one file per subcommand.

pub mod api;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod energy;
pub mod engine;
pub mod ledger;
pub mod model;
