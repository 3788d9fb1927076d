//! What only the real SmolLM2 (a pulled catalog model) can show end to end: `hearth run` writes
//! the right answer; over HTTP, `/tokenize` gives llama.cpp's ids for the file, a greedy
//! completion equals the library's on the same file, and concurrent requests batched on its Q4_1
//! weights each get exactly the text they get alone. The API's shapes, errors, streaming and the
//! engine's mechanics are tested on a synthetic model in `server*.rs` and `cli.rs`.

mod common;

use std::process::Command;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;
use serde_json::{json, Value};

const MODEL: &str = "smollm2-135m-instruct-q4_1";

#[test]
fn run_streams_text_and_reports_speed() {
    common::model_path(MODEL);
    let hearth = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = hearth(&["run", "--temperature", "0", "--max-tokens", "12", "The capital of France is"]);
    assert!(ok, "{err}");
    assert!(out.contains("Paris"), "{out}");
    assert!(err.contains("tok/s") && err.contains("generation: 12 tokens"), "{err}");
    let args = ["run", "--chat", "--seed", "11", "--temperature", "0.9", "--max-tokens", "16", "Tell me a story."];
    assert_eq!(hearth(&args).1, hearth(&args).1, "same seed, same text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_matches_llama_cpp_and_greedy_text_matches_the_library() {
    let s = Server::smollm2().await;
    let (_, body) = s.get("/v1/models").await;
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["meta"]["context_length"], 8192);
    let (st, _, tok) = s.post("/tokenize", &json!({ "content": "hello world" })).await;
    assert_eq!(st, 200);
    // llama.cpp's llama-tokenize gives these ids for this file.
    assert_eq!(tok["tokens"], json!([28120, 905]));
    let (_, _, pieces) = s.post("/tokenize", &json!({ "content": "hello world", "with_pieces": true })).await;
    assert_eq!(pieces["tokens"][1], json!({ "id": 905, "piece": " world" }));
    let (st, _, detok) = s.post("/detokenize", &json!({ "tokens": [28120, 905] })).await;
    assert_eq!((st, detok["content"].as_str()), (200, Some("hello world")));

    let prompt = "The three primary colors are";
    let (st, _, v) = s.post("/v1/completions", &json!({ "model": MODEL, "prompt": prompt, "max_tokens": 20, "temperature": 0 })).await;
    assert_eq!(st, 200, "{v}");
    // The same generation through a fresh engine of its own (one sequence, no HTTP).
    let model = hearth::model::Model::load(&common::model_path(MODEL), &candle_core::Device::Cpu).unwrap();
    let ids = model.vocab.encode(prompt, true).unwrap();
    let engine = hearth::engine::Engine::start(model, String::new(), Default::default());
    let req = hearth::engine::GenRequest::new(ids.clone(), 20, Default::default());
    let g = tokio::task::spawn_blocking(move || engine.generate(req, |_| {})).await.unwrap().unwrap();
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), g.text);
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    assert_eq!(v["usage"]["completion_tokens"], g.tokens.len());
    assert_eq!(v["choices"][0]["finish_reason"], g.finish.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_steps_and_keep_their_own_text() {
    let s = Server::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, ServeConfig::default()).await;
    // SmolLM2's end-of-generation tokens banned, so every request runs to its length.
    s.batched_equals_alone(24, json!({ "0": -100, "1": -100, "2": -100 })).await;
}
