//! Ollama's answers (`/api/chat`, `/api/generate`): newline-delimited JSON objects, a piece of
//! text each, then one with `done: true`, the finish reason and Ollama's timings (nanoseconds,
//! from the engine's own measurements); tool calls as whole objects with their arguments parsed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::FinishReason;

use super::super::error::{ApiError, Shape};
use super::super::respond::Reply;
use super::{Delta, Frame, Wire};

/// `/api/chat` (a `message` per object) or `/api/generate` (a `response` string per object).
pub struct Ollama {
    chat: bool,
}

pub static OLLAMA_CHAT: Ollama = Ollama { chat: true };
pub static OLLAMA_GENERATE: Ollama = Ollama { chat: false };

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Ollama {
    /// One object with `text` (and, for chat, `calls`).
    fn piece(&self, r: &Reply, text: &str, calls: Option<Vec<Value>>) -> Value {
        let mut v = json!({ "model": r.model, "created_at": now() });
        if self.chat {
            let mut message = json!({ "role": "assistant", "content": text });
            if let Some(calls) = calls {
                message["tool_calls"] = Value::Array(calls);
            }
            v["message"] = message;
        } else {
            v["response"] = json!(text);
        }
        v["done"] = json!(false);
        v
    }

    /// The last object: why it ended, the counts and timings, and hearth's cost.
    fn last(&self, r: &Reply, mut v: Value) -> Value {
        let c = &r.choices[0];
        let s = c.stats.clone().unwrap_or_default();
        let reason = match c.finish {
            Some(FinishReason::Length | FinishReason::ContextFull) => "length",
            _ => "stop",
        };
        let prompt_eval = s.time_to_first_token.saturating_sub(s.queue);
        let eval: Duration = s.inter_token.iter().sum();
        let fields = json!({
            "done": true, "done_reason": reason, "total_duration": ns(r.started.elapsed()), "load_duration": 0,
            "prompt_eval_count": s.prompt_tokens.saturating_sub(s.cached_tokens), "prompt_eval_duration": ns(prompt_eval),
            "eval_count": s.generated_tokens, "eval_duration": ns(eval), "cost": r.cost,
        });
        v.as_object_mut().expect("an object").extend(fields.as_object().expect("an object").clone());
        v
    }

    /// The calls of choice 0 as Ollama writes them (arguments as objects).
    fn calls(r: &Reply) -> Option<Vec<Value>> {
        let p = r.choices[0].calls.as_ref().filter(|p| !p.calls().is_empty())?;
        Some(
            p.calls()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    json!({ "id": c.id, "function": { "index": i, "name": c.name, "arguments": args } })
                })
                .collect(),
        )
    }
}

impl Wire for Ollama {
    fn id_prefix(&self) -> &'static str {
        "ollama"
    }

    fn body(&self, r: &Reply) -> Value {
        let c = &r.choices[0];
        let text = c.calls.as_ref().map_or(c.text.as_str(), |p| p.content());
        self.last(r, self.piece(r, text, if self.chat { Self::calls(r) } else { None }))
    }

    fn frames(&self, r: &Reply, _: usize, delta: Delta<'_>) -> Vec<Frame> {
        match delta {
            Delta::Text { text, .. } if !text.is_empty() => vec![Frame::Json(self.piece(r, &text, None))],
            // Ollama sends calls whole, once they are known.
            Delta::Finished(_) if self.chat => Self::calls(r).map(|c| vec![Frame::Json(self.piece(r, "", Some(c)))]).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn end(&self, r: &Reply) -> Vec<Frame> {
        vec![Frame::Json(self.last(r, self.piece(r, "", None)))]
    }

    fn error_frame(&self, e: &ApiError) -> Frame {
        Frame::Json(e.clone().shaped(Shape::Ollama).body())
    }

    fn ndjson(&self) -> bool {
        true
    }
}
