//! Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), as Claude
//! Code and the `anthropic` SDKs speak it: the request is converted at the edge into the chat
//! request every protocol shares (system prompt, text, `tool_use` and `tool_result` blocks,
//! tools, tool choice, stop sequences, sampling), then validated, run, recorded and answered like
//! any other; answers and errors come back in Anthropic's shapes (`wire/anthropic.rs`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Shape};
use super::handlers::{answer, validated, ApiJson};
use super::openai::ChatRequest;
use super::validate;
use super::wire::ANTHROPIC;
use super::AppState;

/// A Messages request. Fields hearth has no use for (`metadata`, `thinking`, `service_tier`,
/// beta features) are accepted and ignored, as clients send them freely.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub messages: Vec<AnthropicMessage>,
    #[serde(default)]
    pub system: Value,
    pub stop_sequences: Option<Value>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub stream: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// `format: {type: "json_schema", schema}` constrains the answer (structured outputs).
    pub output_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct AnthropicMessage {
    pub role: String,
    pub content: Value,
}

/// The text of a `system` value or a `tool_result` content: a string or text blocks.
fn text_of(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push(t.to_owned()),
                    (Some(kind), _) => return Err(ApiError::invalid(&format!("{field}[{i}]"), format!("`{field}[{i}]` is a `{kind}` block; this model reads text only"))),
                    _ => return Err(ApiError::invalid(&format!("{field}[{i}]"), format!("`{field}[{i}]` needs `type` and `text`"))),
                }
            }
            Ok(out.join("\n"))
        }
        other => Err(ApiError::invalid(field, format!("`{field}` must be a string or text blocks, got {other}"))),
    }
}

/// The shared chat request this Messages request stands for, plus the names of tools it
/// declared that hearth cannot run (server tools such as web search), which are left out.
pub fn to_chat(r: MessagesRequest) -> Result<(ChatRequest, Vec<String>), ApiError> {
    let max_tokens = r.max_tokens.ok_or_else(|| ApiError::invalid("max_tokens", "`max_tokens` is required"))?;
    let mut messages = Vec::new();
    let system = text_of(&r.system, "system")?;
    if !system.is_empty() {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for (i, m) in r.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        if m.role != "user" && m.role != "assistant" {
            return Err(ApiError::invalid(&format!("{at}.role"), format!("`{at}.role` must be user or assistant, got `{}`", m.role)));
        }
        let blocks = match &m.content {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(b) => b.clone(),
            other => return Err(ApiError::invalid(&format!("{at}.content"), format!("`{at}.content` must be a string or blocks, got {other}"))),
        };
        let (mut text, mut calls, mut results) = (Vec::new(), Vec::new(), 0);
        for (j, b) in blocks.iter().enumerate() {
            let bat = format!("{at}.content[{j}]");
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push(b.get("text").and_then(Value::as_str).unwrap_or_default().to_owned()),
                Some("tool_use") if m.role == "assistant" => {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({ "id": b.get("id").cloned().unwrap_or_default(), "type": "function",
                                       "function": { "name": b.get("name").cloned().unwrap_or_default(), "arguments": input.to_string() } }));
                }
                Some("tool_result") if m.role == "user" => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(&format!("{bat}.tool_use_id"), format!("`{bat}.tool_use_id` is missing")))?;
                    let mut content = text_of(b.get("content").unwrap_or(&Value::Null), &format!("{bat}.content"))?;
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        content = format!("Error: {content}");
                    }
                    messages.push(json!({ "role": "tool", "tool_call_id": id, "content": content }));
                    results += 1;
                }
                // Reasoning from an earlier turn is not shown to this model.
                Some("thinking" | "redacted_thinking") => {}
                Some(kind) => return Err(ApiError::invalid(&format!("{bat}.type"), format!("`{bat}` is a `{kind}` block, which this server cannot read"))),
                None => return Err(ApiError::invalid(&format!("{bat}.type"), format!("`{bat}.type` is missing"))),
            }
        }
        if !calls.is_empty() && text.is_empty() {
            messages.push(json!({ "role": "assistant", "content": null, "tool_calls": calls }));
        } else if !text.is_empty() || results == 0 {
            let mut msg = json!({ "role": m.role, "content": text.join("\n") });
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
        }
    }
    let mut ignored = Vec::new();
    let mut tools = Vec::new();
    for (i, t) in r.tools.iter().flatten().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            None | Some("custom") => {
                let mut f = Map::new();
                f.insert("name".into(), t.get("name").cloned().unwrap_or_default());
                if let Some(d) = t.get("description") {
                    f.insert("description".into(), d.clone());
                }
                f.insert("parameters".into(), t.get("input_schema").cloned().unwrap_or_else(|| json!({ "type": "object" })));
                tools.push(json!({ "type": "function", "function": f }));
            }
            Some(kind) => ignored.push(t.get("name").and_then(Value::as_str).map_or_else(|| format!("tools[{i}] ({kind})"), str::to_owned)),
        }
    }
    let (tool_choice, parallel) = match &r.tool_choice {
        None | Some(Value::Null) => (Value::Null, Value::Null),
        Some(c) => {
            let parallel = c.get("disable_parallel_tool_use").and_then(Value::as_bool).map_or(Value::Null, |d| Value::Bool(!d));
            let choice = match c.get("type").and_then(Value::as_str) {
                Some("auto") => json!("auto"),
                Some("any") => json!("required"),
                Some("none") => json!("none"),
                Some("tool") => json!({ "type": "function", "function": { "name": c.get("name").cloned().unwrap_or_default() } }),
                _ => return Err(ApiError::invalid("tool_choice", "`tool_choice.type` must be auto, any, tool or none")),
            };
            (choice, parallel)
        }
    };
    let response_format = match r.output_config.as_ref().and_then(|c| c.get("format")).filter(|f| !f.is_null()) {
        None => Value::Null,
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            json!({ "type": "json_schema", "json_schema": { "name": "output", "schema": f.get("schema").cloned().unwrap_or(Value::Null) } })
        }
        Some(_) => return Err(ApiError::invalid("output_config.format", "`output_config.format.type` must be json_schema")),
    };
    let chat = json!({
        "response_format": response_format,
        "model": r.model, "messages": messages, "max_tokens": max_tokens, "stop": r.stop_sequences,
        "temperature": r.temperature, "top_p": r.top_p, "top_k": r.top_k, "stream": r.stream,
        "tools": if tools.is_empty() { Value::Null } else { Value::Array(tools) }, "tool_choice": tool_choice, "parallel_tool_calls": parallel,
    });
    let chat: ChatRequest = serde_json::from_value(chat).map_err(|e| ApiError::invalid("messages", format!("the request cannot be read: {e}")))?;
    Ok((chat, ignored))
}

/// Anthropic names for the shared request's fields, in error messages.
fn renamed(mut e: ApiError) -> ApiError {
    if e.param.as_deref() == Some("stop") {
        e.param = Some("stop_sequences".into());
        e.message = e.message.replace("`stop`", "`stop_sequences`");
    }
    e.shaped(Shape::Anthropic)
}

pub async fn messages(State(st): State<AppState>, headers: HeaderMap, body: Result<ApiJson<MessagesRequest>, ApiError>) -> Response {
    let run = async {
        let ApiJson(req) = body?;
        let engine = st.engine()?;
        let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
        let (chat, ignored) = to_chat(req)?;
        if !ignored.is_empty() {
            tracing::info!("ignoring tools this server cannot run: {}", ignored.join(", "));
        }
        let plan = validated(&st, &engine, "/v1/messages", &headers, move |info| validate::chat_up_to(chat, "max_tokens", info)).await?;
        let mut response = answer(&st, &engine, &ANTHROPIC, "/v1/messages", &headers, plan, asked).await?;
        if let Ok(v) = ignored.join(", ").parse() {
            if !ignored.is_empty() {
                response.headers_mut().insert("x-hearth-ignored-tools", v);
            }
        }
        Ok::<_, ApiError>(response)
    };
    run.await.unwrap_or_else(|e| renamed(e).into_response())
}

/// `count_tokens`: the prompt's length in this model's tokens, tools included.
pub async fn count_tokens(State(st): State<AppState>, body: Result<ApiJson<MessagesRequest>, ApiError>) -> Response {
    let run = async {
        let ApiJson(mut req) = body?;
        let engine = st.engine()?;
        st.names().resolve(req.model.as_deref(), engine.info())?;
        req.max_tokens = Some(1);
        let (chat, _) = to_chat(req)?;
        let e = engine.clone();
        let plan = tokio::task::spawn_blocking(move || validate::chat(chat, e.info())).await.map_err(ApiError::internal)??;
        Ok::<_, ApiError>(Json(json!({ "input_tokens": plan.requests[0].prompt.len() })).into_response())
    };
    run.await.unwrap_or_else(|e| renamed(e).into_response())
}
