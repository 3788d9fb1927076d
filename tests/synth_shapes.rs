//! `scripts/synth-gguf.py` (the random-weight models with real shapes that the speed work and
//! `scripts/check-cuda.sh` measure on) writes files hearth loads, quantizes and runs, with the
//! real model's hyper-parameters; numpy, pinned, is installed from PyPI by this test.

mod common;

use std::path::Path;
use std::process::Command;

use hearth::model::arch::ModelSpec;
use hearth::model::gguf::GgufFile;

const NUMPY: &str = "numpy==2.4.6";

fn synth(shape: &str, layers: usize, out: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/synth-gguf.py");
    let o = Command::new("python3")
        .arg(script)
        .args([shape, out.to_str().unwrap(), "--layers", &layers.to_string()])
        .env("PYTHONPATH", common::python_package(NUMPY))
        .output()
        .unwrap();
    assert!(o.status.success(), "synth-gguf.py {shape}: {}", String::from_utf8_lossy(&o.stderr));
}

fn hearth(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).env("HEARTH_DEVICE", "cpu").output().unwrap();
    assert!(o.status.success(), "hearth {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into()
}

#[test]
fn random_weight_files_have_real_shapes_and_run() {
    let dir = tempfile::tempdir().unwrap();
    // (shape, architecture, d_model, heads, kv heads, head size, ffn, vocabulary)
    let shapes = [
        ("qwen2.5-coder-0.5b", "qwen2", 896, 14, 2, 64, 4864, 151936),
        ("llama-3.2-1b", "llama", 2048, 32, 8, 64, 8192, 128256),
        ("phi-3-mini", "phi3", 3072, 32, 32, 96, 8192, 32064),
        ("gemma-3-270m", "gemma3", 640, 4, 1, 256, 2048, 262144),
    ];
    for (shape, arch, d, heads, kv, hd, ff, vocab) in shapes {
        let f16 = dir.path().join(format!("{shape}.gguf"));
        synth(shape, 1, &f16);
        let spec = ModelSpec::from_gguf(&GgufFile::open(&f16).unwrap()).unwrap();
        assert_eq!(spec.arch.gguf_name(), arch, "{shape}");
        assert_eq!(
            (spec.d_model, spec.n_head, spec.n_kv_head, spec.head_dim, spec.ff_len, spec.vocab_size, spec.n_layer),
            (d, heads, kv, hd, ff, vocab, 1),
            "{shape}"
        );
        let out = hearth(&["speed", "-m", f16.to_str().unwrap(), "-p", "8", "-n", "2", "-r", "1", "--json"]);
        let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(j["pp_tps"].as_f64().unwrap() > 0.0 && j["tg_tps"].as_f64().unwrap() > 0.0, "{shape}: {out}");
        std::fs::remove_file(&f16).unwrap();
    }
    // The full SmolLM2 shape, quantized as users' files are, answers like any model.
    let f16 = dir.path().join("smollm2.gguf");
    synth("smollm2-135m", 30, &f16);
    let q = dir.path().join("smollm2-q4_k_m.gguf");
    hearth(&["quantize", f16.to_str().unwrap(), q.to_str().unwrap(), "--type", "Q4_K_M"]);
    let text = hearth(&["run", "-m", q.to_str().unwrap(), "--temperature", "0", "--max-tokens", "8", "def f(x):"]);
    assert!(!text.is_empty());
}
