//! The one table of architectures: GGUF name ↔ [`Arch`] ↔ the switches the decoder needs, and
//! [`ModelSpec`], every hyper-parameter read from GGUF metadata.

use super::gguf::{GgufFile, GgufError};

/// The architectures hearth runs. Everything architecture-specific is a method here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama, SmolLM, Mistral-style files (`general.architecture = llama`).
    Llama,
    /// Qwen2 / Qwen2.5(-Coder): llama with q/k/v biases and NeoX RoPE.
    Qwen2,
    /// Phi-3: fused `attn_qkv` and fused gate/up `ffn_up`.
    Phi3,
    /// Gemma 3: sliding-window and global layers, q/k norms, pre- and post-norms, GELU-tanh.
    Gemma3,
}

/// How rotary position embeddings pair up dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (llama.cpp's "normal" mode; GGUF llama files are permuted for it).
    Interleaved,
    /// First half with second half (llama.cpp's NeoX mode).
    Neox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// Chat format used when a file carries no `tokenizer.chat_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    ChatMl,
    Gemma,
    Phi3,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Phi3, Arch::Gemma3];

    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Phi3 => "phi3",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.gguf_name() == name)
    }

    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 | Arch::Phi3 | Arch::Gemma3 => RopeStyle::Neox,
        }
    }

    pub fn activation(self) -> Activation {
        match self {
            Arch::Gemma3 => Activation::GeluTanh,
            _ => Activation::Silu,
        }
    }

    pub fn fused_qkv(self) -> bool {
        self == Arch::Phi3
    }

    pub fn fused_gate_up(self) -> bool {
        self == Arch::Phi3
    }

    /// Gemma 3: RMS norm on each query and key head, and norms after attention and FFN.
    pub fn gemma_norms(self) -> bool {
        self == Arch::Gemma3
    }

    /// Gemma scales token embeddings by sqrt(d_model).
    pub fn scales_embedding(self) -> bool {
        self == Arch::Gemma3
    }

    pub fn chat_format(self) -> ChatFormat {
        match self {
            Arch::Gemma3 => ChatFormat::Gemma,
            Arch::Phi3 => ChatFormat::Phi3,
            Arch::Llama | Arch::Qwen2 => ChatFormat::ChatMl,
        }
    }
}

/// Hyper-parameters of one model, all from GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ff_len: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f64,
    /// Number of leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (Gemma 3); equal to `rope_base` elsewhere.
    pub rope_base_local: f32,
    /// Linear RoPE scaling factor applied to global layers (1.0 when absent).
    pub rope_scale: f32,
    /// Keys further than this many positions back are invisible on sliding layers.
    pub sliding_window: Option<usize>,
    /// Which layers slide (Gemma 3: all but every sixth, or as the file's pattern says).
    pub sliding_layers: Vec<bool>,
    /// The feed-forward activation. Public so tests can reproduce a reference's known fault.
    pub activation: Activation,
    /// Attention scores are divided by this (sqrt of the head size).
    pub attn_divisor: f64,
}

impl ModelSpec {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let arch_name = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| file.error("metadata general.architecture is missing"))?;
        let arch = Arch::from_gguf_name(arch_name).ok_or_else(|| {
            let known: Vec<_> = Arch::ALL.iter().map(|a| a.gguf_name()).collect();
            file.error(format!("unknown architecture \"{arch_name}\" (hearth runs: {})", known.join(", ")))
        })?;
        let p = arch.gguf_name();
        let int = |key: &str| -> Result<usize, GgufError> {
            let full = format!("{p}.{key}");
            let v = file.get(&full).ok_or_else(|| file.error(format!("metadata {full} is missing")))?;
            v.as_u64()
                .filter(|&n| n > 0 && n < (1 << 31))
                .map(|n| n as usize)
                .ok_or_else(|| file.error(format!("metadata {full} must be a positive integer, got {v:?}")))
        };
        let opt_int = |key: &str| file.get(&format!("{p}.{key}")).and_then(|v| v.as_u64()).map(|v| v as usize);
        let opt_f = |key: &str| file.get(&format!("{p}.{key}")).and_then(|v| v.as_f64());
        // A float hyper-parameter, when present, must be finite and within (lo, hi).
        let checked_f = |key: &str, lo: f64, hi: f64| -> Result<Option<f64>, GgufError> {
            match opt_f(key) {
                Some(x) if !(x.is_finite() && x > lo && x < hi) => Err(file.error(format!("metadata {p}.{key} must be a finite number in ({lo}, {hi}), got {x}"))),
                x => Ok(x),
            }
        };
        checked_f("attention.layer_norm_rms_epsilon", 0.0, 1.0)?;
        checked_f("rope.freq_base", 0.0, 1e12)?;
        checked_f("rope.local_freq_base", 0.0, 1e12)?;
        checked_f("rope.scaling.factor", 0.0, 1e6)?;

        let n_layer = int("block_count")?;
        // Every layer has tensors of its own: a count beyond the file's tensors is corrupt (and
        // must not size an allocation).
        let layers_in_file = file.tensors.iter().filter(|t| t.name.starts_with("blk.")).count();
        if n_layer > layers_in_file {
            return Err(file.error(format!("metadata {p}.block_count = {n_layer}, but the file holds {layers_in_file} layer tensors")));
        }
        let d_model = int("embedding_length")?;
        let n_head = int("attention.head_count")?;
        let n_kv_head = opt_int("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = opt_int("attention.key_length").unwrap_or(d_model / n_head);
        let ff_len = int("feed_forward_length")?;
        let context_length = int("context_length")?;
        let rms_eps = opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
        let rope_dim = opt_int("rope.dimension_count").unwrap_or(head_dim);
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(file.error(format!("{n_head} query heads cannot be grouped over {n_kv_head} key/value heads")));
        }
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(file.error(format!("rope dimension {rope_dim} must be even and at most the head size {head_dim}")));
        }
        if let Some(kind) = file.get(&format!("{p}.rope.scaling.type")).and_then(|v| v.as_str()) {
            if kind != "none" && kind != "linear" {
                return Err(file.error(format!("RoPE scaling \"{kind}\" is not supported yet (linear only)")));
            }
        }
        let rope_base = opt_f("rope.freq_base").unwrap_or(10_000.0) as f32;
        let (rope_base_local, sliding_window, sliding_layers) = match arch {
            Arch::Gemma3 => {
                let pattern = file.get(&format!("{p}.attention.sliding_window_pattern"));
                let layers = match pattern.and_then(|v| v.as_array()) {
                    Some(flags) => {
                        let flags: Option<Vec<bool>> = flags.iter().map(|f| f.as_bool()).collect();
                        flags.filter(|f| f.len() == n_layer).ok_or_else(|| {
                            file.error(format!("{p}.attention.sliding_window_pattern must hold {n_layer} booleans"))
                        })?
                    }
                    None => {
                        let period = pattern.and_then(|v| v.as_u64()).filter(|&n| n > 0).unwrap_or(6) as usize;
                        (0..n_layer).map(|i| (i + 1) % period != 0).collect()
                    }
                };
                (
                    opt_f("rope.local_freq_base").unwrap_or(10_000.0) as f32,
                    opt_int("attention.sliding_window").filter(|&w| w > 0),
                    layers,
                )
            }
            _ => (rope_base, None, vec![false; n_layer]),
        };
        let rope_scale = opt_f("rope.scaling.factor").filter(|&f| f > 0.0).unwrap_or(1.0) as f32;
        let embd = file.tensor("token_embd.weight").ok_or_else(|| file.error("tensor token_embd.weight is missing"))?;
        let vocab_size = embd.dims[0];
        Ok(Self {
            arch,
            n_layer,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            ff_len,
            vocab_size,
            context_length,
            rms_eps,
            rope_dim,
            rope_base,
            rope_base_local,
            rope_scale,
            sliding_window,
            sliding_layers,
            activation: arch.activation(),
            attn_divisor: (head_dim as f64).sqrt(),
        })
    }

    /// The window of layer `i`, if it slides.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.sliding_layers.get(layer).copied().unwrap_or(false))
    }
}
