//! Weights repacked in panels of 16 rows for CPUs with AVX-512 VNNI (Q4_0, Q4_1, Q5_0, Q8_0, and
//! the K-quants Q4_K, Q5_K, Q6_K laid out in `kpanels`), as
//! llama.cpp repacks Q4_0: in each panel, block by block, the rows' 4-byte groups interleave so
//! that one `vpdpbusd` multiplies 16 weight rows by 4 activation values and each row's sum lands
//! in its own lane; no horizontal sums, and a block's scales convert 16 at a time. The packed
//! matrix holds exactly the GGUF blocks' bytes, rearranged (no more memory than the file), and
//! is built straight from the file's bytes, so a weight is never held twice. One kernel serves
//! every row count, decode steps and prompt chunks alike (see `vnni`).

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Result, Storage, Tensor};
use half::f16;

use super::QK;
use crate::model::tensor_type::TypeInfo;

/// Weight rows per panel: one per lane of a 512-bit vector of i32 sums.
pub const PANEL: usize = 16;

/// A block type's panel layout: how its blocks are rearranged and unpacked. Which tensor type
/// has which layout, and its block bytes, are the tensor-type table's (`TypeInfo::packed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Kind {
    /// A K-quant (blocks of 256, laid out by `kpanels`).
    pub fn is_k(self) -> bool {
        matches!(self, Kind::Q4K | Kind::Q5K | Kind::Q6K)
    }
}

/// Where Q5_0's fifth bit of value `4 * g + j` (group `g` of 8, byte `j` of 4) sits in its
/// rearranged word: bit `8 * j + fifth_bit_slot(g)`, so that one rotation per group brings the
/// four bits of a group to bit 4 of the group's four bytes.
pub const fn fifth_bit_slot(g: usize) -> usize {
    2 * (g % 4) + g / 4
}

/// A weight matrix `[n, k]` in panel form.
pub struct Packed {
    kind: Kind,
    /// Values and bytes of one GGUF block of the weight's type.
    block: usize,
    block_bytes: usize,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

/// True where this CPU runs the panel kernels (AVX-512 F, BW and VNNI), unless the environment
/// sets `HEARTH_NO_PANELS` (to compare with the other kernels on the same machine).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("HEARTH_NO_PANELS").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

impl Packed {
    /// The `n` rows of `k` values of type `ty` in `bytes` (GGUF blocks, row after row), repacked;
    /// `done(b)` is told after the first `b` source bytes were read, so a caller can release
    /// them. `None` for a type without a panel form. The layout is the same on every CPU;
    /// [`Packed::matmul`] needs [`available`].
    pub fn new(ty: GgmlDType, n: usize, k: usize, bytes: &[u8], mut done: impl FnMut(usize)) -> Option<Packed> {
        let info = TypeInfo::of(ty).filter(|t| k % t.block == 0 && k > 0)?;
        let (kind, bb, blocks) = (info.packed?, info.bytes, k / info.block);
        let row_bytes = blocks * bb;
        assert!(bytes.len() >= n * row_bytes, "a weight of {n} rows of {k} needs {} bytes", n * row_bytes);
        let (panels, panel_bytes) = (n.div_ceil(PANEL), PANEL * bb);
        let mut data = vec![0u8; panels * blocks * panel_bytes];
        let pack_panel = |p: usize, dst: &mut [u8]| {
            let rows = PANEL.min(n - p * PANEL);
            let src = &bytes[p * PANEL * row_bytes..(p * PANEL + rows) * row_bytes];
            for (b, dst) in dst.chunks_exact_mut(panel_bytes).enumerate() {
                for r in 0..rows {
                    pack_block(kind, &src[r * row_bytes + b * bb..][..bb], r, dst);
                }
            }
        };
        // Panels shared over the worker pool, about 8 MiB of the file at a time (each stretch
        // released once packed). Most of the time is the kernel's first touch of the new
        // pages, which the cores then take in parallel too.
        let group = ((8 << 20) / (PANEL * row_bytes)).max(1);
        let out = super::OutPtr(data.as_mut_ptr());
        for g in (0..panels).step_by(group) {
            let end = (g + group).min(panels);
            candle_core::utils::barrier_pool().execute_chunked(end - g, |range| {
                for p in range.start + g..range.end + g {
                    // SAFETY: panel p's bytes lie inside `data`, and each panel is packed by
                    // one worker alone.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(p * blocks * panel_bytes), blocks * panel_bytes) };
                    pack_panel(p, dst);
                }
            });
            done((end * PANEL).min(n) * row_bytes);
        }
        Some(Packed { kind, block: info.block, block_bytes: bb, n, k, data })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Bytes of one panel block: the same 16 blocks, rearranged. It opens with the 16 f16 scales
    /// (then Q4_1's 16 f16 minimums, or Q5_0's 16 words of fifth bits), followed by the values
    /// as 64-byte vectors whose lane `r` holds 4 bytes of row `r`.
    pub fn panel_bytes(&self) -> usize {
        PANEL * self.block_bytes
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Values per block: 32, or 256 for the K-quants.
    pub fn block(&self) -> usize {
        self.block
    }

    /// The panel data: panel `p`'s block `b` at `(p * k / block() + b) * panel_bytes()`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Row `i` dequantized into `out` (`k` values), as ggml dequantizes its blocks.
    pub fn row(&self, i: usize, out: &mut [f32]) {
        let (kind, blocks, panel_bytes) = (self.kind, self.k / self.block, self.panel_bytes());
        let (p, r) = (i / PANEL, i % PANEL);
        for (b, out) in out.chunks_exact_mut(self.block).enumerate() {
            let pb = &self.data[(p * blocks + b) * panel_bytes..][..panel_bytes];
            if kind.is_k() {
                super::kpanels::dequantize(kind, self.block_bytes, pb, r, out);
                continue;
            }
            let half = |at: usize| f16::from_le_bytes([pb[at], pb[at + 1]]).to_f32();
            let d = half(2 * r);
            // Byte j of value group g: 4-bit values hold groups g and g + 4 in one byte.
            let byte = |vectors: usize, g: usize, j: usize| pb[vectors + 64 * g + 4 * r + j];
            for (v, o) in out.iter_mut().enumerate() {
                let (g, j) = (v / 4, v % 4);
                let nibble = |at| if g < 4 { byte(at, g, j) & 0x0F } else { byte(at, g - 4, j) >> 4 };
                *o = match kind {
                    Kind::Q4_0 => d * (nibble(32) as f32 - 8.0),
                    Kind::Q4_1 => d * nibble(64) as f32 + half(32 + 2 * r),
                    Kind::Q5_0 => {
                        let h = u32::from_le_bytes(pb[32 + 4 * r..36 + 4 * r].try_into().unwrap());
                        let fifth = (h >> (8 * j + fifth_bit_slot(g))) & 1;
                        d * ((nibble(96) as u32 | fifth << 4) as f32 - 16.0)
                    }
                    Kind::Q8_0 => d * (byte(32, g, j) ^ 0x80) as i8 as f32,
                    Kind::Q4K | Kind::Q5K | Kind::Q6K => unreachable!("dequantized above"),
                };
            }
        }
    }

    /// The rows `ids` dequantized, `[ids.len(), k]` (an embedding lookup).
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_vec1::<u32>()?;
        let mut out = vec![0f32; ids.len() * self.k];
        for (&i, o) in ids.iter().zip(out.chunks_exact_mut(self.k)) {
            if i as usize >= self.n {
                candle_core::bail!("row {i} of a {}-row weight", self.n);
            }
            self.row(i as usize, o);
        }
        Tensor::from_vec(out, (ids.len(), self.k), &Device::Cpu)
    }

    /// `x` `[m, k]` times the transpose of this `[n, k]` → `[m, n]`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Packed::matmul_many(&[self], x)?.remove(0))
    }

    /// `x` `[m, k]` times the transpose of each of `ws` (all `k` wide): the activations are
    /// quantized once and all the weights' panels share one pass over the worker pool.
    pub fn matmul_many(ws: &[&Packed], x: &Tensor) -> Result<Vec<Tensor>> {
        let (m, xk) = x.dims2()?;
        if ws.is_empty() || ws.iter().any(|w| w.k != xk) || !matches!(x.device(), Device::Cpu) || x.dtype() != candle_core::DType::F32 {
            let ks: Vec<usize> = ws.iter().map(|w| w.k).collect();
            candle_core::bail!("panel matmul: a {:?} {:?} input against weights of {ks:?} columns", x.dtype(), x.shape());
        }
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("panel matmul: input is not on the CPU") };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + m * xk];
        if !available() {
            candle_core::bail!("panel matmul: this CPU lacks AVX-512 VNNI (or HEARTH_NO_PANELS is set)");
        }
        let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.n]).collect();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available()` found the CPU features the kernel needs.
        unsafe {
            super::vnni::matmul_many(ws, xs, m, &mut outs)
        };
        ws.iter().zip(outs).map(|(w, o)| Tensor::from_vec(o, (m, w.n), &Device::Cpu)).collect()
    }
}

/// Writes GGUF block `src` of type `kind` as row `r` of panel block `dst`.
fn pack_block(kind: Kind, src: &[u8], r: usize, dst: &mut [u8]) {
    if kind.is_k() {
        return super::kpanels::pack_block(kind, src, r, dst);
    }
    dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
    // Four bytes of every value group `g` to lane r of vector g at `at`.
    let lanes = |dst: &mut [u8], at: usize, values: &[u8], flip: u8| {
        for (g, four) in values.chunks_exact(4).enumerate() {
            let four = u32::from_le_bytes(four.try_into().expect("four bytes")) ^ u32::from_ne_bytes([flip; 4]);
            dst[at + 64 * g + 4 * r..][..4].copy_from_slice(&four.to_le_bytes());
        }
    };
    match kind {
        Kind::Q4_0 => lanes(dst, 32, &src[2..18], 0),
        Kind::Q4_1 => {
            dst[32 + 2 * r..34 + 2 * r].copy_from_slice(&src[2..4]);
            lanes(dst, 64, &src[4..20], 0)
        }
        Kind::Q5_0 => {
            let qh = u32::from_le_bytes(src[2..6].try_into().unwrap());
            let mut h = 0u32;
            for v in 0..QK {
                h |= ((qh >> v) & 1) << (8 * (v % 4) + fifth_bit_slot(v / 4));
            }
            dst[32 + 4 * r..36 + 4 * r].copy_from_slice(&h.to_le_bytes());
            lanes(dst, 96, &src[6..22], 0)
        }
        // Signed bytes stored offset by 128, as `vpdpbusd` wants its unsigned operand.
        Kind::Q8_0 => lanes(dst, 32, &src[2..34], 0x80),
        Kind::Q4K | Kind::Q5K | Kind::Q6K => unreachable!("packed above"),
    }
}
