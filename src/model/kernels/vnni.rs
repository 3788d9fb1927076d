//! The AVX-512 VNNI kernel over panel-packed weights (see `packed`): activations quantized to 8
//! bits in blocks of 32 (ggml's Q8_0 / Q8_1, bit for bit as candle quantizes them),
//! then for each panel of 16 weight rows and up to [`ROWS`] activation rows, block by block:
//! eight `vpdpbusd` give the 16 exact integer dot products (the weight's offset, 8, 16 or 128,
//! taken out through the activation block's integer sum), one conversion and one FMA scale them
//! into 16 float lanes. A row's arithmetic does not depend on how many rows share its tile, so
//! it gets the same result alone and in a batch; the work is shared over candle's worker pool.
//! The K-quants' block arithmetic (and their Q8_K activations) is in `vnni_k`, behind the same
//! [`Layout`] trait, tiles and pool call.
//!
//! Every panel block is met front to back ([`load`] keeps the loads in that order, [`step`] keeps
//! the compiler from hoisting them all), so the hardware prefetcher streams the panels. On the
//! random-weight Qwen2.5-Coder-1.5B files, one thread, this took generation from 10.8 to 17.2
//! tok/s on Q6_K, 16.7 to 23.4 on Q4_K_M and 19 to 26 on Q4_0, against prefetching 4 KiB ahead
//! into L2 with the loads in the compiler's order. One-row tiles (a decode step) then do best with
//! no software prefetch (15–25% faster than with it); tiles of several rows, with four times the
//! arithmetic per byte, still gain from it (4 streams on the 1.5B Q4_K_M: 97 against 78 tok/s),
//! so they keep it ([`PREFETCH_AHEAD`]).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use half::f16;

use super::packed::{Kind, Packed, PANEL};
use super::{OutPtr, QK};

/// Activation rows that share one pass over a panel.
pub const ROWS: usize = 8;

/// How far ahead of the panel block being read a tile of several rows asks for the weight bytes,
/// into L2 (see the module notes; into L1 this far ahead displaced lines still in use).
const PREFETCH_AHEAD: usize = 4096;

/// Activation rows quantized: block `b` of row `r` at `r * blocks + b`.
pub(super) struct Acts {
    pub qs: Vec<[i8; QK]>,
    /// ggml's Q8_0 scale (f16-rounded).
    pub d: Vec<f32>,
    /// The block's integer sum.
    pub sum: Vec<i32>,
    /// Q8_1's `d × sum` (f16-rounded), for Q4_1's minimums.
    pub s: Vec<f32>,
}

/// Rounding half away from zero, as `f32::round` (and so ggml's and candle's scalar quantizers):
/// to nearest even, except that a tie steps away from the truncated value.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn round_away(x: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    let even = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let frac = _mm512_sub_ps(x, t);
    let tie = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(frac), _mm512_set1_ps(0.5));
    _mm512_mask_blend_ps(tie, even, _mm512_fmadd_ps(frac, _mm512_set1_ps(2.0), t))
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row(x: &[f32], qs: &mut [[i8; QK]], d: &mut [f32], sum: &mut [i32], s: &mut [f32]) {
    for (i, b) in x.chunks_exact(QK).enumerate() {
        let (v0, v1) = (_mm512_loadu_ps(b.as_ptr()), _mm512_loadu_ps(b.as_ptr().add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let dd = amax / 127.0;
        let id = _mm512_set1_ps(if dd != 0.0 { 1.0 / dd } else { 0.0 });
        let q0 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v0, id)));
        let q1 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v1, id)));
        let out = qs[i].as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(out, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(out.add(1), _mm512_cvtsepi32_epi8(q1));
        let total = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        let d16 = f16::from_f32(dd);
        d[i] = d16.to_f32();
        sum[i] = total;
        s[i] = (f16::from_f32(total as f32) * d16).to_f32();
    }
}

/// `m` rows of `k` values quantized, on the worker pool when there are many.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize(xs: &[f32], m: usize, k: usize) -> Acts {
    let n = m * (k / QK);
    let mut a = Acts { qs: vec![[0; QK]; n], d: vec![0.0; n], sum: vec![0; n], s: vec![0.0; n] };
    let blocks = k / QK;
    if m < 8 {
        quantize_row(xs, &mut a.qs, &mut a.d, &mut a.sum, &mut a.s);
        return a;
    }
    let ptrs = (a.qs.as_mut_ptr() as usize, a.d.as_mut_ptr() as usize, a.sum.as_mut_ptr() as usize, a.s.as_mut_ptr() as usize);
    candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
        let at = rows.start * blocks;
        let len = rows.len() * blocks;
        // SAFETY: rows `rows` (blocks `at..at + len`) are written by this call alone, and the
        // vectors outlive the pool call.
        unsafe {
            quantize_row(
                &xs[rows.start * k..rows.end * k],
                std::slice::from_raw_parts_mut((ptrs.0 as *mut [i8; QK]).add(at), len),
                std::slice::from_raw_parts_mut((ptrs.1 as *mut f32).add(at), len),
                std::slice::from_raw_parts_mut((ptrs.2 as *mut i32).add(at), len),
                std::slice::from_raw_parts_mut((ptrs.3 as *mut f32).add(at), len),
            )
        }
    });
    a
}

/// A panel layout's arithmetic: how one panel block (16 rows of one GGUF block each) meets the
/// activation rows of a tile.
pub(super) trait Layout {
    /// Values per block: 32, or 256 for the K-quants.
    const BLOCK: usize;
    /// The quantized activations it meets.
    type Acts;
    /// Whether tiles of several rows ask for the blocks ahead (weights streamed from memory; not
    /// a K-quant panel already decoded into this thread's cache, see `vnni_k::panel`).
    const PREFETCH: bool = true;
    /// Adds panel block `p` times the tile's rows to `acc`: row `r`'s first 32 activation
    /// values of the block are the `first + r * stride`-th 32 of the activations.
    unsafe fn block<const R: usize>(p: *const u8, a: &Self::Acts, first: usize, stride: usize, acc: &mut [__m512; R]);
}

/// How one 32-value panel block's values become the unsigned operands of `vpdpbusd`.
trait Small {
    /// Subtracted from each unsigned operand to give the stored value (none for Q4_1).
    const OFFSET: i32;
    /// Where the value vectors start in a panel block.
    const VALUES: usize;
    /// The eight operands: operand `g` meets activation bytes `4g..4g + 4`.
    unsafe fn operands(p: *const u8) -> [__m512i; 8];
}

/// Lanes `r` of vector `g` at `v` hold the low nibbles of group g and the high of group g + 4.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn nibble_operands(v: *const u8) -> [__m512i; 8] {
    let low = _mm512_set1_epi8(0x0F);
    let mut w = [_mm512_setzero_si512(); 8];
    for g in 0..4 {
        let x = load(v.add(64 * g));
        w[g] = _mm512_and_si512(x, low);
        w[g + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
    }
    w
}

struct Q4_0;
impl Small for Q4_0 {
    const OFFSET: i32 = 8;
    const VALUES: usize = 32;
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn operands(p: *const u8) -> [__m512i; 8] {
        nibble_operands(p.add(Self::VALUES))
    }
}

struct Q4_1;
impl Small for Q4_1 {
    const OFFSET: i32 = 0;
    const VALUES: usize = 64;
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn operands(p: *const u8) -> [__m512i; 8] {
        nibble_operands(p.add(Self::VALUES))
    }
}

struct Q5_0;
impl Small for Q5_0 {
    const OFFSET: i32 = 16;
    const VALUES: usize = 96;
    /// The nibbles with each value's fifth bit rotated into bit 4 (see `packed::fifth_bit_slot`:
    /// group g's bits sit at 8j + slot(g), and rotating right by slot(g) − 4 brings them to 8j + 4).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn operands(p: *const u8) -> [__m512i; 8] {
        let mut w = nibble_operands(p.add(Self::VALUES));
        let h = load(p.add(32));
        let rotated = [
            _mm512_ror_epi32::<28>(h),
            _mm512_ror_epi32::<30>(h),
            h,
            _mm512_ror_epi32::<2>(h),
            _mm512_ror_epi32::<29>(h),
            _mm512_ror_epi32::<31>(h),
            _mm512_ror_epi32::<1>(h),
            _mm512_ror_epi32::<3>(h),
        ];
        let bit4 = _mm512_set1_epi8(0x10);
        for g in 0..8 {
            // w | (rotated & bit4)
            w[g] = _mm512_ternarylogic_epi32::<0xEA>(rotated[g], bit4, w[g]);
        }
        w
    }
}

struct Q8_0;
impl Small for Q8_0 {
    const OFFSET: i32 = 128;
    const VALUES: usize = 32;
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn operands(p: *const u8) -> [__m512i; 8] {
        let mut w = [_mm512_setzero_si512(); 8];
        for (g, w) in w.iter_mut().enumerate() {
            *w = load(p.add(Self::VALUES + 64 * g));
        }
        w
    }
}

/// 64 weight bytes at `p`, read where the program reads them. Weights stream from memory, and
/// the hardware prefetcher keeps ahead of loads that walk forward; the compiler, free to reorder
/// plain loads, issued a panel block's loads in a scattered order that moved half the bytes per
/// second. A volatile load stays in program order with the others.
#[inline(always)]
pub(super) unsafe fn load(p: *const u8) -> __m512i {
    in_order(p)
}

/// A `T` read from `p` (any alignment) by a volatile load: in program order with the others.
#[inline(always)]
unsafe fn in_order<T: Copy>(p: *const u8) -> T {
    #[repr(C, packed)]
    struct Unaligned<T>(T);
    std::ptr::read_volatile(p as *const Unaligned<T>).0
}

/// A point the compiler moves no load across: between a block's sub-blocks, so that it does not
/// hoist every [`load`] of a block to its start (holding them all spilled to the stack).
#[inline(always)]
pub(super) fn step() {
    // SAFETY: an empty instruction string; without `nomem` it only orders memory accesses.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) }
}

/// Sixteen f16 weight values at `p` as floats (read in program order, as [`load`]).
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn halves(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(in_order::<__m256i>(p))
}

/// The exact integer dot of `ops` (an even number, 4 bytes of activations each) with the
/// activations at `y`, from `init`: two chains, so consecutive `vpdpbusd` do not wait on each other.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(super) unsafe fn dot(ops: &[__m512i], y: *const i32, init: __m512i) -> __m512i {
    let (mut i0, mut i1) = (init, _mm512_setzero_si512());
    for g in (0..ops.len()).step_by(2) {
        i0 = _mm512_dpbusd_epi32(i0, ops[g], _mm512_set1_epi32(std::ptr::read_unaligned(y.add(g))));
        i1 = _mm512_dpbusd_epi32(i1, ops[g + 1], _mm512_set1_epi32(std::ptr::read_unaligned(y.add(g + 1))));
    }
    _mm512_add_epi32(i0, i1)
}

impl<L: Small> Layout for L {
    const BLOCK: usize = QK;
    type Acts = Acts;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(p: *const u8, a: &Acts, first: usize, stride: usize, acc: &mut [__m512; R]) {
        let ops = L::operands(p);
        let dw = halves(p);
        let mins = if L::OFFSET == 0 { halves(p.add(32)) } else { _mm512_setzero_ps() };
        for (r, acc) in acc.iter_mut().enumerate() {
            let at = first + r * stride;
            let y = a.qs.get_unchecked(at).as_ptr() as *const i32;
            let dot = _mm512_cvtepi32_ps(dot(&ops, y, _mm512_set1_epi32(-L::OFFSET * *a.sum.get_unchecked(at))));
            *acc = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw, _mm512_set1_ps(*a.d.get_unchecked(at))), *acc);
            if L::OFFSET == 0 {
                *acc = _mm512_fmadd_ps(mins, _mm512_set1_ps(*a.s.get_unchecked(at)), *acc);
            }
        }
    }
}

/// Asks for the `bytes` that lie [`PREFETCH_AHEAD`] past panel block `p`, into L2.
#[target_feature(enable = "sse")]
#[inline]
unsafe fn prefetch_ahead(p: *const u8, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
    }
}

/// Panel `panel` (its blocks at `w`) against activation rows `row0..row0 + R`, writing the first
/// `lanes` of each row's 16 results to `out` (row `r` at `out + r * ldo`). `stride` is the
/// activation blocks (of 32) per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile<L: Layout, const R: usize>(w: *const u8, bytes: usize, stride: usize, a: &L::Acts, row0: usize, out: *mut f32, ldo: usize, lanes: __mmask16) {
    let mut acc = [_mm512_setzero_ps(); R];
    let per_block = L::BLOCK / QK;
    for b in 0..stride / per_block {
        let p = w.add(b * bytes);
        if R > 1 && L::PREFETCH {
            prefetch_ahead(p, bytes);
        }
        L::block::<R>(p, a, row0 * stride + b * per_block, stride, &mut acc);
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.add(r * ldo), lanes, *acc);
    }
}

/// Panel `p` of `w` against all `m` rows of `a`, into `out` (`[m, n]`, row-major).
///
/// # Safety
/// `out` must hold `m * n` floats, and nothing else may write panel p's columns meanwhile.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn panel<L: Layout>(w: &Packed, a: &L::Acts, m: usize, p: usize, out: *mut f32) {
    let (n, k) = w.dims();
    let bytes = w.panel_bytes();
    let wp = w.data().as_ptr().add(p * (k / L::BLOCK) * bytes);
    tiles::<L>(wp, bytes, k / QK, a, m, out.add(p * PANEL), n, live_lanes(n, p));
}

/// The lanes of panel `p` that hold rows of an `n`-row weight.
pub(super) fn live_lanes(n: usize, p: usize) -> __mmask16 {
    if (p + 1) * PANEL <= n {
        0xFFFF
    } else {
        (1u16 << (n - p * PANEL)) - 1
    }
}

/// All `m` activation rows against one panel whose blocks lie `bytes` apart from `wp`, in tiles
/// of [`ROWS`] rows and one of the rest; row `r`'s `lanes` results go to `out + r * n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tiles<L: Layout>(wp: *const u8, bytes: usize, stride: usize, a: &L::Acts, m: usize, out: *mut f32, n: usize, lanes: __mmask16) {
    let o = |row0: usize| out.add(row0 * n);
    let mut row0 = 0;
    while row0 + ROWS <= m {
        tile::<L, ROWS>(wp, bytes, stride, a, row0, o(row0), n, lanes);
        row0 += ROWS;
    }
    match m - row0 {
        0 => {}
        1 => tile::<L, 1>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        2 => tile::<L, 2>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        3 => tile::<L, 3>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        4 => tile::<L, 4>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        5 => tile::<L, 5>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        6 => tile::<L, 6>(wp, bytes, stride, a, row0, o(row0), n, lanes),
        _ => tile::<L, 7>(wp, bytes, stride, a, row0, o(row0), n, lanes),
    }
}

/// `f` over `0..n` on the worker pool, each thread walking its own contiguous share front to back
/// in small grabs, then taking grabs from the shares of threads still busy. A grab that follows
/// the last one in memory keeps the hardware prefetcher streaming, where a shared cursor hands
/// each thread grabs scattered through the weights. Called from the engine thread only (a pool
/// job calling it would wait on the pool forever).
fn streams<F: Fn(std::ops::Range<usize>) + Sync>(n: usize, f: F) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    if threads == 1 || n < 2 * threads {
        return f(0..n);
    }
    let share = n.div_ceil(threads);
    let grab = (share / 8).max(1);
    let next: Vec<AtomicUsize> = (0..threads).map(|t| AtomicUsize::new(t * share)).collect();
    pool.execute(|tid| {
        for t in (0..threads).map(|i| (tid + i) % threads) {
            let end = ((t + 1) * share).min(n);
            loop {
                let start = next[t].fetch_add(grab, Ordering::Relaxed);
                if start >= end {
                    break;
                }
                f(start..end.min(start + grab));
            }
        }
    });
}

/// `xs` (`m` rows of `k`) times the transpose of each weight in `ws` (all `k` wide) into its
/// `out` (`[m, n]`, row-major): the activations are quantized once and every weight's panels
/// share one pass over the worker pool (a layer's q, k and v, or gate and up, take one call).
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI (`packed::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn matmul_many(ws: &[&Packed], xs: &[f32], m: usize, outs: &mut [Vec<f32>]) {
    let k = ws[0].dims().1;
    assert!(ws.len() == outs.len() && xs.len() == m * k);
    assert!(ws.iter().zip(outs.iter()).all(|(w, o)| w.dims().1 == k && o.len() == m * w.dims().0));
    // Activations in blocks of 32 for the 32-value types, in ggml's Q8_K for the K-quants.
    let small = ws.iter().any(|w| !w.kind().is_k()).then(|| quantize(xs, m, k));
    let big = ws.iter().any(|w| w.kind().is_k()).then(|| super::vnni_k::quantize(xs, m, k));
    // Panel i of the whole call is panel i - starts[j] of weight j.
    let mut starts = Vec::with_capacity(ws.len());
    let mut total = 0;
    for w in ws {
        starts.push(total);
        total += w.dims().0.div_ceil(PANEL);
    }
    let dsts: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
    streams(total, |panels| {
        for i in panels {
            let j = starts.partition_point(|&s| s <= i) - 1;
            let (w, p, out) = (ws[j], i - starts[j], dsts[j].get());
            // SAFETY: panel p's columns of weight j's output are written by this call alone, and
            // the outputs outlive the pool call.
            unsafe {
                match w.kind() {
                    Kind::Q4_0 => panel::<Q4_0>(w, small.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q4_1 => panel::<Q4_1>(w, small.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q5_0 => panel::<Q5_0>(w, small.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q8_0 => panel::<Q8_0>(w, small.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q4K => super::vnni_k::panel::<super::vnni_k::Q4K>(w, big.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q5K => super::vnni_k::panel::<super::vnni_k::Q5K>(w, big.as_ref().expect("quantized for this type"), m, p, out),
                    Kind::Q6K => super::vnni_k::panel::<super::vnni_k::Q6K>(w, big.as_ref().expect("quantized for this type"), m, p, out),
                }
            }
        }
    });
}
