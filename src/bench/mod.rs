//! Measuring models: perplexity, speed as llama-bench measures it, KL divergence against a
//! reference variant, `hearth bench`'s comparison of quantization levels against cloud prices, and
//! coding benchmarks (HumanEval) run in a sandbox, priced per solved problem.

pub mod charts;
pub mod compare;
pub mod humaneval;
pub mod kl;
pub mod perplexity;
pub mod report;
pub mod sandbox;
pub mod speed;
pub mod tasks;

/// Bytes in a mebibyte, for the reports' sizes.
const MIB: f64 = (1 << 20) as f64;
