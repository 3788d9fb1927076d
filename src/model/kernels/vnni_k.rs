//! The AVX-512 VNNI arithmetic of the K-quant panels (Q4_K, Q5_K, Q6_K; layouts in `kpanels`),
//! against activations quantized as ggml's Q8_K (one f32 scale per 256 values and integer sums
//! per 16, bit for bit as candle quantizes them), so the products are ggml's: for each 32-value
//! sub-block eight `vpdpbusd` give 16 rows' exact integer dots (Q6_K's offset of 32 taken out
//! through the sums per 16), the sub-block scales multiply them as integers, and one conversion
//! and FMA per block scale the sum into float lanes. A row's arithmetic never depends on the
//! other rows of its tile.
//!
//! Few rows (decode steps) unpack each panel block in registers for the rows of a tile. From
//! `DECODE_FROM` rows on, each panel is first decoded into this thread's scratch (`decoded`:
//! the 64 `vpdpbusd` operands and the scales of every block, about 5 KiB a block), and every
//! tile then reads operands and scales with no unpacking: the unpacking is paid once per panel
//! instead of once per 8 rows. Both give the same integers (sums of exact products, taken in
//! another order) and the same float steps, so a row gets the same bits either way.

use std::arch::x86_64::*;

use super::kpanels::{at, QK_K};
use super::vnni::{dot, halves, load, round_away, step, Layout, ROWS};
use super::QK;

mod decoded;
pub(super) use decoded::panel;

/// Sub-blocks of 32 values per K block.
const SUBS: usize = QK_K / QK;

/// Activation rows from which a panel is decoded once for all of them: the decoding costs about
/// one tile's unpacking, so it pays from the second tile on.
const DECODE_FROM: usize = 2 * ROWS;

pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

/// Activation rows as ggml's Q8_K: values in runs of 32 (the `i`-th 32 of all rows at `qs[i]`,
/// as for the 32-value types), and per 256-value block (`qs[8 * b..8 * b + 8]`) the scale and the
/// integer sums of each 16 values.
pub(super) struct KActs {
    qs: Vec<[i8; QK]>,
    d: Vec<f32>,
    bsums: Vec<[i32; 16]>,
    /// Decoded panels only (else empty), per block: −32 × each sum of 16 (Q6_K's offset, the
    /// starting value of each 16 values' dot).
    off: Vec<[i32; 16]>,
    /// Decoded panels only, per block: the sums of each 32 values (|sum| ≤ 32 · 128), read as
    /// four i16 pairs by `vpdpwssd` against Q4_K's and Q5_K's minimums.
    sums32: Vec<[i16; 8]>,
}

/// ggml's `quantize_row_q8_K` as candle writes it: scale −max/127 from the value of largest
/// magnitude (the first such), values rounded half away from zero and clamped to [−128, 127].
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row(x: &[f32], qs: &mut [[i8; QK]], d: &mut [f32], bsums: &mut [[i32; 16]]) {
    for (b, xs) in x.chunks_exact(QK_K).enumerate() {
        let mut amax = _mm512_setzero_ps();
        for v in xs.chunks_exact(16) {
            amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(v.as_ptr())));
        }
        let amax = _mm512_reduce_max_ps(amax);
        if amax == 0.0 {
            d[b] = 0.0;
            bsums[b] = [0; 16];
            qs[8 * b..8 * b + 8].iter_mut().for_each(|q| *q = [0; QK]);
            continue;
        }
        let max = *xs.iter().find(|v| v.abs() == amax).expect("the largest magnitude is one of the values");
        let iscale = -127f32 / max;
        let scale = _mm512_set1_ps(iscale);
        for (i, v) in xs.chunks_exact(16).enumerate() {
            let q = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(_mm512_loadu_ps(v.as_ptr()), scale)));
            _mm_storeu_si128((qs[8 * b + i / 2].as_mut_ptr() as *mut __m128i).add(i % 2), _mm512_cvtsepi32_epi8(q));
            // The stored (saturated) values' sum.
            bsums[b][i] = _mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(_mm512_cvtsepi32_epi8(q)));
        }
        d[b] = 1.0 / iscale;
    }
}

/// `m` rows of `k` values (a multiple of 256) quantized, on the worker pool when there are many.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize(xs: &[f32], m: usize, k: usize) -> KActs {
    let (blocks, n) = (k / QK_K, m * (k / QK_K));
    let mut a = KActs { qs: vec![[0; QK]; n * SUBS], d: vec![0.0; n], bsums: vec![[0; 16]; n], off: Vec::new(), sums32: Vec::new() };
    if m < 8 {
        quantize_row(xs, &mut a.qs, &mut a.d, &mut a.bsums);
        return a;
    }
    let ptrs = (a.qs.as_mut_ptr() as usize, a.d.as_mut_ptr() as usize, a.bsums.as_mut_ptr() as usize);
    candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
        let (at, len) = (rows.start * blocks, rows.len() * blocks);
        // SAFETY: rows `rows` (blocks `at..at + len`) are written by this call alone, and the
        // vectors outlive the pool call.
        unsafe {
            quantize_row(
                &xs[rows.start * k..rows.end * k],
                std::slice::from_raw_parts_mut((ptrs.0 as *mut [i8; QK]).add(at * SUBS), len * SUBS),
                std::slice::from_raw_parts_mut((ptrs.1 as *mut f32).add(at), len),
                std::slice::from_raw_parts_mut((ptrs.2 as *mut [i32; 16]).add(at), len),
            )
        }
    });
    if m >= DECODE_FROM {
        // |sum of 16| ≤ 16 · 128, so the sums of 32 fit i16.
        a.off = a.bsums.iter().map(|s| s.map(|v| -32 * v)).collect();
        a.sums32 = a.bsums.iter().map(|s| std::array::from_fn(|j| (s[2 * j] + s[2 * j + 1]) as i16)).collect();
    }
    a
}

/// Q4_K's and Q5_K's eight sub-block scales and minimums as i32 lanes, 16 rows per vector:
/// ggml's unpacking of the 12 packed bytes (6 bits each; the high two bits of scales and
/// minimums 4–7 in the top bits of bytes 0–7).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn scales_and_mins(p: *const u8) -> ([__m512i; SUBS], [__m512i; SUBS]) {
    let v = |i: usize| load(p.add(at::SCALES + 64 * i));
    let (s0, s1, s2) = (v(0), v(1), v(2));
    let (k6, k4, k2) = (_mm512_set1_epi32(0x3f3f3f3f), _mm512_set1_epi32(0x0f0f0f0f), _mm512_set1_epi32(0x03030303));
    let top = |x: __m512i| _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(x), k2));
    let scales = [_mm512_and_si512(s0, k6), _mm512_or_si512(_mm512_and_si512(s2, k4), top(s0))];
    let mins = [_mm512_and_si512(s1, k6), _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(s2), k4), top(s1))];
    let byte = |x: __m512i, j: usize| _mm512_and_si512(_mm512_srlv_epi32(x, _mm512_set1_epi32(8 * (j as i32 % 4))), _mm512_set1_epi32(0xFF));
    let (mut sc, mut mn) = ([_mm512_setzero_si512(); SUBS], [_mm512_setzero_si512(); SUBS]);
    for j in 0..SUBS {
        sc[j] = byte(scales[j / 4], j);
        mn[j] = byte(mins[j / 4], j);
    }
    (sc, mn)
}

/// Each byte of `x` shifted left by `by` (right when negative), as 16-bit lanes: callers mask
/// away the bits that cross between bytes.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn shift(x: __m512i, by: i32) -> __m512i {
    if by >= 0 {
        _mm512_sll_epi16(x, _mm_cvtsi32_si128(by))
    } else {
        _mm512_srl_epi16(x, _mm_cvtsi32_si128(-by))
    }
}

/// Q4_K's (`FIFTH` false) or Q5_K's sub-block `j` of panel block `p` as the eight unsigned
/// operands of `vpdpbusd`: the nibbles are the low (j even) or high halves of the bytes of
/// stretch `j / 2`, Q5_K's fifth bits bit `j` of each `qh` byte. Lines are read in the order they
/// lie (Q5_K's `qh` line before the `qs` line paired with it).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn q45_operands<const FIFTH: bool>(p: *const u8, j: usize) -> [__m512i; 8] {
    let (low, bit4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
    let mut ops = [_mm512_setzero_si512(); 8];
    for (g, op) in ops.iter_mut().enumerate() {
        let h = if FIFTH { load(p.add(at::q5k_qh(g))) } else { _mm512_setzero_si512() };
        let x = load(p.add(if FIFTH { at::q5k_qs(j / 2, g) } else { at::q4k_qs(j / 2, g) }));
        *op = _mm512_and_si512(if j % 2 == 0 { x } else { _mm512_srli_epi16::<4>(x) }, low);
        if FIFTH {
            // op | (bit j of each byte, moved to bit 4)
            *op = _mm512_ternarylogic_epi32::<0xEA>(shift(h, 4 - j as i32), bit4, *op);
        }
    }
    ops
}

/// Q6_K's sub-block `j` of panel block `p` (half `j / 4` of the block, quarter `q = j % 4`) as
/// the eight unsigned operands of `vpdpbusd` (the stored 6 bits, 0–63): the low four bits from
/// the low (q < 2) or high nibbles of `ql` stretch `2·half + q % 2`, the top two from bits 2q,
/// 2q + 1 of `qh` stretch `half`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn q6k_operands(p: *const u8, j: usize) -> [__m512i; 8] {
    let (half, q) = (j / 4, j % 4);
    let (low, top2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let mut ops = [_mm512_setzero_si512(); 8];
    for (g, op) in ops.iter_mut().enumerate() {
        // In the order the lines lie: `qh` line g, then the `ql` line paired with it.
        let h = load(p.add(at::q6k_qh(half, g)));
        let l = load(p.add(at::q6k_ql(2 * half + q % 2, g)));
        let l = _mm512_and_si512(if q < 2 { l } else { _mm512_srli_epi16::<4>(l) }, low);
        // l | (bits 2q, 2q + 1 of each qh byte, moved to bits 4, 5)
        *op = _mm512_ternarylogic_epi32::<0xEA>(shift(h, 4 - 2 * q as i32), top2, l);
    }
    ops
}

/// Q6_K's 16 signed scales of panel block `p`, four per lane of four vectors (see `q6k_scale`).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn q6k_scale_bytes(p: *const u8) -> [__m512i; 4] {
    [0, 1, 2, 3].map(|i| load(p.add(at::Q6K_SCALES + 64 * i)))
}

/// Q6_K's scale `s` (of values 16s..16s + 16) of each row, sign-extended to i32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn q6k_scale(sv: &[__m512i; 4], s: usize) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_sllv_epi32(sv[s / 4], _mm512_set1_epi32(24 - 8 * (s as i32 % 4))))
}

/// Q4_K (`FIFTH` false) or Q5_K: value = d·scale·q − dmin·min per 32-value sub-block, q the
/// nibble (plus Q5_K's fifth bit); sub-block `j`'s nibbles are the low (j even) or high halves
/// of the bytes of stretch `j / 2`, its fifth bits bit `j` of each `qh` byte.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn block_q45<const FIFTH: bool, const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
    let (sc, mn) = scales_and_mins(p);
    let (d, dmin) = (halves(p), halves(p.add(at::DMIN)));
    let mut isum = [_mm512_setzero_si512(); R];
    // Sub-blocks one by one with `J` a constant, so which nibble and which fifth bit each takes
    // is decided at compile time rather than by branches in the loop.
    sub_q45::<FIFTH, 0, R>(p, a, first, stride, sc[0], &mut isum);
    sub_q45::<FIFTH, 1, R>(p, a, first, stride, sc[1], &mut isum);
    sub_q45::<FIFTH, 2, R>(p, a, first, stride, sc[2], &mut isum);
    sub_q45::<FIFTH, 3, R>(p, a, first, stride, sc[3], &mut isum);
    sub_q45::<FIFTH, 4, R>(p, a, first, stride, sc[4], &mut isum);
    sub_q45::<FIFTH, 5, R>(p, a, first, stride, sc[5], &mut isum);
    sub_q45::<FIFTH, 6, R>(p, a, first, stride, sc[6], &mut isum);
    sub_q45::<FIFTH, 7, R>(p, a, first, stride, sc[7], &mut isum);
    for (r, acc) in acc.iter_mut().enumerate() {
        let kb = (first + r * stride) / SUBS;
        let bs = a.bsums.get_unchecked(kb);
        let mut msum = _mm512_setzero_si512();
        for j in 0..SUBS {
            msum = _mm512_add_epi32(msum, _mm512_mullo_epi32(mn[j], _mm512_set1_epi32(bs[2 * j] + bs[2 * j + 1])));
        }
        let da = _mm512_set1_ps(*a.d.get_unchecked(kb));
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(d, da), *acc);
        *acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, da), *acc);
    }
}

/// Sub-block `J` of a Q4_K / Q5_K panel block times the tile's rows, times its scales `sc`,
/// added to `isum`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn sub_q45<const FIFTH: bool, const J: usize, const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, sc: __m512i, isum: &mut [__m512i; R]) {
    let ops = q45_operands::<FIFTH>(p, J);
    for (r, isum) in isum.iter_mut().enumerate() {
        let y = a.qs.get_unchecked(first + r * stride + J).as_ptr() as *const i32;
        *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(dot(&ops, y, _mm512_setzero_si512()), sc));
    }
    step();
}

impl Layout for Q4K {
    const BLOCK: usize = QK_K;
    type Acts = KActs;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        block_q45::<false, R>(p, a, first, stride, acc)
    }
}

impl Layout for Q5K {
    const BLOCK: usize = QK_K;
    type Acts = KActs;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        block_q45::<true, R>(p, a, first, stride, acc)
    }
}

/// Q6_K: value = d·scale·(q − 32), q six bits, a signed 8-bit scale per 16 values. Sub-block
/// `j` (half `j / 4` of the block, quarter `q = j % 4`) takes its low four bits from the low
/// (q < 2) or high nibbles of `ql` stretch `2·half + q % 2`, its top two from bits 2q, 2q + 1 of
/// `qh` stretch `half`, and scales `8·half + 2q` (first 16 values) and the next.
impl Layout for Q6K {
    const BLOCK: usize = QK_K;
    type Acts = KActs;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block<const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, acc: &mut [__m512; R]) {
        let d = halves(p);
        let sv = q6k_scale_bytes(p);
        let mut isum = [_mm512_setzero_si512(); R];
        // One sub-block at a time with `J` a constant (see `block_q45`), in the order their
        // bytes lie in memory (sub-blocks j and j + 2 share a `ql` stretch); integer sums in
        // any order are the same sums.
        sub_q6::<0, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<2, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<1, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<3, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<4, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<6, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<5, R>(p, a, first, stride, &sv, &mut isum);
        sub_q6::<7, R>(p, a, first, stride, &sv, &mut isum);
        for (r, acc) in acc.iter_mut().enumerate() {
            let da = _mm512_set1_ps(*a.d.get_unchecked((first + r * stride) / SUBS));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(d, da), *acc);
        }
    }
}

/// Sub-block `J` of a Q6_K panel block (scales `sv`, 16 rows' 16 bytes as four vectors) times the
/// tile's rows, added to `isum`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn sub_q6<const J: usize, const R: usize>(p: *const u8, a: &KActs, first: usize, stride: usize, sv: &[__m512i; 4], isum: &mut [__m512i; R]) {
    let (sa, sb) = (q6k_scale(sv, 2 * J), q6k_scale(sv, 2 * J + 1));
    let ops = q6k_operands(p, J);
    for (r, isum) in isum.iter_mut().enumerate() {
        let at = first + r * stride;
        let y = a.qs.get_unchecked(at + J).as_ptr() as *const i32;
        let bs = a.bsums.get_unchecked(at / SUBS);
        let ia = dot(&ops[..4], y, _mm512_set1_epi32(-32 * bs[2 * J]));
        let ib = dot(&ops[4..], y.add(4), _mm512_set1_epi32(-32 * bs[2 * J + 1]));
        *isum = _mm512_add_epi32(*isum, _mm512_add_epi32(_mm512_mullo_epi32(ia, sa), _mm512_mullo_epi32(ib, sb)));
    }
    step();
}
