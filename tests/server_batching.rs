//! The engine under load, over real HTTP with a small synthetic model (no download): continuous
//! batching (one forward per step for all requests, same greedy text as alone), cancellation, a
//! full queue, and prefix reuse. `smollm2_end_to_end.rs` checks batching on the real SmolLM2 too.

mod common;

use std::time::{Duration, Instant};

use common::server::{error_of, synth_no_eog, Server, SYNTH_CONTEXT};
use futures_util::StreamExt;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;
use serde_json::{json, Value};

/// As many tokens as the context leaves: the synthetic model is fast, but attention over
/// thousands of positions makes this take seconds, so a request that stops early was stopped.
const LONG: usize = SYNTH_CONTEXT - 100;

fn long_request(stream: bool) -> Value {
    json!({ "prompt": "Write a very long story:", "max_tokens": LONG, "temperature": 0, "logit_bias": synth_no_eog(), "stream": stream })
}

async fn wait_for(s: &Server, metric: &str, want: f64) {
    let start = Instant::now();
    while s.metric(metric).await != want {
        assert!(start.elapsed() < Duration::from_secs(10), "{metric} did not reach {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_steps_and_keep_their_own_text() {
    let s = Server::synth_fresh().await;
    s.batched_equals_alone(24, synth_no_eog()).await;
    assert!(s.metric("hearth_engine_step_sequences_total").await > s.metric("hearth_engine_steps_total").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_cancelled_and_frees_its_slot() {
    let s = std::sync::Arc::new(Server::synth().await);
    // Streaming: read two events, then hang up.
    let r = s.client.post(format!("{}/v1/completions", s.url)).json(&long_request(true)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = 0;
    while seen < 2 {
        let chunk = body.next().await.unwrap().unwrap();
        seen += String::from_utf8_lossy(&chunk).matches("data: ").count();
    }
    assert_eq!(s.metric("hearth_running_sequences").await, 1.0);
    drop(body);
    wait_for(&s, "hearth_running_sequences", 0.0).await;
    // Not streaming: the client gives up once its request runs.
    let waiting = s.clone();
    let r = tokio::spawn(async move { waiting.post("/v1/completions", &long_request(false)).await });
    wait_for(&s, "hearth_running_sequences", 1.0).await;
    r.abort();
    assert!(r.await.unwrap_err().is_cancelled(), "the request was still running");
    wait_for(&s, "hearth_running_sequences", 0.0).await;
    // Both stopped early: together they generated fewer tokens than either asked for.
    let generated = s.metric("hearth_generated_tokens_total").await;
    assert!(generated < LONG as f64, "{generated} tokens generated");
    let (st, _, _) = s.post("/v1/completions", &json!({ "prompt": "Hi", "max_tokens": 2 })).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_the_server_recovers() {
    let cfg = EngineConfig { max_running: 1, queue: 1, ..EngineConfig::default() };
    let s = std::sync::Arc::new(Server::synth_with(cfg, ServeConfig::default()).await);
    let spawn = |s: std::sync::Arc<Server>| tokio::spawn(async move { s.post("/v1/completions", &long_request(false)).await });
    let a = spawn(s.clone());
    wait_for(&s, "hearth_running_sequences", 1.0).await;
    let b = spawn(s.clone());
    wait_for(&s, "hearth_queue_depth", 1.0).await;
    let (st, headers, v) = s.post("/v1/completions", &json!({ "prompt": "Hi", "max_tokens": 10 })).await;
    assert_eq!(error_of(st, &v, 429)["code"], "queue_full");
    assert_eq!(headers.get("retry-after").map(|h| h.to_str().unwrap()), Some("1"), "429 says when to retry");
    assert!(v["error"]["type"] == "rate_limit_error");
    a.abort();
    b.abort();
    wait_for(&s, "hearth_queue_depth", 0.0).await;
    wait_for(&s, "hearth_running_sequences", 0.0).await;
    let (st, _, v) = s.post("/v1/completions", &json!({ "prompt": "Hi", "max_tokens": 2 })).await;
    assert_eq!(st, 200, "{v}");
    assert!(s.get("/metrics").await.1.contains(r#"hearth_requests_total{endpoint="/v1/completions",status="429"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_resending_its_file_pays_only_for_new_tokens() {
    let s = Server::synth().await;
    let file = include_str!("../src/engine/stop.rs");
    let first: String = file.chars().take(1500).collect();
    let body = |p: &str| json!({ "prompt": p, "max_tokens": 4, "temperature": 0, "logprobs": 1 });
    let (_, h1, v1) = s.post("/v1/completions", &body(&first)).await;
    let p1 = v1["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(p1 as usize, first.len(), "one token per byte");
    assert_eq!(v1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(h1["x-hearth-cached-tokens"], "0");
    // A few characters typed at the end.
    let second = format!("{first}\n    // typed");
    let (_, h2, v2) = s.post("/v1/completions", &body(&second)).await;
    let cached = v2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let p2 = v2["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached + 2 >= p1 && cached < p2, "{cached} of {p2} tokens reused after a {p1}-token request");
    assert_eq!(h2["x-hearth-cached-tokens"], cached.to_string().as_str());
    assert!(s.metric("hearth_cached_prompt_tokens_total").await >= cached as f64);
    // The reused cache gives the numbers a fresh computation gives, up to the difference between
    // the two matmul paths: the fresh prompt chunks multiply f32 activations by dequantized
    // weights, while the few new tokens go through the kernels that quantize activations to 8
    // bits first (as every decode step does); that moves a logprob by a few hundredths.
    let fresh = Server::synth_fresh().await;
    let (_, _, v3) = fresh.post("/v1/completions", &body(&second)).await;
    assert_eq!(v3["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let lp = |v: &Value| v["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().unwrap();
    assert!((lp(&v2) - lp(&v3)).abs() < 0.1, "first-token logprob {} with reuse, {} without", lp(&v2), lp(&v3));
    assert_eq!(v2["choices"][0]["logprobs"]["tokens"][0], v3["choices"][0]["logprobs"]["tokens"][0]);
}
