//! The inner loops of CPU attention: score tiles (query rows against transposed keys), value
//! tiles (softmax weights times value rows), portable and in AVX-512, and the lane-wise max,
//! sum, exponential and dot product around them. Keys and values are read from the KV cache as
//! they are stored there, f32 or (where `HALF`) f16, and widened to f32 as they are loaded.

use super::{COLS, KEYS};

/// Element `i` of the cache values at `p`, as f32: f16 where `HALF`, else f32.
///
/// # Safety
/// `p` must point to at least `i + 1` elements of that type.
#[inline(always)]
unsafe fn at<const HALF: bool>(p: *const u8, i: usize) -> f32 {
    if HALF {
        half::f16::from_bits((p as *const u16).add(i).read_unaligned()).to_f32()
    } else {
        (p as *const f32).add(i).read_unaligned()
    }
}

/// Bytes per cache element.
pub(super) const fn size<const HALF: bool>() -> usize {
    if HALF {
        2
    } else {
        4
    }
}

/// Scores of `R` query rows (`qt`, transposed: `[hd, R]`) against keys `j0..j0 + KEYS` of the
/// transposed keys at `kt` (`[hd, stride]`): one broadcast multiply-add per row and head-size
/// column, no horizontal sums; each score is the same chain whatever `R` is.
///
/// # Safety
/// `kt + d * stride + j0` must point to [`KEYS`] readable elements for every `d < qt.len() / R`.
#[inline]
unsafe fn score_tile<const R: usize, const HALF: bool>(qt: &[f32], kt: *const u8, stride: usize, j0: usize) -> [[f32; KEYS]; R] {
    let mut acc = [[0f32; KEYS]; R];
    for (d, q) in qt.chunks_exact(R).enumerate() {
        let q: &[f32; R] = q.try_into().expect("a whole row group");
        let k: [f32; KEYS] = std::array::from_fn(|l| at::<HALF>(kt, d * stride + j0 + l));
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
/// `v + j * stride` must point to `cols` readable elements for every key `j < pt.len() / R`.
#[inline]
unsafe fn value_tile<const R: usize, const HALF: bool>(pt: &[f32], v: *const u8, stride: usize, cols: usize) -> [[f32; COLS]; R] {
    let mut acc = [[0f32; COLS]; R];
    for (j, w) in pt.chunks_exact(R).enumerate() {
        let w: &[f32; R] = w.try_into().expect("a whole row group");
        let mut row = [0f32; COLS];
        for (c, x) in row.iter_mut().enumerate().take(cols) {
            *x = at::<HALF>(v, j * stride + c);
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
    use super::{size, COLS, KEYS};

    /// # Safety
    /// As [`super::score_tile`], and `simd` only where AVX-512F is present.
    #[inline]
    pub unsafe fn score<const R: usize, const HALF: bool>(simd: bool, qt: &[f32], kt: *const u8, stride: usize, j0: usize) -> [[f32; KEYS]; R] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::score::<R, HALF>(qt, kt, stride, j0);
        }
        super::score_tile::<R, HALF>(qt, kt, stride, j0)
    }

    /// Four consecutive tiles of keys (`j0..j0 + 4 * KEYS`) for one query row: the same scores
    /// as four calls of [`score`], with four independent chains in flight instead of one.
    ///
    /// # Safety
    /// As [`super::score_tile`] for keys `j0..j0 + 4 * KEYS`, and `simd` only where AVX-512F is
    /// present.
    #[inline]
    pub unsafe fn score_row4<const HALF: bool>(simd: bool, qt: &[f32], kt: *const u8, stride: usize, j0: usize) -> [[f32; KEYS]; 4] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::score_row4::<HALF>(qt, kt, stride, j0);
        }
        std::array::from_fn(|t| super::score_tile::<1, HALF>(qt, kt, stride, j0 + t * KEYS)[0])
    }

    /// # Safety
    /// As [`super::value_tile`], and `simd` only where AVX-512F is present.
    #[inline]
    pub unsafe fn value<const R: usize, const HALF: bool>(simd: bool, pt: &[f32], v: *const u8, stride: usize, cols: usize) -> [[f32; COLS]; R] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            return avx512::value::<R, HALF>(pt, v, stride, cols);
        }
        super::value_tile::<R, HALF>(pt, v, stride, cols)
    }

    /// Where element `i` of cache values at `p` starts.
    #[inline(always)]
    fn elem<const HALF: bool>(p: *const u8, i: usize) -> *const u8 {
        p.wrapping_add(i * size::<HALF>())
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use std::arch::x86_64::*;

        use super::{elem, COLS, KEYS};
        const _: () = assert!(KEYS == 16 && COLS == 32);

        /// 16 cache elements from `p`, widened to f32 lanes.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load16<const HALF: bool>(p: *const u8) -> __m512 {
            if HALF {
                _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
            } else {
                _mm512_loadu_ps(p as *const f32)
            }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn score<const R: usize, const HALF: bool>(qt: &[f32], kt: *const u8, stride: usize, j0: usize) -> [[f32; KEYS]; R] {
            let mut acc = [_mm512_setzero_ps(); R];
            for (d, q) in qt.chunks_exact(R).enumerate() {
                let k = load16::<HALF>(elem::<HALF>(kt, d * stride + j0));
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
        pub unsafe fn score_row4<const HALF: bool>(qt: &[f32], kt: *const u8, stride: usize, j0: usize) -> [[f32; KEYS]; 4] {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (d, &q) in qt.iter().enumerate() {
                let q = _mm512_set1_ps(q);
                for (t, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(q, load16::<HALF>(elem::<HALF>(kt, d * stride + j0 + t * KEYS)), *acc);
                }
            }
            std::mem::transmute::<[__m512; 4], [[f32; KEYS]; 4]>(acc)
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn value<const R: usize, const HALF: bool>(pt: &[f32], v: *const u8, stride: usize, cols: usize) -> [[f32; COLS]; R] {
            if HALF && cols < COLS {
                // A part row of f16 (head sizes not a multiple of 32, rare): the portable loop,
                // which keeps the f16 loop below free of the branch (it spilled the sums).
                return super::super::value_tile::<R, HALF>(pt, v, stride, cols);
            }
            let (m0, m1) = ((1u32 << cols.min(16)) - 1, (1u32 << cols.saturating_sub(16)) - 1);
            let (m0, m1) = (m0 as __mmask16, m1 as __mmask16);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for (j, w) in pt.chunks_exact(R).enumerate() {
                let row = elem::<HALF>(v, j * stride);
                let (v0, v1) = if HALF {
                    (load16::<HALF>(row), load16::<HALF>(elem::<HALF>(row, 16)))
                } else {
                    let row = row as *const f32;
                    (_mm512_maskz_loadu_ps(m0, row), _mm512_maskz_loadu_ps(m1, row.add(16)))
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
