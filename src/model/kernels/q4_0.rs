//! Q4_0 weights against Q8_0 activations: AVX2 + FMA where the CPU has them (float partial sums
//! across blocks, as llama.cpp), a scalar loop elsewhere; the AVX2 tile serves Q5_0 too. candle's own AVX path re-reads the weight
//! for every activation row; this one reads each block once for up to a tile of rows.

use half::f16;

use super::{QRows, QK, TILE};
use crate::model::tensor_type::TensorType;

/// Bytes of one block: f16 scale, 16 bytes of nibbles (value = scale × (nibble − 8)).
pub const BYTES: usize = TensorType::Q4_0.block_bytes();

/// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another, in
/// scalar code: for CPUs without AVX2, FMA and F16C (`super::kernel` picks `avx2::dot_rows`
/// where they are present).
pub fn scalar_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
    let mut sums = [0f32; TILE];
    for b in 0..blocks {
        let w = &wrow[b * BYTES..(b + 1) * BYTES];
        let dw = f16::from_le_bytes([w[0], w[1]]).to_f32();
        for (r, sum) in sums.iter_mut().enumerate().take(dst.len()) {
            let (i, y) = (r * blocks + b, &q.qs[r * blocks + b]);
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                sumi += ((w[2 + j] & 0x0F) as i32 - 8) * y[j] as i32 + ((w[2 + j] >> 4) as i32 - 8) * y[j + QK / 2] as i32;
            }
            *sum += sumi as f32 * (dw * q.d[i]);
        }
    }
    dst.copy_from_slice(&sums[..dst.len()]);
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{hsum, nibbles, prefetch};
    use super::{QRows, BYTES};

    /// A block layout of signed weight values with one f16 scale (Q4_0, Q5_0).
    pub trait SignedBlock {
        const BYTES: usize;
        /// The block at `w`: its scale and its 32 values as signed bytes, in activation order.
        unsafe fn unpack(w: *const u8) -> (f32, __m256i);
    }

    /// The f16 scale that opens a block.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn scale(w: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(w as *const u16) as i32)))
    }

    struct Q4_0;

    impl SignedBlock for Q4_0 {
        const BYTES: usize = BYTES;
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn unpack(w: *const u8) -> (f32, __m256i) {
            (scale(w), _mm256_sub_epi8(nibbles(w.add(2)), _mm256_set1_epi8(8)))
        }
    }

    /// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        by_rows!(signed_tile<Q4_0>(wrow, q, blocks, dst))
    }

    /// `R` rows sharing each weight block's unpacking. The signed values meet the signed
    /// activations through `maddubs` by moving the weight's sign onto the activation (llama.cpp's
    /// trick), so the integer dot product is exact; blocks alternate between two accumulators; a
    /// row's arithmetic does not depend on `R`, so it gets the same result alone and in a batch.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn signed_tile<B: SignedBlock, const R: usize>(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        assert!(wrow.len() >= blocks * B::BYTES && q.qs.len() >= R * blocks && q.d.len() >= R * blocks);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..blocks {
            // SAFETY: b < blocks and r < R; the slices hold R rows of `blocks` blocks (asserted).
            let w = wrow.as_ptr().add(b * B::BYTES);
            prefetch(w);
            let (dw, wq) = B::unpack(w);
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
