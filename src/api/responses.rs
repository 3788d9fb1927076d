//! OpenAI's Responses API (`POST /v1/responses`), the only protocol Codex CLI speaks, stateless:
//! `input` (a string or items: messages, earlier `function_call`s and their
//! `function_call_output`s), `instructions`, `max_output_tokens`, function tools, `text.format`;
//! converted at the edge into the shared chat request. Tool types hearth cannot run (web search,
//! image generation, shells…) are left out and named in `x-hearth-ignored-tools` and the
//! response's `metadata`; `previous_response_id` is refused, as nothing is stored.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::handlers::{answer, validated, ApiJson};
use super::openai::ChatRequest;
use super::validate;
use super::wire::RESPONSES;
use super::AppState;

/// A Responses request; fields that only steer OpenAI's own service (`store`, `include`,
/// `reasoning`, `truncation`, `prompt_cache_key`, …) are accepted and have no effect.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    #[serde(default)]
    pub input: Value,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub stream: Option<bool>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<Value>,
    pub background: Option<bool>,
    pub text: Option<Value>,
}

/// Text of an item's `content`: a string or parts (`input_text`, `output_text`, `text`).
fn content_text(v: &Value, at: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => out.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some(kind) => return Err(ApiError::invalid(&format!("{at}[{i}]"), format!("`{at}[{i}]` is `{kind}`; this model reads text only"))),
                    None => return Err(ApiError::invalid(&format!("{at}[{i}]"), format!("`{at}[{i}].type` is missing"))),
                }
            }
            Ok(out)
        }
        other => Err(ApiError::invalid(at, format!("`{at}` must be a string or content parts, got {other}"))),
    }
}

/// The shared chat request, and the tools left out.
pub fn to_chat(r: ResponsesRequest) -> Result<(ChatRequest, Vec<String>), ApiError> {
    if r.previous_response_id.is_some() {
        return Err(ApiError::invalid("previous_response_id", "this server stores no responses; send the whole conversation in `input`"));
    }
    if r.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(ApiError::invalid("conversation", "this server keeps no conversations; send the whole conversation in `input`"));
    }
    if r.background == Some(true) {
        return Err(ApiError::invalid("background", "background responses need storage, which this server does not keep"));
    }
    let mut messages = Vec::new();
    if let Some(i) = r.instructions.filter(|i| !i.is_empty()) {
        messages.push(json!({ "role": "system", "content": i }));
    }
    match &r.input {
        Value::String(s) => messages.push(json!({ "role": "user", "content": s })),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]");
                match item.get("type").and_then(Value::as_str) {
                    None | Some("message") => {
                        let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                        let content = content_text(item.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                        messages.push(json!({ "role": role, "content": content }));
                    }
                    Some("function_call") => {
                        let call = json!({ "id": item.get("call_id").cloned().unwrap_or_default(), "type": "function",
                                           "function": { "name": item.get("name").cloned().unwrap_or_default(), "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")) } });
                        // Consecutive calls belong to one assistant turn.
                        match messages.last_mut() {
                            Some(m) if m["role"] == "assistant" && m.get("tool_calls").is_some() => m["tool_calls"].as_array_mut().expect("an array").push(call),
                            _ => messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [call] })),
                        }
                    }
                    Some("function_call_output") => {
                        let output = match item.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => content_text(v, &format!("{at}.output"))?,
                            None => String::new(),
                        };
                        messages.push(json!({ "role": "tool", "tool_call_id": item.get("call_id").cloned().unwrap_or_default(), "content": output }));
                    }
                    // Reasoning from an earlier turn is not shown to this model.
                    Some("reasoning") => {}
                    Some(kind) => return Err(ApiError::invalid(&format!("{at}.type"), format!("`{at}` is a `{kind}` item, which this server cannot read"))),
                }
            }
        }
        Value::Null => return Err(ApiError::invalid("input", "`input` is required")),
        other => return Err(ApiError::invalid("input", format!("`input` must be a string or an array of items, got {other}"))),
    }
    let (mut tools, mut ignored) = (Vec::new(), Vec::new());
    for (i, t) in r.tools.iter().flatten().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut f = serde_json::Map::new();
                for key in ["name", "description", "parameters"] {
                    if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                        f.insert(key.into(), v.clone());
                    }
                }
                tools.push(json!({ "type": "function", "function": f }));
            }
            kind => ignored.push(t.get("name").and_then(Value::as_str).or(kind).map_or_else(|| format!("tools[{i}]"), str::to_owned)),
        }
    }
    let tool_choice = match &r.tool_choice {
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            json!({ "type": "function", "function": { "name": o.get("name").cloned().unwrap_or_default() } })
        }
        // A choice forcing a tool type that was left out becomes "auto".
        Some(Value::Object(_)) => json!("auto"),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    let format = match r.text.as_ref().and_then(|t| t.get("format")) {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            json!({ "type": "json_schema", "json_schema": { "name": f.get("name").cloned().unwrap_or(json!("output")), "schema": f.get("schema").cloned().unwrap_or(Value::Null), "strict": f.get("strict").cloned().unwrap_or(Value::Null) } })
        }
        Some(f) => f.clone(),
        None => Value::Null,
    };
    let has_tools = !tools.is_empty();
    let chat = json!({
        "model": r.model, "messages": messages, "max_tokens": r.max_output_tokens, "temperature": r.temperature, "top_p": r.top_p,
        "tools": if has_tools { Value::Array(tools) } else { Value::Null },
        "tool_choice": if has_tools { tool_choice } else { Value::Null },
        "parallel_tool_calls": if has_tools { json!(r.parallel_tool_calls) } else { Value::Null },
        "stream": r.stream, "response_format": format,
    });
    let chat: ChatRequest = serde_json::from_value(chat).map_err(|e| ApiError::invalid("input", format!("the request cannot be read: {e}")))?;
    Ok((chat, ignored))
}

pub async fn create(State(st): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<ResponsesRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
    let (chat, ignored) = to_chat(req)?;
    let plan = validated(&st, &engine, "/v1/responses", &headers, move |info| validate::chat_up_to(chat, "max_output_tokens", info)).await?;
    let mut response = answer(&st, &engine, &RESPONSES, "/v1/responses", &headers, plan, asked).await?;
    if !ignored.is_empty() {
        tracing::info!("ignoring tools this server cannot run: {}", ignored.join(", "));
        if let Ok(v) = ignored.join(", ").parse() {
            response.headers_mut().insert("x-hearth-ignored-tools", v);
        }
    }
    Ok(response.into_response())
}
