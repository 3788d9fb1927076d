//! The inner loops of CPU attention: score tiles (query rows against transposed keys), value
//! tiles (softmax weights times value rows), portable and in AVX-512, and the lane-wise max,
//! sum, exponential and dot product around them. Keys and values are read from the KV cache as
//! they are stored there, f32, f16 or Q8_0 (the element type `E`), and widened to f32 as they
//! are loaded; a Q8_0 value is its byte times its f16 scale, exact in f32, so every type runs
//! the same float steps as an f32 cache holding the values it reads back.

use super::{COLS, KEYS};
use crate::model::kv_cache::Q8_BLOCK;

/// Element types of the cache: f32, f16, Q8_0's signed bytes.
pub(super) const F32: u8 = 0;
pub(super) const F16: u8 = 1;
pub(super) const Q8: u8 = 2;

/// A Q8_0 cache's f16 scales for what a kernel reads: scale `b` of key or value row `j` at
/// element `b * block + j * row` (keys: `block` is the scale row stride and `row` 1; values:
/// `block` 1 and `row` the row stride). Unused for f32 and f16.
#[derive(Clone, Copy)]
pub(super) struct Scales {
    pub p: *const u8,
    pub block: usize,
    pub row: usize,
}

impl Scales {
    /// Scale `b` of row `j`.
    ///
    /// # Safety
    /// The scales must hold that element.
    #[inline(always)]
    unsafe fn at(self, b: usize, j: usize) -> f32 {
        at::<F16>(self.p, b * self.block + j * self.row)
    }
}

/// Element `i` of the cache values at `p`, as f32 (a Q8_0 byte without its scale).
///
/// # Safety
/// `p` must point to at least `i + 1` elements of that type.
#[inline(always)]
unsafe fn at<const E: u8>(p: *const u8, i: usize) -> f32 {
    match E {
        F16 => half::f16::from_bits((p as *const u16).add(i).read_unaligned()).to_f32(),
        Q8 => *(p as *const i8).add(i) as f32,
        _ => (p as *const f32).add(i).read_unaligned(),
    }
}

/// Bytes per cache element.
pub(super) const fn size<const E: u8>() -> usize {
    match E {
        F16 => 2,
        Q8 => 1,
        _ => 4,
    }
}

/// Scores of `R` query rows (`qt`, transposed: `[hd, R]`) against keys `j0..j0 + KEYS` of the
/// transposed keys at `kt` (`[hd, stride]`): one broadcast multiply-add per row and head-size
/// column, no horizontal sums; each score is the same chain whatever `R` is.
///
/// # Safety
/// `kt + d * stride + j0` must point to [`KEYS`] readable elements for every `d < qt.len() / R`,
/// and `sc` hold their scales for Q8_0.
#[inline]
unsafe fn score_tile<const R: usize, const E: u8>(qt: &[f32], kt: *const u8, stride: usize, j0: usize, sc: Scales) -> [[f32; KEYS]; R] {
    let mut acc = [[0f32; KEYS]; R];
    for (d, q) in qt.chunks_exact(R).enumerate() {
        let q: &[f32; R] = q.try_into().expect("a whole row group");
        let mut k: [f32; KEYS] = std::array::from_fn(|l| at::<E>(kt, d * stride + j0 + l));
        if E == Q8 {
            for (l, k) in k.iter_mut().enumerate() {
                *k *= sc.at(d / Q8_BLOCK, j0 + l);
            }
        }
        for r in 0..R {
            for l in 0..KEYS {
                acc[r][l] = fma(q[r], k[l], acc[r][l]);
            }
        }
    }
    acc
}

/// Columns `0..cols` (≤ [`COLS`]) of the weighted value sums of `R` rows: `pt` holds each
/// key's `R` weights, key `j`'s value row at element `j * stride` of `v`.
///
/// # Safety
/// `v + j * stride` must point to `cols` readable elements for every key `j < pt.len() / R`,
/// and `sc` hold their scales (block 0 of each row) for Q8_0.
#[inline]
unsafe fn value_tile<const R: usize, const E: u8>(pt: &[f32], v: *const u8, stride: usize, cols: usize, sc: Scales) -> [[f32; COLS]; R] {
    let mut acc = [[0f32; COLS]; R];
    for (j, w) in pt.chunks_exact(R).enumerate() {
        let w: &[f32; R] = w.try_into().expect("a whole row group");
        let scale = if E == Q8 { sc.at(0, j) } else { 1.0 };
        let mut row = [0f32; COLS];
        for (c, x) in row.iter_mut().enumerate().take(cols) {
            *x = at::<E>(v, j * stride + c);
            if E == Q8 {
                *x *= scale;
            }
        }
        for r in 0..R {
            for l in 0..COLS {
                acc[r][l] = fma(w[r], row[l], acc[r][l]);
            }
        }
    }
    acc
}

/// The tile kernels: AVX-512 when `simd` (the caller found it present; the compiler's own
/// vectorization of the portable loops picked scatters there), else the portable loops.
pub(super) mod for_cpu {
    use super::{size, Scales, COLS, KEYS};

    /// # Safety
    /// As [`super::score_tile`], and `simd` only where AVX-512F is present.
    #[inline]
    pub unsafe fn score<const R: usize, const E: u8>(simd: bool, qt: &[f32], kt: *const u8, stride: usize, j0: usize, sc: Scales) -> [[f32; KEYS]; R] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::score::<R, E>(qt, kt, stride, j0, sc);
        }
        super::score_tile::<R, E>(qt, kt, stride, j0, sc)
    }

    /// Four consecutive tiles of keys (`j0..j0 + 4 * KEYS`) for one query row: the same scores
    /// as four calls of [`score`], with four independent chains in flight instead of one.
    ///
    /// # Safety
    /// As [`super::score_tile`] for keys `j0..j0 + 4 * KEYS`, and `simd` only where AVX-512F is
    /// present.
    #[inline]
    pub unsafe fn score_row4<const E: u8>(simd: bool, qt: &[f32], kt: *const u8, stride: usize, j0: usize, sc: Scales) -> [[f32; KEYS]; 4] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::score_row4::<E>(qt, kt, stride, j0, sc);
        }
        std::array::from_fn(|t| super::score_tile::<1, E>(qt, kt, stride, j0 + t * KEYS, sc)[0])
    }

    /// # Safety
    /// As [`super::value_tile`], and `simd` only where AVX-512F is present.
    #[inline]
    pub unsafe fn value<const R: usize, const E: u8>(simd: bool, pt: &[f32], v: *const u8, stride: usize, cols: usize, sc: Scales) -> [[f32; COLS]; R] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::value::<R, E>(pt, v, stride, cols, sc);
        }
        super::value_tile::<R, E>(pt, v, stride, cols, sc)
    }

    /// Where element `i` of cache values at `p` starts.
    #[inline(always)]
    fn elem<const E: u8>(p: *const u8, i: usize) -> *const u8 {
        p.wrapping_add(i * size::<E>())
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use std::arch::x86_64::*;

        use super::super::{F16, F32, Q8};
        use super::{elem, Scales, COLS, KEYS};
        use crate::model::kv_cache::Q8_BLOCK;
        const _: () = assert!(KEYS == 16 && COLS == 32 && COLS == Q8_BLOCK);

        /// 16 cache elements from `p`, widened to f32 lanes (Q8_0 bytes without their scales).
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load16<const E: u8>(p: *const u8) -> __m512 {
            match E {
                F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
                Q8 => _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
                _ => _mm512_loadu_ps(p as *const f32),
            }
        }

        /// Keys `j0..j0 + 16` of head-size column `d`, as f32 (Q8_0: times their scales, which
        /// `s` holds for the current block of 32 columns and is reloaded at each block's start).
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn key16<const E: u8>(kt: *const u8, stride: usize, d: usize, j0: usize, sc: Scales, s: &mut __m512) -> __m512 {
            let k = load16::<E>(elem::<E>(kt, d * stride + j0));
            if E != Q8 {
                return k;
            }
            if d % Q8_BLOCK == 0 {
                *s = load16::<F16>(elem::<F16>(sc.p, d / Q8_BLOCK * sc.block + j0));
            }
            _mm512_mul_ps(k, *s)
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn score<const R: usize, const E: u8>(qt: &[f32], kt: *const u8, stride: usize, j0: usize, sc: Scales) -> [[f32; KEYS]; R] {
            let mut acc = [_mm512_setzero_ps(); R];
            let mut s = _mm512_setzero_ps();
            for (d, q) in qt.chunks_exact(R).enumerate() {
                let k = key16::<E>(kt, stride, d, j0, sc, &mut s);
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*q.get_unchecked(r)), k, acc[r]);
                }
            }
            let mut out = [[0f32; KEYS]; R];
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
            }
            out
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn score_row4<const E: u8>(qt: &[f32], kt: *const u8, stride: usize, j0: usize, sc: Scales) -> [[f32; KEYS]; 4] {
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut s = [_mm512_setzero_ps(); 4];
            for (d, &q) in qt.iter().enumerate() {
                let q = _mm512_set1_ps(q);
                for (t, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(q, key16::<E>(kt, stride, d, j0 + t * KEYS, sc, &mut s[t]), *acc);
                }
            }
            std::mem::transmute::<[__m512; 4], [[f32; KEYS]; 4]>(acc)
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn value<const R: usize, const E: u8>(pt: &[f32], v: *const u8, stride: usize, cols: usize, sc: Scales) -> [[f32; COLS]; R] {
            if E != F32 && cols < COLS {
                // A part row of f16 (head sizes not a multiple of 32, rare; Q8_0 has none): the
                // portable loop, which keeps the loop below free of the branch (it spilled the sums).
                return super::super::value_tile::<R, E>(pt, v, stride, cols, sc);
            }
            let (m0, m1) = ((1u32 << cols.min(16)) - 1, (1u32 << cols.saturating_sub(16)) - 1);
            let (m0, m1) = (m0 as __mmask16, m1 as __mmask16);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for (j, w) in pt.chunks_exact(R).enumerate() {
                let row = elem::<E>(v, j * stride);
                let (v0, v1) = match E {
                    F32 => {
                        let row = row as *const f32;
                        (_mm512_maskz_loadu_ps(m0, row), _mm512_maskz_loadu_ps(m1, row.add(16)))
                    }
                    Q8 => {
                        let s = _mm512_set1_ps(sc.at(0, j));
                        (_mm512_mul_ps(load16::<E>(row), s), _mm512_mul_ps(load16::<E>(elem::<E>(row, 16)), s))
                    }
                    _ => (load16::<E>(row), load16::<E>(elem::<E>(row, 16))),
                };
                for r in 0..R {
                    let w = _mm512_set1_ps(*w.get_unchecked(r));
                    acc[r][0] = _mm512_fmadd_ps(w, v0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(w, v1, acc[r][1]);
                }
            }
            let mut out = [[0f32; COLS]; R];
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16), acc[r][1]);
            }
            out
        }
    }
}

/// The largest value, in 16 lanes (so that the compiler vectorizes it).
pub(super) fn lanes_max(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    for c in chunks {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    m.iter().fold(tail, |a, &x| if x > a { x } else { a })
}

/// The sum of the values, in 16 lanes.
pub(super) fn lanes_sum(xs: &[f32]) -> f32 {
    let mut s = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            s[l] += c[l];
        }
    }
    s.iter().sum::<f32>() + tail
}

/// `e^x` for every value (all ≤ 0 here: scores less their row's maximum).
pub(super) fn exp_in_place(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = crate::model::kernels::activation::exp(*x);
    }
}

/// `a * b + c`, fused where the CPU has FMA (elsewhere `mul_add` would be a slow library call).
#[inline(always)]
pub(in crate::model::kernels) fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}
