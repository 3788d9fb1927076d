//! Measuring models: perplexity, and speed as llama-bench measures it.

pub mod perplexity;
pub mod speed;
