//! Wire formats: how one canonical [`Reply`] is written back in each protocol's shape. A format
//! turns the reply into a whole body, turns each [`Delta`] of a choice into stream frames, and
//! says what ends a stream and how an error mid-stream looks. Adding a protocol is one more
//! implementation of [`Wire`] beside these (OpenAI completions and chat, llama.cpp's infill).

mod anthropic;
mod chat;
mod completions;
mod infill;
mod ollama;
mod responses;

use serde_json::{json, Value};

use crate::engine::{FinishReason, TokenLogprob};

use super::error::ApiError;
use super::respond::{Choice, Reply};
use super::tools::CallDelta;

pub use anthropic::ANTHROPIC;
pub use chat::CHAT;
pub use completions::COMPLETIONS;
pub use infill::INFILL;
pub use ollama::{OLLAMA_CHAT, OLLAMA_GENERATE};
pub use responses::RESPONSES;

/// What one engine event changed in one choice, in terms every format can write.
#[derive(Debug, Clone)]
pub enum Delta<'a> {
    /// The prompt is processed; the choice begins.
    Started,
    /// The prompt's log-probabilities are known (completions with `echo` and `logprobs`).
    PromptLogprobs,
    /// New text (maybe empty) and, when asked for, the log-probability of the token behind it.
    Text { text: String, logprob: Option<&'a TokenLogprob> },
    /// A tool call began, or its arguments grew (chat with tools only).
    ToolCall(CallDelta),
    /// The choice ended.
    Finished(FinishReason),
}

/// One unit of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON payload (an SSE `data:` line).
    Json(Value),
    /// A JSON payload under an event name (`event: NAME` then `data:`, as Anthropic streams).
    Event(&'static str, Value),
    /// The protocol's end-of-stream marker (`data: [DONE]` for OpenAI).
    Done,
}

/// One wire protocol's answers.
pub trait Wire: Send + Sync {
    /// The prefix of reply ids (`chatcmpl`, `cmpl`, …).
    fn id_prefix(&self) -> &'static str;
    /// The non-streaming body, once every choice has finished.
    fn body(&self, r: &Reply) -> Value;
    /// The frames `delta` of choice `i` produces, after it was applied to `r`.
    fn frames(&self, r: &Reply, i: usize, delta: Delta<'_>) -> Vec<Frame>;
    /// The frames after every choice finished (and the request was recorded).
    fn end(&self, r: &Reply) -> Vec<Frame>;
    /// An error that ends a stream already under way, in the protocol's error shape.
    fn error_frame(&self, e: &ApiError) -> Frame {
        Frame::Json(e.body())
    }
    /// Streams go out as newline-delimited JSON (Ollama) rather than Server-Sent Events.
    fn ndjson(&self) -> bool {
        false
    }
}

/// `finish_reason` as OpenAI writes it: a string, or null while running.
fn finish_str(f: Option<FinishReason>) -> Value {
    f.map_or(Value::Null, |f| Value::String(f.as_str().to_owned()))
}

/// An OpenAI non-streaming body of `object` type, each choice written by `choice`.
fn openai_body(r: &Reply, object: &str, choice: impl Fn(usize, &Choice) -> Value) -> Value {
    let choices: Vec<Value> = r.choices.iter().enumerate().map(|(i, c)| choice(i, c)).collect();
    json!({ "id": r.id, "object": object, "created": r.created, "model": r.model, "choices": choices, "usage": r.usage() })
}

/// An OpenAI stream chunk of `object` type carrying one choice.
fn openai_chunk(r: &Reply, object: &str, choice: Value) -> Frame {
    Frame::Json(json!({ "id": r.id, "object": object, "created": r.created, "model": r.model, "choices": [choice] }))
}

/// OpenAI's stream end: a chunk with the usage and no choices when `stream_options.include_usage`
/// asked for it, then `[DONE]`.
fn openai_end(r: &Reply, object: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    if r.plan.include_usage {
        out.push(Frame::Json(json!({ "id": r.id, "object": object, "created": r.created, "model": r.model, "choices": [], "usage": r.usage() })));
    }
    out.push(Frame::Done);
    out
}
