//! Q4_1 weights against Q8_1 activations. candle 0.11 has only a scalar loop for this type; this
//! one is AVX2 + FMA where the CPU has them (float partial sums across blocks, as llama.cpp), and
//! candle's scalar loop elsewhere.

use half::f16;

use super::{QRows, QK, TILE};

/// Bytes of one block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub const BYTES: usize = 20;

/// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
pub fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA are present; the slices hold `blocks` blocks per row as the callee reads them.
        unsafe { avx2::dot_rows(wrow, q, blocks, dst) };
        return;
    }
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
mod avx2 {
    use std::arch::x86_64::*;

    use super::{scales, QRows, BYTES};

    /// As llama.cpp does: each row keeps eight float partial sums across blocks (one FMA of the
    /// block's integer dot product by its two scales) and the minimum terms in a scalar; the
    /// lanes are added once at the end. Rounding differs from candle's block-by-block scalar
    /// sum in the last bits.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        match dst.len() {
            1 => tile::<1>(wrow, q, blocks, dst),
            2 => tile::<2>(wrow, q, blocks, dst),
            3 => tile::<3>(wrow, q, blocks, dst),
            _ => tile::<4>(wrow, q, blocks, dst),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        let ones = _mm256_set1_epi16(1);
        for b in 0..blocks {
            let w = &wrow[b * BYTES..(b + 1) * BYTES];
            let (dw, mw) = scales(w);
            let wq = unpack(w);
            for r in 0..R {
                let at = r * blocks + b;
                let yq = _mm256_loadu_si256(q.qs[at].as_ptr() as *const __m256i);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wq, yq), ones));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * q.d[at]), p, acc[r]);
                mins[r] += mw * q.s[at];
            }
        }
        for r in 0..R {
            dst[r] = hsum(acc[r]) + mins[r];
        }
    }

    /// The 32 weights of a Q4_1 block as bytes: low nibbles are weights 0..16, high 16..32.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn unpack(w: &[u8]) -> __m256i {
        let packed = _mm_loadu_si128(w.as_ptr().add(4) as *const __m128i);
        let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}
