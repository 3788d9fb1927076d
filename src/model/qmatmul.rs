//! Our own CPU matrix multiply for Q4_1 weights (candle 0.11 has only a scalar loop for that type),
//! with AVX2 where the CPU has it and a portable loop otherwise.
//!
//! Activations are quantized to Q8_1 exactly as candle and ggml do, every block's integer dot
//! product is exact, and the per-block float arithmetic and its order are candle's, so the result
//! is bit-identical to candle's `QMatMul`. The speed comes from SIMD integer dot products and from
//! unpacking each weight block once for up to [`TILE`] activation rows, which is what makes a batch
//! of sequences cheaper than the same sequences one by one.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Storage, Tensor};
use half::f16;

/// Activation rows that share one unpacked weight block.
const TILE: usize = 4;
const QK: usize = 32;
/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles.
const Q4_1_BYTES: usize = 20;

/// One block of 32 activations quantized to 8 bits, with ggml's Q8_1 scale and sum (both rounded
/// to f16, as ggml stores them).
#[derive(Clone, Copy)]
struct Q8_1 {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// True when [`matmul`] handles this weight on this input.
pub fn supports(w: &QTensor, x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && w.dtype() == GgmlDType::Q4_1 && x.rank() == 2 && w.shape().dims2().is_ok_and(|(_, k)| k % QK == 0)
}

/// `x` `[m, k]` times the transpose of `w` `[n, k]` → `[m, n]`.
pub fn matmul(w: &QTensor, x: &Tensor) -> Result<Tensor> {
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if xk != k {
        candle_core::bail!("q4_1 matmul: input has {xk} columns, weight {k}");
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("q4_1 matmul: input is not on the CPU") };
    let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
    let blocks = k / QK;
    let mut q = vec![Q8_1 { d: 0.0, s: 0.0, qs: [0; QK] }; m * blocks];
    for (row, out) in xs.chunks_exact(k).zip(q.chunks_exact_mut(blocks)) {
        quantize_q8_1(row, out);
    }
    let data = w.data()?;
    let wbytes: &[u8] = &data;
    // Output columns (weight rows) are shared out over candle's own worker pool, so our kernels
    // and candle's never compete for the cores. Results are stored column-major.
    let mut out_t = vec![0f32; n * m];
    let out = OutPtr(out_t.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n, |cols| {
        for j in cols {
            let wrow = &wbytes[j * blocks * Q4_1_BYTES..(j + 1) * blocks * Q4_1_BYTES];
            // SAFETY: column j (m floats at j * m) is written by this call alone, and `out_t`
            // outlives the pool call.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(j * m), m) };
            for (t, dst) in dst.chunks_mut(TILE).enumerate() {
                dot_rows(wrow, &q[t * TILE * blocks..], blocks, dst);
            }
        }
    });
    let out = if m == 1 { out_t } else { transpose(&out_t, n, m) };
    Tensor::from_vec(out, (m, n), x.device())
}

/// The output buffer, shared with the pool's workers, each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: workers write disjoint columns (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0f32; rows * cols];
    for (r, row) in src.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
    dst
}

/// ggml's `quantize_row_q8_1`, bit for bit as candle implements it.
fn quantize_q8_1(xs: &[f32], out: &mut [Q8_1]) {
    for (x, b) in xs.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        let d16 = f16::from_f32(d);
        b.d = d16.to_f32();
        b.s = (f16::from_f32(sum as f32) * d16).to_f32();
    }
}

/// One weight row against `dst.len()` (≤ TILE) activation rows stored one after another.
fn dot_rows(wrow: &[u8], q: &[Q8_1], blocks: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the slices hold `blocks` blocks per row as the callee reads them.
        unsafe { avx2::dot_rows(wrow, q, blocks, dst) };
        return;
    }
    let mut sums = [0f32; TILE];
    for b in 0..blocks {
        let w = &wrow[b * Q4_1_BYTES..(b + 1) * Q4_1_BYTES];
        let (dw, mw) = scales(w);
        for (r, sum) in sums.iter_mut().enumerate().take(dst.len()) {
            let y = &q[r * blocks + b];
            let mut sumi = 0i32;
            for j in 0..QK / 2 {
                sumi += (w[4 + j] & 0x0F) as i32 * y.qs[j] as i32 + (w[4 + j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
            }
            *sum += sumi as f32 * dw * y.d + mw * y.s;
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

    use super::{scales, Q8_1, Q4_1_BYTES, TILE};

    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_rows(wrow: &[u8], q: &[Q8_1], blocks: usize, dst: &mut [f32]) {
        let rows = dst.len();
        let mut sums = [0f32; TILE];
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for b in 0..blocks {
            let w = &wrow[b * Q4_1_BYTES..(b + 1) * Q4_1_BYTES];
            let (dw, mw) = scales(w);
            // Low nibbles are weights 0..16, high nibbles 16..32.
            let packed = _mm_loadu_si128(w.as_ptr().add(4) as *const __m128i);
            let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
            let wq = _mm256_and_si256(both, low);
            for (r, sum) in sums.iter_mut().enumerate().take(rows) {
                let y = &q[r * blocks + b];
                let yq = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, yq), ones);
                let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
                let sumi = _mm_cvtsi128_si32(s);
                *sum += sumi as f32 * dw * y.d + mw * y.s;
            }
        }
        dst.copy_from_slice(&sums[..rows]);
    }
}
