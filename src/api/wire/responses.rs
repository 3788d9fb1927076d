//! The Responses API's answers: a `response` object whose `output` holds a `message` item (the
//! text) and one `function_call` item per call, and the stream of typed events
//! (`response.created`, `response.output_text.delta`, `response.function_call_arguments.delta`,
//! `response.completed`, …) numbered by `sequence_number`. The message is output 0; call `k` is
//! output `k + 1`.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::engine::FinishReason;

use super::super::respond::Reply;
use super::super::tools::CallDelta;
use super::{Delta, Frame, Wire};

pub struct Responses;

pub static RESPONSES: Responses = Responses;

fn message_id(r: &Reply) -> String {
    format!("msg_{}", &r.id[r.id.len() - 16..])
}

fn call_item(r: &Reply, k: usize, done: bool) -> Value {
    let c = &r.choices[0].calls.as_ref().expect("calls").calls()[k];
    let status = if done { "completed" } else { "in_progress" };
    let arguments = if done { c.arguments.as_str() } else { "" };
    json!({ "type": "function_call", "id": format!("fc_{}", c.id), "call_id": c.id, "name": c.name, "arguments": arguments, "status": status })
}

fn message_item(r: &Reply, text: &str, done: bool) -> Value {
    let content = if done { json!([{ "type": "output_text", "text": text, "annotations": [] }]) } else { json!([]) };
    json!({ "type": "message", "id": message_id(r), "status": if done { "completed" } else { "in_progress" }, "role": "assistant", "content": content })
}

fn text_of(r: &Reply) -> &str {
    let c = &r.choices[0];
    c.calls.as_ref().map_or(c.text.as_str(), |p| p.content())
}

/// The whole `response` object, as it stands.
fn response(r: &Reply, status: &str) -> Value {
    let c = &r.choices[0];
    let mut output = Vec::new();
    let calls = c.calls.as_ref().map_or(0, |p| p.calls().len());
    if status != "in_progress" {
        // The message is output 0 even when empty, as the stream announced it.
        output.push(message_item(r, text_of(r), true));
        output.extend((0..calls).map(|k| call_item(r, k, true)));
    }
    let u = r.usage();
    let incomplete = matches!(c.finish, Some(FinishReason::Length | FinishReason::ContextFull)).then(|| json!({ "reason": "max_output_tokens" }));
    json!({
        "id": r.id, "object": "response", "created_at": r.created, "status": status, "model": r.model, "output": output,
        "error": null, "incomplete_details": incomplete, "instructions": null, "metadata": {}, "parallel_tool_calls": true,
        "previous_response_id": null, "store": false, "text": { "format": { "type": "text" } }, "tool_choice": "auto", "tools": [],
        "truncation": "disabled",
        "usage": { "input_tokens": u.prompt_tokens, "input_tokens_details": { "cached_tokens": u.prompt_tokens_details.cached_tokens },
                   "output_tokens": u.completion_tokens, "output_tokens_details": { "reasoning_tokens": 0 },
                   "total_tokens": u.total_tokens, "cost": u.cost },
    })
}

/// One typed event, numbered.
fn event(r: &Reply, kind: &'static str, mut v: Value) -> Frame {
    v["type"] = json!(kind);
    v["sequence_number"] = json!(r.seq.fetch_add(1, Ordering::Relaxed));
    Frame::Event(kind, v)
}

/// The events that close output item `index` (the message when 0, else call `index - 1`).
fn close(r: &Reply, index: usize) -> Vec<Frame> {
    if index == 0 {
        let text = text_of(r);
        let (id, part) = (message_id(r), json!({ "type": "output_text", "text": text, "annotations": [] }));
        vec![
            event(r, "response.output_text.done", json!({ "item_id": id, "output_index": 0, "content_index": 0, "text": text, "logprobs": [] })),
            event(r, "response.content_part.done", json!({ "item_id": id, "output_index": 0, "content_index": 0, "part": part })),
            event(r, "response.output_item.done", json!({ "output_index": 0, "item": message_item(r, text, true) })),
        ]
    } else {
        let item = call_item(r, index - 1, true);
        vec![
            event(r, "response.function_call_arguments.done", json!({ "item_id": item["id"], "output_index": index, "arguments": item["arguments"] })),
            event(r, "response.output_item.done", json!({ "output_index": index, "item": item })),
        ]
    }
}

impl Wire for Responses {
    fn id_prefix(&self) -> &'static str {
        "resp"
    }

    fn body(&self, r: &Reply) -> Value {
        let incomplete = matches!(r.choices[0].finish, Some(FinishReason::Length | FinishReason::ContextFull));
        response(r, if incomplete { "incomplete" } else { "completed" })
    }

    fn frames(&self, r: &Reply, _: usize, delta: Delta<'_>) -> Vec<Frame> {
        match delta {
            Delta::Started => {
                let id = message_id(r);
                vec![
                    event(r, "response.created", json!({ "response": response(r, "in_progress") })),
                    event(r, "response.in_progress", json!({ "response": response(r, "in_progress") })),
                    event(r, "response.output_item.added", json!({ "output_index": 0, "item": message_item(r, "", false) })),
                    event(r, "response.content_part.added", json!({ "item_id": id, "output_index": 0, "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } })),
                ]
            }
            Delta::Text { text, .. } if !text.is_empty() => {
                vec![event(r, "response.output_text.delta", json!({ "item_id": message_id(r), "output_index": 0, "content_index": 0, "delta": text, "logprobs": [] }))]
            }
            Delta::ToolCall(CallDelta::Begin { index, .. }) => {
                let mut out = close(r, index);
                out.push(event(r, "response.output_item.added", json!({ "output_index": index + 1, "item": call_item(r, index, false) })));
                out
            }
            Delta::ToolCall(CallDelta::Arguments { index, fragment }) => {
                let id = format!("fc_{}", r.choices[0].calls.as_ref().expect("calls").calls()[index].id);
                vec![event(r, "response.function_call_arguments.delta", json!({ "item_id": id, "output_index": index + 1, "delta": fragment }))]
            }
            Delta::Finished(_) => close(r, r.choices[0].calls.as_ref().map_or(0, |p| p.calls().len())),
            _ => Vec::new(),
        }
    }

    fn end(&self, r: &Reply) -> Vec<Frame> {
        let body = self.body(r);
        let kind = if body["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        vec![event(r, kind, json!({ "response": body }))]
    }

    fn error_frame(&self, e: &super::super::error::ApiError) -> Frame {
        Frame::Event("error", json!({ "type": "error", "code": e.code, "message": e.message, "param": e.param, "sequence_number": 0 }))
    }
}
