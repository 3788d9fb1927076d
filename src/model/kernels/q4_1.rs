//! Q4_1 weights against Q8_1 activations. candle 0.11 has only a scalar loop for this type; this
//! one is AVX2 + FMA where the CPU has them (float partial sums across blocks, as llama.cpp), and
//! candle's scalar loop elsewhere.

use half::f16;

use super::{QRows, QK, TILE};
use crate::model::tensor_type::TensorType;

/// Bytes of one block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub const BYTES: usize = TensorType::Q4_1.block_bytes();

/// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another, in
/// scalar code: for CPUs without AVX2, FMA and F16C (`super::kernel` picks `avx2::dot_rows`
/// where they are present).
pub fn scalar_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
    let mut sums = [0f32; TILE];
    for b in 0..blocks {
        let w = &wrow[b * BYTES..(b + 1) * BYTES];
        let (dw, mw) = scales(w);
        for (r, sum) in sums.iter_mut().enumerate().take(dst.len()) {
            let (i, y) = (r * blocks + b, &q.qs[r * blocks + b]);
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                sumi += (w[4 + j] & 0x0F) as i32 * y[j] as i32 + (w[4 + j] >> 4) as i32 * y[j + QK / 2] as i32;
            }
            *sum += sumi as f32 * dw * q.d[i] + mw * q.s[i];
        }
    }
    dst.copy_from_slice(&sums[..dst.len()]);
}

fn scales(w: &[u8]) -> (f32, f32) {
    (f16::from_le_bytes([w[0], w[1]]).to_f32(), f16::from_le_bytes([w[2], w[3]]).to_f32())
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{hsum, nibbles, prefetch};
    use super::{QRows, BYTES};

    /// As llama.cpp does: each row keeps float partial sums across blocks in vector lanes (one
    /// FMA of the block's integer dot product by its two scales) and the minimum terms beside
    /// them; the lanes are added once at the end. Rounding differs from candle's block-by-block
    /// scalar sum in the last bits.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        by_rows!(tile(wrow, q, blocks, dst))
    }

    /// `R` rows sharing each weight block's unpacking. Per row: both f16 scales convert in one
    /// instruction, the minimum term accumulates in a vector lane beside the scale product, and
    /// blocks alternate between two accumulators; the arithmetic of a row does not depend on `R`,
    /// so a row gets the same result alone and in a batch.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<const R: usize>(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        assert!(wrow.len() >= blocks * BYTES && q.qs.len() >= R * blocks && q.d.len() >= R * blocks && q.s.len() >= R * blocks);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut mins = [_mm_setzero_ps(); R];
        for b in 0..blocks {
            // SAFETY: b < blocks and r < R; the slices hold R rows of `blocks` blocks (asserted).
            let w = wrow.as_ptr().add(b * BYTES);
            prefetch(w);
            let sc = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(w as *const i32)));
            let wq = nibbles(w.add(4));
            for r in 0..R {
                let at = r * blocks + b;
                let ys = _mm_unpacklo_ps(_mm_load_ss(q.d.as_ptr().add(at)), _mm_load_ss(q.s.as_ptr().add(at)));
                let prod = _mm_mul_ps(sc, ys);
                mins[r] = _mm_add_ps(mins[r], prod);
                let yq = _mm256_loadu_si256(q.qs.as_ptr().add(at) as *const __m256i);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wq, yq), ones));
                let a = &mut acc[r][b & 1];
                *a = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, *a);
            }
        }
        for r in 0..R {
            let mut lanes = [0f32; 4];
            _mm_storeu_ps(lanes.as_mut_ptr(), mins[r]);
            dst[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + lanes[1];
        }
    }
}
