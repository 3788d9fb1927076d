//! Helpers shared by the integration tests: locating pulled models, and candle-transformers'
//! reference models run on the same file.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

/// Path of a pulled catalog model; panics with the command that fetches it when missing.
pub fn model_path(id: &str) -> PathBuf {
    match hearth::catalog::resolve(id) {
        Ok(p) => p,
        Err(e) => panic!("{e}\nfetch the test models with: cargo run --release -- pull smollm2-135m-instruct-q4_1 gemma3-270m-q4_k_m"),
    }
}

/// The reference models from candle-transformers.
pub enum Reference {
    Llama(candle_transformers::models::quantized_llama::ModelWeights),
    Phi3(candle_transformers::models::quantized_phi3::ModelWeights),
    Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights),
    Qwen2(candle_transformers::models::quantized_qwen2::ModelWeights),
}

impl Reference {
    pub fn load(path: &std::path::Path) -> Reference {
        let mut f = std::fs::File::open(path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let arch = ct.metadata["general.architecture"].to_string().unwrap().clone();
        let dev = Device::Cpu;
        match arch.as_str() {
            "llama" => Reference::Llama(candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            "phi3" => Reference::Phi3(candle_transformers::models::quantized_phi3::ModelWeights::from_gguf(false, ct, &mut f, &dev).unwrap()),
            "gemma3" => Reference::Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            "qwen2" => Reference::Qwen2(candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            a => panic!("no reference for {a}"),
        }
    }

    /// Logits of the last token of `tokens`, fed at position `pos`: `[vocab]`.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let x = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let out = match self {
            Reference::Llama(m) => m.forward(&x, pos),
            Reference::Phi3(m) => m.forward(&x, pos),
            Reference::Gemma3(m) => m.forward(&x, pos),
            Reference::Qwen2(m) => m.forward(&x, pos),
        }
        .unwrap();
        out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }
}

/// Greedy continuation of `prompt` by the reference, `n` tokens.
pub fn reference_greedy(path: &std::path::Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut r = Reference::load(path);
    let mut logits = r.forward(prompt, 0);
    let mut out = Vec::new();
    for i in 0..n {
        let t = hearth::engine::sampler::argmax(&logits);
        out.push(t);
        logits = r.forward(&[t], prompt.len() + i);
    }
    out
}

/// Greedy continuation of `prompt` by hearth's decoder, `n` tokens, ignoring end-of-generation.
pub fn hearth_greedy(model: &hearth::model::Model, prompt: &[u32], n: usize) -> Vec<u32> {
    use hearth::model::{Chunk, Logits};
    let mut cache = model.decoder.new_cache();
    let mut logits = model.decoder.forward(&mut [Chunk { tokens: prompt, cache: &mut cache, logits: Logits::Last }]).unwrap().remove(0).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = hearth::engine::sampler::argmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        out.push(t);
        logits = model.decoder.forward(&mut [Chunk { tokens: &[t], cache: &mut cache, logits: Logits::Last }]).unwrap().remove(0).unwrap();
    }
    out
}

pub mod server;
pub mod synth;

/// Loads hearth's decoder for a GGUF file, letting the test adjust the spec first.
pub fn decoder_with(path: &std::path::Path, adjust: impl FnOnce(&mut hearth::model::ModelSpec)) -> hearth::model::Decoder {
    use hearth::model::{weights::Weights, Decoder, GgufFile, ModelSpec};
    let file = GgufFile::open(path).unwrap();
    let mut spec = ModelSpec::from_gguf(&file).unwrap();
    adjust(&mut spec);
    let weights = Weights::load(&file, &spec, &Device::Cpu).unwrap();
    Decoder::new(spec, weights, Device::Cpu)
}

/// Logits of every token of `tokens` fed as successive chunks of the given sizes.
pub fn chunked_logits(dec: &hearth::model::Decoder, tokens: &[u32], sizes: &[usize]) -> Vec<Vec<f32>> {
    use hearth::model::{Chunk, Logits};
    let mut cache = dec.new_cache();
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let rows = dec.forward(&mut [Chunk { tokens: &tokens[at..at + n], cache: &mut cache, logits: Logits::From(0) }]).unwrap().remove(0).unwrap();
        out.extend(rows.to_vec2::<f32>().unwrap());
        at += n;
    }
    assert_eq!(at, tokens.len(), "chunk sizes must cover the tokens");
    out
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
pub fn rel_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(1f32, |m, x| m.max(x.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}
