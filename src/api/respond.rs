//! Turning a request's engine events into answers: the per-choice state both paths share, the
//! response bodies of each endpoint, usage, logprobs in OpenAI's two shapes, and timing headers.
//! Streaming lives in `stream.rs`; both read the same events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::engine::{Event, FinishReason, SeqStats, TokenLogprob};
use crate::model::Vocab;

use super::metrics::Metrics;
use super::record::Recorder;
use crate::ledger::Cost;
use super::openai::{ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs, PromptTokensDetails, Usage};
use super::validate::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
    Infill,
}

/// What is known about one choice so far.
#[derive(Default)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub prompt_logprobs: Vec<Option<TokenLogprob>>,
    pub finish: Option<FinishReason>,
    pub stats: Option<SeqStats>,
    pub queue: Duration,
    pub cached: usize,
    /// Tokens generated so far.
    pub generated: usize,
}

/// Everything needed to answer one request.
pub struct Reply {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub plan: Plan,
    pub vocab: Arc<Vocab>,
    pub metrics: Arc<Metrics>,
    pub choices: Vec<Choice>,
    /// Writes the request to the ledger; `None` when the server keeps none.
    pub recorder: Option<Recorder>,
    /// Known once the request is recorded.
    pub cost: Option<Cost>,
    /// When the request was submitted, and from then to the first generated token of any choice.
    pub started: Instant,
    pub first_token: Option<Duration>,
}

impl Reply {
    pub fn new(kind: Kind, model: String, plan: Plan, vocab: Arc<Vocab>, metrics: Arc<Metrics>, recorder: Option<Recorder>) -> Self {
        let prefix = match kind {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
            Kind::Infill => "infill",
        };
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = format!("{prefix}-{:016x}", rand::random::<u64>());
        let choices = (0..plan.requests.len() * plan.n).map(|_| Choice::default()).collect();
        Self { kind, id, created, model, plan, vocab, metrics, choices, recorder, cost: None, started: Instant::now(), first_token: None }
    }

    /// Applies one event; returns an error message when the engine failed the choice.
    pub fn apply(&mut self, index: usize, e: &Event) -> Result<(), String> {
        let c = &mut self.choices[index];
        match e {
            Event::Started { queue, cached_tokens, .. } => {
                c.queue = *queue;
                c.cached = *cached_tokens;
            }
            Event::PromptLogprobs { logprobs, .. } => c.prompt_logprobs = logprobs.clone(),
            Event::Token { text, logprob, .. } => {
                c.generated += 1;
                self.first_token.get_or_insert_with(|| self.started.elapsed());
                c.text.push_str(text);
                c.logprobs.extend(logprob.clone());
            }
            Event::Tail { text, .. } => c.text.push_str(text),
            Event::Done { finish, stats, .. } => {
                self.metrics.generation(stats);
                c.finish = Some(*finish);
                c.stats = Some(stats.clone());
            }
            Event::Error { message, .. } => return Err(message.clone()),
        }
        Ok(())
    }

    pub fn all_done(&self) -> bool {
        self.choices.iter().all(|c| c.finish.is_some())
    }

    pub fn usage(&self) -> Usage {
        let prompt_tokens: usize = self.plan.requests.iter().map(|r| r.prompt.len()).sum();
        let completion_tokens = self.choices.iter().map(|c| c.generated).sum();
        // The prompt counts once per prompt, however many choices share it.
        let cached_tokens = self.choices.iter().step_by(self.plan.n).map(|c| c.cached).sum();
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, prompt_tokens_details: PromptTokensDetails { cached_tokens }, cost: self.cost.clone() }
    }

    /// The `x-hearth-*` timing headers; generated-token figures only once they are known.
    pub fn headers(&self, finished: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        let u = self.usage();
        let queue = self.choices.iter().map(|c| c.queue).max().unwrap_or_default();
        put("x-hearth-queue-ms", format!("{:.1}", queue.as_secs_f64() * 1e3));
        put("x-hearth-prompt-tokens", u.prompt_tokens.to_string());
        put("x-hearth-cached-tokens", u.prompt_tokens_details.cached_tokens.to_string());
        if finished {
            put("x-hearth-generated-tokens", u.completion_tokens.to_string());
            let gaps: Vec<Duration> = self.choices.iter().filter_map(|c| c.stats.as_ref()).flat_map(|s| s.inter_token.iter().copied()).collect();
            let per = if gaps.is_empty() { 0.0 } else { gaps.iter().sum::<Duration>().as_secs_f64() * 1e3 / gaps.len() as f64 };
            put("x-hearth-time-per-token-ms", format!("{per:.2}"));
        }
        if let Some(cost) = &self.cost {
            put("x-hearth-local-cost", format!("{:.9} {}", cost.local.amount, cost.local.currency));
            if let Some(c) = cost.cloud.first() {
                let (amount, currency) = c.converted.as_ref().map_or((c.amount, &c.currency), |x| (x.amount, &x.currency));
                put("x-hearth-cloud-cost", format!("{amount:.9} {currency}; model={}", c.model));
            }
        }
        h
    }

    /// The prompt text choice `i` continues (each prompt has `n` choices).
    pub fn prompt_text(&self, i: usize) -> &str {
        &self.plan.prompt_texts[i / self.plan.n]
    }

    /// Completions-style logprobs of the prompt of choice `i` (echo), offsets from 0.
    pub fn prompt_logprobs(&self, i: usize) -> CompletionLogprobs {
        let ids = &self.plan.requests[i / self.plan.n].prompt;
        let lps = &self.choices[i].prompt_logprobs;
        let tokens: Vec<Option<&TokenLogprob>> = (0..ids.len()).map(|k| lps.get(k).and_then(Option::as_ref)).collect();
        self.completion_logprobs(&tokens, ids, 0)
    }

    pub fn piece(&self, id: u32) -> String {
        self.vocab.decode(&[id])
    }

    pub fn finish_str(f: Option<FinishReason>) -> Value {
        f.map_or(Value::Null, |f| Value::String(f.as_str().to_owned()))
    }

    /// Completions-style logprobs of `tokens` (with `None` for a token without one), text offsets
    /// counted in characters from `offset`.
    pub fn completion_logprobs(&self, tokens: &[Option<&TokenLogprob>], ids: &[u32], mut offset: usize) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        for (lp, &id) in tokens.iter().zip(ids) {
            let piece = self.piece(id);
            out.text_offset.push(offset);
            offset += piece.chars().count();
            out.tokens.push(piece);
            out.token_logprobs.push(lp.map(|l| l.logprob));
            out.top_logprobs.push(lp.map(|l| l.top.iter().map(|&(t, p)| (self.piece(t), p)).collect()));
        }
        out
    }

    pub fn chat_logprobs(&self, tokens: &[TokenLogprob]) -> Vec<ChatTokenLogprob> {
        tokens
            .iter()
            .map(|l| {
                let token = self.piece(l.token);
                let top = l.top.iter().map(|&(t, p)| {
                    let s = self.piece(t);
                    ChatTopLogprob { bytes: s.as_bytes().to_vec(), token: s, logprob: p }
                });
                ChatTokenLogprob { bytes: token.as_bytes().to_vec(), token, logprob: l.logprob, top_logprobs: top.collect() }
            })
            .collect()
    }

    /// The non-streaming body.
    pub fn body(&self) -> Value {
        match self.kind {
            Kind::Completion => self.completion_body(),
            Kind::Chat => self.chat_body(),
            Kind::Infill => self.infill_final(self.choices[0].text.clone()),
        }
    }

    fn completion_body(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let text = if self.plan.echo { format!("{}{}", self.prompt_text(i), c.text) } else { c.text.clone() };
                let logprobs = self.plan.logprobs.map(|_| self.choice_logprobs(i, c));
                json!({ "index": i, "text": text, "logprobs": logprobs, "finish_reason": Self::finish_str(c.finish) })
            })
            .collect();
        json!({ "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage() })
    }

    /// Logprobs of choice `i`: the prompt's first when echoed, then the generated tokens.
    pub fn choice_logprobs(&self, i: usize, c: &Choice) -> CompletionLogprobs {
        let gen_ids: Vec<u32> = c.logprobs.iter().map(|l| l.token).collect();
        let gen: Vec<Option<&TokenLogprob>> = c.logprobs.iter().map(Some).collect();
        if !self.plan.echo {
            return self.completion_logprobs(&gen, &gen_ids, 0);
        }
        let mut out = self.prompt_logprobs(i);
        let offset = self.prompt_text(i).chars().count();
        let rest = self.completion_logprobs(&gen, &gen_ids, offset);
        out.tokens.extend(rest.tokens);
        out.token_logprobs.extend(rest.token_logprobs);
        out.top_logprobs.extend(rest.top_logprobs);
        out.text_offset.extend(rest.text_offset);
        out
    }

    fn chat_body(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let logprobs = self.plan.logprobs.map(|_| json!({ "content": self.chat_logprobs(&c.logprobs) }));
                json!({ "index": i, "message": { "role": "assistant", "content": c.text }, "logprobs": logprobs,
                        "finish_reason": Self::finish_str(c.finish) })
            })
            .collect();
        json!({ "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage() })
    }

    /// llama.cpp's final `/infill` object: the content plus counts and timings.
    pub fn infill_final(&self, content: String) -> Value {
        let c = &self.choices[0];
        let s = c.stats.clone().unwrap_or_default();
        let prompt_ms = s.time_to_first_token.saturating_sub(s.queue).as_secs_f64() * 1e3;
        let predicted_ms = s.inter_token.iter().sum::<Duration>().as_secs_f64() * 1e3;
        let stop_type = match c.finish {
            Some(FinishReason::Stop) => "eos",
            _ => "limit",
        };
        json!({
            "content": content, "stop": true, "model": self.model, "cost": self.cost,
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
