//! Measuring models: perplexity now; quantization comparisons later.

pub mod perplexity;
