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
use serde_json::{json, Value};

use super::synth::Synth;

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
        Self::start_in(tempfile::tempdir().unwrap(), path, id, engine, config).await
    }

    /// As [`Server::start`], keeping `dir` (which holds the ledger, and may hold the model) alive.
    async fn start_in(dir: tempfile::TempDir, path: &Path, id: &str, engine: EngineConfig, config: ServeConfig) -> Server {
        Self::start_limited(dir, path, id, engine, config, hearth::api::Limits::default()).await
    }

    /// The synthetic model behind a listener with these connection limits.
    pub async fn synth_limited(limits: hearth::api::Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{SYNTH}.gguf"));
        write_synth_chat(&path);
        Self::start_limited(dir, &path, SYNTH, EngineConfig::default(), ServeConfig::default(), limits).await
    }

    async fn start_limited(dir: tempfile::TempDir, path: &Path, id: &str, engine: EngineConfig, config: ServeConfig, limits: hearth::api::Limits) -> Server {
        hearth::model::device::pin_thread_count();
        let model = Model::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        let engine = Engine::start(model, id.to_owned(), engine);
        let state = AppState::with_engine(config, engine.clone());
        let ledger = Arc::new(Ledger::open(&dir.path().join("ledger.sqlite"), PriceTable::built_in()).unwrap());
        state.set_ledger(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hearth::api::serve(listener, router(state), limits, std::future::pending(), || {}));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Server { url, client, engine, ledger, _dir: dir }
    }

    /// The synthetic chat model (see [`write_synth_chat`]): no download, starts in well under a
    /// second, for every test whose assertions do not depend on what a real model writes.
    pub async fn synth() -> Server {
        Self::synth_with(EngineConfig::default(), ServeConfig::default()).await
    }

    /// The synthetic model without prefix reuse (see [`Server::smollm2_fresh`] for why).
    pub async fn synth_fresh() -> Server {
        Self::synth_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, ServeConfig::default()).await
    }

    pub async fn synth_with(engine: EngineConfig, config: ServeConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{SYNTH}.gguf"));
        write_synth_chat(&path);
        Self::start_in(dir, &path, SYNTH, engine, config).await
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

    /// Sends the four prompts one at a time, then all at once, each asking for `n` tokens with
    /// the end-of-generation tokens banned by `no_eog`; checks every batched request gets the
    /// text it got alone and that they shared steps. Returns the time alone and together.
    pub async fn batched_equals_alone(&self, n: usize, no_eog: Value) -> (Duration, Duration) {
        let prompts = ["The capital of Italy is", "def add(a, b):", "Roses are red,", "1, 2, 3, 4,"];
        let body = |p: &str| json!({ "prompt": p, "max_tokens": n, "temperature": 0, "logit_bias": no_eog });
        let mut alone = Vec::new();
        let t = std::time::Instant::now();
        for p in prompts {
            let (st, _, v) = self.post("/v1/completions", &body(p)).await;
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["usage"]["completion_tokens"], n);
            alone.push(v["choices"][0]["text"].as_str().unwrap().to_owned());
        }
        let serial = t.elapsed();
        let steps_before = self.metric("hearth_engine_steps_total").await;
        let t = std::time::Instant::now();
        let bodies: Vec<Value> = prompts.iter().map(|p| body(p)).collect();
        let together = futures_util::future::join_all(bodies.iter().map(|b| self.post("/v1/completions", b))).await;
        let concurrent = t.elapsed();
        let steps = self.metric("hearth_engine_steps_total").await - steps_before;
        for (i, (st, _, v)) in together.iter().enumerate() {
            assert_eq!(*st, 200);
            assert_eq!(v["choices"][0]["text"].as_str().unwrap(), alone[i], "request {i} changed when batched");
        }
        // One at a time would take 4 × n steps; batched, they share steps.
        assert!(steps < (2 * n) as f64, "{steps} steps for 4 concurrent requests of {n} tokens");
        eprintln!("4 requests one after another: {serial:?}; together: {concurrent:?} in {steps} steps");
        (serial, concurrent)
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

/// The id the synthetic chat model is served under.
pub const SYNTH: &str = "synth-chat";
/// Its context length: SmolLM2's, so that limits and their messages are the real ones.
pub const SYNTH_CONTEXT: usize = 8192;
/// Its `<|endoftext|>` (also EOS) and `<|im_end|>`: the tokens that end a generation.
pub const SYNTH_EOG: [u32; 2] = [256, 258];
/// Its vocabulary size: 256 bytes and 3 special tokens.
pub const SYNTH_VOCAB: u32 = 259;

/// SmolLM2's chat template (ChatML), as its GGUF file carries it.
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}\
{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Writes the synthetic chat model: a llama-architecture file with random weights (2 layers,
/// 256 wide), a byte-level vocabulary (token `b` is byte `b`, no merges) followed by
/// `<|endoftext|>` (256), `<|im_start|>` (257) and `<|im_end|>` (258), a ChatML chat template in
/// its metadata, no fill-in-the-middle tokens, and an 8192-token context. Its text is noise, but
/// tokenization, chat templating, limits, sampling and the engine are the real ones.
pub fn write_synth_chat(path: &Path) {
    let s = Synth {
        context: SYNTH_CONTEXT,
        specials: vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        chat_template: Some(CHATML),
        ..Synth::new("llama")
    };
    super::synth::write(path, &s);
}

/// `logit_bias` that bans the synthetic model's end-of-generation tokens, so that every request
/// runs to its `max_tokens`.
pub fn synth_no_eog() -> Value {
    Value::Object(SYNTH_EOG.iter().map(|t| (t.to_string(), json!(-100))).collect())
}

/// `logit_bias` that bans every token but printable ASCII and `\n` (the special tokens included),
/// so that each generated token is one whole character and a request runs to its `max_tokens`.
pub fn synth_ascii() -> Value {
    let banned = (0u32..32).filter(|&b| b != b'\n' as u32).chain(127..SYNTH_VOCAB);
    Value::Object(banned.map(|t| (t.to_string(), json!(-100))).collect())
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
