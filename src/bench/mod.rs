//! Measuring models: perplexity, speed as llama-bench measures it, KL divergence against a
//! reference variant, and `hearth bench`'s comparison of quantization levels against cloud prices.

pub mod charts;
pub mod compare;
pub mod kl;
pub mod perplexity;
pub mod report;
pub mod speed;

/// Bytes in a mebibyte, for the reports' sizes.
const MIB: f64 = (1 << 20) as f64;
