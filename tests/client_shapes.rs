//! Request bodies in the shapes Claude Code (its main turn with tools and tool results, and its
//! background Haiku call), Codex CLI (Responses with reasoning items, custom and hosted tools) and
//! Continue (Ollama chat and `raw` + `suffix` autocomplete) send, replayed from
//! `tests/fixtures/clients/`: each gets 200 and a well-formed stream in its protocol, whatever
//! output limit it asks for. On synthetic models (no download).

mod common;

use common::server::Server;
use common::synth::{self, Synth};
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Posts `body` and returns the response's status, content type and body text.
async fn replay(s: &Server, path: &str, body: &Value) -> (u16, String, String) {
    let r = s.client.post(format!("{}{path}", s.url)).json(body).send().await.unwrap();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status().as_u16(), ct, r.text().await.unwrap())
}

/// The JSON payloads of an SSE body, with their event names.
fn sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"))));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_codex_and_continue_requests_are_answered() {
    let s = Server::synth().await;
    for name in ["claude_code_main.json", "claude_code_haiku.json"] {
        let (st, ct, text) = replay(&s, "/v1/messages", &fixture(name)).await;
        assert_eq!((st, ct.starts_with("text/event-stream")), (200, true), "{name}: {text}");
        let events = sse(&text);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!((names[0], names[names.len() - 1]), ("message_start", "message_stop"), "{name}");
        assert!(events.iter().all(|(n, v)| v["type"] == n.as_str()), "{name}: event names and types agree");
        let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert!(["end_turn", "max_tokens", "tool_use"].contains(&delta["delta"]["stop_reason"].as_str().unwrap()), "{delta}");
    }

    let (st, ct, text) = replay(&s, "/v1/responses", &fixture("codex_cli.json")).await;
    assert_eq!((st, ct.starts_with("text/event-stream")), (200, true), "{text}");
    let events = sse(&text);
    assert_eq!(events[0].1["type"], "response.created");
    let last = &events[events.len() - 1].1;
    assert!(["response.completed", "response.incomplete"].contains(&last["type"].as_str().unwrap()), "{last}");
    assert!(last["response"]["output"].as_array().is_some_and(|o| !o.is_empty()), "{last}");

    let (st, ct, text) = replay(&s, "/api/chat", &fixture("continue_chat.json")).await;
    assert_eq!((st, ct.as_str()), (200, "application/x-ndjson"), "{text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done = lines.last().unwrap();
    assert!(done["done"] == true && done["eval_count"].as_u64().is_some() && done["model"] == "qwen2.5-coder:1.5b", "{done}");

    // Autocomplete needs fill-in-the-middle tokens: the synthetic qwen2 model has them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fim.gguf");
    synth::write(&path, &Synth { context: 4096, ..Synth::new("qwen2") });
    let fim = Server::start(&path, "synth-fim", EngineConfig::default(), ServeConfig::default()).await;
    let (st, _, text) = replay(&fim, "/api/generate", &fixture("continue_autocomplete.json")).await;
    assert_eq!(st, 200, "{text}");
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(last["done"] == true && last["done_reason"].is_string(), "{last}");
}
