//! hearth's own CPU matrix multiplies for quantized weights, used where candle's are slow: Q4_0,
//! Q4_1 (candle has only a scalar loop), Q5_0 and Q8_0 (candle re-reads and unpacks the whole
//! weight for every row of a batch). candle's K-quant kernels stay: they sum integers over each
//! 256-value super-block and were faster than ours at every row count (see benches/kernels.rs).
//! Activations are quantized to 8 bits in blocks of 32 exactly as ggml does (Q8_0, with Q8_1's
//! block sums), once for every weight type; integer dot products are exact, and partial sums
//! stay in float vector lanes as in llama.cpp (Q8_0's in candle's order, bit for bit). What
//! they add is SIMD where candle has none, and each weight block read and unpacked once for up
//! to [`TILE`] activation rows, which is what makes a batch of sequences cheaper than the same
//! sequences one by one. Work is shared over candle's own worker pool, so our kernels and
//! candle's never compete for the cores.

/// `$tile::<R>(…)` (or `$tile::<B, R>(…)` with a block layout `B`) with `R` the number of rows
/// in `$dst` (1 to [`TILE`]): each row count gets its own unrolled copy of a kernel's tile.
macro_rules! by_rows {
    ($tile:ident $(<$b:ty>)? ($w:expr, $q:expr, $blocks:expr, $dst:expr)) => {
        match $dst.len() {
            1 => $tile::<$($b,)? 1>($w, $q, $blocks, $dst),
            2 => $tile::<$($b,)? 2>($w, $q, $blocks, $dst),
            3 => $tile::<$($b,)? 3>($w, $q, $blocks, $dst),
            _ => $tile::<$($b,)? 4>($w, $q, $blocks, $dst),
        }
    };
}

pub mod activation;
pub mod attention;
pub mod cuda;
pub mod dequant;
pub mod kpanels;
pub mod packed;
pub mod q4_0;
pub mod q4_1;
pub mod q5_0;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod vnni_k;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Storage, Tensor};
use half::f16;

/// Activation rows that share one read of a weight block.
pub const TILE: usize = 4;
const _: () = assert!(TILE == 4, "by_rows! unrolls tiles of 1 to 4 rows");
pub const QK: usize = 32;

/// Activation rows quantized to 8 bits in blocks of 32, block `b` of row `r` at `r * blocks + b`:
/// the values, ggml's Q8_0 scale `d` and Q8_1 sum `s` (each rounded to f16 as ggml stores them;
/// `s` is used by Q4_1 only). Scales are kept apart from the values so that eight of them load
/// as one vector.
#[derive(Clone, Copy)]
pub struct QRows<'a> {
    pub qs: &'a [[i8; QK]],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

impl<'a> QRows<'a> {
    /// The rows from block index `at` on.
    fn from(self, at: usize) -> QRows<'a> {
        QRows { qs: &self.qs[at..], d: &self.d[at..], s: &self.s[at..] }
    }
}

/// `x` times the transpose of `w`: many rows by dequantizing the weight for an f32 GEMM, few by
/// our quantized kernels where they apply, else by candle.
pub fn forward(w: &QMatMul, x: &Tensor) -> Result<Tensor> {
    match w {
        QMatMul::QTensor(t) if many_rows(t, x) => dequant::matmul(t, x),
        QMatMul::QTensor(t) if supports(t, x) => matmul(t, x),
        QMatMul::QTensor(t) if cuda::in_groups(t.dtype(), x) => cuda::by_groups(w, x),
        QMatMul::QTensor(t) if one_q6k_row(t, x) => {
            // candle's x86 Q6_K kernel takes a compact path for one row and repacked tiles for
            // more, which sum differently: one row goes in twice so that a decode step's row
            // gets what it would get beside others.
            Ok(w.forward(&Tensor::cat(&[x, x], 0)?)?.narrow(0, 0, 1)?)
        }
        w => w.forward(x),
    }
}

/// A single CPU row against Q6_K weights (see `forward`).
fn one_q6k_row(w: &QTensor, x: &Tensor) -> bool {
    cfg!(target_arch = "x86_64") && w.dtype() == GgmlDType::Q6K && matches!(x.device(), Device::Cpu) && x.rank() == 2 && x.dim(0).is_ok_and(|m| m == 1)
}

/// A prompt chunk on the CPU: enough rows for [`dequant::matmul`] to pay, where it was asked
/// for. Off by default: a row's result must not depend on how many rows share its matmul (a
/// prompt's last token would otherwise differ between a long chunk and a decode step, so the
/// same request could answer differently after a cache hit). `HEARTH_F32_PROMPT=1` turns it on,
/// trading that for prompt speed where the panel kernels do not apply.
fn many_rows(w: &QTensor, x: &Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("HEARTH_F32_PROMPT").is_some_and(|v| v == "1")) {
        return false;
    }
    let cpu = matches!(x.device(), Device::Cpu) && x.dtype() == candle_core::DType::F32;
    let Some(min) = f32_from(w.dtype()) else { return false };
    cpu && x.rank() == 2 && x.dim(0).is_ok_and(|m| m >= min) && w.shape().rank() == 2
}

/// The rows from which [`dequant::matmul`] beats the quantized kernels for weights of type
/// `ty`, as measured by benches/kernels.rs: ours hold out longer than candle's, and candle's
/// K-quant kernels (integer sums over each 256-value super-block) beat it at every size.
pub fn f32_from(ty: GgmlDType) -> Option<usize> {
    match ty {
        _ if own_kernel(ty) => Some(dequant::MIN_ROWS_OWN),
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => None,
        _ if dequant::supports(ty) => Some(dequant::MIN_ROWS),
        _ => None,
    }
}

fn own_kernel(ty: GgmlDType) -> bool {
    kernel(ty).is_some()
}

/// One weight row against up to [`TILE`] activation rows (see `q4_1::scalar_rows`).
type Dot = unsafe fn(&[u8], QRows, usize, &mut [f32]);

/// Our kernel for weight type `ty`, where this CPU can run it: the AVX2 kernels only where
/// AVX2, FMA and F16C are present, called directly (no feature check per weight row); elsewhere
/// the scalar Q4_0 and Q4_1 loops, and candle's kernels (NEON on ARM) for the other types.
fn kernel(ty: GgmlDType) -> Option<Dot> {
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    match ty {
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q4_0 if simd => Some(q4_0::avx2::dot_rows),
        GgmlDType::Q4_0 => Some(q4_0::scalar_rows),
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q4_1 if simd => Some(q4_1::avx2::dot_rows),
        GgmlDType::Q4_1 => Some(q4_1::scalar_rows),
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q5_0 if simd => Some(q5_0::avx2::dot_rows),
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q8_0 if simd => Some(q8_0::avx2::dot_rows),
        _ => None,
    }
}

/// True when [`matmul`] handles this weight on this input.
pub fn supports(w: &QTensor, x: &Tensor) -> bool {
    let shape_ok = x.rank() == 2 && w.shape().dims2().is_ok_and(|(_, k)| k % QK == 0);
    matches!(x.device(), Device::Cpu) && shape_ok && own_kernel(w.dtype())
}

/// `x` `[m, k]` times the transpose of `w` `[n, k]` → `[m, n]`.
pub fn matmul(w: &QTensor, x: &Tensor) -> Result<Tensor> {
    let (data, n, k, row_bytes) = weight_rows(w, x)?;
    let m = x.dim(0)?;
    let Some(dot) = kernel(w.dtype()).filter(|_| supports(w, x)) else {
        candle_core::bail!("no hearth kernel for {:?} weights of {k} columns on this input", w.dtype());
    };
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("quantized matmul: input is not on the CPU") };
    let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * k];
    let blocks = k / QK;
    let (mut qs, mut d, mut s) = (vec![[0i8; QK]; m * blocks], vec![0f32; m * blocks], vec![0f32; m * blocks]);
    for (i, row) in xs.chunks_exact(k).enumerate() {
        let at = i * blocks..(i + 1) * blocks;
        quantize(row, &mut qs[at.clone()], &mut d[at.clone()], &mut s[at]);
    }
    let q = QRows { qs: &qs, d: &d, s: &s };
    let wbytes: &[u8] = &data;
    // Results are stored column-major: each output column is one weight row.
    let mut out_t = vec![0f32; n * m];
    let out = OutPtr(out_t.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n, |cols| {
        for j in cols {
            let wrow = &wbytes[j * row_bytes..(j + 1) * row_bytes];
            // SAFETY: column j (m floats at j * m) is written by this call alone, and `out_t`
            // outlives the pool call.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(j * m), m) };
            for (t, dst) in dst.chunks_mut(TILE).enumerate() {
                // SAFETY: `kernel` returned `dot` only where the CPU has the features it needs.
                unsafe { dot(wrow, q.from(t * TILE * blocks), blocks, dst) };
            }
        }
    });
    let out = if m == 1 { out_t } else { transpose(&out_t, n, m) };
    Tensor::from_vec(out, (m, n), x.device())
}

/// The bytes of weight `w` `[n, k]` checked against input `x` `[m, k]`: with `n`, `k` and the
/// bytes of one weight row.
fn weight_rows<'a>(w: &'a QTensor, x: &Tensor) -> Result<(std::borrow::Cow<'a, [u8]>, usize, usize, usize)> {
    let (n, k) = w.shape().dims2()?;
    let (_, xk) = x.dims2()?;
    if xk != k {
        candle_core::bail!("quantized matmul: input has {xk} columns, weight {k}");
    }
    let ty = w.dtype();
    let row_bytes = k / ty.block_size() * ty.type_size();
    let data = w.data()?;
    if data.len() < n * row_bytes {
        candle_core::bail!("quantized matmul: weight holds {} bytes, {} needed", data.len(), n * row_bytes);
    }
    Ok((data, n, k, row_bytes))
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The 32 nibbles of a 4-bit block at `p` as bytes 0…15, in ggml's order: the low nibbles are
/// values 0–15, the high nibbles values 16–31.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn nibbles(p: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let packed = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// How far ahead of the block being read the AVX2 kernels (`q4_0`, `q4_1`, `q8_0`: CPUs without
/// AVX-512 VNNI) ask for weight bytes, into L1; the panel kernels ask 4 KiB ahead into L2
/// (`vnni::PREFETCH_AHEAD`, measured there). A decode step
/// streams every weight from memory once; measured on a 178 MB Q8_0 matrix (Gemma 3's output
/// layer, one row), asking 8.5 KiB ahead took it from 17 ms to 10.8 ms (16.4 GB/s, this
/// machine's streaming bandwidth), where 0.5 KiB ahead gained little.
const PREFETCH_AHEAD: usize = 8704;

/// Asks for the cache line `PREFETCH_AHEAD` bytes past `p` (a hint: past the end of the weight
/// it reads nothing and cannot fault).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
#[inline]
unsafe fn prefetch(p: *const u8) {
    use std::arch::x86_64::*;
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD) as *const i8);
}

/// An output buffer shared with the pool's workers, each writing its own part of it.
struct OutPtr<T = f32>(*mut T);
// SAFETY: callers have workers write disjoint parts (see `matmul`, `dequant::matmul` and
// `Packed::new`).
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

// By hand: derived, they would ask `T` to be `Copy` too.
impl<T> Clone for OutPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OutPtr<T> {}

impl<T> OutPtr<T> {
    fn get(self) -> *mut T {
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

/// ggml's `quantize_row_q8_0` and `quantize_row_q8_1` (they share the 8-bit values), bit for bit
/// as candle implements them.
fn quantize(xs: &[f32], qs: &mut [[i8; QK]], ds: &mut [f32], ss: &mut [f32]) {
    for (i, x) in xs.chunks_exact(QK).enumerate() {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs[i].iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        let d16 = f16::from_f32(d);
        ds[i] = d16.to_f32();
        ss[i] = (f16::from_f32(sum as f32) * d16).to_f32();
    }
}

/// Softmax over the last dimension. Small inputs (a decode step's attention scores) are done
/// here on the calling thread: candle hands every softmax to its rayon pool, and for a few
/// hundred values the hand-over costs more than the work. Same arithmetic as candle's.
pub fn softmax_last_dim(t: &Tensor) -> Result<Tensor> {
    const SMALL: usize = 1 << 16;
    if !matches!(t.device(), Device::Cpu) || t.dtype() != candle_core::DType::F32 || t.elem_count() > SMALL {
        return candle_nn::ops::softmax_last_dim(t);
    }
    use candle_core::cpu::kernels::VecOps;
    let t = t.contiguous()?;
    let dim = t.dim(candle_core::D::Minus1)?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("softmax: input is not on the CPU") };
    let src = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + t.elem_count()];
    let mut dst = vec![0f32; src.len()];
    for (s, d) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
        let mut max = f32::NEG_INFINITY;
        // SAFETY: both pointers cover `dim` valid floats.
        unsafe { f32::vec_reduce_max(s.as_ptr(), &mut max, dim) };
        for (x, y) in s.iter().zip(d.iter_mut()) {
            *y = (*x - max).exp();
        }
        let mut sum = 0f32;
        unsafe { f32::vec_reduce_sum(d.as_ptr(), &mut sum, dim) };
        for y in d.iter_mut() {
            *y /= sum;
        }
    }
    Tensor::from_vec(dst, t.shape(), t.device())
}
