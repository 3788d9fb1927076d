//! Peak memory when loading and running Gemma 3 stays under twice the file size (weights stay
//! quantized, the embedding included). Its own test binary, so nothing else runs in the process.

mod common;

use candle_core::Device;
use hearth::engine::{Engine, GenRequest, SamplerConfig};
use hearth::model::Model;

fn peak_rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[test]
fn gemma3_peak_rss_is_under_twice_the_file() {
    let path = common::model_path("gemma3-270m-q4_k_m");
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let model = Model::load(&path, &Device::Cpu).unwrap();
    let prompt = model.vocab.encode(&"The quick brown fox jumps over the lazy dog. ".repeat(40), true).unwrap();
    let engine = Engine::start(model, String::new(), Default::default());
    engine.generate(GenRequest::new(prompt, 16, SamplerConfig::default()), |_| {}).unwrap();
    let peak = peak_rss_bytes();
    assert!(peak < 2 * size, "peak RSS {} MB for a {} MB file", peak / 1_000_000, size / 1_000_000);
}
