//! Per-sequence key/value storage, kept outside the weights so many sequences can share one model
//! and advance at different positions.

use candle_core::{DType, Device, Tensor};

/// Keys and values of one layer: `[n_kv_head, capacity, head_dim]`, the first `len` positions valid.
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// The cache of one sequence: one [`LayerCache`] per layer, all of the same length.
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for a model of `n_layer` layers that holds at most `max_len` positions.
    pub fn new(n_layer: usize, max_len: usize) -> Self {
        Self { layers: (0..n_layer).map(|_| None).collect(), len: 0, max_len }
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
                    let (n_kv, _, hd) = c.k.dims3()?;
                    let cap = (n + 64).min(self.max_len);
                    let fresh = |src: &Tensor| -> candle_core::Result<Tensor> {
                        let t = Tensor::zeros((n_kv, cap, hd), src.dtype(), src.device())?;
                        t.slice_set(&src.narrow(1, 0, n)?.contiguous()?, 1, 0)?;
                        Ok(t)
                    };
                    Some(LayerCache { k: fresh(&c.k)?, v: fresh(&c.v)? })
                }
                _ => None,
            };
            layers.push(copy);
        }
        Ok(KvCache { layers, len: n, max_len: self.max_len })
    }

    /// Bytes held by this cache's tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `k`, `v` (`[n_kv_head, n, head_dim]`) to layer `layer` at position `self.len()` and
    /// returns all keys and values so far. Call [`KvCache::advance`] once all layers are done.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (n_kv, n, hd) = k.dims3()?;
        let len = self.len;
        let (ck, cv) = self.reserve(layer, n_kv, n, hd, k.device())?;
        ck.slice_set(&k.contiguous()?, 1, len)?;
        cv.slice_set(&v.contiguous()?, 1, len)?;
        Ok((ck.narrow(1, 0, len + n)?, cv.narrow(1, 0, len + n)?))
    }

    /// Makes room in layer `layer` for `n` positions after `self.len()` and returns its whole
    /// key and value tensors (`[n_kv, capacity, hd]`), for a kernel that writes them in place.
    pub fn reserve(&mut self, layer: usize, n_kv: usize, n: usize, hd: usize, dev: &Device) -> candle_core::Result<(&Tensor, &Tensor)> {
        let need = self.len + n;
        if need > self.max_len {
            candle_core::bail!("kv cache holds {} positions, {need} needed", self.max_len);
        }
        let slot = &mut self.layers[layer];
        let cap = slot.as_ref().map_or(0, |c| c.k.dim(1).unwrap_or(0));
        if cap < need {
            let new_cap = (need.max(cap * 2).max(64)).min(self.max_len);
            let grow = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
                let t = Tensor::zeros((n_kv, new_cap, hd), DType::F32, dev)?;
                if let Some(old) = old {
                    t.slice_set(&old.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                Ok(t)
            };
            let new = LayerCache { k: grow(slot.as_ref().map(|c| &c.k))?, v: grow(slot.as_ref().map(|c| &c.v))? };
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
