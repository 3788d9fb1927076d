//! Q8_0 weights against Q8_0 activations, AVX2 + FMA only (elsewhere candle's kernel runs). The
//! same instructions as candle's `vec_dot_q8_0_q8_0` in the same order, so results are identical;
//! each weight block is loaded once for up to [`TILE`](super::TILE) rows instead of once per row.

use crate::model::tensor_type::TensorType;

/// Bytes of one block: f16 scale, 32 signed bytes.
pub const BYTES: usize = TensorType::Q8_0.block_bytes();

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::{hsum, prefetch, QRows};
    use super::BYTES;

    /// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        by_rows!(tile(wrow, q, blocks, dst))
    }

    /// `R` rows against each weight block, loaded once: candle's arithmetic in candle's order
    /// for every row, without bounds checks in the loop.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        assert!(wrow.len() >= blocks * BYTES && q.qs.len() >= R * blocks && q.d.len() >= R * blocks && dst.len() >= R);
        let mut acc = [_mm256_setzero_ps(); R];
        let ones = _mm256_set1_epi16(1);
        for b in 0..blocks {
            // SAFETY: b < blocks and r < R; the slices hold R rows of `blocks` blocks (asserted).
            let w = wrow.as_ptr().add(b * BYTES);
            prefetch(w);
            let dw = f16::from_bits(std::ptr::read_unaligned(w as *const u16)).to_f32();
            let bx = _mm256_loadu_si256(w.add(2) as *const __m256i);
            let ax = _mm256_sign_epi8(bx, bx);
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = r * blocks + b;
                let by = _mm256_loadu_si256(q.qs.as_ptr().add(at) as *const __m256i);
                let sy = _mm256_sign_epi8(by, bx);
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(ax, sy)));
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * *q.d.get_unchecked(at)), dot, *acc);
            }
        }
        for (d, acc) in dst.iter_mut().zip(acc) {
            *d = hsum(acc);
        }
    }
}
