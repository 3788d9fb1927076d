//! One transformer forward for every architecture, over a batch of sequences at different positions.
//!
//! All tokens of all sequences in a step are stacked into one `[N, d_model]` matrix so each weight
//! is multiplied once per step; only attention is done per sequence, against that sequence's cache.

use candle_core::{Device, Tensor};

use super::arch::{ModelSpec, RopeStyle};
use super::gpu;
use super::kernels::cuda::{self, Step};
use super::kernels::{activation, attention};
use super::kv_cache::{CacheType, KvCache, LayerView, Q8_BLOCK};
use super::weights::{Attn, Ffn, Layer, Linear, Weights};
use super::ModelError;

/// A run of new tokens for one sequence in a batched step.
pub struct Chunk<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Which rows get logits: the last token only, or every token from an index on
    /// (perplexity, prompt logprobs).
    pub logits: Logits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: a prompt chunk that is not the prompt's last.
    None,
    Last,
    From(usize),
}

/// A loaded model: its spec and weights on one device.
pub struct Decoder {
    pub spec: ModelSpec,
    pub device: Device,
    weights: Weights,
    /// hearth's CUDA kernels serve this model's RoPE, cache stores, attention and activation
    /// (a CUDA device, kernels not turned off, no per-head norms, heads of at most 256).
    cuda: bool,
    /// What new caches store keys and values as.
    cache_type: CacheType,
}

/// cos/sin tables for every row of a step, per RoPE base.
struct RopeTables {
    global: (Tensor, Tensor),
    local: (Tensor, Tensor),
}

type Res<T> = candle_core::Result<T>;

impl Decoder {
    pub fn new(spec: ModelSpec, weights: Weights, device: Device) -> Self {
        let cuda = cuda::available(&device)
            && spec.head_dim <= 256
            && spec.rope_dim % 2 == 0
            && spec.n_head % spec.n_kv_head == 0
            && weights.layers.iter().all(|l| l.q_norm.is_none() && l.k_norm.is_none());
        let cache_type = if device.is_cpu() { CacheType::default() } else { CacheType::F32 };
        Self { spec, device, weights, cuda, cache_type }
    }

    /// Makes caches created from now on store keys and values as `t`, and returns the type they
    /// will use: on the CPU `t`; GPUs keep f32 (hearth's CUDA kernels read and write f32 caches).
    /// Q8_0 needs head sizes in whole blocks of 32.
    pub fn set_cache_type(&mut self, t: CacheType) -> Result<CacheType, ModelError> {
        if !self.device.is_cpu() {
            return Ok(self.cache_type);
        }
        if t == CacheType::Q8_0 && self.spec.head_dim % Q8_BLOCK != 0 {
            return Err(ModelError::Input(format!(
                "a q8_0 KV cache needs a head size in whole blocks of {Q8_BLOCK}; this model's is {}",
                self.spec.head_dim
            )));
        }
        self.cache_type = t;
        Ok(t)
    }

    /// What new caches store keys and values as.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }

    /// A fresh cache sized for this model's context length.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.spec.n_layer, self.spec.context_length, self.cache_type)
    }

    /// Runs one step over all chunks; returns per chunk its logits, `[rows, vocab]`, for the rows
    /// its [`Logits`] asks for (`None` for [`Logits::None`]).
    pub fn forward(&self, chunks: &mut [Chunk<'_>]) -> Result<Vec<Option<Tensor>>, ModelError> {
        for c in chunks.iter() {
            if c.tokens.is_empty() {
                return Err(ModelError::Input("empty chunk".into()));
            }
            let end = c.cache.len() + c.tokens.len();
            if end > c.cache.max_len() {
                return Err(ModelError::ContextFull { needed: end, limit: c.cache.max_len() });
            }
            if let Some(&t) = c.tokens.iter().find(|&&t| t as usize >= self.spec.vocab_size) {
                return Err(ModelError::Input(format!("token id {t} is outside the vocabulary of {}", self.spec.vocab_size)));
            }
        }
        self.forward_inner(chunks).map_err(|e| ModelError::candle("forward pass", e))
    }

    fn forward_inner(&self, chunks: &mut [Chunk<'_>]) -> Res<Vec<Option<Tensor>>> {
        let spec = &self.spec;
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.iter().copied()).collect();
        let ids = Tensor::new(ids.as_slice(), &self.device)?;
        let mut x = self.weights.embed.lookup(&ids)?;
        if spec.arch.scales_embedding() {
            x = (x * (spec.d_model as f64).sqrt())?;
        }
        // One RoPE table for every row of the step, each at its own sequence's position.
        let positions: Vec<usize> = chunks.iter().flat_map(|c| c.cache.len()..c.cache.len() + c.tokens.len()).collect();
        let rope = self.rope_tables(&positions)?;
        let step = if self.cuda { gpu::step(spec, &self.device, chunks)? } else { None };
        for (li, layer) in self.weights.layers.iter().enumerate() {
            x = self.layer(li, layer, &x, chunks, &rope, step.as_ref())?;
        }
        for c in chunks.iter_mut() {
            c.cache.advance(c.tokens.len());
        }
        self.logits(&x, chunks)
    }

    /// The logits of the rows the chunks ask for: all chunks' rows through the final norm and
    /// the output matrix together, so its weights are read once per step, not once per sequence.
    fn logits(&self, x: &Tensor, chunks: &[Chunk<'_>]) -> Res<Vec<Option<Tensor>>> {
        let mut picks = Vec::with_capacity(chunks.len());
        let mut start = 0;
        for (i, c) in chunks.iter().enumerate() {
            let n = c.tokens.len();
            let from = match c.logits {
                Logits::None => None,
                Logits::Last => Some(n - 1),
                Logits::From(i) => Some(i.min(n - 1)),
            };
            if let Some(from) = from {
                picks.push((i, start + from, n - from));
            }
            start += n;
        }
        let mut out = vec![None; chunks.len()];
        if picks.is_empty() {
            return Ok(out);
        }
        let rows = picks.iter().map(|&(_, s, n)| x.narrow(0, s, n)).collect::<Res<Vec<_>>>()?;
        let rows = if rows.len() == 1 { rows[0].contiguous()? } else { Tensor::cat(&rows, 0)? };
        let h = candle_nn::ops::rms_norm(&rows, &self.weights.output_norm, self.spec.rms_eps as f32)?;
        let mut logits = self.weights.output.forward(&h)?;
        if !self.device.is_cpu() {
            // One copy to the host for the whole step: each sequence reads its own rows there.
            logits = logits.to_device(&Device::Cpu)?;
        }
        let mut at = 0;
        for (i, _, n) in picks {
            out[i] = Some(logits.narrow(0, at, n)?);
            at += n;
        }
        Ok(out)
    }

    fn layer(&self, li: usize, l: &Layer, x: &Tensor, chunks: &mut [Chunk<'_>], rope: &RopeTables, step: Option<&Step>) -> Res<Tensor> {
        let spec = &self.spec;
        let eps = spec.rms_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &l.attn_norm, eps)?;
        let attn = match step {
            Some(step) => {
                let (cos, sin) = if spec.window(li).is_some() { &rope.local } else { &rope.global };
                gpu::attention(spec, li, l, &h, step, cos, sin)?
            }
            None => self.attention(li, l, &h, chunks, rope)?,
        };
        let mut a = l.attn_out.forward(&attn)?;
        if let Some(w) = &l.post_attn_norm {
            a = candle_nn::ops::rms_norm(&a, w, eps)?;
        }
        let (x, h) = if cuda::available(&self.device) && a.is_contiguous() && x.is_contiguous() {
            cuda::add_rms_norm(x, &a, &l.ffn_norm, eps)?
        } else {
            let x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            (x, h)
        };
        let (gate, up) = match &l.ffn {
            Ffn::Gated { gate, up } => {
                let [gate, up] = Linear::forward_many([gate, up], &h)?;
                (gate, up)
            }
            Ffn::FusedGateUp(gu) => {
                let t = gu.forward(&h)?;
                (t.narrow(1, 0, spec.ff_len)?, t.narrow(1, spec.ff_len, spec.ff_len)?)
            }
        };
        let mut f = l.ffn_down.forward(&activation::gated(spec.activation, &gate, &up)?)?;
        if let Some(w) = &l.post_ffn_norm {
            f = candle_nn::ops::rms_norm(&f, w, eps)?;
        }
        x + f
    }

    /// The attention block from the normed input `h` to the heads' outputs `[N, n_head * hd]`
    /// (before the output projection), with candle's tensor operations and the CPU attention.
    fn attention(&self, li: usize, l: &Layer, h: &Tensor, chunks: &mut [Chunk<'_>], rope: &RopeTables) -> Res<Tensor> {
        let spec = &self.spec;
        let (q_dim, kv_dim) = (spec.n_head * spec.head_dim, spec.n_kv_head * spec.head_dim);
        let (q, k, v) = match &l.attn {
            Attn::Separate { q, k, v } => {
                let [q, k, v] = Linear::forward_many([q, k, v], h)?;
                (q, k, v)
            }
            Attn::Fused(qkv) => {
                let t = qkv.forward(h)?;
                (t.narrow(1, 0, q_dim)?, t.narrow(1, q_dim, kv_dim)?, t.narrow(1, q_dim + kv_dim, kv_dim)?)
            }
        };
        let window = spec.window(li);
        let mut seqs = Vec::with_capacity(chunks.len());
        let mut start = 0;
        let (cos, sin) = if window.is_some() { &rope.local } else { &rope.global };
        for c in chunks.iter_mut() {
            let n = c.tokens.len();
            let (cos, sin) = (&cos.narrow(0, start, n)?, &sin.narrow(0, start, n)?);
            let q = self.heads(&q.narrow(0, start, n)?, spec.n_head, l.q_norm.as_ref(), Some((cos, sin)))?;
            let k = self.heads(&k.narrow(0, start, n)?, spec.n_kv_head, l.k_norm.as_ref(), Some((cos, sin)))?;
            let v = self.heads(&v.narrow(0, start, n)?, spec.n_kv_head, None, None)?;
            let pos = c.cache.len();
            seqs.push((q, c.cache.append(li, &k, &v)?, pos));
            start += n;
        }
        Tensor::cat(&self.attend(&seqs, window)?, 0)
    }

    /// `[n, heads*hd]` → `[heads, n, hd]`, with optional per-head norm and RoPE.
    fn heads(&self, t: &Tensor, heads: usize, norm: Option<&Tensor>, rope: Option<(&Tensor, &Tensor)>) -> Res<Tensor> {
        let spec = &self.spec;
        let n = t.dim(0)?;
        let mut t = t.reshape((n, heads, spec.head_dim))?;
        if let Some(w) = norm {
            t = candle_nn::ops::rms_norm(&t.contiguous()?, w, spec.rms_eps as f32)?;
        }
        let t = t.transpose(0, 1)?.contiguous()?;
        let Some((cos, sin)) = rope else { return Ok(t) };
        let rd = spec.rope_dim;
        let rotate = |x: &Tensor| -> Res<Tensor> {
            let x = x.unsqueeze(0)?.contiguous()?;
            let y = match spec.arch.rope_style() {
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
                RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, cos, sin)?,
            };
            y.squeeze(0)
        };
        if rd == spec.head_dim {
            rotate(&t)
        } else {
            let r = rotate(&t.narrow(2, 0, rd)?)?;
            Tensor::cat(&[&r, &t.narrow(2, rd, spec.head_dim - rd)?], 2)
        }
    }

    /// Each chunk's attention: `q` (`[n_head, n, hd]`, positions `pos..pos+n`) over all its
    /// cached keys and values. On CPU all chunks go to the worker pool together.
    fn attend(&self, seqs: &[(Tensor, LayerView, usize)], window: Option<usize>) -> Res<Vec<Tensor>> {
        let spec = &self.spec;
        if self.device.is_cpu() && seqs.iter().all(|(q, ..)| q.dtype() == candle_core::DType::F32) {
            let jobs: Vec<_> = seqs
                .iter()
                .map(|(q, c, pos)| {
                    let shape = attention::Shape {
                        n_head: spec.n_head,
                        n_kv_head: spec.n_kv_head,
                        head_dim: spec.head_dim,
                        divisor: spec.attn_divisor as f32,
                        pos: *pos,
                        window,
                    };
                    (q, attention::Kv { k: &c.k, v: &c.v, scales: c.scales.as_ref().map(|(k, v)| (k, v)) }, shape)
                })
                .collect();
            return attention::attend_many(&jobs);
        }
        let transposed = super::kv_cache::keys_transposed(&self.device);
        seqs.iter()
            .map(|(q, c, pos)| {
                if c.scales.is_some() {
                    candle_core::bail!("a q8_0 KV cache is read by the CPU attention only");
                }
                self.attend_tensors(q, &if transposed { c.k.transpose(1, 2)? } else { c.k.clone() }, &c.v, *pos, window)
            })
            .collect()
    }

    /// Attention with candle's tensor ops (GPUs).
    fn attend_tensors(&self, q: &Tensor, k: &Tensor, v: &Tensor, pos: usize, window: Option<usize>) -> Res<Tensor> {
        let spec = &self.spec;
        let n = q.dim(1)?;
        let total = k.dim(1)?;
        // Keys before `first` are invisible to every query of this chunk.
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        // Views of the cache, not copies: a copy per layer per token grew with the context.
        let k = k.narrow(1, first, total - first)?;
        let v = v.narrow(1, first, total - first)?;
        let t = total - first;
        let group = spec.n_head / spec.n_kv_head;
        let hd = spec.head_dim;
        // Query heads that share a key/value head are adjacent, so `[n_head, n, hd]` reshapes to
        // `[n_kv_head, group * n, hd]`: one batched matmul per key/value head, without repeating
        // keys and values for every query head.
        let qg = q.reshape((spec.n_kv_head, group * n, hd))?;
        let scores = (qg.matmul(&k.t()?)? / spec.attn_divisor)?.reshape((spec.n_head, n, t))?;
        // A single query sees exactly the keys kept above; only chunks need a mask.
        let scores = if n > 1 {
            let mut m = vec![0f32; n * t];
            for i in 0..n {
                let qp = pos + i;
                for j in 0..t {
                    let kp = first + j;
                    let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
                    if !visible {
                        m[i * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
            scores.broadcast_add(&Tensor::from_vec(m, (n, t), q.device())?)?
        } else {
            scores
        };
        let p = super::kernels::softmax_last_dim(&scores)?.reshape((spec.n_kv_head, group * n, t))?;
        let o = p.matmul(&v)?.reshape((spec.n_head, n, hd))?;
        o.transpose(0, 1)?.reshape((n, spec.n_head * hd))
    }

    /// cos/sin tables `[positions, rope_dim / 2]`, one row per position.
    fn rope_tables(&self, positions: &[usize]) -> Res<RopeTables> {
        let s = &self.spec;
        let n = positions.len();
        let table = |base: f32, scale: f32| -> Res<(Tensor, Tensor)> {
            let half = s.rope_dim / 2;
            let mut cos = Vec::with_capacity(n * half);
            let mut sin = Vec::with_capacity(n * half);
            // f32 throughout, as candle's and llama.cpp's tables are.
            let inv: Vec<f32> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f32 / s.rope_dim as f32)).collect();
            for &p in positions {
                let p = p as f32 / scale;
                for &f in &inv {
                    let a = p * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
            Ok((Tensor::from_vec(cos, (n, half), &self.device)?, Tensor::from_vec(sin, (n, half), &self.device)?))
        };
        let global = table(s.rope_base, s.rope_scale)?;
        let local = if s.sliding_window.is_some() { table(s.rope_base_local, 1.0)? } else { global.clone() };
        Ok(RopeTables { global, local })
    }
}
