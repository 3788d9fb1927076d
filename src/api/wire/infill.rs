//! llama.cpp's `/infill` answers: `{content, stop}` chunks and a final object with counts and
//! timings, as llama.vim and llama.vscode read them. Its stream has no end marker.

use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::FinishReason;

use super::super::respond::Reply;
use super::{Delta, Frame, Wire};

pub struct Infill;

pub static INFILL: Infill = Infill;

impl Infill {
    /// The final object: the content plus counts and timings.
    fn last(&self, r: &Reply, content: String) -> Value {
        let c = &r.choices[0];
        let s = c.stats.clone().unwrap_or_default();
        let prompt_ms = s.time_to_first_token.saturating_sub(s.queue).as_secs_f64() * 1e3;
        let predicted_ms = s.inter_token.iter().sum::<Duration>().as_secs_f64() * 1e3;
        let stop_type = match c.finish {
            Some(FinishReason::Stop) => "eos",
            Some(FinishReason::StopSequence) => "word",
            _ => "limit",
        };
        json!({
            "content": content, "stop": true, "model": r.model, "cost": r.cost,
            "tokens_predicted": s.generated_tokens, "tokens_evaluated": s.prompt_tokens, "tokens_cached": s.cached_tokens,
            "stop_type": stop_type, "truncated": false,
            "timings": {
                "cache_n": s.cached_tokens,
                "prompt_n": s.prompt_tokens - s.cached_tokens, "prompt_ms": prompt_ms,
                "predicted_n": s.generated_tokens, "predicted_ms": predicted_ms,
                "predicted_per_second": if predicted_ms > 0.0 { s.inter_token.len() as f64 * 1e3 / predicted_ms } else { 0.0 },
            }
        })
    }
}

impl Wire for Infill {
    fn id_prefix(&self) -> &'static str {
        "infill"
    }

    fn body(&self, r: &Reply) -> Value {
        self.last(r, r.choices[0].text.clone())
    }

    fn frames(&self, r: &Reply, _: usize, delta: Delta<'_>) -> Vec<Frame> {
        match delta {
            Delta::Text { text, .. } if !text.is_empty() => vec![Frame::Json(json!({ "content": text, "stop": false, "index": 0 }))],
            Delta::Finished(_) => vec![Frame::Json(self.last(r, String::new()))],
            _ => Vec::new(),
        }
    }

    fn end(&self, _: &Reply) -> Vec<Frame> {
        Vec::new()
    }
}
