//! Bad input gets a clear 4xx in OpenAI's error shape naming the field, never a panic or a hang;
//! API keys and CORS guard the server. All on a small synthetic model (no download) with
//! SmolLM2's context length and no fill-in-the-middle tokens, as SmolLM2 has none.

mod common;

use common::server::{error_of, write_synth_chat, Server, SYNTH, SYNTH_CONTEXT};
use hearth::api::{ModelNames, ServeConfig};
use hearth::engine::EngineConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let s = Server::synth().await;
    let chat = |extra: serde_json::Value| {
        let mut b = json!({ "messages": [{ "role": "user", "content": "Hi" }], "max_tokens": 4 });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // (path, body, status, param, code)
    let cases = vec![
        ("/v1/chat/completions", chat(json!({ "temperature": "hot" })), 400, Some("temperature"), None),
        ("/v1/chat/completions", chat(json!({ "temperature": 3.5 })), 400, Some("temperature"), None),
        ("/v1/chat/completions", chat(json!({ "top_p": 0 })), 400, Some("top_p"), None),
        ("/v1/chat/completions", chat(json!({ "n": 0 })), 400, Some("n"), None),
        ("/v1/chat/completions", chat(json!({ "n": 99 })), 400, Some("n"), None),
        ("/v1/chat/completions", chat(json!({ "max_tokens": 0 })), 400, Some("max_tokens"), None),
        ("/v1/chat/completions", chat(json!({ "max_tokens": 9000 })), 400, Some("max_tokens"), Some("context_length_exceeded")),
        ("/v1/chat/completions", chat(json!({ "presence_penalty": 5 })), 400, Some("presence_penalty"), None),
        ("/v1/chat/completions", chat(json!({ "logit_bias": { "abc": 1 } })), 400, Some("logit_bias"), None),
        ("/v1/chat/completions", chat(json!({ "logit_bias": { "99999999": 1 } })), 400, Some("logit_bias"), None),
        ("/v1/chat/completions", chat(json!({ "logit_bias": { "5": 500 } })), 400, Some("logit_bias"), None),
        ("/v1/chat/completions", chat(json!({ "top_logprobs": 3 })), 400, Some("top_logprobs"), None),
        ("/v1/chat/completions", chat(json!({ "logprobs": true, "top_logprobs": 50 })), 400, Some("top_logprobs"), None),
        ("/v1/chat/completions", chat(json!({ "tools": [{ "type": "web_search" }] })), 400, Some("tools[0].type"), None),
        ("/v1/chat/completions", chat(json!({ "response_format": { "type": "yaml" } })), 400, Some("response_format.type"), None),
        ("/v1/chat/completions", chat(json!({ "audio": { "voice": "x" } })), 400, Some("audio"), Some("unsupported_parameter")),
        ("/v1/chat/completions", chat(json!({ "frobnicate": 1 })), 400, Some("frobnicate"), Some("unknown_parameter")),
        ("/v1/chat/completions", chat(json!({ "stop": 5 })), 400, Some("stop"), None),
        ("/v1/chat/completions", chat(json!({ "stop": vec!["a"; 17] })), 400, Some("stop"), None),
        ("/v1/chat/completions", json!({ "messages": [] }), 400, Some("messages"), None),
        ("/v1/chat/completions", json!({ "max_tokens": 3 }), 400, Some("messages"), None),
        ("/v1/chat/completions", json!({ "messages": [{ "role": "wizard", "content": "x" }] }), 400, Some("messages[0].role"), None),
        ("/v1/chat/completions", json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "x" } }] }] }), 400, Some("messages[0].content"), None),
        ("/v1/chat/completions", json!({ "messages": [{ "role": "user", "content": 7 }] }), 400, Some("messages[0].content"), None),
        ("/v1/chat/completions", json!({ "messages": [{ "role": "user", "content": "x" }], "max_tokens": 1.5 }), 400, Some("max_tokens"), None),
        ("/v1/completions", json!({ "prompt": ["a", "b", "c"], "n": 6, "max_tokens": 1 }), 400, Some("n"), None),
        ("/v1/completions", json!({ "prompt": "x", "best_of": 3 }), 400, Some("best_of"), Some("unsupported_parameter")),
        ("/v1/completions", json!({ "prompt": "x", "suffix": "y" }), 400, Some("suffix"), None),
        ("/v1/completions", json!({ "prompt": "x", "logprobs": 6 }), 400, Some("logprobs"), None),
        ("/v1/completions", json!({ "prompt": [1, -2] }), 400, Some("prompt"), None),
        ("/v1/completions", json!({ "prompt": [1, 99999999] }), 400, Some("prompt"), None),
        ("/v1/completions", json!({ "prompt": { "a": 1 } }), 400, Some("prompt"), None),
        ("/v1/completions", json!({ "prompt": [] }), 400, Some("prompt"), None),
        ("/v1/completions", json!({ "prompt": "x", "echo": true, "suffix": "y" }), 400, Some("echo"), None),
        ("/v1/completions", json!({ "prompt": "word ".repeat(9000) }), 400, Some("prompt"), Some("context_length_exceeded")),
        ("/infill", json!({ "input_prefix": "def f(", "input_suffix": ")" }), 400, Some("input_prefix"), None),
        ("/detokenize", json!({ "tokens": [-1] }), 400, Some("tokens"), None),
        ("/tokenize", json!({ "text": "x" }), 400, Some("text"), Some("unknown_parameter")),
        ("/tokenize", json!({}), 400, Some("content"), None),
    ];
    for (path, body, status, param, code) in cases {
        let (st, _, v) = s.post(path, &body).await;
        let e = error_of(st, &v, status);
        assert_eq!(e["param"].as_str(), param, "param for {body}: {v}");
        if code.is_some() {
            assert_eq!(e["code"].as_str(), code, "code for {body}: {v}");
        }
    }
    // The context error names both numbers.
    let (_, _, v) = s.post("/v1/chat/completions", &chat(json!({ "max_tokens": 9000 }))).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&SYNTH_CONTEXT.to_string()) && msg.contains("9000"), "{msg}");
    // A prompt that cannot fit however it tokenizes is refused by its length, before tokenizing.
    let (st, _, v) = s.post("/v1/completions", &json!({ "prompt": "a".repeat(4 << 20), "max_tokens": 1 })).await;
    let e = error_of(st, &v, 400);
    assert!(e["code"] == "context_length_exceeded" && e["message"].as_str().unwrap().contains("bytes"), "{v}");
    // Malformed JSON, a non-JSON body, an oversized body and unknown routes.
    for raw in ["{\"messages\": [", "not json", ""] {
        let (st, v) = s.post_raw("/v1/chat/completions", raw).await;
        error_of(st, &v, 400);
    }
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(hearth::api::MAX_BODY + 10));
    let (st, v) = s.post_raw("/v1/completions", &huge).await;
    error_of(st, &v, 413);
    let (st, body) = s.get("/v2/nothing").await;
    error_of(st, &serde_json::from_str(&body).unwrap(), 404);
    // After all that, the server still answers.
    let (st, _, v) = s.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_model_name_is_served_unless_strict() {
    let s = Server::synth().await;
    let body = json!({ "model": "claude-sonnet-4-5", "messages": [{ "role": "user", "content": "Hi" }], "max_tokens": 3 });
    let (st, headers, v) = s.post("/v1/chat/completions", &body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["model"].as_str(), headers["x-hearth-model"].to_str().unwrap()), (Some("claude-sonnet-4-5"), SYNTH));
    let (_, rows) = s.get("/v1/ledger").await;
    let rows: serde_json::Value = serde_json::from_str(&rows).unwrap();
    assert_eq!((rows["data"][0]["model"].as_str(), rows["data"][0]["asked_model"].as_str()), (Some(SYNTH), Some("claude-sonnet-4-5")), "{rows}");

    let names = ModelNames { aliases: vec!["claude-*=synth-chat".parse().unwrap()], strict: true };
    let s = Server::synth_with(EngineConfig::default(), ServeConfig { names, ..ServeConfig::default() }).await;
    let ask = |model: &str| json!({ "model": model, "prompt": "x", "max_tokens": 2 });
    assert_eq!(s.post("/v1/completions", &ask("claude-haiku-4-5")).await.0, 200);
    assert_eq!(s.post("/v1/completions", &ask(SYNTH)).await.0, 200);
    let (st, _, v) = s.post("/v1/completions", &ask("gpt-4o")).await;
    assert_eq!(error_of(st, &v, 404)["code"], "model_not_found", "{v}");
    let (_, models) = s.get("/v1/models").await;
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][1]["id"], "claude-*", "{models}");
    assert_eq!(s.get("/v1/models/gpt-4o").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_use_a_loopback_server() {
    let config = ServeConfig { allowed_hosts: Some(vec!["hearth.lan".into()]), ..ServeConfig::default() };
    let s = Server::synth_with(EngineConfig::default(), config).await;
    let body = json!({ "prompt": "x", "max_tokens": 2 });
    let post = |host: &'static str, ct: &'static str| {
        s.client.post(format!("{}/v1/completions", s.url)).header("host", host).header("content-type", ct).body(body.to_string()).send()
    };
    // DNS rebinding: a page on attacker.example resolved to 127.0.0.1 sends its own Host.
    for (host, status) in [("attacker.example", 403), ("attacker.example:8080", 403), ("localhost:8080", 200), ("127.0.0.1", 200), ("[::1]:80", 200), ("hearth.lan", 200)] {
        let r = post(host, "application/json").await.unwrap();
        let st = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(st, status, "Host {host}: {v}");
        if status == 403 {
            assert_eq!(error_of(st, &v, 403)["code"], "host_not_allowed");
        }
    }
    // A cross-origin "simple request" (no preflight) cannot carry JSON: text/plain and forms are refused.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = post("localhost", ct).await.unwrap();
        let st = r.status().as_u16();
        assert_eq!(error_of(st, &r.json().await.unwrap(), 415)["code"], "unsupported_media_type", "{ct}");
    }
    assert_eq!(post("localhost", "application/json; charset=utf-8").await.unwrap().status(), 200);
    // The framework's own refusals are JSON too.
    let r = s.client.get(format!("{}/v1/chat/completions", s.url)).send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_of(st, &r.json().await.unwrap(), 405)["code"], "method_not_allowed");
    let r = s.client.get(format!("{}/v1/models?q={}", s.url, "a".repeat(10_000))).send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_of(st, &r.json().await.unwrap(), 414)["code"], "uri_too_long");
    let r = s.client.get(format!("{}/v1/models", s.url)).header("x-padding", "b".repeat(70_000)).send().await.unwrap();
    let st = r.status().as_u16();
    assert_eq!(error_of(st, &r.json().await.unwrap(), 431)["code"], "headers_too_large");
    // Anthropic's and Ollama's paths answer in their own shapes.
    let r = s.client.post(format!("{}/v1/messages", s.url)).header("content-type", "text/plain").body("{}").send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")), "{v}");
    let r = s.client.post(format!("{}/api/chat", s.url)).json(&json!({ "model": "x", "messages": [{ "role": "user", "content": "hi" }], "options": { "temperature": 9 } })).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().is_some_and(|m| m.contains("temperature")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_required_when_set_and_cors_allows_only_named_origins() {
    let config = ServeConfig { api_key: Some("sekret".into()), cors_origins: vec!["http://editor.local".into()], ..ServeConfig::default() };
    let s = Server::synth_with(EngineConfig::default(), config).await;
    let url = format!("{}/v1/models", s.url);
    let r = s.client.get(&url).send().await.unwrap();
    let status = r.status().as_u16();
    let e = error_of(status, &r.json().await.unwrap(), 401).clone();
    assert_eq!(e["code"], "invalid_api_key");
    let r = s.client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = s.client.get(&url).bearer_auth("sekret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Health stays open for load balancers.
    assert_eq!(s.get("/health").await.0, 200);
    // CORS preflight: the named origin is allowed, another is not.
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let ok = preflight("http://editor.local").await.unwrap();
    assert_eq!(ok.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("http://editor.local"));
    let other = preflight("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_model_is_loaded() {
    let state = hearth::api::AppState::new(ServeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = hearth::api::router(state.clone());
    tokio::spawn(hearth::api::serve(listener, app, hearth::api::Limits::default(), std::future::pending(), || {}));
    let client = reqwest::Client::new();
    let r = client.get(format!("{url}/health")).send().await.unwrap();
    let st = r.status().as_u16();
    let v = r.json().await.unwrap();
    assert_eq!(error_of(st, &v, 503)["code"], "model_loading");
    let r = client.post(format!("{url}/v1/completions")).json(&json!({ "prompt": "x" })).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_synth_chat(&path);
    let model = hearth::model::Model::load(&path, &candle_core::Device::Cpu).unwrap();
    state.set_engine(hearth::engine::Engine::start(model, "m".into(), EngineConfig::default()));
    assert_eq!(client.get(format!("{url}/health")).send().await.unwrap().status(), 200);
    let r = client.post(format!("{url}/v1/completions")).json(&json!({ "prompt": "x", "max_tokens": 2 })).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A random JSON value: every type, edge numbers, odd strings, nesting.
fn random_value(rng: &mut impl rand::Rng, depth: u32) -> serde_json::Value {
    let strings = ["", "x", "<|im_end|>", "<|endoftext|>", "Hello, world", "\u{0}", "é\u{301}🦀", "\n\n", "user", "system", "text", "-1"];
    match rng.random_range(0..if depth > 2 { 6 } else { 9 }) {
        0 => json!(null),
        1 => json!(rng.random_bool(0.5)),
        2 => json!([0i64, 1, -1, 2, 5, 17, 4096, i64::MAX, i64::MIN][rng.random_range(0..9)]),
        3 => json!([0.0, 0.5, -0.5, 1.5, 2.0, 1e30, -1e-30][rng.random_range(0..7)]),
        4 | 5 => json!(strings[rng.random_range(0..strings.len())]),
        6 => (0..rng.random_range(0..4)).map(|_| random_value(rng, depth + 1)).collect(),
        _ => {
            let keys = ["role", "content", "type", "text", "filename", "include_usage", "0", "2", "abc"];
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(keys[rng.random_range(0..keys.len())].into(), random_value(rng, depth + 1));
            }
            serde_json::Value::Object(m)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_break_the_server() {
    use rand::{Rng, SeedableRng};
    let s = Server::synth().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let fields = [
        "model", "prompt", "messages", "suffix", "temperature", "top_p", "top_k", "min_p", "n", "stop", "seed", "echo", "logprobs",
        "top_logprobs", "presence_penalty", "frequency_penalty", "repeat_penalty", "logit_bias", "stream", "stream_options", "best_of",
        "user", "tools", "tool_choice", "response_format", "json_schema", "grammar", "input_prefix", "input_suffix", "input_extra", "content", "tokens", "add_special", "bogus",
    ];
    let paths = ["/v1/completions", "/v1/chat/completions", "/infill", "/tokenize", "/detokenize"];
    let mut answered = std::collections::BTreeMap::new();
    for i in 0..300 {
        let path = paths[i % paths.len()];
        let mut body = serde_json::Map::new();
        for _ in 0..rng.random_range(0..6) {
            body.insert(fields[rng.random_range(0..fields.len())].into(), random_value(&mut rng, 0));
        }
        // Keep generations short whatever else is drawn.
        let limit = json!([1, 2, 0, -1, 1_000_000_000][rng.random_range(0..5)]);
        match path {
            "/v1/completions" => {
                body.insert("max_tokens".into(), limit);
                body.entry("prompt").or_insert_with(|| random_value(&mut rng, 1));
            }
            "/v1/chat/completions" => {
                body.insert("max_tokens".into(), limit);
                body.entry("messages").or_insert_with(|| json!([{ "role": "user", "content": random_value(&mut rng, 1) }]));
            }
            "/infill" => {
                body.insert("n_predict".into(), limit);
            }
            _ => {}
        }
        let body = serde_json::Value::Object(body);
        let (st, _, v) = s.post(path, &body).await;
        assert!(st < 500, "{path} answered {st} to {body}: {v}");
        if st != 200 {
            error_of(st, &v, st);
        }
        *answered.entry((path, st)).or_insert(0) += 1;
    }
    eprintln!("{answered:?}");
    // Some random bodies are valid and were served; the server is still healthy.
    assert!(answered.iter().any(|((_, st), _)| *st == 200));
    assert_eq!(s.get("/health").await.0, 200);
    assert_eq!(s.metric("hearth_running_sequences").await, 0.0);
}
