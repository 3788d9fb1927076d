//! hearth's CPU attention against a plain f64 computation of softmax(q kᵀ / divisor) v over the
//! keys each query may see (causal, optionally within a sliding window), for decode steps and
//! prompt chunks (whole and partial tiles), grouped key/value heads, odd head sizes, and keys
//! read through a strided view of a larger cache, as the KV cache hands them over, in f32 and in
//! f16 (the reference then reads the same rounded values); a chunk's rows bit for bit equal to
//! the same rows computed one at a time; and the gated feed-forward activation against candle's.

use candle_core::{DType, Device, Tensor};
use hearth::model::kernels::attention::{attend, attend_kv, attend_many, attend_portable, Kv, Shape};

fn reference(q: &[Vec<Vec<f32>>], k: &[Vec<Vec<f32>>], v: &[Vec<Vec<f32>>], s: Shape) -> Vec<Vec<f64>> {
    let n = q[0].len();
    let group = s.n_head / s.n_kv_head;
    let mut out = vec![vec![0f64; s.n_head * s.head_dim]; n];
    for h in 0..s.n_head {
        let kv = h / group;
        for i in 0..n {
            let p = s.pos + i;
            let lo = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let scores: Vec<f64> = (lo..=p)
                .map(|j| q[h][i].iter().zip(&k[kv][j]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / s.divisor as f64)
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, w) in (lo..=p).zip(&e) {
                for d in 0..s.head_dim {
                    out[i][h * s.head_dim + d] += w / sum * v[kv][j][d] as f64;
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_a_plain_computation() {
    let dev = Device::Cpu;
    let cases = [
        // (n_head, n_kv_head, head_dim, n, pos, window)
        (4, 2, 64, 1, 0, None),
        (4, 2, 64, 1, 30, None),
        (9, 3, 64, 9, 0, None),
        (9, 3, 64, 8, 5, None),
        (4, 1, 256, 17, 3, None),
        (4, 4, 80, 40, 0, Some(5)),
        (2, 1, 96, 23, 11, Some(16)),
        (3, 3, 16, 1, 20, Some(4)),
    ];
    let mut batch = Vec::new();
    for (case, (n_head, n_kv_head, hd, n, pos, window, dtype)) in
        cases.into_iter().flat_map(|c| [DType::F32, DType::F16].map(|d| (c.0, c.1, c.2, c.3, c.4, c.5, d))).enumerate()
    {
        let total = pos + n;
        let q = Tensor::randn(0f32, 1.0, (n_head, n, hd), &dev).unwrap();
        // Keys (transposed, as the CPU cache keeps them) and values as views of a cache with room
        // for more positions: a capacity in whole tiles of 16 keys, as the cache allocates, or
        // too little for a whole tile past the last key (attention then copies the keys).
        let cap = if case / 2 % 2 == 0 { (total + 13).next_multiple_of(16) } else { total + 13 };
        let kc = (Tensor::randn(0f32, 1.0, (n_kv_head, hd, cap), &dev).unwrap() * 2.0).unwrap().to_dtype(dtype).unwrap();
        let vc = Tensor::randn(0f32, 1.0, (n_kv_head, cap, hd), &dev).unwrap().to_dtype(dtype).unwrap();
        let (k, v) = (kc.narrow(2, 0, total).unwrap(), vc.narrow(1, 0, total).unwrap());
        let s = Shape { n_head, n_kv_head, head_dim: hd, divisor: (hd as f32).sqrt(), pos, window };
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let keys = f32s(&k).transpose(1, 2).unwrap().contiguous().unwrap().to_vec3().unwrap();
        let want = reference(&q.to_vec3().unwrap(), &keys, &f32s(&v).to_vec3().unwrap(), s);
        for (name, f) in [("attend", attend_kv as fn(&Tensor, Kv<'_>, Shape) -> _), ("portable", attend_portable)] {
            let ours = f(&q, Kv { k: &k, v: &v, scales: None }, s).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!((ours.len(), ours[0].len()), (n, n_head * hd));
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                for (c, (&x, &y)) in a.iter().zip(b).enumerate() {
                    assert!((x as f64 - y).abs() < 2e-5 * (1.0 + y.abs()), "{name} {dtype:?} {s:?} n {n}: row {i} column {c}: {x} vs {y}");
                }
            }
        }
        // Each row of a chunk gets bit for bit what it gets as a decode step's only row.
        for i in 0..n {
            let one = attend(&q.narrow(1, i, 1).unwrap(), &k.narrow(2, 0, pos + i + 1).unwrap(), &v.narrow(1, 0, pos + i + 1).unwrap(), Shape { pos: pos + i, ..s });
            let chunk_row = attend(&q, &k, &v, s).unwrap().narrow(0, i, 1).unwrap();
            assert_eq!(one.unwrap().to_vec2::<f32>().unwrap(), chunk_row.to_vec2::<f32>().unwrap(), "{dtype:?} {s:?}: row {i} alone vs in its chunk");
        }
        batch.push((q, k, v, s));
    }
    // All cases as one batch (enough work to go to the worker pool): each sequence's result is
    // exactly what it gets alone.
    let jobs: Vec<_> = batch.iter().map(|(q, k, v, s)| (q, Kv { k, v, scales: None }, *s)).collect();
    let together = attend_many(&jobs).unwrap();
    assert_eq!(together.len(), jobs.len());
    for ((q, k, v, s), t) in batch.iter().zip(&together) {
        let alone = attend(q, k, v, *s).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), alone, "{s:?} batched vs alone");
    }
    let q = Tensor::zeros((4, 2, 8), DType::F32, &dev).unwrap();
    let k = Tensor::zeros((3, 8, 2), DType::F32, &dev).unwrap();
    let v = Tensor::zeros((3, 2, 8), DType::F32, &dev).unwrap();
    let s = Shape { n_head: 4, n_kv_head: 3, head_dim: 8, divisor: 1.0, pos: 0, window: None };
    let err = attend(&q, &k, &v, s).unwrap_err().to_string();
    assert!(err.contains("cannot share"), "4 query heads cannot share 3 key/value heads: {err}");
    let s = Shape { n_head: 3, ..s };
    let q = q.narrow(0, 0, 3).unwrap();
    attend(&q, &k, &v, s).expect("three query heads over three key/value heads");
    let err = attend(&q, &k.to_dtype(DType::F16).unwrap(), &v, s).unwrap_err().to_string();
    assert!(err.contains("keys in F16 but values in F32"), "keys and values of two types: {err}");
    let err = attend(&q, &k.to_dtype(DType::BF16).unwrap(), &v.to_dtype(DType::BF16).unwrap(), s).unwrap_err().to_string();
    assert!(err.contains("f32, f16 or q8_0 bytes only"), "bf16 keys and values: {err}");
}

/// `x` (`[heads, rows, hd]`) through the cache's Q8_0 quantizer: its bytes and scales, and the
/// f32 values they read back as (byte × scale).
fn q8(x: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (bytes, scales) = hearth::model::kv_cache::quantize_q8(x).unwrap();
    let (h, rows, hd) = x.dims3().unwrap();
    let b = bytes.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let sc = scales.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let back: Vec<f32> = b.iter().enumerate().map(|(i, &b)| b as i8 as f32 * sc[i / 32]).collect();
    // Each value within half a step of its scale, plus what rounding the scale to f16 moves
    // the largest byte (127 × 2^-11 of a step), as in ggml.
    for (i, (&y, &x)) in back.iter().zip(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap()).enumerate() {
        assert!((y - x).abs() <= 0.57 * sc[i / 32] + 1e-6, "value {i}: {x} came back as {y}");
    }
    (bytes, scales, Tensor::from_vec(back, (h, rows, hd), x.device()).unwrap())
}

/// A Q8_0 cache (keys transposed, as the CPU cache keeps them, with their scales) gives bit for
/// bit what an f32 cache holding the values it reads back gives, in the AVX-512 and portable
/// loops, and each row of a chunk what it gets alone; mismatched scales are refused.
#[test]
fn q8_0_cache_reads_as_its_dequantized_values() {
    let dev = Device::Cpu;
    let cases: [(usize, usize, usize, usize, usize, Option<usize>); 5] = [(4, 2, 64, 1, 0, None), (4, 2, 64, 1, 70, None), (9, 3, 64, 9, 5, None), (4, 1, 256, 17, 3, None), (2, 1, 96, 23, 11, Some(16))];
    for (n_head, n_kv_head, hd, n, pos, window) in cases {
        let total = pos + n;
        let cap = (total + 13).next_multiple_of(16);
        let q = Tensor::randn(0f32, 1.0, (n_head, n, hd), &dev).unwrap();
        let (kb, ks, kf) = q8(&(Tensor::randn(0f32, 1.0, (n_kv_head, cap, hd), &dev).unwrap() * 2.0).unwrap());
        let (vb, vs, vf) = q8(&Tensor::randn(0f32, 1.0, (n_kv_head, cap, hd), &dev).unwrap());
        let t = |x: &Tensor| x.transpose(1, 2).unwrap().contiguous().unwrap();
        let (kb, ks, kf) = (t(&kb), t(&ks), t(&kf));
        let s = Shape { n_head, n_kv_head, head_dim: hd, divisor: (hd as f32).sqrt(), pos, window };
        let (kb, ks, kf) = (kb.narrow(2, 0, total).unwrap(), ks.narrow(2, 0, total).unwrap(), kf.narrow(2, 0, total).unwrap());
        let (vb, vs, vf) = (vb.narrow(1, 0, total).unwrap(), vs.narrow(1, 0, total).unwrap(), vf.narrow(1, 0, total).unwrap());
        let kv = Kv { k: &kb, v: &vb, scales: Some((&ks, &vs)) };
        let exact = Kv { k: &kf, v: &vf, scales: None };
        let rows = |f: fn(&Tensor, Kv<'_>, Shape) -> candle_core::Result<Tensor>, kv| f(&q, kv, s).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rows(attend_kv, kv), rows(attend_kv, exact), "{s:?}: q8_0 against its values in f32");
        assert_eq!(rows(attend_portable, kv), rows(attend_portable, exact), "{s:?}: portable loops");
        let whole = rows(attend_kv, kv);
        for i in 0..n {
            let p = pos + i + 1;
            let one = Kv { k: &kb.narrow(2, 0, p).unwrap(), v: &vb.narrow(1, 0, p).unwrap(), scales: Some((&ks.narrow(2, 0, p).unwrap(), &vs.narrow(1, 0, p).unwrap())) };
            let alone = attend_kv(&q.narrow(1, i, 1).unwrap(), one, Shape { pos: pos + i, ..s }).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(alone[0], whole[i], "{s:?}: row {i} alone vs in its chunk");
        }
        let err = attend_kv(&q, Kv { scales: None, ..kv }, s).unwrap_err().to_string();
        assert!(err.contains("without their scales"), "{err}");
        let err = attend_kv(&q, Kv { scales: Some((&vs, &ks)), ..kv }, s).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        let err = attend_kv(&q, Kv { scales: Some((&ks, &vs)), ..exact }, s).unwrap_err().to_string();
        assert!(err.contains("scales given for F32"), "{err}");
    }
}

/// The feed-forward activation pass against candle's own SiLU and tanh-GELU, over ordinary values
/// and the extremes where the exponential is clamped.
#[test]
fn gated_activations_match_candle() {
    use hearth::model::arch::Activation;
    use hearth::model::kernels::activation::gated;
    let dev = Device::Cpu;
    let mut g = (Tensor::randn(0f32, 1.0, (7, 5000), &dev).unwrap() * 4.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    g.extend([-200.0, -88.5, -87.0, -20.0, -1e-6, 0.0, 1e-6, 20.0, 87.0, 88.5, 200.0]);
    let len = g.len();
    let gate = Tensor::from_vec(g, len, &dev).unwrap();
    let up = Tensor::randn(0f32, 1.0, len, &dev).unwrap();
    for act in [Activation::Silu, Activation::GeluTanh] {
        let ours = gated(act, &gate, &up).unwrap().to_vec1::<f32>().unwrap();
        let a = match act {
            Activation::Silu => candle_nn::ops::silu(&gate).unwrap(),
            Activation::GeluTanh => gate.gelu().unwrap(),
        };
        let theirs = (a * &up).unwrap().to_vec1::<f32>().unwrap();
        for (i, (&x, &y)) in ours.iter().zip(&theirs).enumerate() {
            assert!(x.is_finite() && (x - y).abs() <= 2e-6 * (1.0 + y.abs()), "{act:?} at gate {}: {x} vs {y}", gate.get(i).unwrap());
        }
    }
}
