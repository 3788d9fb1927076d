//! Random-weight GGUF files with the exact tensor shapes and metadata of real models (`hearth
//! synth`), quantized the way users' files are: speed and memory do not depend on weight values,
//! so these stand in for Qwen2.5-Coder, Llama 3.2, Phi-3 and Gemma 3 files in benchmarks. The
//! vocabulary is byte-level (GPT-2 style: the 256 byte tokens, a few control tokens, then filler
//! tokens up to the real size), so any text tokenizes; the weights are uniform with the standard
//! deviation 1/sqrt(row length), as real weights roughly have.

use std::collections::BTreeMap;
use std::path::Path;

use super::gguf::{TensorInfo, TensorType, Value};
use super::quantize::{self, Report, Target};
use super::ModelError;

/// The hyper-parameters of a real model (from its config.json / GGUF metadata).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub arch: &'static str,
    pub d_model: usize,
    pub layers: usize,
    pub ff: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub ctx: u32,
    pub rope_base: f32,
    /// The output layer is the token embedding.
    pub tied: bool,
    /// q/k/v projections have biases (qwen2).
    pub qkv_bias: bool,
    /// Gemma 3's sliding window on local layers.
    pub window: Option<u32>,
}

const fn shape(name: &'static str, arch: &'static str, dims: [usize; 7], ctx: u32, rope_base: f32, tied: bool) -> Shape {
    let [d_model, layers, ff, heads, kv_heads, head_dim, vocab] = dims;
    Shape { name, arch, d_model, layers, ff, heads, kv_heads, head_dim, vocab, ctx, rope_base, tied, qkv_bias: false, window: None }
}

const fn qwen2(s: Shape) -> Shape {
    Shape { qkv_bias: true, ..s }
}

const fn gemma3(s: Shape) -> Shape {
    Shape { window: Some(512), ..s }
}

/// Every shape `hearth synth` writes: [d_model, layers, ffn, heads, kv heads, head size, vocabulary].
pub const SHAPES: &[Shape] = &[
    shape("smollm2-135m", "llama", [576, 30, 1536, 9, 3, 64, 49152], 8192, 1e5, true),
    qwen2(shape("qwen2.5-coder-0.5b", "qwen2", [896, 24, 4864, 14, 2, 64, 151936], 32768, 1e6, true)),
    qwen2(shape("qwen2.5-coder-1.5b", "qwen2", [1536, 28, 8960, 12, 2, 128, 151936], 32768, 1e6, true)),
    qwen2(shape("qwen2.5-coder-7b", "qwen2", [3584, 28, 18944, 28, 4, 128, 152064], 32768, 1e6, false)),
    shape("llama-3.2-1b", "llama", [2048, 16, 8192, 32, 8, 64, 128256], 131072, 5e5, true),
    shape("llama-3.2-3b", "llama", [3072, 28, 8192, 24, 8, 128, 128256], 131072, 5e5, true),
    shape("phi-3-mini", "phi3", [3072, 32, 8192, 32, 32, 96, 32064], 4096, 1e4, false),
    gemma3(shape("gemma-3-270m", "gemma3", [640, 18, 2048, 4, 1, 256, 262144], 32768, 1e6, true)),
    gemma3(shape("gemma-3-1b", "gemma3", [1152, 26, 6912, 4, 1, 256, 262144], 32768, 1e6, true)),
];

/// The shape called `name`, or an error listing them.
pub fn find(name: &str) -> Result<Shape, ModelError> {
    SHAPES.iter().find(|s| s.name.eq_ignore_ascii_case(name)).copied().ok_or_else(|| {
        let names: Vec<_> = SHAPES.iter().map(|s| s.name).collect();
        ModelError::Input(format!("unknown shape {name:?}; expected one of {}", names.join(", ")))
    })
}

/// Control tokens: ChatML's, FIM's, and SentencePiece's three (llama.cpp looks those up by text
/// when the model's name says Phi-3).
const SPECIALS: [&str; 9] =
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<s>", "</s>", "<unk>"];

impl Shape {
    /// Parameters, all tensors counted.
    pub fn params(&self) -> usize {
        self.tensors().iter().map(|t| t.dims.iter().product::<usize>()).sum()
    }

    /// Every tensor as the real file lays it out: weights F16, norms and biases F32.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let (d, hd, ff, v) = (self.d_model, self.head_dim, self.ff, self.vocab);
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        let mut out: Vec<(String, Vec<usize>)> = vec![("token_embd.weight".into(), vec![v, d]), ("output_norm.weight".into(), vec![d])];
        if !self.tied {
            out.push(("output.weight".into(), vec![v, d]));
        }
        for i in 0..self.layers {
            let mut t = |name: &str, dims: &[usize]| out.push((format!("blk.{i}.{name}"), dims.to_vec()));
            t("attn_norm.weight", &[d]);
            t("ffn_norm.weight", &[d]);
            if self.arch == "phi3" {
                t("attn_qkv.weight", &[qd + 2 * kvd, d]);
                t("ffn_up.weight", &[2 * ff, d]);
            } else {
                t("attn_q.weight", &[qd, d]);
                t("attn_k.weight", &[kvd, d]);
                t("attn_v.weight", &[kvd, d]);
                t("ffn_gate.weight", &[ff, d]);
                t("ffn_up.weight", &[ff, d]);
            }
            if self.qkv_bias {
                t("attn_q.bias", &[qd]);
                t("attn_k.bias", &[kvd]);
                t("attn_v.bias", &[kvd]);
            }
            if self.arch == "gemma3" {
                t("attn_q_norm.weight", &[hd]);
                t("attn_k_norm.weight", &[hd]);
                t("post_attention_norm.weight", &[d]);
                t("post_ffw_norm.weight", &[d]);
            }
            t("attn_output.weight", &[d, qd]);
            t("ffn_down.weight", &[d, ff]);
        }
        out.into_iter()
            .map(|(name, dims)| {
                let ty = if dims.len() == 2 { TensorType::F16 } else { TensorType::F32 };
                let size = dims.iter().product::<usize>() * if dims.len() == 2 { 2 } else { 4 };
                TensorInfo { name, dims, ty, offset: 0, size }
            })
            .collect()
    }

    /// The architecture's hyper-parameters and a byte-level GPT-2 tokenizer.
    pub fn metadata(&self) -> BTreeMap<String, Value> {
        let a = self.arch;
        let u = |x: usize| Value::U32(x as u32);
        let mut md: BTreeMap<String, Value> = [
            ("general.architecture".to_string(), Value::String(a.into())),
            ("general.name".into(), Value::String(format!("random-weight {}", self.name))),
            (format!("{a}.block_count"), u(self.layers)),
            (format!("{a}.context_length"), Value::U32(self.ctx)),
            (format!("{a}.embedding_length"), u(self.d_model)),
            (format!("{a}.feed_forward_length"), u(self.ff)),
            (format!("{a}.attention.head_count"), u(self.heads)),
            (format!("{a}.attention.head_count_kv"), u(self.kv_heads)),
            (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            (format!("{a}.rope.freq_base"), Value::F32(self.rope_base)),
            (format!("{a}.rope.dimension_count"), u(self.head_dim)),
        ]
        .into_iter()
        .collect();
        if let Some(window) = self.window {
            md.insert(format!("{a}.attention.key_length"), u(self.head_dim));
            md.insert(format!("{a}.attention.value_length"), u(self.head_dim));
            md.insert(format!("{a}.attention.sliding_window"), Value::U32(window));
            md.insert(format!("{a}.rope.local_freq_base"), Value::F32(1e4));
        }
        let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
        tokens.extend(SPECIALS.iter().map(|s| s.to_string()));
        let mut types = vec![1i32; 256];
        types.extend([3; SPECIALS.len()]);
        let filler = self.vocab.saturating_sub(tokens.len());
        tokens.extend((0..filler).map(|i| format!("<filler_{i}>")));
        types.extend(std::iter::repeat_n(1, filler));
        md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        md.insert("tokenizer.ggml.pre".into(), Value::String("default".into()));
        md.insert("tokenizer.ggml.tokens".into(), Value::Array(tokens.into_iter().map(Value::String).collect()));
        md.insert("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect()));
        md.insert("tokenizer.ggml.merges".into(), Value::EmptyArray(8));
        md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(256));
        md.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(256));
        md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
        md
    }
}

/// GPT-2's byte → printable character table.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..127).contains(&b) || (161..173).contains(&b) || (174..256).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("a Latin-1 code point")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("a Latin Extended code point")
            }
        })
        .collect()
}

/// SplitMix64: a tiny, fast generator; each chunk of each tensor has its own seed, so the values
/// do not depend on how many threads make them.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const CHUNK: usize = 1 << 16;

/// `n` values uniform in `center ± half`, made on `threads` threads.
fn uniform(n: usize, center: f32, half: f32, seed: u64, threads: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    let per = n.div_ceil(CHUNK).div_ceil(threads.max(1)).max(1) * CHUNK;
    std::thread::scope(|s| {
        for (g, part) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (j, chunk) in part.chunks_mut(CHUNK).enumerate() {
                    let mut state = seed ^ ((g * per / CHUNK + j) as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
                    for x in chunk.iter_mut() {
                        // 24 random bits → [-1, 1).
                        let r = (splitmix(&mut state) >> 40) as f32 / (1u32 << 23) as f32 - 1.0;
                        *x = center + r * half;
                    }
                }
            });
        }
    });
    out
}

fn name_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed ^ 0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
}

/// Writes `shape` (with `layers` layers if given) under `target` to `out`, quantizing each tensor
/// as it is made; `progress` sees (done, total, tensor name).
pub fn write(
    shape: &Shape,
    layers: Option<usize>,
    target: Target,
    seed: u64,
    out: &Path,
    threads: usize,
    progress: impl FnMut(usize, usize, &str),
) -> Result<Report, ModelError> {
    let shape = Shape { layers: layers.unwrap_or(shape.layers), ..*shape };
    let tensors = shape.tensors();
    let choices = quantize::plan(&tensors, target);
    let out_bytes = quantize::write(out, &shape.metadata(), target, &choices, progress, |_, c| {
        let n: usize = c.dims.iter().product();
        let cols = *c.dims.last().expect("tensors have dimensions");
        let (center, half) = if c.dims.len() == 2 {
            (0.0, (3.0 / cols as f32).sqrt())
        } else if c.name.ends_with(".bias") {
            (0.0, 0.1)
        } else {
            (1.0, 0.1)
        };
        let values = uniform(n, center, half, name_seed(seed, &c.name), threads);
        quantize::encode(&values, cols, c.to.ggml_dtype().expect("planned types are supported"), threads)
    })?;
    let in_bytes = tensors.iter().map(|t| t.size).sum();
    Ok(Report { choices, in_bytes, out_bytes })
}
