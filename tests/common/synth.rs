//! Writes small GGUF files with random weights, real tensor names and real metadata keys, so each
//! architecture can be checked against an independent implementation without real weights.
#![allow(dead_code)]

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shape and options of a synthetic model.
#[derive(Debug, Clone)]
pub struct Synth {
    pub arch: &'static str,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ff_len: usize,
    pub context: usize,
    pub rope_base: f32,
    pub sliding_window: Option<usize>,
    pub tied_output: bool,
    pub seed: u64,
    /// Extra control tokens appended after the byte tokens (e.g. FIM tokens).
    pub specials: Vec<&'static str>,
    /// Written as `tokenizer.chat_template` when set (otherwise hearth uses the architecture's).
    pub chat_template: Option<&'static str>,
}

impl Synth {
    pub fn new(arch: &'static str) -> Self {
        Self {
            arch,
            n_layer: 2,
            d_model: 256,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 64,
            ff_len: 512,
            context: 256,
            rope_base: 10_000.0,
            sliding_window: None,
            tied_output: false,
            seed: 7,
            specials: vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<pad1>", "<pad2>"],
            chat_template: None,
        }
    }

    pub fn vocab_size(&self) -> usize {
        256 + self.specials.len()
    }
}

/// GPT-2's byte → printable character table.
pub fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars = vec!['\0'; 256];
    for &b in &printable {
        chars[b as usize] = char::from_u32(b).unwrap();
    }
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    chars
}

struct Rand(StdRng);

impl Rand {
    fn tensor(&mut self, dims: &[usize], mean: f32, std: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| mean + std * (self.0.random::<f32>() * 2.0 - 1.0) * 1.7).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }
    fn q(&mut self, dims: &[usize], ty: GgmlDType) -> QTensor {
        let std = 1.0 / (*dims.last().unwrap() as f32).sqrt();
        QTensor::quantize(&self.tensor(dims, 0.0, std), ty).unwrap()
    }
    fn norm(&mut self, len: usize) -> QTensor {
        QTensor::quantize(&self.tensor(&[len], 1.0, 0.1), GgmlDType::F32).unwrap()
    }
    fn bias(&mut self, len: usize) -> QTensor {
        QTensor::quantize(&self.tensor(&[len], 0.0, 0.1), GgmlDType::F32).unwrap()
    }
}

/// Writes the model to `path`.
pub fn write(path: &Path, s: &Synth) {
    let mut r = Rand(StdRng::seed_from_u64(s.seed));
    let a = s.arch;
    let (d, hd, ff, v) = (s.d_model, s.head_dim, s.ff_len, s.vocab_size());
    let (q_dim, kv_dim) = (s.n_head * hd, s.n_kv_head * hd);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // Q4_K needs rows that are a multiple of 256; Q8_0 covers the rest.
    let kq = |cols: usize| if cols % 256 == 0 { GgmlDType::Q4K } else { GgmlDType::Q8_0 };
    tensors.push(("token_embd.weight".into(), r.q(&[v, d], GgmlDType::Q8_0)));
    tensors.push(("output_norm.weight".into(), r.norm(d)));
    if !s.tied_output {
        tensors.push(("output.weight".into(), r.q(&[v, d], GgmlDType::Q8_0)));
    }
    for i in 0..s.n_layer {
        let p = format!("blk.{i}");
        let mut t = |n: &str, q: QTensor| tensors.push((format!("{p}.{n}"), q));
        t("attn_norm.weight", r.norm(d));
        t("ffn_norm.weight", r.norm(d));
        t("attn_output.weight", r.q(&[d, q_dim], GgmlDType::Q8_0));
        t("ffn_down.weight", r.q(&[d, ff], kq(ff)));
        if a == "phi3" {
            t("attn_qkv.weight", r.q(&[q_dim + 2 * kv_dim, d], kq(d)));
            t("ffn_up.weight", r.q(&[2 * ff, d], kq(d)));
        } else {
            t("attn_q.weight", r.q(&[q_dim, d], kq(d)));
            t("attn_k.weight", r.q(&[kv_dim, d], kq(d)));
            t("attn_v.weight", r.q(&[kv_dim, d], GgmlDType::Q8_0));
            t("ffn_gate.weight", r.q(&[ff, d], kq(d)));
            t("ffn_up.weight", r.q(&[ff, d], kq(d)));
        }
        if a == "qwen2" {
            t("attn_q.bias", r.bias(q_dim));
            t("attn_k.bias", r.bias(kv_dim));
            t("attn_v.bias", r.bias(kv_dim));
        }
        if a == "gemma3" {
            t("attn_q_norm.weight", r.norm(hd));
            t("attn_k_norm.weight", r.norm(hd));
            t("post_attention_norm.weight", r.norm(d));
            t("post_ffw_norm.weight", r.norm(d));
        }
    }

    let u = |x: usize| Value::U32(x as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String(format!("synthetic {a}"))),
        (format!("{a}.block_count"), u(s.n_layer)),
        (format!("{a}.context_length"), u(s.context)),
        (format!("{a}.embedding_length"), u(d)),
        (format!("{a}.feed_forward_length"), u(ff)),
        (format!("{a}.attention.head_count"), u(s.n_head)),
        (format!("{a}.attention.head_count_kv"), u(s.n_kv_head)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        (format!("{a}.rope.freq_base"), Value::F32(s.rope_base)),
        (format!("{a}.rope.dimension_count"), u(hd)),
    ];
    if a == "gemma3" {
        md.push((format!("{a}.attention.key_length"), u(hd)));
        md.push((format!("{a}.attention.value_length"), u(hd)));
        md.push((format!("{a}.attention.sliding_window"), u(s.sliding_window.unwrap_or(s.context))));
        md.push((format!("{a}.rope.local_freq_base"), Value::F32(10_000.0)));
    }
    let chars = byte_chars();
    let mut tokens: Vec<Value> = (0..256).map(|b| Value::String(chars[b].to_string())).collect();
    let mut types: Vec<Value> = vec![Value::I32(1); 256];
    for sp in &s.specials {
        tokens.push(Value::String(sp.to_string()));
        types.push(Value::I32(3));
    }
    md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
    md.push(("tokenizer.ggml.merges".into(), Value::Array(vec![])));
    md.push(("tokenizer.ggml.eos_token_id".into(), u(256)));
    md.push(("tokenizer.ggml.bos_token_id".into(), u(256)));
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
    if let Some(t) = s.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::String(t.into())));
    }

    let mut f = std::fs::File::create(path).unwrap();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}
