//! A real hearth server on a loopback port, for the HTTP tests, and small client helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use hearth::api::{router, AppState, ServeConfig};
use hearth::engine::{Engine, EngineConfig};
use hearth::ledger::{Ledger, PriceTable};
use hearth::model::Model;
use serde_json::Value;

pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    pub engine: Engine,
    /// The server's cost ledger, in a directory of its own.
    pub ledger: Arc<Ledger>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Loads `path` and serves it on 127.0.0.1 on a free port, on the current tokio runtime.
    pub async fn start(path: &Path, id: &str, engine: EngineConfig, config: ServeConfig) -> Server {
        hearth::model::device::pin_thread_count();
        let model = Model::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        let engine = Engine::start(model, id.to_owned(), engine);
        let state = AppState::with_engine(config, engine.clone());
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&dir.path().join("ledger.sqlite"), PriceTable::built_in()).unwrap());
        state.set_ledger(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Server { url, client, engine, ledger, _dir: dir }
    }

    pub async fn smollm2() -> Server {
        Self::smollm2_with(EngineConfig::default(), ServeConfig::default()).await
    }

    /// Without prefix reuse, so that repeated requests compute exactly the same numbers: reusing a
    /// prefix computes the prompt's last token alone instead of inside a chunk, and the f32 matmul
    /// of attention scores rounds differently for 1 row than for 32 or more.
    pub async fn smollm2_fresh() -> Server {
        Self::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, ServeConfig::default()).await
    }

    pub async fn smollm2_with(engine: EngineConfig, config: ServeConfig) -> Server {
        let path = super::model_path("smollm2-135m-instruct-q4_1");
        Self::start(&path, "smollm2-135m-instruct-q4_1", engine, config).await
    }

    /// POSTs `body` and returns the status, headers and JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.client.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}"));
        (status, headers, json)
    }

    /// POSTs a raw body.
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self.client.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body.to_owned()).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POSTs a streaming request and returns every `data:` payload, `[DONE]` included.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = self.client.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "streaming {path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        let text = r.text().await.unwrap();
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
    }

    /// The value of one metric line (first match of `name` followed by a space or `{`).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
    }
}

/// Checks OpenAI's error shape and returns the error object.
pub fn error_of(status: u16, body: &Value, want_status: u16) -> &Value {
    assert_eq!(status, want_status, "status for {body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error message in {body}");
    assert!(e["type"].is_string(), "error type in {body}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "param and code keys in {body}");
    e
}
