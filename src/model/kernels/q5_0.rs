//! Q5_0 weights against Q8_0 activations, AVX2 + FMA (float partial sums across blocks, as
//! llama.cpp). candle's AVX path re-reads and unpacks the weight for every activation row; this
//! one unpacks each block once for up to a tile of rows.

use crate::model::tensor_type::TensorType;

/// Bytes of one block: f16 scale, 32 high bits, 16 bytes of low nibbles
/// (value = scale × ((nibble | high bit << 4) − 16)).
pub const BYTES: usize = TensorType::Q5_0.block_bytes();

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q4_0::avx2::{scale, signed_tile, SignedBlock};
    use super::super::{nibbles, QRows};
    use super::BYTES;

    /// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another,
    /// each block unpacked once for all of them, with Q4_0's arithmetic.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        by_rows!(signed_tile<Q5_0>(wrow, q, blocks, dst))
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

    struct Q5_0;

    impl SignedBlock for Q5_0 {
        const BYTES: usize = BYTES;
        /// The low nibbles with each value's fifth bit added, less 16 (−16…15).
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn unpack(w: *const u8) -> (f32, __m256i) {
            let high = _mm256_and_si256(bit_bytes(std::ptr::read_unaligned(w.add(2) as *const u32)), _mm256_set1_epi8(0x10));
            (scale(w), _mm256_sub_epi8(_mm256_or_si256(nibbles(w.add(6)), high), _mm256_set1_epi8(16)))
        }
    }
}
