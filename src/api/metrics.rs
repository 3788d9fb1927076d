//! Prometheus metrics: requests by endpoint and status, token counts, latency histograms, and the
//! engine's queue, batch and KV-cache gauges (read from its counters at scrape time).

use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::{EngineStats, SeqStats};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    prompt_tokens: Counter,
    cached_tokens: Counter,
    generated_tokens: Counter,
    ttft: Histogram,
    inter_token: Histogram,
    duration: Histogram,
    queue_depth: Gauge,
    running: Gauge,
    kv_bytes: Gauge,
    kv_tokens: Gauge,
    steps: Counter,
    step_sequences: Counter,
    step_tokens: Counter,
    tool_call_answers: Counter,
    tool_calls: Counter,
    constrained: Counter,
    engine_errors: Counter,
    spooled: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let m = Self {
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            cached_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            inter_token: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            kv_bytes: Gauge::default(),
            kv_tokens: Gauge::default(),
            steps: Counter::default(),
            step_sequences: Counter::default(),
            step_tokens: Counter::default(),
            tool_call_answers: Counter::default(),
            tool_calls: Counter::default(),
            constrained: Counter::default(),
            engine_errors: Counter::default(),
            spooled: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "HTTP requests by endpoint and status", m.requests.clone());
        registry.register("prompt_tokens", "Prompt tokens of finished generations", m.prompt_tokens.clone());
        registry.register("cached_prompt_tokens", "Prompt tokens reused from earlier requests' KV caches", m.cached_tokens.clone());
        registry.register("generated_tokens", "Generated tokens", m.generated_tokens.clone());
        registry.register("time_to_first_token_seconds", "From arrival to the first generated token", m.ttft.clone());
        registry.register("inter_token_latency_seconds", "Between consecutive generated tokens", m.inter_token.clone());
        registry.register("generation_duration_seconds", "From arrival to the end of a generation", m.duration.clone());
        registry.register("queue_depth", "Requests waiting for a slot", m.queue_depth.clone());
        registry.register("running_sequences", "Sequences in the running batch", m.running.clone());
        registry.register("kv_cache_bytes", "Bytes held by KV caches (running and kept for reuse)", m.kv_bytes.clone());
        registry.register("kv_cache_tokens", "Positions stored in KV caches (running and kept for reuse)", m.kv_tokens.clone());
        registry.register("engine_steps", "Batched forward passes", m.steps.clone());
        registry.register("engine_step_sequences", "Sequences summed over forward passes", m.step_sequences.clone());
        registry.register("engine_step_tokens", "Tokens summed over forward passes", m.step_tokens.clone());
        registry.register("tool_call_answers", "Answers (choices) that ended in tool calls", m.tool_call_answers.clone());
        registry.register("tool_calls", "Tool calls generated", m.tool_calls.clone());
        registry.register("constrained_requests", "Requests whose output followed a grammar (tools, JSON schema, GBNF)", m.constrained.clone());
        registry.register("ledger_spooled_rows", "Ledger rows waiting in the spool for a busy database", m.spooled.clone());
        registry.register("engine_errors", "Requests the engine failed (a broken model, a failed forward pass)", m.engine_errors.clone());
        Self { registry, ..m }
    }

    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests.get_or_create(&vec![("endpoint", endpoint.to_owned()), ("status", status.to_string())]).inc();
    }

    /// Records an answer that ended in `n` tool calls.
    pub fn tool_calls(&self, n: usize) {
        self.tool_call_answers.inc();
        self.tool_calls.inc_by(n as u64);
    }

    /// Sets the number of ledger rows waiting in the spool.
    pub fn set_spooled(&self, n: usize) {
        self.spooled.set(n as i64);
    }

    /// Records a request the engine failed.
    pub fn engine_error(&self) {
        self.engine_errors.inc();
    }

    /// Records a request whose output follows a grammar.
    pub fn constrained(&self) {
        self.constrained.inc();
    }

    /// Records a finished generation.
    pub fn generation(&self, s: &SeqStats) {
        self.prompt_tokens.inc_by(s.prompt_tokens as u64);
        self.cached_tokens.inc_by(s.cached_tokens as u64);
        self.generated_tokens.inc_by(s.generated_tokens as u64);
        if s.generated_tokens > 0 {
            self.ttft.observe(s.time_to_first_token.as_secs_f64());
        }
        for d in &s.inter_token {
            self.inter_token.observe(d.as_secs_f64());
        }
        self.duration.observe(s.total.as_secs_f64());
    }

    /// The text exposition, with the engine's gauges read now.
    pub fn render(&self, engine: Option<&EngineStats>) -> String {
        if let Some(e) = engine {
            self.queue_depth.set(e.queued.load(Ordering::Relaxed) as i64);
            self.running.set(e.running.load(Ordering::Relaxed) as i64);
            self.kv_bytes.set(e.kv_bytes.load(Ordering::Relaxed) as i64);
            self.kv_tokens.set(e.kv_tokens.load(Ordering::Relaxed) as i64);
            for (c, v) in [(&self.steps, &e.steps), (&self.step_sequences, &e.step_sequences), (&self.step_tokens, &e.step_tokens)] {
                let v = v.load(Ordering::Relaxed);
                c.inc_by(v.saturating_sub(c.get()));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
