//! Q5_0 weights against Q8_0 activations, AVX2 + FMA (float partial sums across blocks, as
//! llama.cpp). candle's AVX path re-reads and unpacks the weight for every activation row; this
//! one unpacks each block once for up to a tile of rows.

/// Bytes of one block: f16 scale, 32 high bits, 16 bytes of low nibbles
/// (value = scale × ((nibble | high bit << 4) − 16)).
pub const BYTES: usize = 22;

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{hsum, nibbles, prefetch, QRows};
    use super::BYTES;

    /// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        by_rows!(tile(wrow, q, blocks, dst))
    }

    /// Byte `i` of the result is 0xFF where bit `i` of `bits` is set, else 0.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn bit_bytes(bits: u32) -> __m256i {
        // Byte i takes byte i / 8 of `bits`, then keeps only its bit i % 8.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
        );
        let mask = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask)
    }

    /// `R` rows sharing each weight block's unpacking, with Q4_0's sign trick for the signed
    /// 5-bit values (−16…15); a row's arithmetic does not depend on `R`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<const R: usize>(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        assert!(wrow.len() >= blocks * BYTES && q.qs.len() >= R * blocks && q.d.len() >= R * blocks);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..blocks {
            // SAFETY: b < blocks and r < R; the slices hold R rows of `blocks` blocks (asserted).
            let w = wrow.as_ptr().add(b * BYTES);
            prefetch(w);
            let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(w as *const u16) as i32)));
            let high = _mm256_and_si256(bit_bytes(std::ptr::read_unaligned(w.add(2) as *const u32)), _mm256_set1_epi8(0x10));
            let wq = _mm256_sub_epi8(_mm256_or_si256(nibbles(w.add(6)), high), _mm256_set1_epi8(16));
            let ax = _mm256_sign_epi8(wq, wq);
            for r in 0..R {
                let at = r * blocks + b;
                let yq = _mm256_loadu_si256(q.qs.as_ptr().add(at) as *const __m256i);
                let sy = _mm256_sign_epi8(yq, wq);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones));
                let a = &mut acc[r][b & 1];
                *a = _mm256_fmadd_ps(_mm256_set1_ps(dw * *q.d.get_unchecked(at)), p, *a);
            }
        }
        for r in 0..R {
            dst[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
        }
    }
}
