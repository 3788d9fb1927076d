//! Causal attention on the CPU in one pass per query row: scores against the keys that row can
//! see (causal, optionally within a sliding window), softmax, and the weighted sum of values,
//! each row's arithmetic in the same order whether it is a decode step's only row or one of a
//! prompt chunk's tile (so a token's result does not depend on how its prompt was chunked),
//! written straight into the `[n, n_head * head_dim]` layout the output projection reads. It
//! replaces candle's batched matmuls, mask and softmax there: those computed every masked score
//! of a prompt chunk, held several `[heads, n, keys]` temporaries at once, and ran on rayon's
//! threads beside the worker pool our matrix kernels use. Query rows are shared over that pool.

use candle_core::{DType, Device, Result, Storage, Tensor};

use super::OutPtr;

mod tiles;
pub(super) use tiles::fma;
use tiles::{exp_in_place, for_cpu as tiles_for_cpu, lanes_max, lanes_sum, Scales};

use crate::model::kv_cache::Q8_BLOCK;

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
/// A CPU tensor's first value, its strides (in elements) and its element type (`tiles::F32`,
/// `F16`, or `Q8` for the bytes of a Q8_0 cache). The address stays valid while the tensor lives
/// and nothing writes to it, which holds for the whole of [`attend`].
fn view(t: &Tensor) -> Result<(usize, Vec<usize>, u8)> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("attention: tensor is not on the CPU") };
    if layout.stride().last() != Some(&1) {
        candle_core::bail!("attention: the last dimension must be contiguous");
    }
    let at = layout.start_offset();
    Ok(match t.dtype() {
        DType::F32 => (cpu.as_slice::<f32>()?[at..].as_ptr() as usize, layout.stride().to_vec(), tiles::F32),
        DType::F16 => (cpu.as_slice::<half::f16>()?[at..].as_ptr() as usize, layout.stride().to_vec(), tiles::F16),
        DType::U8 => (cpu.as_slice::<u8>()?[at..].as_ptr() as usize, layout.stride().to_vec(), tiles::Q8),
        d => candle_core::bail!("attention: keys and values in {d:?} (f32, f16 or q8_0 bytes only)"),
    })
}

/// Transposed keys at `p` (`[heads, hd, ≥ total]` with strides `s`) copied with each column's
/// `total` keys padded with zeros to `padded`.
///
/// # Safety
/// Column d of head h must hold `total` readable values of type `T` at `p + h * s[0] + d * s[1]`.
unsafe fn padded_keys<T: Copy + Default>(p: *const T, (heads, hd): (usize, usize), s: &[usize], total: usize, padded: usize) -> Vec<T> {
    let mut copy = vec![T::default(); heads * hd * padded];
    for (h, d) in (0..heads).flat_map(|h| (0..hd).map(move |d| (h, d))) {
        copy[(h * hd + d) * padded..][..total].copy_from_slice(std::slice::from_raw_parts(p.add(h * s[0] + d * s[1]), total));
    }
    copy
}

/// Query rows per tile of a prompt chunk: they share every key and value row they read.
const ROWS: usize = 8;
/// Keys scored at once against a tile (one 512-bit vector of f32).
const KEYS: usize = 16;
const _: () = assert!(KEYS == crate::model::kv_cache::KEY_TILE);
/// Head-size columns of the value sum held at once per tile row.
const COLS: usize = 32;

/// A layer's cached keys and values as attention reads them: keys transposed (`[n_kv_head, hd,
/// total]`, as the CPU's KV cache keeps them), values `[n_kv_head, total, hd]`, both f32, both
/// f16, or both Q8_0 bytes with their f16 scales (`[n_kv_head, hd / 32, total]` for the keys,
/// `[n_kv_head, total, hd / 32]` for the values). Views with any head and row stride.
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub scales: Option<(&'a Tensor, &'a Tensor)>,
}

/// `q` `[n_head, n, hd]` (f32) against the cached keys `kt` and values `v` (f32 or f16, see
/// [`Kv`]) → `[n, n_head * hd]`. Keys whose row stride leaves no room for a whole vector past
/// the last key (as the cache's capacity does) are copied first.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, s: Shape) -> Result<Tensor> {
    attend_kv(q, Kv { k, v, scales: None }, s)
}

/// [`attend`] over keys and values of any cache type.
pub fn attend_kv(q: &Tensor, kv: Kv<'_>, s: Shape) -> Result<Tensor> {
    Ok(attend_many(&[(q, kv, s)])?.remove(0))
}

/// Several [`attend`]s (a batch's sequences, each against its own cache) in one pass over the
/// worker pool, so that a batch of decode steps shares the cores instead of running one small
/// attention after another on the calling thread.
pub fn attend_many(jobs: &[(&Tensor, Kv<'_>, Shape)]) -> Result<Vec<Tensor>> {
    run(jobs, simd())
}

/// [`attend_kv`] with the portable tile loops even where AVX-512 is present (to test them there).
pub fn attend_portable(q: &Tensor, kv: Kv<'_>, s: Shape) -> Result<Tensor> {
    Ok(run(&[(q, kv, s)], false)?.remove(0))
}

fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn run(jobs: &[(&Tensor, Kv<'_>, Shape)], simd: bool) -> Result<Vec<Tensor>> {
    let jobs = jobs.iter().map(|&(q, kv, s)| Job::new(q, kv, s)).collect::<Result<Vec<_>>>()?;
    // Item i of the whole batch is item i - starts[j] of job j.
    let mut starts = Vec::with_capacity(jobs.len());
    let mut total = 0;
    for j in &jobs {
        starts.push(total);
        total += j.items();
    }
    let items = |range: std::ops::Range<usize>| {
        let mut scratch = Scratch::default();
        for item in range {
            let j = starts.partition_point(|&s| s <= item) - 1;
            jobs[j].item(item - starts[j], simd, &mut scratch);
        }
    };
    if jobs.iter().map(Job::work).sum::<usize>() < INLINE {
        items(0..total);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(total, items);
    }
    jobs.into_iter().map(|j| Tensor::from_vec(j.out, (j.n, j.s.n_head * j.s.head_dim), &Device::Cpu)).collect()
}

/// Buffers one worker reuses from item to item.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    qt: Vec<f32>,
    pt: Vec<f32>,
}

/// One sequence's attention, ready to be computed item by item (a head and a tile of rows).
struct Job {
    s: Shape,
    n: usize,
    total: usize,
    /// Keys padded to a whole tile.
    padded: usize,
    /// Query rows per item: a tile for prompt chunks, one for a decode step's few rows.
    rt: usize,
    tiles: usize,
    /// Keeps the contiguous q alive; it, the keys and v are read through addresses (with the
    /// keys' and v's head and row strides).
    _q: Tensor,
    qp: usize,
    /// Transposed keys: address, head stride, head-size-column stride (≥ `padded`), in elements.
    kp: (usize, usize, usize),
    vp: (usize, usize, usize),
    /// The keys' and values' element type (`tiles::F32`, `F16`, `Q8`).
    elem: u8,
    /// Q8_0 scales: keys' address, head stride, block stride; values' address, head stride,
    /// row stride (in f16s).
    ksc: (usize, usize, usize),
    vsc: (usize, usize, usize),
    /// A padded copy of the keys, where the given view had too little room per column (of the
    /// keys' type).
    _kt: (Vec<f32>, Vec<half::f16>),
    out: Vec<f32>,
    dst: OutPtr,
}

impl Job {
    fn new(q: &Tensor, Kv { k: kt, v, scales }: Kv<'_>, s: Shape) -> Result<Job> {
        let Shape { n_head, n_kv_head, head_dim: hd, .. } = s;
        let (qh, n, qd) = q.dims3()?;
        let (kh, kd, total) = kt.dims3()?;
        if qh != n_head || kh != n_kv_head || qd != hd || kd != hd || v.dims3()? != (kh, total, kd) || total != s.pos + n || n == 0 {
            candle_core::bail!("attention: q {:?}, keys {:?}, v {:?} do not fit {s:?}", q.shape(), kt.shape(), v.shape());
        }
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            candle_core::bail!("attention: {n_head} query heads cannot share {n_kv_head} key/value heads");
        }
        let q = q.contiguous()?;
        let (qp, _, q_elem) = view(&q)?;
        if q_elem != tiles::F32 {
            candle_core::bail!("attention: queries in {:?} (f32 only)", q.dtype());
        }
        let padded = total.next_multiple_of(KEYS);
        let ((kp, ks, elem), (vp, vs, v_elem)) = (view(kt)?, view(v)?);
        if elem != v_elem {
            candle_core::bail!("attention: keys in {:?} but values in {:?}", kt.dtype(), v.dtype());
        }
        let (mut ksc, mut vsc) = ((0, 0, 0), (0, 0, 0));
        match (elem, scales) {
            (tiles::Q8, Some((kscales, vscales))) => {
                let blocks = hd / Q8_BLOCK;
                let ((a, sk, ek), (b, sv, ev)) = (view(kscales)?, view(vscales)?);
                if hd % Q8_BLOCK != 0 || kscales.dims3()? != (kh, blocks, total) || vscales.dims3()? != (kh, total, blocks) || (ek, ev) != (tiles::F16, tiles::F16) {
                    candle_core::bail!("attention: q8_0 scales {:?} and {:?} ({:?}) do not fit keys {:?}", kscales.shape(), vscales.shape(), kscales.dtype(), kt.shape());
                }
                if ks[1] < padded || ks[0] < hd * ks[1] || sk[1] < padded {
                    candle_core::bail!("attention: q8_0 keys need room for a whole tile of {KEYS} past the last key");
                }
                (ksc, vsc) = ((a, sk[0], sk[1]), (b, sv[0], sv[1]));
            }
            (tiles::Q8, None) => candle_core::bail!("attention: q8_0 keys and values without their scales"),
            (_, Some(_)) => candle_core::bail!("attention: scales given for {:?} keys and values", kt.dtype()),
            (_, None) => {}
        }
        let mut copy = (Vec::new(), Vec::new());
        let kp = if ks[1] >= padded && ks[0] >= hd * ks[1] {
            (kp, ks[0], ks[1])
        } else {
            // SAFETY: column d of head h holds `total` values at the view's strides.
            let at = if elem == tiles::F16 {
                copy.1 = unsafe { padded_keys(kp as *const half::f16, (kh, hd), &ks, total, padded) };
                copy.1.as_ptr() as usize
            } else {
                copy.0 = unsafe { padded_keys(kp as *const f32, (kh, hd), &ks, total, padded) };
                copy.0.as_ptr() as usize
            };
            (at, hd * padded, padded)
        };
        let vp = (vp, vs[0], vs[1]);
        let rt = if n >= ROWS { ROWS } else { 1 };
        let mut out = vec![0f32; n * n_head * hd];
        let dst = OutPtr(out.as_mut_ptr());
        Ok(Job { s, n, total, padded, rt, tiles: n.div_ceil(rt), _q: q, qp, kp, vp, elem, ksc, vsc, _kt: copy, out, dst })
    }

    fn items(&self) -> usize {
        self.s.n_head * self.tiles
    }

    /// Multiply-adds, roughly.
    fn work(&self) -> usize {
        self.s.n_head * self.n * (self.total - self.n / 2).max(1) * self.s.head_dim
    }

    fn qrow(&self, h: usize, i: usize) -> &[f32] {
        let hd = self.s.head_dim;
        // SAFETY: q is contiguous [n_head, n, hd] and held by `self`.
        unsafe { std::slice::from_raw_parts((self.qp as *const f32).add((h * self.n + i) * hd), hd) }
    }

    /// Head `h`'s query rows of tile `t` against the keys they see, into the output.
    fn item(&self, item: usize, simd: bool, b: &mut Scratch) {
        match self.elem {
            tiles::F16 => self.item_of::<{ tiles::F16 }>(item, simd, b),
            tiles::Q8 => self.item_of::<{ tiles::Q8 }>(item, simd, b),
            _ => self.item_of::<{ tiles::F32 }>(item, simd, b),
        }
    }

    /// [`Job::item`] with keys and values of element type `E`.
    fn item_of<const E: u8>(&self, item: usize, simd: bool, b: &mut Scratch) {
        let (s, n, hd, rt, padded) = (self.s, self.n, self.s.head_dim, self.rt, self.padded);
        let (h, t) = (item / self.tiles, item % self.tiles);
        let (i0, rows) = (t * rt, rt.min(n - t * rt));
        let kv = h / (s.n_head / s.n_kv_head);
        let inv_divisor = 1.0 / s.divisor;
        for v in [&mut b.scores, &mut b.pt] {
            if v.len() < ROWS * padded {
                v.resize(ROWS * padded, 0.0);
            }
        }
        b.qt.resize(hd * ROWS, 0.0);
        let Scratch { scores, qt, pt } = b;
        // Keys visible to row r: lo(r)..=p(r).
        let p = |r: usize| s.pos + i0 + r;
        let lo = |r: usize| s.window.map_or(0, |w| (p(r) + 1).saturating_sub(w));
        let (first, last) = (lo(0), p(rows - 1));
        // Scores start at a whole tile of keys. Each key's score is one chain of multiply-adds
        // over the head size in its own lane, the same for a tile's row as for a lone row.
        let j0 = first / KEYS * KEYS;
        // The query rows, scaled and transposed (`[hd, rt]`; a tile's missing rows 0).
        qt.fill(0.0);
        for r in 0..rows {
            for (d, &x) in self.qrow(h, i0 + r).iter().enumerate() {
                qt[d * rt + r] = x * inv_divisor;
            }
        }
        let (kp, khs, kds) = self.kp;
        // SAFETY: head kv's columns d < hd hold `kds` ≥ `padded` values (checked in `new`), and
        // every tile ends at or before `padded`.
        let kt = unsafe { (kp as *const u8).add(kv * khs * tiles::size::<E>()) };
        // Q8_0: the head's key scales (f16s), block rows `ksc.2` apart.
        let ksc = Scales { p: (self.ksc.0 + 2 * kv * self.ksc.1) as *const u8, block: self.ksc.2, row: 1 };
        let mut jt = j0;
        while rt == 1 && jt + 4 * KEYS <= padded && jt + 3 * KEYS <= last {
            let four = unsafe { tiles_for_cpu::score_row4::<E>(simd, &qt[..hd], kt, kds, jt, ksc) };
            scores[jt..][..4 * KEYS].copy_from_slice(four.as_flattened());
            jt += 4 * KEYS;
        }
        for jt in (jt..=last).step_by(KEYS) {
            if rt == ROWS {
                let tile = unsafe { tiles_for_cpu::score::<ROWS, E>(simd, &qt[..hd * ROWS], kt, kds, jt, ksc) };
                for (r, t) in tile.iter().enumerate() {
                    scores[r * padded + jt..][..KEYS].copy_from_slice(t);
                }
            } else {
                let [t] = unsafe { tiles_for_cpu::score::<1, E>(simd, &qt[..hd], kt, kds, jt, ksc) };
                scores[jt..][..KEYS].copy_from_slice(&t);
            }
        }
        // Softmax over each row's visible keys, into `pt` (`[key - j0, rt]`, weight 0 for keys
        // a row cannot see), so that the value sum runs without a branch.
        let keys = last + 1 - j0;
        pt[..keys * rt].fill(0.0);
        let mut weights = [0f32; ROWS];
        for r in 0..rows {
            let (lo, p) = (lo(r), p(r));
            let seen = &mut scores[r * padded + lo..=r * padded + p];
            let max = lanes_max(seen);
            seen.iter_mut().for_each(|x| *x -= max);
            exp_in_place(seen);
            weights[r] = 1.0 / lanes_sum(seen);
            for (j, &x) in (lo..=p).zip(seen.iter()) {
                pt[(j - j0) * rt + r] = x;
            }
        }
        let (vp, vh, vr) = self.vp;
        for c0 in (0..hd).step_by(COLS) {
            let cols = COLS.min(hd - c0);
            let mut acc = [[0f32; COLS]; ROWS];
            // SAFETY: value rows j0..=last of head kv hold hd values from column 0 at v's strides.
            unsafe {
                let v = (vp as *const u8).add((kv * vh + j0 * vr + c0) * tiles::size::<E>());
                // Q8_0: the scale of columns c0.. of value row j0, rows `vsc.2` apart.
                let vsc = Scales { p: (self.vsc.0 + 2 * (kv * self.vsc.1 + j0 * self.vsc.2 + c0 / Q8_BLOCK)) as *const u8, block: 1, row: self.vsc.2 };
                if rt == ROWS {
                    acc = tiles_for_cpu::value::<ROWS, E>(simd, &pt[..keys * rt], v, vr, cols, vsc);
                } else {
                    acc[0] = tiles_for_cpu::value::<1, E>(simd, &pt[..keys * rt], v, vr, cols, vsc)[0];
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                // SAFETY: output row i0 + r, head h, is written by this item alone, and `out`
                // lives as long as `self`.
                let o = unsafe { std::slice::from_raw_parts_mut(self.dst.get().add((i0 + r) * s.n_head * hd + h * hd + c0), cols) };
                for (y, a) in o.iter_mut().zip(acc) {
                    *y = a * weights[r];
                }
            }
        }
    }
}
