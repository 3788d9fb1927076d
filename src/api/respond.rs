//! The canonical answer to a request: what its engine events have produced so far, per choice,
//! with usage, cost and timing headers. Every wire format (`wire/`) writes its bodies and stream
//! frames from this one state; `stream.rs` moves it over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use crate::engine::{Event, FinishReason, SeqStats, TokenLogprob};
use crate::ledger::Cost;
use crate::model::Vocab;

use super::metrics::Metrics;
use super::openai::{PromptTokensDetails, Usage};
use super::recorder::Recorder;
use super::validate::Plan;
use super::tools::CallParser;
use super::wire::{Delta, Wire};

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
    /// With tools: the calls read out of `text` so far.
    pub calls: Option<CallParser>,
}

impl Choice {
    /// The finish reason as OpenAI names it: `tool_calls` when the answer ended in calls.
    pub fn finish_reason(&self) -> Option<&'static str> {
        let called = self.calls.as_ref().is_some_and(|p| !p.calls().is_empty());
        self.finish.map(|f| if called && matches!(f, FinishReason::Stop | FinishReason::StopSequence) { "tool_calls" } else { f.as_str() })
    }
}

/// Everything needed to answer one request.
pub struct Reply {
    /// The protocol the answer is written in.
    pub wire: &'static dyn Wire,
    pub id: String,
    pub created: u64,
    /// The model name the client asked for (echoed back), and the model that served it.
    pub model: String,
    pub served: String,
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
    /// Numbers stream events, for protocols that number them (Responses).
    pub seq: std::sync::atomic::AtomicU64,
}

impl Reply {
    pub fn new(wire: &'static dyn Wire, model: String, plan: Plan, vocab: Arc<Vocab>, metrics: Arc<Metrics>, recorder: Option<Recorder>) -> Self {
        let prefix = wire.id_prefix();
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = format!("{prefix}-{:016x}", rand::random::<u64>());
        let choices = (0..plan.requests.len() * plan.n)
            .map(|i| Choice { calls: plan.calls.clone().map(|start| CallParser::new(start, format!("call_{}_{i}", &id[id.len() - 12..]))), ..Choice::default() })
            .collect();
        Self { wire, id, created, served: model.clone(), model, plan, vocab, metrics, choices, recorder, cost: None, started: Instant::now(), first_token: None, seq: Default::default() }
    }

    /// Applies one event of choice `index`; returns what changed, for the stream, or the
    /// message of an engine failure.
    pub fn apply<'e>(&mut self, index: usize, e: &'e Event) -> Result<Vec<Delta<'e>>, String> {
        let c = &mut self.choices[index];
        // Text goes to the choice whole; with tools, only what precedes the calls is content.
        let text = |c: &mut Choice, text: &str, logprob: Option<&'e TokenLogprob>| {
            c.text.push_str(text);
            let Some(p) = c.calls.as_mut() else { return vec![Delta::Text { text: text.to_owned(), logprob }] };
            let (content, calls) = p.push(text);
            let mut out = vec![Delta::Text { text: content, logprob }];
            out.extend(calls.into_iter().map(Delta::ToolCall));
            out
        };
        Ok(match e {
            Event::Started { queue, cached_tokens, .. } => {
                c.queue = *queue;
                c.cached = *cached_tokens;
                vec![Delta::Started]
            }
            Event::PromptLogprobs { logprobs, .. } => {
                c.prompt_logprobs = logprobs.clone();
                vec![Delta::PromptLogprobs]
            }
            Event::Token { text: t, logprob, .. } => {
                c.generated += 1;
                self.first_token.get_or_insert_with(|| self.started.elapsed());
                c.logprobs.extend(logprob.clone());
                text(c, t, logprob.as_ref())
            }
            Event::Tail { text: t, .. } => text(c, t, None),
            Event::Done { finish, stats, .. } => {
                self.metrics.generation(stats);
                c.finish = Some(*finish);
                c.stats = Some(stats.clone());
                let rest = c.calls.as_mut().map(CallParser::finish).unwrap_or_default();
                let mut out = vec![Delta::Text { text: rest, logprob: None }];
                if c.calls.as_ref().is_some_and(|p| !p.calls().is_empty()) {
                    self.metrics.tool_calls(c.calls.as_ref().map_or(0, |p| p.calls().len()));
                }
                out.push(Delta::Finished(*finish));
                out
            }
            Event::Error { message, .. } => {
                self.metrics.engine_error();
                return Err(message.clone());
            }
        })
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
        put("x-hearth-model", self.served.clone());
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

    /// The text of token `id` alone.
    pub fn piece(&self, id: u32) -> String {
        self.vocab.decode(&[id])
    }
}
