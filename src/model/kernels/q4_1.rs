//! Q4_1 weights against Q8_1 activations. candle 0.11 has only a scalar loop for this type; this
//! one is AVX2 where the CPU has it, bit-identical to candle's loop either way.

use half::f16;

use super::{QRows, QK, TILE};

/// Bytes of one block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub const BYTES: usize = 20;

/// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
pub fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the slices hold `blocks` blocks per row as the callee reads them.
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

    use super::{scales, QRows, BYTES, TILE};

    /// Eight blocks at a time: the eight integer dot products of a row are summed together with
    /// one `hadd` tree and their float terms computed side by side, then added to the row's sum
    /// one block after the other in candle's order, so the result is the scalar loop's exactly.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_rows(wrow: &[u8], q: QRows, blocks: usize, dst: &mut [f32]) {
        let rows = dst.len();
        let mut sums = [0f32; TILE];
        let ones = _mm256_set1_epi16(1);
        let mut b = 0;
        while b + 8 <= blocks {
            let mut wq = [_mm256_setzero_si256(); 8];
            let (mut dw, mut mw) = ([0f32; 8], [0f32; 8]);
            for i in 0..8 {
                let w = &wrow[(b + i) * BYTES..(b + i + 1) * BYTES];
                (dw[i], mw[i]) = scales(w);
                wq[i] = unpack(w);
            }
            let (dwv, mwv) = (_mm256_loadu_ps(dw.as_ptr()), _mm256_loadu_ps(mw.as_ptr()));
            for (r, sum) in sums.iter_mut().enumerate().take(rows) {
                let at = r * blocks + b;
                let mut p = [_mm256_setzero_si256(); 8];
                for (i, p) in p.iter_mut().enumerate() {
                    let yq = _mm256_loadu_si256(q.qs[at + i].as_ptr() as *const __m256i);
                    *p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[i], yq), ones);
                }
                let sumi = _mm256_cvtepi32_ps(hsum8(&p));
                let dy = _mm256_loadu_ps(q.d[at..at + 8].as_ptr());
                let sy = _mm256_loadu_ps(q.s[at..at + 8].as_ptr());
                let v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(sumi, dwv), dy), _mm256_mul_ps(mwv, sy));
                let mut terms = [0f32; 8];
                _mm256_storeu_ps(terms.as_mut_ptr(), v);
                for t in terms {
                    *sum += t;
                }
            }
            b += 8;
        }
        for b in b..blocks {
            let w = &wrow[b * BYTES..(b + 1) * BYTES];
            let (dw, mw) = scales(w);
            let wq = unpack(w);
            for (r, sum) in sums.iter_mut().enumerate().take(rows) {
                let at = r * blocks + b;
                let yq = _mm256_loadu_si256(q.qs[at].as_ptr() as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, yq), ones);
                let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
                *sum += _mm_cvtsi128_si32(s) as f32 * dw * q.d[at] + mw * q.s[at];
            }
        }
        dst.copy_from_slice(&sums[..rows]);
    }

    /// The 32 weights of a Q4_1 block as bytes: low nibbles are weights 0..16, high 16..32.
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(w: &[u8]) -> __m256i {
        let packed = _mm_loadu_si128(w.as_ptr().add(4) as *const __m128i);
        let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// The total of each of eight vectors of eight i32, as one vector.
    #[target_feature(enable = "avx2")]
    unsafe fn hsum8(p: &[__m256i; 8]) -> __m256i {
        let a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        let b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        // Each 128-bit lane holds partial sums of p0..p3 (a) or p4..p7 (b); add the lanes.
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b))
    }
}
