//! Anthropic's Messages answers: `message` bodies with `text` and `tool_use` content blocks, and
//! the named stream events (`message_start`, `content_block_start`/`_delta`/`_stop`, `ping`,
//! `message_delta`, `message_stop`). The text is block 0; call `k` is block `k + 1`.

use serde_json::{json, Value};

use crate::engine::FinishReason;

use super::super::error::ApiError;
use super::super::respond::{Choice, Reply};
use super::super::tools::CallDelta;
use super::{Delta, Frame, Wire};

pub struct Anthropic;

pub static ANTHROPIC: Anthropic = Anthropic;

fn stop_reason(c: &Choice) -> Value {
    let called = c.calls.as_ref().is_some_and(|p| !p.calls().is_empty());
    match c.finish {
        None => Value::Null,
        Some(FinishReason::Length | FinishReason::ContextFull) => json!("max_tokens"),
        Some(_) if called => json!("tool_use"),
        Some(FinishReason::StopSequence) => json!("stop_sequence"),
        Some(FinishReason::Stop) => json!("end_turn"),
    }
}

/// Anthropic's usage: uncached input, cache reads (our prefix reuse), output; and our cost.
fn usage(r: &Reply) -> Value {
    let u = r.usage();
    let cached = u.prompt_tokens_details.cached_tokens;
    json!({ "input_tokens": u.prompt_tokens - cached, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0,
            "output_tokens": u.completion_tokens, "cost": u.cost })
}

fn event(name: &'static str, v: Value) -> Frame {
    Frame::Event(name, v)
}

impl Wire for Anthropic {
    fn id_prefix(&self) -> &'static str {
        "msg"
    }

    fn body(&self, r: &Reply) -> Value {
        let c = &r.choices[0];
        let mut content = Vec::new();
        let text = c.calls.as_ref().map_or(c.text.as_str(), |p| p.content());
        if !text.is_empty() {
            content.push(json!({ "type": "text", "text": text }));
        }
        for call in c.calls.iter().flat_map(|p| p.calls()) {
            let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
            content.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }));
        }
        json!({ "id": r.id, "type": "message", "role": "assistant", "model": r.model, "content": content,
                "stop_reason": stop_reason(c), "stop_sequence": null, "usage": usage(r) })
    }

    fn frames(&self, r: &Reply, i: usize, delta: Delta<'_>) -> Vec<Frame> {
        let calls = r.choices[i].calls.as_ref().map_or(0, |p| p.calls().len());
        match delta {
            Delta::Started => {
                let message = json!({ "id": r.id, "type": "message", "role": "assistant", "model": r.model, "content": [],
                                      "stop_reason": null, "stop_sequence": null, "usage": usage(r) });
                vec![
                    event("message_start", json!({ "type": "message_start", "message": message })),
                    event("content_block_start", json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } })),
                    event("ping", json!({ "type": "ping" })),
                ]
            }
            Delta::Text { text, .. } if !text.is_empty() => {
                vec![event("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": text } }))]
            }
            Delta::ToolCall(CallDelta::Begin { index, id, name }) => vec![
                event("content_block_stop", json!({ "type": "content_block_stop", "index": index })),
                event("content_block_start", json!({ "type": "content_block_start", "index": index + 1,
                                                      "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } })),
            ],
            Delta::ToolCall(CallDelta::Arguments { index, fragment }) => vec![event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index + 1, "delta": { "type": "input_json_delta", "partial_json": fragment } }),
            )],
            Delta::Finished(_) => vec![event("content_block_stop", json!({ "type": "content_block_stop", "index": calls }))],
            _ => Vec::new(),
        }
    }

    fn end(&self, r: &Reply) -> Vec<Frame> {
        let c = &r.choices[0];
        vec![
            event("message_delta", json!({ "type": "message_delta", "delta": { "stop_reason": stop_reason(c), "stop_sequence": null }, "usage": usage(r) })),
            event("message_stop", json!({ "type": "message_stop" })),
        ]
    }

    fn error_frame(&self, e: &ApiError) -> Frame {
        event("error", e.clone().shaped(super::super::error::Shape::Anthropic).body())
    }
}
