//! Per-sequence key/value storage, kept outside the weights so many sequences can share one model
//! and advance at different positions.

use candle_core::{DType, Device, Tensor};

/// How keys and values are stored: llama.cpp's `-ctk`/`-ctv` types that hearth's attention
/// reads. f16 halves the cache (and what a long context's attention reads per token); f32 keeps
/// every bit of the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    F32,
    #[default]
    F16,
}

impl CacheType {
    pub fn dtype(self) -> DType {
        match self {
            CacheType::F32 => DType::F32,
            CacheType::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
        }
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(CacheType::F32),
            "f16" => Ok(CacheType::F16),
            other => Err(format!("unknown cache type {other:?}: f16 or f32")),
        }
    }
}

/// Keys and values of one layer, the first `len` positions valid. Values are
/// `[n_kv_head, capacity, head_dim]`. Keys are the same on GPUs; on the CPU they are kept
/// transposed, `[n_kv_head, head_dim, capacity]`, the layout CPU attention scores from (keys in
/// vector lanes): whether a key was written by a prompt chunk or one token at a time, every query
/// row then scores it the same way.
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// Capacities are whole multiples of this, so that attention may read a whole vector of keys
/// past the last valid one.
pub const KEY_TILE: usize = 16;

/// Whether caches on `dev` keep keys transposed.
pub fn keys_transposed(dev: &Device) -> bool {
    dev.is_cpu()
}

/// The position axis of a layer's keys.
fn key_axis(k: &Tensor) -> usize {
    if keys_transposed(k.device()) {
        2
    } else {
        1
    }
}

/// The cache of one sequence: one [`LayerCache`] per layer, all of the same length.
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    len: usize,
    max_len: usize,
    dtype: DType,
}

impl KvCache {
    /// An empty cache for a model of `n_layer` layers that holds at most `max_len` positions of
    /// keys and values in `dtype` (f32 or f16).
    pub fn new(n_layer: usize, max_len: usize, dtype: DType) -> Self {
        Self { layers: (0..n_layer).map(|_| None).collect(), len: 0, max_len, dtype }
    }

    /// What keys and values are stored as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forgets every position from `len` on (for reusing a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// A new cache holding a copy of the first `n` positions (the original is left untouched).
    pub fn clone_prefix(&self, n: usize) -> candle_core::Result<KvCache> {
        let n = n.min(self.len);
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let copy = match l {
                Some(c) if n > 0 => {
                    let cap = (n + 64).min(self.max_len).next_multiple_of(KEY_TILE);
                    Some(LayerCache { k: resized(&c.k, key_axis(&c.k), n, cap)?, v: resized(&c.v, 1, n, cap)? })
                }
                _ => None,
            };
            layers.push(copy);
        }
        Ok(KvCache { layers, len: n, max_len: self.max_len, dtype: self.dtype })
    }

    /// Bytes held by this cache's tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `k`, `v` (`[n_kv_head, n, head_dim]`, any float type: they are rounded to the
    /// cache's) to layer `layer` at position `self.len()` and
    /// returns all keys and values so far: values `[n_kv_head, len, head_dim]`, keys the same or,
    /// where [`keys_transposed`], `[n_kv_head, head_dim, len]` (views with the capacity as
    /// stride). Call [`KvCache::advance`] once all layers are done.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (n_kv, n, hd) = k.dims3()?;
        let len = self.len;
        let (ck, cv) = self.reserve(layer, n_kv, n, hd, k.device())?;
        let axis = key_axis(ck);
        let (k, v) = (k.to_dtype(ck.dtype())?, v.to_dtype(cv.dtype())?);
        if axis == 2 {
            ck.slice_set(&k.transpose(1, 2)?.contiguous()?, 2, len)?;
        } else {
            ck.slice_set(&k.contiguous()?, 1, len)?;
        }
        cv.slice_set(&v.contiguous()?, 1, len)?;
        Ok((ck.narrow(axis, 0, len + n)?, cv.narrow(1, 0, len + n)?))
    }

    /// Makes room in layer `layer` for `n` positions after `self.len()` and returns its whole
    /// key and value tensors (keys in this device's layout, see [`LayerCache`]), for a kernel
    /// that writes them in place.
    pub fn reserve(&mut self, layer: usize, n_kv: usize, n: usize, hd: usize, dev: &Device) -> candle_core::Result<(&Tensor, &Tensor)> {
        let need = self.len + n;
        if need > self.max_len {
            candle_core::bail!("kv cache holds {} positions, {need} needed", self.max_len);
        }
        let slot = &mut self.layers[layer];
        let cap = slot.as_ref().map_or(0, |c| c.v.dim(1).unwrap_or(0));
        if cap < need {
            let new_cap = need.max(cap * 2).max(64).min(self.max_len).next_multiple_of(KEY_TILE);
            let new = match slot.as_ref() {
                Some(c) => LayerCache { k: resized(&c.k, key_axis(&c.k), self.len, new_cap)?, v: resized(&c.v, 1, self.len, new_cap)? },
                None => {
                    let k_dims = if keys_transposed(dev) { (n_kv, hd, new_cap) } else { (n_kv, new_cap, hd) };
                    LayerCache { k: Tensor::zeros(k_dims, self.dtype, dev)?, v: Tensor::zeros((n_kv, new_cap, hd), self.dtype, dev)? }
                }
            };
            *slot = Some(new);
        }
        let c = slot.as_ref().expect("allocated above");
        Ok((&c.k, &c.v))
    }

    /// Marks `n` more positions as stored, after every layer appended them.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// A new zeroed tensor like `t` with `cap` positions along `axis`, holding `t`'s first `len`.
fn resized(t: &Tensor, axis: usize, len: usize, cap: usize) -> candle_core::Result<Tensor> {
    let mut dims = t.dims().to_vec();
    dims[axis] = cap;
    let fresh = Tensor::zeros(dims, t.dtype(), t.device())?;
    if len > 0 {
        fresh.slice_set(&t.narrow(axis, 0, len)?.contiguous()?, axis, 0)?;
    }
    Ok(fresh)
}
