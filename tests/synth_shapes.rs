//! `hearth synth` (the random-weight models with real shapes that the speed work and
//! `scripts/check-cuda.sh` measure on) writes files hearth loads, quantizes and runs, with the
//! real model's hyper-parameters and llama.cpp's per-tensor types.

use std::path::Path;
use std::process::Command;

use hearth::model::arch::ModelSpec;
use hearth::model::gguf::GgufFile;

fn synth(shape: &str, layers: usize, ty: &str, out: &Path) {
    hearth(&["synth", shape, out.to_str().unwrap(), "--layers", &layers.to_string(), "--type", ty, "--force"]);
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
        synth(shape, 1, "F16", &f16);
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
    let q = dir.path().join("smollm2-q4_k_m.gguf");
    synth("smollm2-135m", 30, "Q4_K_M", &q);
    let text = hearth(&["run", "-m", q.to_str().unwrap(), "--temperature", "0", "--max-tokens", "8", "def f(x):"]);
    assert!(!text.is_empty());
}

#[test]
fn synth_writes_llama_cpp_types_and_the_same_file_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"), dir.path().join("c.gguf"));
    synth("qwen2.5-coder-0.5b", 2, "Q4_K_M", &a);
    synth("qwen2.5-coder-0.5b", 2, "Q4_K_M", &b);
    hearth(&["synth", "qwen2.5-coder-0.5b", c.to_str().unwrap(), "--layers", "2", "--seed", "8"]);
    let (a, b, c) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert!(a == b, "the same seed wrote different files");
    assert!(a != c && a.len() == c.len(), "another seed writes other weights of the same sizes");
    let file = GgufFile::open(&dir.path().join("a.gguf")).unwrap();
    let ty = |name: &str| file.tensor(name).unwrap().ty.name();
    // llama.cpp's Q4_K_M: the tied embedding's 896-wide rows (not a multiple of 256) at Q8_0,
    // other 896-wide rows in the 32-block fallback, 4864-wide ones in Q4_K; norms stay F32.
    assert_eq!(ty("token_embd.weight"), "Q8_0");
    assert_eq!(ty("blk.0.attn_q.weight"), "Q5_0");
    assert_eq!(ty("blk.0.attn_norm.weight"), "F32");
    assert_eq!(ty("blk.0.ffn_down.weight"), "Q4_K");
    assert!(file.metadata.get("general.file_type").is_some());
    // Refusals name what is wrong.
    let o = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["synth", "qwen9", "x.gguf"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("qwen2.5-coder-1.5b"));
    let o = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["synth", "qwen2.5-coder-0.5b", dir.path().join("a.gguf").to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"));
}
