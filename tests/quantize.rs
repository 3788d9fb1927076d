//! `hearth quantize` and `hearth bench`: llama.cpp's per-tensor choices, encodings against candle's
//! reference quantizers, files that round-trip, quality on the real SmolLM2 model, and the report.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use hearth::bench::kl::evaluate;
use hearth::model::gguf::{GgufFile, TensorType, Value};
use hearth::model::gguf_write::{GgufWriter, PlannedTensor};
use hearth::model::quantize::{dequantize, encode, plan, quantize, Target};
use hearth::model::Model;

fn types(file: &GgufFile, target: Target) -> BTreeMap<String, &'static str> {
    plan(&file.tensors, target).into_iter().map(|c| (c.name, c.to.name())).collect()
}

fn synth_file(dir: &std::path::Path, name: &str, adjust: impl FnOnce(&mut common::synth::Synth)) -> GgufFile {
    let mut s = common::synth::Synth::new("llama");
    s.n_layer = 8;
    adjust(&mut s);
    let path = dir.join(name);
    common::synth::write(&path, &s);
    GgufFile::open(&path).unwrap()
}

#[test]
fn q4_k_m_gives_llama_cpp_layers_more_bits() {
    let dir = tempfile::tempdir().unwrap();
    let file = synth_file(dir.path(), "m.gguf", |_| {});
    let t = types(&file, Target::Q4KM);
    // llama.cpp's use_more_bits for 8 layers: the first and last eighth, and every third between.
    for i in 0..8 {
        let more = [0, 3, 6, 7].contains(&i);
        let want = if more { "Q6_K" } else { "Q4_K" };
        assert_eq!(t[&format!("blk.{i}.attn_v.weight")], want, "attn_v of layer {i}");
        assert_eq!(t[&format!("blk.{i}.ffn_down.weight")], want, "ffn_down of layer {i}");
        assert_eq!(t[&format!("blk.{i}.attn_q.weight")], "Q4_K");
        assert_eq!(t[&format!("blk.{i}.attn_norm.weight")], "F32", "norms are never quantized");
    }
    assert_eq!(t["output.weight"], "Q6_K");
    assert_eq!(t["token_embd.weight"], "Q4_K", "an untied embedding takes the base type");
    let t5 = types(&file, Target::Q5KM);
    assert_eq!((t5["blk.3.ffn_down.weight"], t5["blk.4.ffn_down.weight"]), ("Q6_K", "Q5_K"));
    let t8 = types(&file, Target::Q8_0);
    assert!(t8.iter().all(|(n, ty)| *ty == if n.contains("norm") { "F32" } else { "Q8_0" }), "{t8:?}");
    let t4 = types(&file, Target::Q4_0);
    assert_eq!((t4["output.weight"], t4["blk.3.attn_v.weight"]), ("Q6_K", "Q4_0"), "no layer mix outside the _M types");

    let tied = synth_file(dir.path(), "tied.gguf", |s| s.tied_output = true);
    assert_eq!(types(&tied, Target::Q4KM)["token_embd.weight"], "Q6_K", "a tied embedding is the output");
}

#[test]
fn rows_that_do_not_fit_256_fall_back_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    // 320 columns: a multiple of 32, not of 256.
    let file = synth_file(dir.path(), "odd.gguf", |s| {
        s.n_head = 5;
        s.n_kv_head = 1;
        s.d_model = 320;
    });
    let choices = plan(&file.tensors, Target::Q4KM);
    let get = |n: &str| choices.iter().find(|c| c.name == n).unwrap();
    assert_eq!((get("blk.1.attn_q.weight").to.name(), get("blk.1.attn_q.weight").fallback), ("Q5_0", true));
    assert_eq!(get("blk.0.attn_v.weight").to.name(), "Q8_0", "Q6_K falls back to Q8_0");
    assert_eq!(get("output.weight").to.name(), "Q8_0");
    assert_eq!((get("blk.1.ffn_down.weight").to.name(), get("blk.1.ffn_down.weight").fallback), ("Q4_K", false), "512 columns fit");
    let q5 = plan(&file.tensors, Target::Q5KM);
    assert_eq!(q5.iter().find(|c| c.name == "blk.1.attn_q.weight").unwrap().to.name(), "Q5_1");
}

fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..rows * cols)
        .map(|_| {
            // Sum of uniforms: roughly normal, with the occasional large weight.
            let mut s = 0.0;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s += (x % 10_000) as f32 / 10_000.0 - 0.5;
            }
            s
        })
        .collect()
}

#[test]
fn encodings_are_candles_reference_within_its_error() {
    let (rows, cols) = (37, 512);
    let values = random(rows, cols, 3);
    let src = Tensor::from_slice(&values, (rows, cols), &Device::Cpu).unwrap();
    let rms = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
    // Round-to-nearest error bounds (RMS, relative to the data's RMS) for each bit width.
    for (dtype, bound) in [
        (GgmlDType::Q8_0, 0.01),
        (GgmlDType::Q6K, 0.03),
        (GgmlDType::Q5K, 0.06),
        (GgmlDType::Q5_0, 0.06),
        (GgmlDType::Q5_1, 0.06),
        (GgmlDType::Q4K, 0.12),
        (GgmlDType::Q4_0, 0.12),
        (GgmlDType::Q4_1, 0.12),
        (GgmlDType::F16, 0.001),
    ] {
        let ours = encode(&values, cols, dtype, 3).unwrap();
        if dtype != GgmlDType::F16 {
            let whole = QTensor::quantize(&src, dtype).unwrap();
            assert_eq!(ours, whole.data().unwrap().as_ref(), "{dtype:?}: rows split over threads give the bytes of one call");
        }
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, &ours, vec![rows, cols], &Device::Cpu).unwrap();
        let back = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err = (values.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / values.len() as f32).sqrt();
        assert!(err / rms < bound, "{dtype:?}: relative RMS error {} over {bound}", err / rms);
        assert!(err > 0.0 || dtype == GgmlDType::F16, "{dtype:?} lost nothing: the data is not being quantized");
    }
}

#[test]
fn quantized_files_keep_metadata_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = synth_file(dir.path(), "src.gguf", |_| {});
    let out = dir.path().join("q8.gguf");
    let report = quantize(&src, &out, Target::Q8_0, 2, |_, _, _| {}).unwrap();
    assert!(!dir.path().join("q8.gguf.tmp").exists());
    let q = GgufFile::open(&out).unwrap();
    for (k, v) in &src.metadata {
        if k != "general.file_type" && k != "general.alignment" {
            assert_eq!(q.get(k), Some(v), "metadata {k}");
        }
    }
    assert_eq!(q.get("general.file_type"), Some(&Value::U32(7)));
    assert_eq!(report.requantized(), src.tensors.iter().filter(|t| t.ty.name() == "Q4_K").count());
    for (a, b) in src.tensors.iter().zip(&q.tensors) {
        assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
        if a.ty == b.ty {
            assert_eq!(src.tensor_bytes(a), q.tensor_bytes(b), "{}: same type is copied", a.name);
        } else {
            let values = dequantize(&src, a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(q.tensor_bytes(b), encode(&values, a.dims[1], GgmlDType::Q8_0, 1).unwrap(), "{}", a.name);
        }
    }
    // The synthetic model's Q8_0 tensors are copied, its Q4_K ones re-encoded: logits move a little.
    let (m0, m1) = (Model::load(&dir.path().join("src.gguf"), &Device::Cpu).unwrap(), Model::load(&out, &Device::Cpu).unwrap());
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 % 250) as u32).collect();
    let (a, b) = (common::chunked_logits(&m0.decoder, &tokens, &[40]), common::chunked_logits(&m1.decoder, &tokens, &[40]));
    let d = common::rel_diff(&a.concat(), &b.concat());
    assert!(d > 0.0 && d < 0.05, "relative logit difference {d}");
}

#[test]
fn the_writer_checks_sizes_and_leaves_nothing_when_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    let plan = vec![PlannedTensor { name: "a".into(), dims: vec![2, 32], ty: TensorType(8) }];
    let mut w = GgufWriter::create(&path, &BTreeMap::new(), &plan).unwrap();
    let err = w.tensor(&[0u8; 10]).unwrap_err();
    assert!(err.to_string().contains("tensor a: 10 bytes given, 68 planned"), "{err}");
    drop(w);
    assert!(!path.exists() && !dir.path().join("w.gguf.tmp").exists());
    let w = GgufWriter::create(&path, &BTreeMap::new(), &plan).unwrap();
    assert!(w.finish().unwrap_err().to_string().contains("0 of 1 tensors written"));
    assert!(!path.exists());
}

/// An empty array keeps its item type through a read and a write: llama.cpp refuses a file whose
/// empty `tokenizer.ggml.merges` is not typed as strings (it once refused `hearth quantize`'s).
#[test]
fn empty_arrays_keep_their_item_type() {
    let dir = tempfile::tempdir().unwrap();
    let plan = vec![PlannedTensor { name: "a".into(), dims: vec![32], ty: TensorType(0) }];
    let meta = BTreeMap::from([("tokenizer.ggml.merges".to_owned(), Value::EmptyArray(8))]);
    let first = dir.path().join("first.gguf");
    let mut w = GgufWriter::create(&first, &meta, &plan).unwrap();
    w.tensor(&[0u8; 128]).unwrap();
    w.finish().unwrap();
    let read = GgufFile::open(&first).unwrap();
    assert_eq!(read.get("tokenizer.ggml.merges"), Some(&Value::EmptyArray(8)));
    assert_eq!(read.get("tokenizer.ggml.merges").and_then(Value::as_array), Some(&[][..]));
    // The raw bytes: key, type 9 (array), item type 8 (string), length 0.
    let bytes = std::fs::read(&first).unwrap();
    let key = b"tokenizer.ggml.merges";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(&bytes[at..at + 16], &[9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn real_smollm2_q8_0_stays_close_and_q4_0_drifts_further() {
    let source = common::model_path("smollm2-135m-instruct-q4_1");
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(&source).unwrap();
    let reference = Model::load(&source, &Device::Cpu).unwrap();
    let (_, corpus) = hearth::bench::compare::builtin_corpus();
    let mut kl = Vec::new();
    for target in [Target::Q8_0, Target::Q4_0] {
        let out = dir.path().join(format!("{}.gguf", target.name()));
        quantize(&file, &out, target, 2, |_, _, _| {}).unwrap();
        let model = Model::load(&out, &Device::Cpu).unwrap();
        assert_eq!(model.quantization, target.name());
        let q = evaluate(&model, Some(&reference), &corpus, 256, Some(4), |_, _| {}).unwrap();
        assert!(q.perplexity.is_finite() && q.perplexity > 1.0 && q.perplexity < 50.0, "{target:?}: {q:?}");
        assert_eq!(q.scored_tokens, 4 * 127);
        kl.push(q);
    }
    let (q8, q4) = (kl[0], kl[1]);
    assert!(q8.kl_mean < 0.01 && q8.same_top > 0.95, "Q8_0 against its Q4_1 source: {q8:?}");
    assert!(q4.kl_mean > 3.0 * q8.kl_mean && q4.kl_p99 > q8.kl_p99, "Q4_0 {q4:?} against Q8_0 {q8:?}");
    let itself = evaluate(&reference, Some(&reference), &corpus, 256, Some(1), |_, _| {}).unwrap();
    assert!(itself.kl_mean.abs() < 1e-9 && itself.same_top == 1.0, "{itself:?}");
}

#[test]
fn bench_reports_markdown_csv_json_and_charts() {
    let source = common::model_path("smollm2-135m-instruct-q4_1");
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("smol-q8.gguf");
    let exe = env!("CARGO_BIN_EXE_hearth");
    let run = |args: &[&str]| Command::new(exe).args(args).output().unwrap();
    let q = run(&["quantize", source.to_str().unwrap(), q8.to_str().unwrap(), "--type", "q8_0"]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(String::from_utf8_lossy(&q.stderr).contains("were already quantized"), "re-quantizing says so");
    let again = run(&["quantize", source.to_str().unwrap(), q8.to_str().unwrap(), "--type", "Q8_0"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"));
    let bad = run(&["quantize", source.to_str().unwrap(), "x.gguf", "--type", "Q3_XL"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected one of F16, Q8_0, Q6_K, Q5_K_M"));

    let out = dir.path().join("report");
    let args = ["bench", "-m", source.to_str().unwrap(), "-m", q8.to_str().unwrap(), "-p", "32", "-n", "8", "-r", "1"];
    let b = run(&[&args[..], &["--ctx", "128", "--chunks", "2", "--compare", "gpt-4.1-mini,deepseek-chat", "--out", out.to_str().unwrap()]].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&b.stdout), String::from_utf8_lossy(&b.stderr));
    assert!(b.status.success(), "{stderr}");
    assert!(stdout.contains("| variant | type | size MiB |") && stdout.contains("| smol-q8 | Q8_0 |"), "{stdout}");
    assert!(stdout.contains("against **smol-q8**") && stdout.contains("| gpt-4.1-mini | 1.60 |"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert!(header.contains(&"deepseek-chat_break_even_tokens"));
    assert!(lines.iter().skip(1).all(|l| l.split(',').count() == header.len()));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let variants = json["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    for v in variants {
        assert!(v["speed"]["tg_tps"].as_f64().unwrap() > 0.0 && v["speed"]["peak_rss"].as_u64().unwrap() > 50 << 20, "{v}");
        assert!(v["local_per_1m"]["total"].as_f64().unwrap() > 0.0);
    }
    assert!(variants[0]["quality"]["kl_mean"].as_f64().unwrap() > 0.0, "Q4_1 against Q8_0");
    for svg in ["speed_vs_size.svg", "kl_vs_size.svg", "cost_per_1m.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && (text.contains("<circle") || text.contains("<rect")), "{svg}");
    }
}
