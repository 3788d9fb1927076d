//! hearth's own quantized matmuls (Q4_0, Q4_1, Q5_0, Q8_0; in panels also Q4_K, Q5_K, Q6_K) on
//! random data, for every row count (1 row, partial and full tiles, many rows) and odd shapes:
//! against a dequantize-then-f32 reference within the error that quantizing the activations to
//! 8 bits allows (per 32 values; per 256, as ggml's Q8_K, for the K-quants), and against
//! candle's per-block products (the same integer products) within float rounding; Q8_0 equals
//! candle bit for bit.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use hearth::model::kernels;
use hearth::model::kernels::packed::{self, Packed};

/// A quantized matmul of ours: the AVX2 / scalar kernels, or the panel kernels.
type Ours = fn(&QTensor, &Tensor) -> Tensor;

fn row_kernels(w: &QTensor, x: &Tensor) -> Tensor {
    assert!(kernels::supports(w, x), "{:?} {:?}", w.dtype(), x.shape());
    kernels::matmul(w, x).unwrap()
}

fn panels(w: &QTensor) -> Packed {
    let (n, k) = w.shape().dims2().unwrap();
    Packed::new(w.dtype(), n, k, &w.data().unwrap(), |_| {}).expect("a type with a panel form")
}

fn panel_kernels(w: &QTensor, x: &Tensor) -> Tensor {
    panels(w).matmul(x).unwrap()
}

/// Ours, candle's, the f32 reference, and per output the bound on |ours − reference|.
fn run(ours: Ours, ty: GgmlDType, m: usize, k: usize, n: usize, scale: f64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let dev = Device::Cpu;
    let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
    let x = (Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap() * scale).unwrap();
    let wf = w.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
    let xf = x.to_vec2::<f32>().unwrap();
    let ours = ours(&w, &x);
    assert_eq!(ours.dims(), &[m, n]);
    let theirs = candle_per_block(&w, &xf);
    let (mut reference, mut bound) = (vec![vec![0f64; n]; m], vec![vec![0f64; n]; m]);
    for (r, xr) in xf.iter().enumerate() {
        // Each activation moves by at most half its block's step (amax / 127) when quantized,
        // plus the f16 rounding of that step; the K-quants' activation blocks are 256 long.
        let group = if ty.block_size() == 256 { 256 } else { 32 };
        let err: Vec<f64> = xr.chunks(group).flat_map(|b| {
            let amax = b.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
            b.iter().map(move |v| amax / 254.0 + v.abs() as f64 * 1e-3)
        }).collect();
        for (j, wr) in wf.iter().enumerate() {
            let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = wr.iter().zip(xr).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            reference[r][j] = exact;
            bound[r][j] = wr.iter().zip(&err).map(|(&a, e)| a.abs() as f64 * e).sum::<f64>() + 1e-5 * magnitude;
        }
    }
    (ours.to_vec2().unwrap(), theirs, reference, bound)
}

/// candle's ggml-style matmul (`vec_dot` over blocks of 32), called directly: `QMatMul` may
/// instead take candle's repacked path (on CPUs with AVX-512 VNNI, for Q8_0 rows of a multiple
/// of 256), which quantizes the activations over 256 values and so is not the same product.
/// The K-quants' products are over ggml's Q8_K activations (per 256 values), as ours.
fn candle_per_block(w: &QTensor, xf: &[Vec<f32>]) -> Vec<Vec<f32>> {
    use candle_core::quantized::k_quants::{matmul, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8_0, GgmlType};
    fn blocks<B: GgmlType>(bytes: &[u8]) -> &[B] {
        assert_eq!(bytes.as_ptr().align_offset(std::mem::align_of::<B>()), 0);
        // SAFETY: a QTensor's storage is a Vec of blocks viewed as bytes (aligned, checked).
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / std::mem::size_of::<B>()) }
    }
    let (n, k) = w.shape().dims2().unwrap();
    let m = xf.len();
    let lhs: Vec<f32> = xf.concat();
    let mut dst = vec![0f32; m * n];
    let data = w.data().unwrap();
    match w.dtype() {
        GgmlDType::Q4_0 => matmul((m, k, n), &lhs, blocks::<BlockQ4_0>(&data), &mut dst),
        GgmlDType::Q4_1 => matmul((m, k, n), &lhs, blocks::<BlockQ4_1>(&data), &mut dst),
        GgmlDType::Q5_0 => matmul((m, k, n), &lhs, blocks::<BlockQ5_0>(&data), &mut dst),
        GgmlDType::Q8_0 => matmul((m, k, n), &lhs, blocks::<BlockQ8_0>(&data), &mut dst),
        GgmlDType::Q4K => matmul((m, k, n), &lhs, blocks::<BlockQ4K>(&data), &mut dst),
        GgmlDType::Q5K => matmul((m, k, n), &lhs, blocks::<BlockQ5K>(&data), &mut dst),
        GgmlDType::Q6K => matmul((m, k, n), &lhs, blocks::<BlockQ6K>(&data), &mut dst),
        ty => panic!("no per-block candle matmul for {ty:?} here"),
    }
    .unwrap();
    dst.chunks_exact(n).map(|r| r.to_vec()).collect()
}

fn check_with(ours: Ours, ty: GgmlDType, m: usize, k: usize, n: usize, scale: f64) -> bool {
    let (ours, theirs, reference, bound) = run(ours, ty, m, k, n, scale);
    let mut close_to_candle = true;
    for r in 0..m {
        for j in 0..n {
            let (a, b, f) = (ours[r][j] as f64, theirs[r][j] as f64, reference[r][j]);
            assert!((a - f).abs() <= bound[r][j], "{ty:?} {m}x{k} by {n}x{k} [{r},{j}]: {a} vs f32 reference {f} (bound {})", bound[r][j]);
            // The same quantized products, summed in another order.
            close_to_candle &= (a - b).abs() <= 1e-5 * (1.0 + f.abs() + bound[r][j] * 100.0);
        }
    }
    assert!(close_to_candle, "{ty:?} {m}x{k} by {n}x{k}: ours {:?}… candle {:?}…", &ours[0][..n.min(4)], &theirs[0][..n.min(4)]);
    // Equal zeros would prove nothing.
    assert!(reference.iter().flatten().any(|v| v.abs() > 1e-3));
    ours == theirs
}

fn check(ty: GgmlDType, m: usize, k: usize, n: usize, scale: f64) -> bool {
    check_with(row_kernels, ty, m, k, n, scale)
}

const SHAPES: [(usize, usize, usize); 8] = [(1, 576, 1536), (2, 64, 33), (3, 96, 7), (4, 576, 192), (5, 32, 1), (9, 1536, 576), (37, 640, 100), (1, 288, 3)];

#[test]
fn q4_1_matches_the_f32_reference_and_candle() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        check(GgmlDType::Q4_1, m, k, n, i as f64 + 0.5);
    }
}

#[test]
fn q4_0_matches_the_f32_reference_and_candle() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        check(GgmlDType::Q4_0, m, k, n, i as f64 + 0.5);
    }
}

#[test]
fn q5_0_matches_the_f32_reference_and_candle() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        check(GgmlDType::Q5_0, m, k, n, i as f64 + 0.5);
    }
}

#[test]
fn q8_0_matches_the_f32_reference_and_candle_bit_for_bit() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        assert!(check(GgmlDType::Q8_0, m, k, n, i as f64 + 0.5), "Q8_0 {m}x{k} by {n}x{k} differs from candle");
    }
}

const PANEL_TYPES: [GgmlDType; 7] =
    [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

/// `k` rounded up to whole blocks of `ty` (256 values for the K-quants).
fn width(ty: GgmlDType, k: usize) -> usize {
    k.div_ceil(ty.block_size()) * ty.block_size()
}

/// A row's result must not depend on how many rows share its tile: a sequence decoded alone
/// and in a batch gets the same numbers (so the same greedy text).
fn same_alone_and_in_a_tile(ours: Ours, types: &[GgmlDType], rows: usize) {
    let dev = Device::Cpu;
    for &ty in types {
        let (k, n) = (width(ty, 608), 37);
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
        let all = ours(&w, &x).to_vec2::<f32>().unwrap();
        for r in 0..rows {
            let alone = ours(&w, &x.narrow(0, r, 1).unwrap()).to_vec2::<f32>().unwrap();
            assert_eq!(alone[0], all[r], "{ty:?}: row {r} alone and among {rows}");
        }
    }
}

#[test]
fn a_row_gets_the_same_result_alone_and_in_a_tile() {
    same_alone_and_in_a_tile(row_kernels, &PANEL_TYPES[..4], 7);
}

/// The panel layout holds every block exactly: each row read back equals candle's dequantization.
#[test]
fn panels_hold_the_blocks_exactly() {
    let dev = Device::Cpu;
    for ty in PANEL_TYPES {
        for (n, k) in [(37, width(ty, 96)), (16, width(ty, 32)), (5, width(ty, 640))] {
            let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
            let p = panels(&w);
            assert_eq!(p.dims(), (n, k));
            let ids = Tensor::new((0..n as u32).rev().collect::<Vec<_>>().as_slice(), &dev).unwrap();
            let ours = p.rows(&ids).unwrap().to_vec2::<f32>().unwrap();
            let theirs = w.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
            for (i, row) in ours.iter().enumerate() {
                assert_eq!(row, &theirs[n - 1 - i], "{ty:?} {n}x{k}: row {}", n - 1 - i);
            }
            assert!(p.rows(&Tensor::new(&[n as u32], &dev).unwrap()).is_err(), "a row past the end is refused");
        }
    }
    let q51 = QTensor::quantize(&Tensor::zeros((4, 256), DType::F32, &dev).unwrap(), GgmlDType::Q5_1).unwrap();
    assert!(Packed::new(GgmlDType::Q5_1, 4, 256, &q51.data().unwrap(), |_| {}).is_none(), "Q5_1 has no panel form");
}

/// The panel kernels (CPUs with AVX-512 VNNI) against the f32 reference and candle, for every
/// row count from 1 to past two full tiles and for widths that leave a partial panel. Elsewhere
/// the panel matmul refuses to run and models keep the other kernels.
#[test]
fn panel_kernels_match_the_f32_reference_and_candle() {
    if !packed::available() {
        let w = QTensor::quantize(&Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap(), GgmlDType::Q4_0).unwrap();
        assert!(panels(&w).matmul(&Tensor::zeros((1, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
        eprintln!("this CPU has no AVX-512 VNNI (or HEARTH_NO_PANELS is set): checked that the panel matmul refuses to run");
        return;
    }
    let shapes = [(1, 576, 1536), (2, 64, 33), (3, 96, 7), (8, 576, 192), (5, 32, 1), (9, 1536, 576), (17, 640, 100), (1, 288, 3), (23, 64, 48)];
    for ty in PANEL_TYPES {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            check_with(panel_kernels, ty, m, width(ty, k), n, i as f64 + 0.5);
        }
    }
    same_alone_and_in_a_tile(panel_kernels, &PANEL_TYPES, 19);
}

/// Several weights of mixed types against one input in one pass (a layer's q, k and v) give each
/// weight bit for bit what its own matmul gives: the activations are quantized once either way.
#[test]
fn panels_of_several_weights_in_one_pass_equal_each_alone() {
    if !packed::available() {
        return;
    }
    let dev = Device::Cpu;
    let k = 512;
    let ws: Vec<Packed> = [(GgmlDType::Q4_0, 48), (GgmlDType::Q8_0, 17), (GgmlDType::Q4K, 33), (GgmlDType::Q5_0, 16), (GgmlDType::Q6K, 20), (GgmlDType::Q4_1, 70), (GgmlDType::Q5K, 3)]
        .into_iter()
        .map(|(ty, n)| panels(&QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap()))
        .collect();
    // 16 rows and more decode each K-quant panel once for all tiles (`vnni_k::decoded`).
    for m in [1, 3, 8, 13, 16, 24] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let refs: Vec<&Packed> = ws.iter().collect();
        let many = Packed::matmul_many(&refs, &x).unwrap();
        assert_eq!(many.len(), ws.len());
        for (w, y) in ws.iter().zip(&many) {
            assert_eq!(y.to_vec2::<f32>().unwrap(), w.matmul(&x).unwrap().to_vec2::<f32>().unwrap(), "{m} rows, {:?}", w.dims());
        }
    }
    let wide = panels(&QTensor::quantize(&Tensor::randn(0f32, 1.0, (16, 2 * k), &dev).unwrap(), GgmlDType::Q4_0).unwrap());
    let x = Tensor::randn(0f32, 1.0, (2, k), &dev).unwrap();
    assert!(Packed::matmul_many(&[&ws[0], &wide], &x).is_err(), "weights of another width are refused");
    assert!(Packed::matmul_many(&[], &x).is_err(), "no weights is refused");
}

#[test]
fn other_types_and_shapes_are_left_to_candle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 256), DType::F32, &dev).unwrap();
    let q5k = QTensor::quantize(&Tensor::zeros((8, 256), DType::F32, &dev).unwrap(), GgmlDType::Q5K).unwrap();
    assert!(!kernels::supports(&q5k, &x));
    assert!(kernels::matmul(&q5k, &x).is_err(), "matmul refuses a weight it has no kernel for");
    let x3 = Tensor::zeros((1, 2, 64), DType::F32, &dev).unwrap();
    let q41 = QTensor::quantize(&Tensor::zeros((8, 64), DType::F32, &dev).unwrap(), GgmlDType::Q4_1).unwrap();
    assert!(!kernels::supports(&q41, &x3));
    // Through `forward`, an unsupported weight still multiplies (by candle).
    let y = kernels::forward(&QMatMul::from_qtensor(q5k).unwrap(), &x).unwrap();
    assert_eq!(y.dims(), &[2, 8]);
}

/// Many rows (prompt chunks): the weight dequantized to f32 and multiplied in f32 agrees with the
/// f32 reference to float rounding, for every type candle can quantize, across slabs; `forward`
/// leaves it alone unless asked.
#[test]
fn prompt_chunks_multiply_the_dequantized_weight_in_f32() {
    let dev = Device::Cpu;
    let cases = [
        (GgmlDType::Q4_0, 20, 64, 33),
        (GgmlDType::Q4_1, 130, 576, 40),
        (GgmlDType::Q5_0, 16, 640, 17),
        (GgmlDType::Q5_1, 17, 96, 5),
        (GgmlDType::Q8_0, 16, 32, 131_072 + 5),
        (GgmlDType::Q4K, 33, 512, 9),
        (GgmlDType::Q5K, 16, 256, 3),
        (GgmlDType::Q6K, 40, 768, 11),
        (GgmlDType::F16, 16, 64, 7),
    ];
    for (ty, m, k, n) in cases {
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let ours = kernels::dequant::matmul(&w, &x).unwrap().to_vec2::<f32>().unwrap();
        let wf = w.dequantize(&dev).unwrap().to_vec2::<f32>().unwrap();
        let xf = x.to_vec2::<f32>().unwrap();
        for r in (0..m).step_by(7) {
            for j in (0..n).step_by(1 + n / 50) {
                let exact: f64 = wf[j].iter().zip(&xf[r]).map(|(&a, &b)| a as f64 * b as f64).sum();
                let magnitude: f64 = wf[j].iter().zip(&xf[r]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                let got = ours[r][j] as f64;
                assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-6, "{ty:?} {m}x{k} by {n}x{k} [{r},{j}]: {got} vs {exact}");
            }
        }
        // Types with our own quantized kernel switch later (they stay faster for longer); the
        // K-quants never do (candle's kernels beat the f32 path at every size).
        let own = matches!(ty, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q8_0);
        let k_quant = matches!(ty, GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K);
        let expected = if own { Some(kernels::dequant::MIN_ROWS_OWN) } else if k_quant { None } else { Some(kernels::dequant::MIN_ROWS) };
        assert_eq!(kernels::f32_from(ty), expected, "{ty:?}");
        // By default `forward` never takes it (a row's result must not depend on how many rows
        // share the pass; HEARTH_F32_PROMPT=1 would turn it on): quantized weights multiply
        // 8-bit activations, which differ from f32 ones.
        assert!(std::env::var_os("HEARTH_F32_PROMPT").is_none(), "the tests run with the default");
        let routed = kernels::forward(&QMatMul::from_qtensor(w).unwrap(), &x).unwrap().to_vec2::<f32>().unwrap();
        if ty != GgmlDType::F16 {
            assert!(routed != ours, "{ty:?}: forward took the f32 path for {m} rows");
        }
    }
}
