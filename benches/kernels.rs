//! Criterion benchmarks of hearth's quantized matmul kernels against candle's `QMatMul` on the
//! same weights, named `TYPE/KxN/mM/(hearth|hearth-panels|hearth-f32|candle)`, where
//! `hearth-panels` is the panel-packed AVX-512 VNNI kernel (where this CPU has it and the type
//! has a panel form): the two real models' shapes (SmolLM2: 576-wide, 1536 feed-forward, 49152
//! vocabulary; Gemma 3 270M: 640-wide, 1024 attention, 2048 feed-forward, 262144 vocabulary, and
//! its Q4_K_M file's Q5_0, Q4_K and Q6_K tensors), and Qwen2.5-Coder-1.5B's (1536 wide, 8960
//! feed-forward: 1536x1536, 1536x8960, 8960x1536) in every type its quantized files use; one
//! row (a decode step), 4 rows (a batch of streams), 64 and 512 rows (prompt chunks).
//!
//! `cargo bench --bench kernels` (add a filter such as `Q4_1/576x1536` to run fewer).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hearth::model::kernels;

fn bench(c: &mut Criterion) {
    hearth::model::device::pin_thread_count();
    let dev = Device::Cpu;
    let mut cases = vec![
        (GgmlDType::Q4_0, 576, 1536),
        (GgmlDType::Q4_0, 640, 2048),
        (GgmlDType::Q4_1, 576, 1536),
        (GgmlDType::Q4_1, 1536, 576),
        (GgmlDType::Q8_0, 576, 49152),
        (GgmlDType::Q8_0, 640, 2048),
        (GgmlDType::Q8_0, 2048, 640),
        (GgmlDType::Q4_1, 640, 2048),
        (GgmlDType::Q5_0, 640, 2048),
        (GgmlDType::Q8_0, 640, 262144),
        (GgmlDType::Q4K, 1024, 640),
        (GgmlDType::Q4K, 2048, 640),
        (GgmlDType::Q6K, 2048, 640),
    ];
    for ty in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::Q8_0, GgmlDType::Q4_0] {
        cases.extend([(ty, 1536, 1536), (ty, 1536, 8960), (ty, 8960, 1536)]);
    }
    for (ty, k, n) in cases {
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), ty).unwrap();
        let candle = QMatMul::from_qtensor(QTensor::quantize(&w.dequantize(&dev).unwrap(), ty).unwrap()).unwrap();
        let panels = if kernels::packed::available() { kernels::packed::Packed::new(ty, n, k, &w.data().unwrap(), |_| {}) } else { None };
        let mut g = c.benchmark_group(format!("{ty:?}/{k}x{n}"));
        g.sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
        for m in [1usize, 4, 64, 512] {
            if n >= 49152 && m >= 64 {
                continue;
            }
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            if kernels::supports(&w, &x) {
                g.bench_with_input(BenchmarkId::new(format!("m{m}"), "hearth"), &x, |b, x| b.iter(|| kernels::matmul(&w, x).unwrap()));
            }
            if let Some(p) = &panels {
                g.bench_with_input(BenchmarkId::new(format!("m{m}"), "hearth-panels"), &x, |b, x| b.iter(|| p.matmul(x).unwrap()));
            }
            if m >= 64 {
                g.bench_with_input(BenchmarkId::new(format!("m{m}"), "hearth-f32"), &x, |b, x| b.iter(|| kernels::dequant::matmul(&w, x).unwrap()));
            }
            g.bench_with_input(BenchmarkId::new(format!("m{m}"), "candle"), &x, |b, x| b.iter(|| candle.forward(x).unwrap()));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
