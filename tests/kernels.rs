//! hearth's own quantized matmul against candle's on random data: bit-identical results for
//! every row count (1 row, partial and full tiles, many rows) and for odd shapes.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use hearth::model::qmatmul;

fn check(m: usize, k: usize, n: usize, seed: u64) {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
    let w = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
    let x = (Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap() * (seed as f64 + 1.0)).unwrap();
    assert!(qmatmul::supports(&w, &x));
    let ours = qmatmul::matmul(&w, &x).unwrap();
    let theirs = QMatMul::from_qtensor(w).unwrap().forward(&x).unwrap();
    assert_eq!(ours.dims(), &[m, n]);
    let (a, b) = (ours.to_vec2::<f32>().unwrap(), theirs.to_vec2::<f32>().unwrap());
    assert_eq!(a, b, "q4_1 {m}x{k} by {n}x{k}");
    // Equal zeros would prove nothing.
    assert!(b.iter().flatten().any(|v| v.abs() > 1e-3));
}

#[test]
fn q4_1_matches_candle_bit_for_bit() {
    for (i, &(m, k, n)) in [(1, 576, 1536), (2, 64, 33), (3, 96, 7), (4, 576, 192), (5, 32, 1), (9, 1536, 576), (37, 640, 100)].iter().enumerate() {
        check(m, k, n, i as u64);
    }
}

#[test]
fn other_types_and_shapes_are_left_to_candle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 64), candle_core::DType::F32, &dev).unwrap();
    let q8 = QTensor::quantize(&Tensor::zeros((8, 64), candle_core::DType::F32, &dev).unwrap(), GgmlDType::Q8_0).unwrap();
    assert!(!qmatmul::supports(&q8, &x));
    let x3 = Tensor::zeros((1, 2, 64), candle_core::DType::F32, &dev).unwrap();
    let q41 = QTensor::quantize(&Tensor::zeros((8, 64), candle_core::DType::F32, &dev).unwrap(), GgmlDType::Q4_1).unwrap();
    assert!(!qmatmul::supports(&q41, &x3));
}
