//! hearth's own quantized matmuls against candle's on random data: bit-identical results for each
//! type, for every row count (1 row, partial and full tiles, many rows) and odd shapes.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use hearth::model::kernels;

fn check(ty: GgmlDType, m: usize, k: usize, n: usize, scale: f64) {
    let dev = Device::Cpu;
    let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
    let x = (Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap() * scale).unwrap();
    assert!(kernels::supports(&w, &x), "{ty:?} {m}x{k}");
    let ours = kernels::matmul(&w, &x).unwrap();
    let theirs = QMatMul::from_qtensor(w).unwrap().forward(&x).unwrap();
    assert_eq!(ours.dims(), &[m, n]);
    let (a, b) = (ours.to_vec2::<f32>().unwrap(), theirs.to_vec2::<f32>().unwrap());
    assert_eq!(a, b, "{ty:?}: {m}x{k} by {n}x{k}");
    // Equal zeros would prove nothing.
    assert!(b.iter().flatten().any(|v| v.abs() > 1e-3));
}

const SHAPES: [(usize, usize, usize); 8] = [(1, 576, 1536), (2, 64, 33), (3, 96, 7), (4, 576, 192), (5, 32, 1), (9, 1536, 576), (37, 640, 100), (1, 288, 3)];

#[test]
fn q4_1_matches_candle_bit_for_bit() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        check(GgmlDType::Q4_1, m, k, n, i as f64 + 0.5);
    }
}

#[test]
fn q8_0_matches_candle_bit_for_bit() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        check(GgmlDType::Q8_0, m, k, n, i as f64 + 0.5);
    }
}

#[test]
fn other_types_and_shapes_are_left_to_candle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 256), DType::F32, &dev).unwrap();
    let q4k = QTensor::quantize(&Tensor::zeros((8, 256), DType::F32, &dev).unwrap(), GgmlDType::Q4K).unwrap();
    assert!(!kernels::supports(&q4k, &x));
    let x3 = Tensor::zeros((1, 2, 64), DType::F32, &dev).unwrap();
    let q41 = QTensor::quantize(&Tensor::zeros((8, 64), DType::F32, &dev).unwrap(), GgmlDType::Q4_1).unwrap();
    assert!(!kernels::supports(&q41, &x3));
    // Through `forward`, an unsupported weight still multiplies (by candle).
    let y = kernels::forward(&QMatMul::from_qtensor(q4k).unwrap(), &x).unwrap();
    assert_eq!(y.dims(), &[2, 8]);
}
