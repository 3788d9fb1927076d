//! Causal attention on the CPU in one pass per query row: scores against the keys that row can
//! see (causal, optionally within a sliding window), softmax, and the weighted sum of values,
//! written straight into the `[n, n_head * head_dim]` layout the output projection reads. It
//! replaces candle's batched matmuls, mask and softmax there: those computed every masked score
//! of a prompt chunk, held several `[heads, n, keys]` temporaries at once, and ran on rayon's
//! threads beside the worker pool our matrix kernels use. Query rows are shared over that pool.

use candle_core::{Device, Result, Storage, Tensor};

use super::OutPtr;

/// What one layer's attention needs besides its tensors.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Scores are divided by this (usually the square root of the head size).
    pub divisor: f32,
    /// Position of the first query row; keys `0..pos + n` are in the cache.
    pub pos: usize,
    /// A query at position p sees keys `p + 1 - window ..= p` when set, else `0..=p`.
    pub window: Option<usize>,
}

/// Multiply-adds below which the work stays on the calling thread (a decode step's attention
/// is a few thousand; handing it to the pool would cost more than it saves).
const INLINE: usize = 1 << 16;

/// A CPU f32 tensor's first value and its strides (in elements). The pointer stays valid while
/// the tensor lives and nothing writes to it, which holds for the whole of [`attend`].
fn view(t: &Tensor) -> Result<(*const f32, Vec<usize>)> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("attention: tensor is not on the CPU") };
    let data = cpu.as_slice::<f32>()?;
    if layout.stride().last() != Some(&1) {
        candle_core::bail!("attention: the last dimension must be contiguous");
    }
    Ok((data[layout.start_offset()..].as_ptr(), layout.stride().to_vec()))
}

/// Query rows per tile of a prompt chunk: they share every key and value row they read.
const ROWS: usize = 8;
/// Keys scored at once against a tile (one 512-bit vector of f32).
const KEYS: usize = 16;
/// Head-size columns of the value sum held at once per tile row.
const COLS: usize = 32;

/// `q` `[n_head, n, hd]` against the cached `k`, `v` `[n_kv_head, pos + n, hd]` (views with any
/// row stride) → `[n, n_head * hd]`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, s: Shape) -> Result<Tensor> {
    let Shape { n_head, n_kv_head, head_dim: hd, .. } = s;
    let (qh, n, qd) = q.dims3()?;
    let (kh, total, kd) = k.dims3()?;
    if qh != n_head || kh != n_kv_head || qd != hd || kd != hd || v.dims3()? != (kh, total, kd) || total != s.pos + n {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit {s:?}", q.shape(), k.shape(), v.shape());
    }
    if n_kv_head == 0 || n_head % n_kv_head != 0 {
        candle_core::bail!("attention: {n_head} query heads cannot share {n_kv_head} key/value heads");
    }
    let q = q.contiguous()?;
    // Addresses as integers, so the closures below can be shared with the pool's workers.
    let (qp, kp, vp) = (view(&q)?.0 as usize, view(k)?, view(v)?);
    let ((kp, ks), (vp, vs)) = ((kp.0 as usize, kp.1), (vp.0 as usize, vp.1));
    // SAFETY (for the slices below): q is contiguous [n_head, n, hd]; rows j < total of head
    // h < n_kv_head of k and v hold `hd` contiguous floats at the strides of their layouts.
    let qrow = |h: usize, i: usize| unsafe { std::slice::from_raw_parts((qp as *const f32).add((h * n + i) * hd), hd) };
    let key = |h: usize, j: usize| unsafe { std::slice::from_raw_parts((kp as *const f32).add(h * ks[0] + j * ks[1]), hd) };
    let value = |h: usize, j: usize| unsafe { std::slice::from_raw_parts((vp as *const f32).add(h * vs[0] + j * vs[1]), hd) };
    // Keys transposed per head (`[hd, keys]`, keys padded to a whole tile) for prompt chunks,
    // so that a tile's scores need no horizontal sums.
    let padded = total.next_multiple_of(KEYS);
    let kt = if n >= ROWS {
        let mut kt = vec![0f32; n_kv_head * hd * padded];
        for h in 0..n_kv_head {
            for j in 0..total {
                for (d, &x) in key(h, j).iter().enumerate() {
                    kt[(h * hd + d) * padded + j] = x;
                }
            }
        }
        kt
    } else {
        Vec::new()
    };
    let mut out = vec![0f32; n * n_head * hd];
    let dst = OutPtr(out.as_mut_ptr());
    let group = n_head / n_kv_head;
    let inv_divisor = 1.0 / s.divisor;
    let tiles = n.div_ceil(ROWS);
    let items = |range: std::ops::Range<usize>| {
        let mut scores = vec![0f32; ROWS * padded];
        for item in range {
            let (h, t) = (item / tiles, item % tiles);
            let (i0, rows) = (t * ROWS, ROWS.min(n - t * ROWS));
            let kv = h / group;
            // SAFETY: output rows i0..i0 + rows, head h, are written by this item alone.
            let o = |r: usize| unsafe { std::slice::from_raw_parts_mut(dst.get().add((i0 + r) * n_head * hd + h * hd), hd) };
            // Keys visible to row r: lo(r)..=p(r).
            let p = |r: usize| s.pos + i0 + r;
            let lo = |r: usize| s.window.map_or(0, |w| (p(r) + 1).saturating_sub(w));
            let (first, last) = (lo(0), p(rows - 1));
            if rows == ROWS {
                let kt = &kt[kv * hd * padded..(kv + 1) * hd * padded];
                let q: [&[f32]; ROWS] = std::array::from_fn(|r| qrow(h, i0 + r));
                for j0 in (first / KEYS * KEYS..=last).step_by(KEYS) {
                    let tile = score_tile(&q, kt, padded, j0);
                    for (r, t) in tile.iter().enumerate() {
                        scores[r * padded + j0..][..KEYS].copy_from_slice(t);
                    }
                }
            } else {
                for r in 0..rows {
                    for j in lo(r)..=p(r) {
                        scores[r * padded + j] = dot(qrow(h, i0 + r), key(kv, j));
                    }
                }
            }
            // Softmax over each row's visible keys; the tile's other keys get weight 0, so that
            // the value sum below runs over whole tiles without a branch.
            let mut weights = [0f32; ROWS];
            for r in 0..ROWS {
                let row = &mut scores[r * padded..][..=last];
                if r >= rows {
                    row[first..].fill(0.0);
                    continue;
                }
                let (lo, p) = (lo(r), p(r));
                row[first..lo].fill(0.0);
                row[p + 1..].fill(0.0);
                let seen = &mut row[lo..=p];
                let mut max = f32::NEG_INFINITY;
                for x in seen.iter_mut() {
                    *x *= inv_divisor;
                    max = max.max(*x);
                }
                seen.iter_mut().for_each(|x| *x -= max);
                exp_in_place(seen);
                weights[r] = 1.0 / seen.iter().sum::<f32>();
            }
            for c0 in (0..hd).step_by(COLS) {
                let cols = COLS.min(hd - c0);
                let mut acc = [[0f32; COLS]; ROWS];
                for j in first..=last {
                    let mut vrow = [0f32; COLS];
                    vrow[..cols].copy_from_slice(&value(kv, j)[c0..c0 + cols]);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = scores[r * padded + j];
                        for (a, &x) in acc.iter_mut().zip(&vrow) {
                            *a = fma(w, x, *a);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    for (y, a) in o(r)[c0..c0 + cols].iter_mut().zip(acc) {
                        *y = a * weights[r];
                    }
                }
            }
        }
    };
    let work = n_head * n * (total - n / 2).max(1) * hd;
    if work < INLINE {
        items(0..n_head * tiles);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(n_head * tiles, items);
    }
    Tensor::from_vec(out, (n, n_head * hd), &Device::Cpu)
}

/// Scores of [`ROWS`] query rows against keys `j0..j0 + KEYS` from the transposed keys `kt`
/// (`[hd, stride]`): one broadcast multiply-add per row and head-size column.
#[inline]
fn score_tile(q: &[&[f32]; ROWS], kt: &[f32], stride: usize, j0: usize) -> [[f32; KEYS]; ROWS] {
    let mut acc = [[0f32; KEYS]; ROWS];
    for (d, col) in kt.chunks_exact(stride).enumerate() {
        let k: &[f32; KEYS] = col[j0..j0 + KEYS].try_into().expect("a whole tile of keys");
        for r in 0..ROWS {
            let x = q[r][d];
            for l in 0..KEYS {
                acc[r][l] = fma(x, k[l], acc[r][l]);
            }
        }
    }
    acc
}

/// `e^x` for every value (all ≤ 0 here: scores less their row's maximum).
fn exp_in_place(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = super::activation::exp(*x);
    }
}

/// The dot product of two equal-length rows, in 16 lanes (vectorized by the compiler).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] = fma(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a * b + c`, fused where the CPU has FMA (elsewhere `mul_add` would be a slow library call).
#[inline(always)]
pub(super) fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}
