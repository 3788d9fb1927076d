//! Decoded K-quant panels for prompt chunks: each panel's blocks unpacked once into this
//! thread's scratch (operands, scales, minimums), then every tile of activation rows reads them
//! with no unpacking (see the parent module).

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::marker::PhantomData;

use super::super::kpanels::{at, QK_K};
use super::super::packed::{Packed, PANEL};
use super::super::vnni::{self, halves, Layout};
use super::super::QK;
use super::{q45_operands, q6k_operands, q6k_scale, q6k_scale_bytes, scales_and_mins, KActs, Q4K, Q5K, Q6K, DECODE_FROM, SUBS};

/// The largest decoded panel (bytes) a thread keeps: it must stay in L2 while every tile reads
/// it. Wider weights (K over ~24k values) unpack per tile.
const SCRATCH_MAX: usize = 512 << 10;

/// Where the parts of a decoded block start, in 64-byte vectors.
mod dec {
    /// The 64 `vpdpbusd` operands: sub-block j's group g (activation bytes 4g..4g + 4) at 8j + g,
    /// so operand `i` meets activation word `i` of the block.
    pub const OPS: usize = 0;
    /// Sub-block scales (8 for Q4_K and Q5_K, 16 for Q6_K) as i32 lanes.
    pub const SC: usize = 64;
    /// Q4_K / Q5_K: minimums 2i and 2i + 1 as the i16 halves of each lane, i = 0..4.
    pub const MN: usize = 72;
    /// Q4_K / Q5_K: the 16 rows' d and dmin as f32.
    pub const D45: usize = 76;
    pub const DMIN: usize = 77;
    /// Q6_K: the 16 rows' d as f32.
    pub const D6: usize = 80;
}

/// A K-quant layout whose panel blocks can be decoded once for many tiles.
pub(in crate::model::kernels) trait Decode: Layout<Acts = KActs> {
    /// 64-byte vectors per decoded block.
    const VECS: usize;
    /// Panel block `p` decoded into `v` (`VECS` vectors).
    unsafe fn decode(p: *const u8, v: *mut __m512i);
    /// As [`Layout::block`], from decoded block `v`.
    unsafe fn rows<const R: usize>(v: *const __m512i, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]);
}

/// The tile arithmetic of a decoded panel of `L` (its blocks `L::VECS` vectors apart).
pub(super) struct Decoded<L>(PhantomData<L>);

impl<L: Decode> Layout for Decoded<L> {
    const BLOCK: usize = QK_K;
    const PREFETCH: bool = false;
    type Acts = KActs;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        L::rows::<R>(p as *const __m512i, a, first, stride, acc)
    }
}

thread_local! {
    /// This thread's decoded panel, kept between calls.
    static SCRATCH: RefCell<Vec<__m512i>> = const { RefCell::new(Vec::new()) };
}

/// Panel `p` of `w` against all `m` rows of `a`, into `out` (as `vnni::panel`): decoded once into
/// this thread's scratch when there are at least [`DECODE_FROM`] rows, else unpacked per tile.
///
/// # Safety
/// As `vnni::panel`: AVX-512 F, BW and VNNI present; `out` holds `m * n` floats, and nothing else
/// writes panel p's columns meanwhile.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(in crate::model::kernels) unsafe fn panel<L: Decode>(w: &Packed, a: &KActs, m: usize, p: usize, out: *mut f32) {
    if m < DECODE_FROM || w.dims().1 / QK_K * L::VECS * 64 > SCRATCH_MAX {
        return vnni::panel::<L>(w, a, m, p, out);
    }
    // SAFETY: as this function's own contract; the scratch is this thread's and not re-entered.
    SCRATCH.with_borrow_mut(|scratch| unsafe { decoded_panel::<L>(w, a, m, p, out, scratch) })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn decoded_panel<L: Decode>(w: &Packed, a: &KActs, m: usize, p: usize, out: *mut f32, scratch: &mut Vec<__m512i>) {
    let (n, k) = w.dims();
    let (blocks, bytes) = (k / QK_K, w.panel_bytes());
    if scratch.len() < blocks * L::VECS {
        scratch.resize(blocks * L::VECS, _mm512_setzero_si512());
    }
    let v = scratch.as_mut_ptr();
    let wp = w.data().as_ptr().add(p * blocks * bytes);
    for b in 0..blocks {
        L::decode(wp.add(b * bytes), v.add(b * L::VECS));
    }
    vnni::tiles::<Decoded<L>>(v as *const u8, L::VECS * 64, k / QK, a, m, out.add(p * PANEL), n, vnni::live_lanes(n, p));
}

/// `dot × scale`, the decoded scale at `s` (exact: the sums stay far inside i32).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn times(dot: __m512i, s: *const __m512i) -> __m512i {
    _mm512_mullo_epi32(dot, _mm512_loadu_si512(s as *const _))
}

/// Each tile row's Q8_K words of this block (row r's word i at `y[r] + i`).
#[inline]
unsafe fn row_words<const R: usize>(a: &KActs, first: usize, stride: usize) -> [*const i32; R] {
    std::array::from_fn(|r| a.qs.as_ptr().add(first + r * stride) as *const i32)
}

/// Each row's exact dot of operands `at..at + N` of decoded block `v` with its activation words
/// `at..at + N`, from `s`: rows interleaved, so R independent chains share each operand load.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dots<const R: usize, const N: usize>(v: *const __m512i, y: &[*const i32; R], at: usize, mut s: [__m512i; R]) -> [__m512i; R] {
    for i in at..at + N {
        let op = _mm512_loadu_si512(v.add(dec::OPS + i) as *const _);
        for r in 0..R {
            s[r] = _mm512_dpbusd_epi32(s[r], op, _mm512_set1_epi32(std::ptr::read_unaligned(y[r].add(i))));
        }
    }
    s
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn decode_q45<const FIFTH: bool>(p: *const u8, v: *mut __m512i) {
    let put = |i: usize, x: __m512i| _mm512_storeu_si512(v.add(i) as *mut _, x);
    for j in 0..SUBS {
        for (g, op) in q45_operands::<FIFTH>(p, j).into_iter().enumerate() {
            put(dec::OPS + 8 * j + g, op);
        }
    }
    let (sc, mn) = scales_and_mins(p);
    for j in 0..SUBS {
        put(dec::SC + j, sc[j]);
    }
    for i in 0..SUBS / 2 {
        // Minimums are 6 bits: minimum 2i in the low i16 of each lane, 2i + 1 in the high.
        put(dec::MN + i, _mm512_or_si512(mn[2 * i], _mm512_slli_epi32::<16>(mn[2 * i + 1])));
    }
    put(dec::D45, _mm512_castps_si512(halves(p)));
    put(dec::DMIN, _mm512_castps_si512(halves(p.add(at::DMIN))));
}

/// `block_q45` from a decoded block: the same integer sums (`isum` Σ scale·dot, `msum`
/// Σ min·(sum of 32), here by `vpdpwssd` on i16 pairs) and the same two float steps.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn rows_q45<const R: usize>(v: *const __m512i, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
    let y = row_words::<R>(a, first, stride);
    let mut isum = [_mm512_setzero_si512(); R];
    for j in 0..SUBS {
        let dots = dots::<R, 8>(v, &y, 8 * j, [_mm512_setzero_si512(); R]);
        for r in 0..R {
            isum[r] = _mm512_add_epi32(isum[r], times(dots[r], v.add(dec::SC + j)));
        }
    }
    let vec = |i: usize| _mm512_loadu_si512(v.add(i) as *const _);
    let (d, dmin) = (_mm512_castsi512_ps(vec(dec::D45)), _mm512_castsi512_ps(vec(dec::DMIN)));
    for (r, acc) in acc.iter_mut().enumerate() {
        let kb = (first + r * stride) / SUBS;
        let sums = a.sums32.get_unchecked(kb).as_ptr() as *const i32;
        let mut msum = _mm512_setzero_si512();
        for i in 0..SUBS / 2 {
            msum = _mm512_dpwssd_epi32(msum, vec(dec::MN + i), _mm512_set1_epi32(std::ptr::read_unaligned(sums.add(i))));
        }
        let da = _mm512_set1_ps(*a.d.get_unchecked(kb));
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(d, da), *acc);
        *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, da), *acc);
    }
}

impl Decode for Q4K {
    const VECS: usize = dec::DMIN + 1;

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn decode(p: *const u8, v: *mut __m512i) {
        decode_q45::<false>(p, v)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn rows<const R: usize>(v: *const __m512i, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        rows_q45::<R>(v, a, first, stride, acc)
    }
}

impl Decode for Q5K {
    const VECS: usize = dec::DMIN + 1;

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn decode(p: *const u8, v: *mut __m512i) {
        decode_q45::<true>(p, v)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn rows<const R: usize>(v: *const __m512i, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        rows_q45::<R>(v, a, first, stride, acc)
    }
}

impl Decode for Q6K {
    const VECS: usize = dec::D6 + 1;

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn decode(p: *const u8, v: *mut __m512i) {
        let put = |i: usize, x: __m512i| _mm512_storeu_si512(v.add(i) as *mut _, x);
        for j in 0..SUBS {
            for (g, op) in q6k_operands(p, j).into_iter().enumerate() {
                put(dec::OPS + 8 * j + g, op);
            }
        }
        let sv = q6k_scale_bytes(p);
        for s in 0..2 * SUBS {
            put(dec::SC + s, q6k_scale(&sv, s));
        }
        put(dec::D6, _mm512_castps_si512(halves(p)));
    }

    /// `Q6K::block` from a decoded block: each 16 values' dot starts from −32 × their sum (the
    /// same integers as there), times its scale, summed as integers; the same float step.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn rows<const R: usize>(v: *const __m512i, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        let y = row_words::<R>(a, first, stride);
        let off: [*const i32; R] = std::array::from_fn(|r| a.off.get_unchecked((first + r * stride) / SUBS).as_ptr());
        let mut isum = [_mm512_setzero_si512(); R];
        // Values 16s..16s + 16 are operands (and activation words) 4s..4s + 4, scale s.
        for s in 0..2 * SUBS {
            let mut init = [_mm512_setzero_si512(); R];
            for r in 0..R {
                init[r] = _mm512_set1_epi32(*off[r].add(s));
            }
            let dots = dots::<R, 4>(v, &y, 4 * s, init);
            for r in 0..R {
                isum[r] = _mm512_add_epi32(isum[r], times(dots[r], v.add(dec::SC + s)));
            }
        }
        let d = _mm512_castsi512_ps(_mm512_loadu_si512(v.add(dec::D6) as *const _));
        for (r, acc) in acc.iter_mut().enumerate() {
            let da = _mm512_set1_ps(*a.d.get_unchecked((first + r * stride) / SUBS));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(d, da), *acc);
        }
    }
}
