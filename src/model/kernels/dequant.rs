//! Quantized weights against many activation rows (prompt chunks): the weight is dequantized to
//! f32, a slab of rows at a time on the worker pool, and multiplied by candle's f32 GEMM. With
//! dozens of rows the dequantization is paid once for all of them and the GEMM runs near the
//! FMA units' peak, where per-row quantized dot products (ours or candle's) are several times
//! slower. The K-quants are the exception: candle's kernels for them sum integers over whole
//! 256-value super-blocks and stay ahead of this path at every size (see [`super::f32_from`]).
//! The activations stay f32, so the result is closer to exact than the 8-bit-activation paths.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use half::f16;

use super::OutPtr;

/// Activation rows from which this path is used instead of candle's kernels, and instead of ours.
pub const MIN_ROWS: usize = 16;
pub const MIN_ROWS_OWN: usize = 128;

/// f32 values per slab of dequantized rows (16 MiB), so that a 262k-row output layer never
/// needs its whole f32 copy at once.
const SLAB: usize = 1 << 22;

/// True for the weight types this path can dequantize.
pub fn supports(ty: GgmlDType) -> bool {
    !matches!(ty, GgmlDType::BF16)
}

/// Dequantizes whole blocks of type `B` from `bytes` into `out`.
fn blocks_to_f32<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let n = bytes.len() / std::mem::size_of::<B>();
    assert!(bytes.as_ptr().align_offset(std::mem::align_of::<B>()) == 0 && n * B::BLCK_SIZE == out.len());
    // SAFETY: `bytes` is a QTensor's storage, a Vec<B> viewed as bytes: aligned (checked) and
    // holding `n` whole blocks of plain data.
    let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, n) };
    B::to_float(blocks, out);
}

fn to_f32(ty: GgmlDType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    match ty {
        GgmlDType::F32 => blocks_to_f32::<f32>(bytes, out),
        GgmlDType::F16 => blocks_to_f32::<f16>(bytes, out),
        GgmlDType::Q4_0 => blocks_to_f32::<BlockQ4_0>(bytes, out),
        GgmlDType::Q4_1 => blocks_to_f32::<BlockQ4_1>(bytes, out),
        GgmlDType::Q5_0 => blocks_to_f32::<BlockQ5_0>(bytes, out),
        GgmlDType::Q5_1 => blocks_to_f32::<BlockQ5_1>(bytes, out),
        GgmlDType::Q8_0 => blocks_to_f32::<BlockQ8_0>(bytes, out),
        GgmlDType::Q2K => blocks_to_f32::<BlockQ2K>(bytes, out),
        GgmlDType::Q3K => blocks_to_f32::<BlockQ3K>(bytes, out),
        GgmlDType::Q4K => blocks_to_f32::<BlockQ4K>(bytes, out),
        GgmlDType::Q5K => blocks_to_f32::<BlockQ5K>(bytes, out),
        GgmlDType::Q6K => blocks_to_f32::<BlockQ6K>(bytes, out),
        GgmlDType::Q8K => blocks_to_f32::<BlockQ8K>(bytes, out),
        t => candle_core::bail!("cannot dequantize {t:?}"),
    }
    Ok(())
}

/// `x` `[m, k]` times the transpose of `w` `[n, k]` → `[m, n]`, in f32.
pub fn matmul(w: &QTensor, x: &Tensor) -> Result<Tensor> {
    let (data, n, k, row_bytes) = super::weight_rows(w, x)?;
    let ty = w.dtype();
    let x = x.contiguous()?;
    let slab = (SLAB / k).clamp(1, n);
    let mut parts = Vec::with_capacity(n.div_ceil(slab));
    for first in (0..n).step_by(slab) {
        let rows = slab.min(n - first);
        let mut buf = vec![0f32; rows * k];
        let ptr = OutPtr(buf.as_mut_ptr());
        let failed = std::sync::atomic::AtomicBool::new(false);
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            let bytes = &data[(first + range.start) * row_bytes..(first + range.end) * row_bytes];
            // SAFETY: rows `range` of `buf` are written by this call alone; `buf` outlives the pool call.
            let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(range.start * k), range.len() * k) };
            if to_f32(ty, bytes, out).is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        if failed.into_inner() {
            candle_core::bail!("cannot dequantize {ty:?}");
        }
        let wt = Tensor::from_vec(buf, (rows, k), &Device::Cpu)?;
        parts.push(x.matmul(&wt.t()?)?);
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    Tensor::cat(&parts, 1)
}
