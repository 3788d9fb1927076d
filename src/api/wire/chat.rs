//! OpenAI's chat answers (`/v1/chat/completions`): `chat.completion` bodies, `chat.completion.chunk`
//! deltas, and chat-style logprobs (token, logprob, bytes, top_logprobs).

use serde_json::{json, Value};

use crate::engine::TokenLogprob;

use super::super::openai::{ChatTokenLogprob, ChatTopLogprob};
use super::super::respond::Reply;
use super::super::tools::CallDelta;
use super::{openai_body, openai_chunk, openai_end, Delta, Frame, Wire};

pub struct Chat;

pub static CHAT: Chat = Chat;

fn logprobs(r: &Reply, tokens: &[TokenLogprob]) -> Vec<ChatTokenLogprob> {
    tokens
        .iter()
        .map(|l| {
            let token = r.piece(l.token);
            let top = l.top.iter().map(|&(t, p)| {
                let s = r.piece(t);
                ChatTopLogprob { bytes: s.as_bytes().to_vec(), token: s, logprob: p }
            });
            ChatTokenLogprob { bytes: token.as_bytes().to_vec(), token, logprob: l.logprob, top_logprobs: top.collect() }
        })
        .collect()
}

impl Wire for Chat {
    fn id_prefix(&self) -> &'static str {
        "chatcmpl"
    }

    fn body(&self, r: &Reply) -> Value {
        openai_body(r, "chat.completion", |i, c| {
            let logprobs = r.plan.logprobs.map(|_| json!({ "content": logprobs(r, &c.logprobs) }));
            let message = match c.calls.as_ref().filter(|p| !p.calls().is_empty()) {
                None => json!({ "role": "assistant", "content": c.text }),
                Some(p) => {
                    let content = Some(p.content()).filter(|t| !t.trim().is_empty());
                    json!({ "role": "assistant", "content": content, "tool_calls": p.openai_calls() })
                }
            };
            json!({ "index": i, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason() })
        })
    }

    fn frames(&self, r: &Reply, i: usize, delta: Delta<'_>) -> Vec<Frame> {
        let choice = match delta {
            Delta::Started => json!({ "index": i, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }),
            Delta::Text { text, logprob } if !text.is_empty() || logprob.is_some() => {
                let lp = logprob.map(|l| json!({ "content": logprobs(r, std::slice::from_ref(l)) }));
                json!({ "index": i, "delta": { "content": text }, "logprobs": lp, "finish_reason": null })
            }
            Delta::ToolCall(CallDelta::Begin { index, id, name }) => {
                let call = json!({ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } });
                json!({ "index": i, "delta": { "tool_calls": [call] }, "logprobs": null, "finish_reason": null })
            }
            Delta::ToolCall(CallDelta::Arguments { index, fragment }) => {
                let call = json!({ "index": index, "function": { "arguments": fragment } });
                json!({ "index": i, "delta": { "tool_calls": [call] }, "logprobs": null, "finish_reason": null })
            }
            Delta::Finished(_) => json!({ "index": i, "delta": {}, "logprobs": null, "finish_reason": r.choices[i].finish_reason() }),
            _ => return Vec::new(),
        };
        vec![openai_chunk(r, "chat.completion.chunk", choice)]
    }

    fn end(&self, r: &Reply) -> Vec<Frame> {
        openai_end(r, "chat.completion.chunk")
    }
}
