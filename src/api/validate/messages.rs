//! Chat messages of the OpenAI shape (every protocol's messages arrive converted to it) checked
//! and turned into the template's messages: roles, text content, assistant tool calls with JSON
//! arguments, tool results that answer an earlier call; and the same conversation as a cloud
//! API would bill it.

use serde_json::Value;

use crate::model::{ChatMessage, Vocab};

use super::super::error::ApiError;
use super::super::openai::Message;

/// Chat messages for the template, and as the cloud would bill them (role, text). Tool results
/// must answer a call an earlier assistant turn made; call arguments must be JSON.
pub(super) fn chat_messages(list: &[Message], vocab: &Vocab) -> Result<(Vec<ChatMessage>, Vec<(String, String)>), ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must hold at least one message"));
    }
    let mut messages = Vec::with_capacity(list.len());
    let mut cloud = Vec::with_capacity(list.len());
    let mut call_ids: Vec<(String, String)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" | "function" => "tool",
            other => {
                let msg = format!("`messages[{i}].role` is `{other}`, which is not a role; use system, developer, user, assistant or tool");
                return Err(ApiError::invalid(&format!("messages[{i}].role"), msg));
            }
        };
        let field = format!("messages[{i}].content");
        let content = message_text(&m.content, role == "assistant").map_err(|why| ApiError::invalid(&field, format!("`{field}` {why}")))?;
        // Control-token texts in what clients send stay text: no forged turns.
        let mut msg = ChatMessage::new(role, &vocab.escape_controls(&content));
        let mut billed = content.clone();
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
            let at = format!("messages[{i}].tool_calls");
            if role != "assistant" {
                return Err(ApiError::invalid(&at, format!("`{at}` belongs on assistant messages only")));
            }
            let calls = calls.as_array().ok_or_else(|| ApiError::invalid(&at, format!("`{at}` must be an array")))?;
            let mut rendered = Vec::with_capacity(calls.len());
            for (j, c) in calls.iter().enumerate() {
                let at = format!("{at}[{j}]");
                let id = c.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let name = c.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(&format!("{at}.function.name"), format!("`{at}.function.name` is missing")))?;
                let args_at = format!("{at}.function.arguments");
                let args = match c.pointer("/function/arguments") {
                    Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| ApiError::invalid(&args_at, format!("`{args_at}` must be JSON text: {e}")))?,
                    Some(v @ Value::Object(_)) => v.clone(),
                    None | Some(Value::Null) => serde_json::json!({}),
                    Some(other) => return Err(ApiError::invalid(&args_at, format!("`{args_at}` must be a JSON string, got {other}"))),
                };
                billed.push_str(&format!("{name}({args})"));
                call_ids.push((id.clone(), name.to_owned()));
                rendered.push(serde_json::json!({ "id": id, "type": "function", "function": { "name": name, "arguments": args } }));
            }
            msg.tool_calls = Some(Value::Array(rendered));
        }
        if role == "tool" {
            let at = format!("messages[{i}].tool_call_id");
            let answered = match (&m.tool_call_id, &m.name) {
                (Some(id), _) => call_ids.iter().find(|(c, _)| c == id),
                (None, Some(name)) if m.role == "function" => call_ids.iter().find(|(_, n)| n == name),
                _ => return Err(ApiError::invalid(&at, format!("`{at}` is missing: a tool message answers one call"))),
            };
            let (id, name) = answered.cloned().ok_or_else(|| {
                ApiError::invalid(&at, format!("`{at}` does not match any call an earlier assistant message made"))
            })?;
            msg.tool_call_id = Some(id);
            msg.name = Some(name);
        }
        messages.push(msg);
        cloud.push((m.role.clone(), billed));
    }
    Ok((messages, cloud))
}

/// The text of a message's `content`, or why it cannot be read (words to follow the field's name).
fn message_text(content: &Value, may_be_empty: bool) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null if may_be_empty => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) => return Err(format!("holds a part of type `{kind}`; this model reads text only")),
                    _ => return Err("holds a part without `type` and `text`".into()),
                }
            }
            Ok(text)
        }
        _ => Err("must be a string or an array of text parts".into()),
    }
}

