//! Per-sequence key/value storage, kept outside the weights so many sequences can share one model
//! and advance at different positions; keys and values in f32, f16 or Q8_0.

use candle_core::{DType, Device, Tensor};
use half::f16;

/// How keys and values are stored: llama.cpp's `-ctk`/`-ctv` types that hearth's attention
/// reads. f16 halves the cache (and what a long context's attention reads per token); Q8_0
/// (8-bit values with an f16 scale per 32, as ggml's blocks) takes 17/32 of f16's room; f32
/// keeps every bit of the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    F32,
    #[default]
    F16,
    Q8_0,
}

/// Values per Q8_0 scale.
pub const Q8_BLOCK: usize = 32;

impl CacheType {
    /// The tensor type of stored keys and values (Q8_0's 8-bit values as bytes).
    pub fn dtype(self) -> DType {
        match self {
            CacheType::F32 => DType::F32,
            CacheType::F16 => DType::F16,
            CacheType::Q8_0 => DType::U8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
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
            "q8_0" => Ok(CacheType::Q8_0),
            other => Err(format!("unknown cache type {other:?}: f16, q8_0 or f32")),
        }
    }
}

/// Keys and values of one layer, the first `len` positions valid. Values are
/// `[n_kv_head, capacity, head_dim]`. Keys are the same on GPUs; on the CPU they are kept
/// transposed, `[n_kv_head, head_dim, capacity]`, the layout CPU attention scores from (keys in
/// vector lanes): whether a key was written by a prompt chunk or one token at a time, every query
/// row then scores it the same way. A Q8_0 cache holds signed bytes there and, in `scales`,
/// one f16 per 32 values along the head size: keys' `[n_kv_head, head_dim / 32, capacity]`,
/// values' `[n_kv_head, capacity, head_dim / 32]`.
struct LayerCache {
    k: Tensor,
    v: Tensor,
    scales: Option<(Tensor, Tensor)>,
}

/// One layer's keys and values so far (views with the capacity as stride), as attention reads
/// them: keys `[n_kv_head, head_dim, len]` where [`keys_transposed`] (else `[n_kv_head, len,
/// head_dim]`), values `[n_kv_head, len, head_dim]`, and a Q8_0 cache's scales (`[n_kv_head,
/// head_dim / 32, len]` and `[n_kv_head, len, head_dim / 32]`).
pub struct LayerView {
    pub k: Tensor,
    pub v: Tensor,
    pub scales: Option<(Tensor, Tensor)>,
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
    ty: CacheType,
}

impl KvCache {
    /// An empty cache for a model of `n_layer` layers that holds at most `max_len` positions of
    /// keys and values stored as `ty` (Q8_0 on the CPU only, for head sizes in whole blocks of
    /// 32; see `Decoder::set_cache_type`).
    pub fn new(n_layer: usize, max_len: usize, ty: CacheType) -> Self {
        Self { layers: (0..n_layer).map(|_| None).collect(), len: 0, max_len, ty }
    }

    /// What keys and values are stored as.
    pub fn cache_type(&self) -> CacheType {
        self.ty
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
                    Some(c.resized(n, cap)?)
                }
                _ => None,
            };
            layers.push(copy);
        }
        Ok(KvCache { layers, len: n, max_len: self.max_len, ty: self.ty })
    }

    /// Bytes held by this cache's tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.layers
            .iter()
            .flatten()
            .map(|l| size(&l.k) + size(&l.v) + l.scales.as_ref().map_or(0, |(ks, vs)| size(ks) + size(vs)))
            .sum()
    }

    /// Appends `k`, `v` (`[n_kv_head, n, head_dim]`, f32 or f16: they are rounded or quantized
    /// to the cache's type) to layer `layer` at position `self.len()` and returns all keys and
    /// values so far. Call [`KvCache::advance`] once all layers are done.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<LayerView> {
        let (n_kv, n, hd) = k.dims3()?;
        let len = self.len;
        self.reserve(layer, n_kv, n, hd, k.device())?;
        let c = self.layers[layer].as_ref().expect("reserved above");
        let axis = key_axis(&c.k);
        let (k, v, scales) = match &c.scales {
            None => (k.to_dtype(c.k.dtype())?, v.to_dtype(c.v.dtype())?, None),
            Some(_) => {
                let ((kq, ks), (vq, vs)) = (quantize_q8(k)?, quantize_q8(v)?);
                (kq, vq, Some((ks, vs)))
            }
        };
        let set_key = |cache: &Tensor, t: &Tensor| {
            if axis == 2 {
                cache.slice_set(&t.transpose(1, 2)?.contiguous()?, 2, len)
            } else {
                cache.slice_set(&t.contiguous()?, 1, len)
            }
        };
        set_key(&c.k, &k)?;
        c.v.slice_set(&v.contiguous()?, 1, len)?;
        if let (Some((ks, vs)), Some((new_ks, new_vs))) = (&c.scales, &scales) {
            set_key(ks, new_ks)?;
            vs.slice_set(new_vs, 1, len)?;
        }
        let scales = match &c.scales {
            Some((ks, vs)) => Some((ks.narrow(axis, 0, len + n)?, vs.narrow(1, 0, len + n)?)),
            None => None,
        };
        Ok(LayerView { k: c.k.narrow(axis, 0, len + n)?, v: c.v.narrow(1, 0, len + n)?, scales })
    }

    /// Makes room in layer `layer` for `n` positions after `self.len()` and returns its whole
    /// key and value tensors (keys in this device's layout, see [`LayerCache`]), for a kernel
    /// that writes them in place (f32 and f16 caches).
    pub fn reserve(&mut self, layer: usize, n_kv: usize, n: usize, hd: usize, dev: &Device) -> candle_core::Result<(&Tensor, &Tensor)> {
        let need = self.len + n;
        if need > self.max_len {
            candle_core::bail!("kv cache holds {} positions, {need} needed", self.max_len);
        }
        if self.ty == CacheType::Q8_0 && (hd % Q8_BLOCK != 0 || !keys_transposed(dev)) {
            candle_core::bail!("a q8_0 KV cache needs the CPU and a head size in whole blocks of {Q8_BLOCK} (this one is {hd})");
        }
        let slot = &mut self.layers[layer];
        let cap = slot.as_ref().map_or(0, |c| c.v.dim(1).unwrap_or(0));
        if cap < need {
            let new_cap = need.max(cap * 2).max(64).min(self.max_len).next_multiple_of(KEY_TILE);
            let new = match slot.as_ref() {
                Some(c) => c.resized(self.len, new_cap)?,
                None => {
                    let dtype = self.ty.dtype();
                    let k_dims = if keys_transposed(dev) { (n_kv, hd, new_cap) } else { (n_kv, new_cap, hd) };
                    let scales = match self.ty {
                        CacheType::Q8_0 => {
                            let blocks = hd / Q8_BLOCK;
                            Some((Tensor::zeros((n_kv, blocks, new_cap), DType::F16, dev)?, Tensor::zeros((n_kv, new_cap, blocks), DType::F16, dev)?))
                        }
                        _ => None,
                    };
                    LayerCache { k: Tensor::zeros(k_dims, dtype, dev)?, v: Tensor::zeros((n_kv, new_cap, hd), dtype, dev)?, scales }
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

impl LayerCache {
    /// A copy with room for `cap` positions, holding the first `len`.
    fn resized(&self, len: usize, cap: usize) -> candle_core::Result<LayerCache> {
        let axis = key_axis(&self.k);
        let scales = match &self.scales {
            Some((ks, vs)) => Some((resized(ks, axis, len, cap)?, resized(vs, 1, len, cap)?)),
            None => None,
        };
        Ok(LayerCache { k: resized(&self.k, axis, len, cap)?, v: resized(&self.v, 1, len, cap)?, scales })
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

/// `x` (`[heads, n, hd]`, on the CPU) in ggml's Q8_0: per 32 values along the head size a scale
/// `d` = largest magnitude / 127 and the values `round(x / d)` as signed bytes. Returns the bytes
/// (`[heads, n, hd]`, U8 holding i8) and the scales as f16 (`[heads, n, hd / 32]`); a value
/// reads back as `byte × scale`.
pub fn quantize_q8(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (heads, n, hd) = x.dims3()?;
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut bytes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / Q8_BLOCK);
    for block in values.chunks_exact(Q8_BLOCK) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        bytes.extend(block.iter().map(|&x| (x * id).round().clamp(-127.0, 127.0) as i8 as u8));
        scales.push(f16::from_f32(d));
    }
    let dev = x.device();
    Ok((Tensor::from_vec(bytes, (heads, n, hd), dev)?, Tensor::from_vec(scales, (heads, n, hd / Q8_BLOCK), dev)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type: a cloned prefix holds the original's first positions, and both grow alike
    /// from there (the prefix cache's reuse); the views cover exactly the positions stored.
    #[test]
    fn a_cloned_prefix_holds_the_same_values_and_grows_alike() {
        let dev = Device::Cpu;
        let rand = |n: usize| Tensor::randn(0f32, 1.0, (2, n, 64), &dev).unwrap();
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for ty in [CacheType::F32, CacheType::F16, CacheType::Q8_0] {
            let mut cache = KvCache::new(1, 500, ty);
            cache.append(0, &rand(70), &rand(70)).unwrap();
            cache.advance(70);
            let mut prefix = cache.clone_prefix(40).unwrap();
            assert_eq!((prefix.len(), prefix.cache_type()), (40, ty));
            cache.truncate(40);
            let (k, v) = (rand(30), rand(30));
            let (a, b) = (cache.append(0, &k, &v).unwrap(), prefix.append(0, &k, &v).unwrap());
            assert_eq!(a.k.dims(), &[2, 64, 70], "{ty}: keys transposed, 70 positions");
            assert_eq!(a.v.dims(), &[2, 70, 64], "{ty}");
            assert_eq!((f32s(&a.k), f32s(&a.v)), (f32s(&b.k), f32s(&b.v)), "{ty}: values");
            match (&a.scales, &b.scales) {
                (Some((ka, va)), Some((kb, vb))) => {
                    assert_eq!((ka.dims(), va.dims()), (&[2, 2, 70][..], &[2, 70, 2][..]), "{ty}: scales");
                    assert_eq!((f32s(ka), f32s(va)), (f32s(kb), f32s(vb)), "{ty}: scales");
                }
                (None, None) => assert_ne!(ty, CacheType::Q8_0),
                _ => panic!("{ty}: scales on one side only"),
            }
        }
    }
}
