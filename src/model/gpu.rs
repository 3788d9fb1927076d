//! The decoder's attention block on CUDA: every sequence of a step in one launch for RoPE and the
//! cache stores and one for attention (`kernels::cuda`), so a batch of streams costs a GPU about
//! what one stream costs. The projections stay candle's quantized matmuls.

use candle_core::{Device, Tensor};

use super::arch::{ModelSpec, RopeStyle};
use super::decoder::Chunk;
use super::kernels::cuda::{self, Heads, Step};
use super::weights::{Attn, Layer};

type Res<T> = candle_core::Result<T>;

fn heads(spec: &ModelSpec) -> Heads {
    Heads {
        n_head: spec.n_head,
        n_kv: spec.n_kv_head,
        hd: spec.head_dim,
        rope_dim: spec.rope_dim,
        neox: matches!(spec.arch.rope_style(), RopeStyle::Neox),
    }
}

/// The step's table: makes room in every layer's cache of every chunk for the chunk's tokens,
/// then uploads rows, positions and cache addresses once. `None` when some row would see more
/// keys than the attention kernel holds (the caller takes candle's path for that step).
pub fn step(spec: &ModelSpec, device: &Device, chunks: &mut [Chunk<'_>]) -> Res<Option<Step>> {
    let rows: usize = chunks.iter().map(|c| c.tokens.len()).sum();
    let max_keys = chunks.iter().map(|c| c.cache.len() + c.tokens.len()).max().unwrap_or(0);
    if max_keys > cuda::MAX_KEYS {
        return Ok(None);
    }
    let mut table: Vec<i64> = Vec::with_capacity(2 * rows + 3 * spec.n_layer * chunks.len());
    for (b, c) in chunks.iter().enumerate() {
        table.extend(std::iter::repeat_n(b as i64, c.tokens.len()));
    }
    for c in chunks.iter() {
        let pos = c.cache.len();
        table.extend((pos..pos + c.tokens.len()).map(|p| p as i64));
    }
    let seqs = chunks.len();
    let mut caches = vec![0i64; 3 * spec.n_layer * seqs];
    for (b, c) in chunks.iter_mut().enumerate() {
        for li in 0..spec.n_layer {
            let (k, v) = c.cache.reserve(li, spec.n_kv_head, c.tokens.len(), spec.head_dim, device)?;
            let i = (li * seqs + b) * 3;
            caches[i] = cuda::address(k)? as i64;
            caches[i + 1] = cuda::address(v)? as i64;
            caches[i + 2] = k.dim(1)? as i64;
        }
    }
    table.extend(caches);
    let len = table.len();
    Ok(Some(Step { table: Tensor::from_vec(table, len, device)?, rows, seqs, max_keys }))
}

/// The attention block from the normed input `h` (`[rows, d_model]`, all chunks) to the heads'
/// outputs `[rows, n_head * hd]`, with RoPE tables `cos`, `sin` for every row of the step.
pub fn attention(spec: &ModelSpec, li: usize, l: &Layer, h: &Tensor, step: &Step, cos: &Tensor, sin: &Tensor) -> Res<Tensor> {
    let (q_dim, kv_dim) = (spec.n_head * spec.head_dim, spec.n_kv_head * spec.head_dim);
    let split = |t: &Tensor, d: usize| -> Res<[Tensor; 3]> {
        Ok([t.narrow(d, 0, q_dim)?, t.narrow(d, q_dim, kv_dim)?, t.narrow(d, q_dim + kv_dim, kv_dim)?])
    };
    let (proj, bias) = match &l.attn {
        Attn::Separate { q, k, v } => ([q.matmul(h)?, k.matmul(h)?, v.matmul(h)?], [q.bias().cloned(), k.bias().cloned(), v.bias().cloned()]),
        Attn::Fused(qkv) => {
            let bias = match qkv.bias() {
                Some(b) => split(b, 0)?.map(Some),
                None => [None, None, None],
            };
            (split(&qkv.matmul(h)?, 1)?, bias)
        }
    };
    let heads = heads(spec);
    let q = cuda::rope_store([&proj[0], &proj[1], &proj[2]], [bias[0].as_ref(), bias[1].as_ref(), bias[2].as_ref()], cos, sin, step, li, heads)?;
    cuda::attend(&q, step, li, heads, spec.attn_divisor as f32, spec.window(li))
}
