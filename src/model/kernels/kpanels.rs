//! The panel layouts of the K-quants (Q4_K, Q5_K, Q6_K: blocks of 256 values in sub-blocks of
//! 32 or 16, with 6- or 8-bit sub-block scales): where each byte of a row's GGUF block goes in a
//! panel block of 16 rows. Packing is a pure permutation of the file's bytes (a panel block is
//! exactly 16 GGUF blocks), so the same map packs and unpacks, and a row read back is the file's
//! block, dequantized by candle's own `to_float`.
//!
//! Every layout opens with the 16 rows' f16 scales (`d`, then Q4_K's and Q5_K's `dmin`); the
//! other fields are "lane runs": 64-byte vectors ("lines") whose lane `r` (4 bytes) holds 4
//! consecutive bytes of row `r`, so that one `vpdpbusd` meets 4 values of each of 16 rows. A
//! field's 32-byte stretch fills eight lines: one after the other (512 bytes), or "paired", every
//! other line, the lines between holding the stretch read with it.
//!
//! The kernels meet each block's bytes in the order they lie: the hardware prefetcher follows
//! loads that walk forward through memory, and two streams read side by side (a 64-byte line of
//! `qh`, then the line of `ql` 512 bytes on, and so on) defeat it: such a read pattern moved
//! 11 GB/s on one core where a forward walk moves 25. So each sub-block's `qh` line and its value
//! line are paired:
//!
//! | type | 16 × d | 16 × dmin | scales         | values (lane runs)                                    |
//! |------|--------|-----------|----------------|-------------------------------------------------------|
//! | Q4_K | 0      | 32        | 64 (12 bytes)  | qs stretches 0–3 from 256                             |
//! | Q5_K | 0      | 32        | 64 (12 bytes)  | qh paired with qs stretch 0 from 256; qs 1–3 from 1280|
//! | Q6_K | 0      | —         | 32 (16 bytes)  | half h from 288 + 1536 h: qh paired with ql 2h, then ql 2h + 1 |

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ5K, BlockQ6K, GgmlType};

use super::packed::Kind;

/// Values per K-quant block.
pub const QK_K: usize = 256;

/// Where the fields of a panel block lie (bytes into it); `g` is a line of a stretch (0–7).
pub mod at {
    /// Q4_K and Q5_K: 16 × f16 `dmin`, after the 16 × f16 `d`.
    pub const DMIN: usize = 32;
    /// Q4_K and Q5_K: the 12 bytes of packed 6-bit scales and minimums.
    pub const SCALES: usize = 64;
    /// Q4_K's `qs` stretch `s` (0–3), line `g`.
    pub const fn q4k_qs(s: usize, g: usize) -> usize {
        256 + 512 * s + 64 * g
    }
    /// Q5_K's `qh` (the fifth bits of all 256 values), line `g`.
    pub const fn q5k_qh(g: usize) -> usize {
        256 + 128 * g
    }
    /// Q5_K's `qs` stretch `s` (0–3), line `g`: stretch 0 paired with `qh`, the others after them.
    pub const fn q5k_qs(s: usize, g: usize) -> usize {
        if s == 0 {
            320 + 128 * g
        } else {
            1280 + 512 * (s - 1) + 64 * g
        }
    }
    /// Q6_K: the 16 signed 8-bit scales (one per 16 values).
    pub const Q6K_SCALES: usize = 32;
    /// Q6_K's `qh` stretch of half `h` (the top bits of values 128h..128h + 128), line `g`.
    pub const fn q6k_qh(h: usize, g: usize) -> usize {
        288 + 1536 * h + 128 * g
    }
    /// Q6_K's `ql` stretch `s` (0–3: low nibbles of half s / 2, then high), line `g`: stretch 2h
    /// paired with half h's `qh`, stretch 2h + 1 after them.
    pub const fn q6k_ql(s: usize, g: usize) -> usize {
        if s % 2 == 0 {
            q6k_qh(s / 2, g) + 64
        } else {
            q6k_qh(s / 2, 0) + 1024 + 64 * g
        }
    }
}

/// Byte `x` of a lane-run field, row `r`, its line `g` (0–7) of stretch `s` at `line(s, g)`.
fn lanes(line: fn(usize, usize) -> usize, x: usize, r: usize) -> usize {
    line(x / 32, (x % 32) / 4) + 4 * r + x % 4
}

/// Byte `x` (0 or 1) of row `r`'s f16 in a run of 16 halves at `base`.
const fn halves(base: usize, x: usize, r: usize) -> usize {
    base + 2 * r + x
}

/// Where a stretch of a GGUF block goes: a run of 16 halves, or a lane-run field whose stretch
/// `s`, line `g` starts at `line(s, g)`.
#[derive(Clone, Copy)]
enum Field {
    Halves(usize),
    Lanes(fn(usize, usize) -> usize),
}

/// Each type's GGUF block as stretches (first byte, length, destination field): the layout
/// table above, which [`place`] reads byte by byte and [`pack_block`] four bytes at a time.
fn fields(kind: Kind) -> &'static [(usize, usize, Field)] {
    use Field::{Halves, Lanes};
    // A constant: `&[...]` of const fn calls is not promoted to a static.
    /// A run of whole lines from `BASE` (stretch s, line g at `BASE + 512 s + 64 g`).
    fn run<const BASE: usize>(s: usize, g: usize) -> usize {
        BASE + 512 * s + 64 * g
    }
    // One stretch of a field that the GGUF block holds as several.
    fn q5k_qs_from_1(s: usize, g: usize) -> usize {
        at::q5k_qs(s + 1, g)
    }
    fn q6k_qh_1(_: usize, g: usize) -> usize {
        at::q6k_qh(1, g)
    }
    fn ql<const S: usize>(_: usize, g: usize) -> usize {
        at::q6k_ql(S, g)
    }
    match kind {
        Kind::Q4K => &[(0, 2, Halves(0)), (2, 2, Halves(at::DMIN)), (4, 12, Lanes(run::<{ at::SCALES }>)), (16, 128, Lanes(at::q4k_qs))],
        Kind::Q5K => &[
            (0, 2, Halves(0)),
            (2, 2, Halves(at::DMIN)),
            (4, 12, Lanes(run::<{ at::SCALES }>)),
            (16, 32, Lanes(|_, g| at::q5k_qh(g))),
            (48, 32, Lanes(at::q5k_qs)),
            (80, 96, Lanes(q5k_qs_from_1)),
        ],
        Kind::Q6K => &[
            (0, 32, Lanes(ql::<0>)),
            (32, 32, Lanes(ql::<1>)),
            (64, 32, Lanes(ql::<2>)),
            (96, 32, Lanes(ql::<3>)),
            (128, 32, Lanes(at::q6k_qh)),
            (160, 32, Lanes(q6k_qh_1)),
            (192, 16, Lanes(run::<{ at::Q6K_SCALES }>)),
            (208, 2, Halves(0)),
        ],
        _ => unreachable!("{kind:?} is not a K-quant"),
    }
}

/// Where byte `i` of row `r`'s GGUF block goes in the panel block.
fn place(kind: Kind, i: usize, r: usize) -> usize {
    let &(from, _, field) = fields(kind).iter().find(|&&(from, len, _)| (from..from + len).contains(&i)).expect("a byte of the block");
    match field {
        Field::Halves(base) => halves(base, i - from, r),
        Field::Lanes(line) => lanes(line, i - from, r),
    }
}

/// Writes GGUF block `src` as row `r` of panel block `dst`: the bytes [`place`] names, moved
/// four at a time (a lane run keeps 4 consecutive bytes of a row together).
pub fn pack_block(kind: Kind, src: &[u8], r: usize, dst: &mut [u8]) {
    for &(from, len, field) in fields(kind) {
        match field {
            Field::Halves(base) => dst[halves(base, 0, r)..][..2].copy_from_slice(&src[from..from + 2]),
            Field::Lanes(line) => {
                for x in (0..len).step_by(4) {
                    dst[lanes(line, x, r)..][..4].copy_from_slice(&src[from + x..][..4]);
                }
            }
        }
    }
}

/// Row `r` of panel block `pb` dequantized into `out` (256 values), by candle's `to_float` on
/// the GGUF block the panel holds.
pub fn dequantize(kind: Kind, bytes: usize, pb: &[u8], r: usize, out: &mut [f32]) {
    // Two-byte aligned room for the largest block (Q6_K's 210 bytes).
    let mut block = [0u16; 105];
    // SAFETY: `block` has 210 bytes; u8 has no alignment or validity requirements.
    let raw = unsafe { std::slice::from_raw_parts_mut(block.as_mut_ptr() as *mut u8, 210) };
    for (i, byte) in raw[..bytes].iter_mut().enumerate() {
        *byte = pb[place(kind, i, r)];
    }
    /// The block as candle's type `B` (`repr(C)`, two-byte aligned, `bytes` long).
    fn to_float<B: GgmlType>(raw: &[u8], out: &mut [f32]) {
        assert_eq!(std::mem::size_of::<B>(), raw.len());
        // SAFETY: `raw` is two-byte aligned, as long as `B`, and every bit pattern is a valid
        // block (bytes and f16s).
        let b = unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const B, 1) };
        B::to_float(b, out);
    }
    match kind {
        Kind::Q4K => to_float::<BlockQ4K>(&raw[..bytes], out),
        Kind::Q5K => to_float::<BlockQ5K>(&raw[..bytes], out),
        Kind::Q6K => to_float::<BlockQ6K>(&raw[..bytes], out),
        _ => unreachable!("{kind:?} is not a K-quant"),
    }
}

/// The layout table is a permutation of each panel block: no byte lost or written twice.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::packed::PANEL;

    #[test]
    fn every_panel_byte_has_exactly_one_source() {
        for (kind, bytes) in [(Kind::Q4K, 144), (Kind::Q5K, 176), (Kind::Q6K, 210)] {
            let mut seen = vec![0u8; PANEL * bytes];
            for r in 0..PANEL {
                for i in 0..bytes {
                    seen[place(kind, i, r)] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{kind:?}");
        }
    }

    /// The four-byte packer puts every byte where [`place`] says.
    #[test]
    fn pack_block_follows_place() {
        for (kind, bytes) in [(Kind::Q4K, 144), (Kind::Q5K, 176), (Kind::Q6K, 210)] {
            let covered: usize = fields(kind).iter().map(|f| f.1).sum();
            assert_eq!(covered, bytes, "{kind:?}: the fields cover the block");
            let (mut fast, mut slow) = (vec![0u8; PANEL * bytes], vec![0u8; PANEL * bytes]);
            for r in 0..PANEL {
                let src: Vec<u8> = (0..bytes).map(|i| (i * 7 + r * 31 + 1) as u8).collect();
                pack_block(kind, &src, r, &mut fast);
                for (i, &b) in src.iter().enumerate() {
                    slow[place(kind, i, r)] = b;
                }
            }
            assert_eq!(fast, slow, "{kind:?}");
        }
    }
}
