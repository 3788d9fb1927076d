//! Ollama's API, as Continue, Zed, VS Code Copilot (BYOK "Ollama") and Aider speak it:
//! `/api/chat` and `/api/generate` (with `suffix` for fill-in-the-middle, `raw`, `format`,
//! `options`) converted at the edge into the shared chat or completion request, and the model
//! routes (`/api/tags`, `/api/show`, `/api/ps`, `/api/version`). Streams are NDJSON and on by
//! default, as in Ollama; errors are `{"error": "…"}`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::engine::ModelInfo;

use super::error::{ApiError, Shape};
use super::handlers::{answer, validated, ApiJson};
use super::openai::{ChatRequest, CompletionRequest};
use super::validate;
use super::wire::{OLLAMA_CHAT, OLLAMA_GENERATE};
use super::AppState;

/// The Ollama version hearth answers as: recent enough for clients that check (tools, `suffix`).
pub const OLLAMA_VERSION: &str = "0.14.0";

#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: Option<String>,
    #[serde(default)]
    pub messages: Vec<Value>,
    pub tools: Option<Value>,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Map<String, Value>,
    pub stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    pub model: Option<String>,
    #[serde(default)]
    pub prompt: String,
    pub suffix: Option<String>,
    pub system: Option<String>,
    #[serde(default)]
    pub raw: bool,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Map<String, Value>,
    pub stream: Option<bool>,
}

/// Ollama's `options` under the shared request's names. `num_predict` -1 (or none) means until
/// the context is full; `num_ctx` and tuning knobs hearth has no use for are accepted.
fn options(o: &Map<String, Value>, into: &mut Value) {
    let pairs = [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("repeat_penalty", "repeat_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ];
    for (from, to) in pairs {
        if let Some(v) = o.get(from).filter(|v| !v.is_null()) {
            into[to] = v.clone();
        }
    }
    if let Some(n) = o.get("num_predict").and_then(Value::as_i64).filter(|&n| n >= 0) {
        into["max_tokens"] = json!(n.max(1));
    }
}

/// `format`: "json" or a JSON Schema.
fn response_format(f: Option<&Value>) -> Result<Value, ApiError> {
    Ok(match f {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::String(s)) if s == "json" => json!({ "type": "json_object" }),
        Some(s @ Value::Object(_)) => json!({ "type": "json_schema", "json_schema": { "name": "format", "schema": s } }),
        Some(other) => return Err(ApiError::invalid("format", format!("`format` must be \"json\" or a JSON Schema, got {other}"))),
    })
}

/// Ollama's messages as the shared chat's: calls get ids (Ollama's have none) and each `tool`
/// message answers the earliest unanswered call of its `tool_name`.
fn chat_request(b: ChatBody) -> Result<ChatRequest, ApiError> {
    let mut messages = Vec::new();
    let mut open: Vec<(String, String)> = Vec::new();
    for (i, m) in b.messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if m.get("images").is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
            return Err(ApiError::invalid(&format!("messages[{i}].images"), format!("`messages[{i}].images`: this model reads text only")));
        }
        let mut out = json!({ "role": role, "content": m.get("content").cloned().unwrap_or(json!("")) });
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let id = c.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
                    let name = c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    open.push((id.clone(), name.clone()));
                    let args = c.pointer("/function/arguments").cloned().unwrap_or_else(|| json!({}));
                    let args = if let Value::String(s) = args { s } else { args.to_string() };
                    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": args } })
                })
                .collect();
            out["tool_calls"] = Value::Array(calls);
        }
        if role == "tool" {
            let name = m.get("tool_name").or(m.get("name")).and_then(Value::as_str);
            let at = open.iter().position(|(_, n)| name.is_none_or(|name| n == name));
            let id = match m.get("tool_call_id").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => at.map(|k| open.remove(k).0).unwrap_or_default(),
            };
            out["tool_call_id"] = json!(id);
        }
        messages.push(out);
    }
    let mut chat = json!({ "model": b.model, "messages": messages, "tools": b.tools, "response_format": response_format(b.format.as_ref())?, "stream": b.stream.unwrap_or(true) });
    options(&b.options, &mut chat);
    serde_json::from_value(chat).map_err(|e| ApiError::invalid("messages", format!("the request cannot be read: {e}")))
}

pub async fn chat(State(st): State<AppState>, headers: HeaderMap, body: Result<ApiJson<ChatBody>, ApiError>) -> Response {
    let run = async {
        let ApiJson(b) = body?;
        let engine = st.engine()?;
        let asked = st.names().resolve(b.model.as_deref(), engine.info())?;
        let req = chat_request(b)?;
        let plan = validated(&st, &engine, "/api/chat", &headers, move |info| validate::chat_up_to(req, "num_predict", info)).await?;
        answer(&st, &engine, &OLLAMA_CHAT, "/api/chat", &headers, plan, asked).await
    };
    run.await.unwrap_or_else(|e| e.shaped(Shape::Ollama).into_response())
}

pub async fn generate(State(st): State<AppState>, headers: HeaderMap, body: Result<ApiJson<GenerateBody>, ApiError>) -> Response {
    let run = async {
        let ApiJson(b) = body?;
        let engine = st.engine()?;
        let asked = st.names().resolve(b.model.as_deref(), engine.info())?;
        if b.prompt.is_empty() && b.suffix.is_none() {
            // Ollama's way to load a model: an empty prompt answers at once.
            return Ok(Json(json!({ "model": asked, "created_at": chrono::Utc::now().to_rfc3339(), "response": "", "done": true, "done_reason": "load" })).into_response());
        }
        let format = response_format(b.format.as_ref())?;
        let stream = b.stream.unwrap_or(true);
        let plan = if b.raw || b.suffix.is_some() {
            let mut req = json!({ "prompt": b.prompt, "suffix": b.suffix, "stream": stream, "response_format": format });
            options(&b.options, &mut req);
            // As many tokens as asked, or until the context is full, whichever comes first.
            let limit = req.as_object_mut().and_then(|o| o.remove("max_tokens")).and_then(|v| v.as_u64()).map_or(usize::MAX, |n| n as usize);
            let req: CompletionRequest = serde_json::from_value(req).map_err(|e| ApiError::invalid("prompt", format!("the request cannot be read: {e}")))?;
            validated(&st, &engine, "/api/generate", &headers, move |info| {
                let mut plan = validate::completion(req, info)?;
                for r in &mut plan.requests {
                    r.max_tokens = info.context_length.saturating_sub(r.prompt.len()).clamp(1, limit);
                }
                Ok(plan)
            })
            .await?
        } else {
            let mut messages = Vec::new();
            if let Some(s) = b.system.filter(|s| !s.is_empty()) {
                messages.push(json!({ "role": "system", "content": s }));
            }
            messages.push(json!({ "role": "user", "content": b.prompt }));
            let body = ChatBody { model: None, messages, tools: None, format: b.format, options: b.options, stream: Some(stream) };
            let req = chat_request(body)?;
            validated(&st, &engine, "/api/generate", &headers, move |info| validate::chat_up_to(req, "num_predict", info)).await?
        };
        answer(&st, &engine, &OLLAMA_GENERATE, "/api/generate", &headers, plan, asked).await
    };
    run.await.unwrap_or_else(|e: ApiError| e.shaped(Shape::Ollama).into_response())
}

/// The served model as Ollama lists it.
fn listing(info: &ModelInfo, name: &str) -> Value {
    json!({
        "name": name, "model": name, "modified_at": chrono::Utc::now().to_rfc3339(), "size": info.file_size,
        "digest": format!("{:064x}", 0), "details": details(info),
    })
}

fn details(info: &ModelInfo) -> Value {
    json!({ "parent_model": "", "format": "gguf", "family": info.arch, "families": [info.arch], "parameter_size": "", "quantization_level": info.quantization })
}

pub async fn tags(State(st): State<AppState>) -> Response {
    match st.engine() {
        Ok(e) => Json(json!({ "models": [listing(e.info(), &e.info().id)] })).into_response(),
        Err(e) => e.shaped(Shape::Ollama).into_response(),
    }
}

pub async fn ps(State(st): State<AppState>) -> Response {
    match st.engine() {
        Ok(e) => {
            let mut m = listing(e.info(), &e.info().id);
            m["expires_at"] = json!("9999-12-31T23:59:59Z");
            m["size_vram"] = json!(0);
            m["context_length"] = json!(e.info().context_length);
            Json(json!({ "models": [m] })).into_response()
        }
        Err(e) => e.shaped(Shape::Ollama).into_response(),
    }
}

pub async fn version() -> Response {
    Json(json!({ "version": OLLAMA_VERSION })).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ShowBody {
    pub model: Option<String>,
    pub name: Option<String>,
}

/// `/api/show`: what Continue reads to choose context size and whether to autocomplete (`insert`).
pub async fn show(State(st): State<AppState>, body: Result<ApiJson<ShowBody>, ApiError>) -> Response {
    let run = || {
        let ApiJson(b) = body?;
        let engine = st.engine()?;
        let info = engine.info();
        st.names().resolve(b.model.as_deref().or(b.name.as_deref()), info)?;
        let mut caps = vec!["completion", "tools"];
        if info.fim.is_some() {
            caps.push("insert");
        }
        let arch = &info.arch;
        let model_info = json!({
            "general.architecture": arch, "general.name": info.name, "general.file_type": info.quantization,
            format!("{arch}.context_length"): info.context_length, "tokenizer.ggml.vocab_size": info.vocab_size,
        });
        Ok::<_, ApiError>(Json(json!({
            "license": "", "modelfile": format!("# served by hearth\nFROM {}\n", info.id), "parameters": "", "template": "",
            "details": details(info), "model_info": model_info, "capabilities": caps, "modified_at": chrono::Utc::now().to_rfc3339(),
        })).into_response())
    };
    run().unwrap_or_else(|e| e.shaped(Shape::Ollama).into_response())
}
