//! Helpers shared by the integration tests: locating pulled models, installing pinned Python
//! packages, and candle-transformers' reference models run on the same file.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

/// Path of a pulled catalog model; panics with the command that fetches it when missing.
pub fn model_path(id: &str) -> PathBuf {
    match hearth::catalog::resolve(id) {
        Ok(p) => p,
        Err(e) => panic!("{e}\nfetch the test models with: cargo run --release -- pull smollm2-135m-instruct-q4_1 gemma3-270m-q4_k_m"),
    }
}

/// Installs a pinned Python package (`name==version`) from PyPI into the target directory once;
/// returns the folder to put on `PYTHONPATH`.
pub fn python_package(spec: &str) -> PathBuf {
    let name = spec.split("==").next().unwrap_or(spec);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pydeps-{name}"));
    let marker = dir.join(format!("{spec}.installed"));
    if !marker.exists() {
        let status = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "--target"])
            .arg(&dir)
            .arg(spec)
            .status()
            .expect("running python3 -m pip (python3 and pip are needed for this test)");
        assert!(status.success(), "pip could not install {spec} into {}", dir.display());
        std::fs::write(&marker, "").unwrap();
    }
    dir
}

/// Runs `tests/python/SCRIPT ARGS…` with the pinned `packages` installed (off the async
/// runtime) and asserts it printed "ok", showing its output when it did not.
pub async fn run_python(script: &str, args: Vec<String>, packages: &'static [&'static str]) {
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        let paths: Vec<PathBuf> = packages.iter().map(|p| python_package(p)).collect();
        std::process::Command::new("python3").arg(&script).args(&args).env("PYTHONPATH", std::env::join_paths(paths).unwrap()).output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "ok", "the Python client's checks failed:\n{stdout}\n{stderr}");
}

/// The reference models from candle-transformers.
pub enum Reference {
    Llama(candle_transformers::models::quantized_llama::ModelWeights),
    Phi3(candle_transformers::models::quantized_phi3::ModelWeights),
    Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights),
    Qwen2(candle_transformers::models::quantized_qwen2::ModelWeights),
}

impl Reference {
    pub fn load(path: &std::path::Path) -> Reference {
        let mut f = std::fs::File::open(path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let arch = ct.metadata["general.architecture"].to_string().unwrap().clone();
        let dev = Device::Cpu;
        match arch.as_str() {
            "llama" => Reference::Llama(candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            "phi3" => Reference::Phi3(candle_transformers::models::quantized_phi3::ModelWeights::from_gguf(false, ct, &mut f, &dev).unwrap()),
            "gemma3" => Reference::Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            "qwen2" => Reference::Qwen2(candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &dev).unwrap()),
            a => panic!("no reference for {a}"),
        }
    }

    /// Logits of the last token of `tokens`, fed at position `pos`: `[vocab]`.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let x = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let out = match self {
            Reference::Llama(m) => m.forward(&x, pos),
            Reference::Phi3(m) => m.forward(&x, pos),
            Reference::Gemma3(m) => m.forward(&x, pos),
            Reference::Qwen2(m) => m.forward(&x, pos),
        }
        .unwrap();
        out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }
}

/// Greedy continuation of `prompt` by the reference, `n` tokens.
pub fn reference_greedy(path: &std::path::Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut r = Reference::load(path);
    let mut logits = r.forward(prompt, 0);
    let mut out = Vec::new();
    for i in 0..n {
        let t = hearth::engine::sampler::argmax(&logits);
        out.push(t);
        logits = r.forward(&[t], prompt.len() + i);
    }
    out
}

/// Feeds `prompt` and then the reference's own greedy tokens (`n` of them) to both hearth and the
/// reference. Returns the reference's tokens and, per step, the KL divergence of hearth's
/// next-token distribution from the reference's and, where hearth's top token differs from the
/// reference's, by how many logits the reference preferred its own.
pub fn teacher_forced(model: &hearth::model::Model, path: &std::path::Path, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<(f64, Option<f32>)>) {
    use hearth::engine::sampler::argmax;
    use hearth::model::{Chunk, Logits};
    let mut r = Reference::load(path);
    let mut cache = model.decoder.new_cache();
    let mut feed = prompt.to_vec();
    let (mut tokens, mut steps) = (Vec::new(), Vec::new());
    for i in 0..=n {
        let theirs = r.forward(&feed, if i == 0 { 0 } else { prompt.len() + i - 1 });
        let ours = model.decoder.forward(&mut [Chunk { tokens: &feed, cache: &mut cache, logits: Logits::Last }]).unwrap().remove(0).unwrap();
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (p, q) = (log_softmax(&theirs), log_softmax(&ours));
        let kl: f64 = p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum();
        let (a, b) = (argmax(&ours), argmax(&theirs));
        steps.push((kl, (a != b).then(|| theirs[b as usize] - theirs[a as usize])));
        if i == n {
            break;
        }
        tokens.push(b);
        feed = vec![b];
    }
    (tokens, steps)
}

/// Log-probabilities of a row of logits, in f64.
pub fn log_softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().copied().fold(f32::MIN, f32::max) as f64;
    let lse = m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    v.iter().map(|&x| x as f64 - lse).collect()
}

/// Greedy continuation of `prompt` by hearth's decoder, `n` tokens, ignoring end-of-generation.
pub fn hearth_greedy(model: &hearth::model::Model, prompt: &[u32], n: usize) -> Vec<u32> {
    use hearth::model::{Chunk, Logits};
    let mut cache = model.decoder.new_cache();
    let mut logits = model.decoder.forward(&mut [Chunk { tokens: prompt, cache: &mut cache, logits: Logits::Last }]).unwrap().remove(0).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = hearth::engine::sampler::argmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        out.push(t);
        logits = model.decoder.forward(&mut [Chunk { tokens: &[t], cache: &mut cache, logits: Logits::Last }]).unwrap().remove(0).unwrap();
    }
    out
}

pub mod pg;
pub mod server;
pub mod synth;

/// Loads hearth's decoder for a GGUF file, letting the test adjust the spec first. Its caches
/// hold f32, as candle-transformers' do (the references these decoders are compared with).
pub fn decoder_with(path: &std::path::Path, adjust: impl FnOnce(&mut hearth::model::ModelSpec)) -> hearth::model::Decoder {
    use hearth::model::{weights::Weights, CacheType, Decoder, GgufFile, ModelSpec};
    let file = GgufFile::open(path).unwrap();
    let mut spec = ModelSpec::from_gguf(&file).unwrap();
    adjust(&mut spec);
    let weights = Weights::load(&file, &spec, &Device::Cpu).unwrap();
    let mut dec = Decoder::new(spec, weights, Device::Cpu);
    assert_eq!(dec.set_cache_type(CacheType::F32).unwrap(), CacheType::F32);
    dec
}

/// Logits of every token of `tokens` fed as successive chunks of the given sizes.
pub fn chunked_logits(dec: &hearth::model::Decoder, tokens: &[u32], sizes: &[usize]) -> Vec<Vec<f32>> {
    use hearth::model::{Chunk, Logits};
    let mut cache = dec.new_cache();
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        let rows = dec.forward(&mut [Chunk { tokens: &tokens[at..at + n], cache: &mut cache, logits: Logits::From(0) }]).unwrap().remove(0).unwrap();
        out.extend(rows.to_vec2::<f32>().unwrap());
        at += n;
    }
    assert_eq!(at, tokens.len(), "chunk sizes must cover the tokens");
    out
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
pub fn rel_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(1f32, |m, x| m.max(x.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}
