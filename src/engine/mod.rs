//! The engine: a thread that owns the model and runs every request through one batched forward
//! pass per step, and the cloneable handle that request handlers use to reach it.
//!
//! Handlers submit a [`GenRequest`] through a bounded queue and get back a channel of [`Event`]s
//! for that request alone. A full queue is refused at once ([`EngineError::QueueFull`]); a dropped
//! receiver cancels the request within one step.

mod collect;
pub mod grammar;
pub mod sampler;
mod scheduler;
mod sequence;
pub mod stop;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::energy::{EnergyMeter, EnergyMethod};
use crate::model::{Fim, Model, PromptFormat, Vocab};

pub use collect::Generation;
pub use grammar::{Grammar, GrammarError, GrammarSpec, Grammars};
pub use sampler::{Knob, Penalties, Sampler, SamplerConfig, SamplerError, Sampling};
pub use stop::StopStrings;

/// One generation request, already validated: `n` independent continuations of `prompt`.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub n: usize,
    pub max_tokens: usize,
    /// Choice `i` is sampled with seed `seed + i`, so a seeded request is reproducible.
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// Report the prompt tokens' log-probabilities too (the whole prompt is computed afresh).
    pub prompt_logprobs: bool,
    /// Where the engine charges this request's share of each step's energy and time.
    pub meter: Arc<Meter>,
    /// What the output must follow; each choice walks its own copy.
    pub grammar: Option<Grammar>,
}

impl GenRequest {
    /// One choice of `prompt`, at most `max_tokens` long, no stop strings or logprobs.
    pub fn new(prompt: Vec<u32>, max_tokens: usize, sampler: SamplerConfig) -> Self {
        Self { prompt, n: 1, max_tokens, sampler, stop: Vec::new(), logprobs: None, prompt_logprobs: false, meter: Arc::default(), grammar: None }
    }
}

/// Energy and busy time charged to one request. A step's energy and time are shared among its
/// sequences by the tokens each had processed in it.
#[derive(Debug, Default)]
pub struct Meter {
    energy_uj: AtomicU64,
    busy_ns: AtomicU64,
}

impl Meter {
    pub fn add(&self, joules: f64, secs: f64) {
        self.energy_uj.fetch_add((joules.max(0.0) * 1e6).round() as u64, Ordering::Relaxed);
        self.busy_ns.fetch_add((secs.max(0.0) * 1e9).round() as u64, Ordering::Relaxed);
    }

    pub fn joules(&self) -> f64 {
        self.energy_uj.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn busy_secs(&self) -> f64 {
        self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Each sequence's share of a step's `joules` and `secs`, by the tokens (`fed`) it processed.
pub fn step_shares(fed: &[usize], joules: f64, secs: f64) -> Vec<(f64, f64)> {
    let total: usize = fed.iter().sum();
    fed.iter()
        .map(|&n| match total {
            0 => (0.0, 0.0),
            t => (joules * n as f64 / t as f64, secs * n as f64 / t as f64),
        })
        .collect()
}

/// A token's log-probability and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What the engine reports about one choice of a request, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// The prompt is processed; `cached_tokens` of it were reused from an earlier request.
    Started { index: usize, queue: Duration, prompt_tokens: usize, cached_tokens: usize },
    /// Log-probabilities of the prompt tokens (the first has none).
    PromptLogprobs { index: usize, logprobs: Vec<Option<TokenLogprob>> },
    /// One generated token: its id, the text now safe to show (maybe empty) and, when asked,
    /// its logprob.
    Token { index: usize, token: u32, text: String, logprob: Option<TokenLogprob> },
    /// Text released at the end (held back by the detokenizer or stop-string check).
    Tail { index: usize, text: String },
    Done { index: usize, finish: FinishReason, stats: SeqStats },
    Error { index: usize, message: String },
}

/// Timings and counts of one finished choice.
#[derive(Debug, Clone, Default)]
pub struct SeqStats {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub queue: Duration,
    /// From arrival to the first generated token.
    pub time_to_first_token: Duration,
    /// Gaps between consecutive generated tokens.
    pub inter_token: Vec<Duration>,
    pub total: Duration,
}

impl SeqStats {
    pub fn time_per_token(&self) -> Duration {
        if self.inter_token.is_empty() {
            return Duration::ZERO;
        }
        self.inter_token.iter().sum::<Duration>() / self.inter_token.len() as u32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the server is busy: {0} requests are already waiting; retry later")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    /// The engine refused or failed a request it had accepted (its reason inside).
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token, or the grammar ended.
    Stop,
    /// One of the request's stop strings.
    StopSequence,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence => "stop",
            FinishReason::Length | FinishReason::ContextFull => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together in one step.
    pub max_running: usize,
    /// Requests that may wait for a slot before new ones are refused.
    pub queue: usize,
    /// Tokens per step (decode tokens plus prompt chunks).
    pub step_tokens: usize,
    /// Finished sequences whose KV caches are kept for prefix reuse.
    pub prefix_cache: usize,
    /// Watts per busy core, for the energy estimate when RAPL cannot be read.
    pub watts_per_core: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { max_running: 8, queue: 64, step_tokens: 512, prefix_cache: 8, watts_per_core: crate::energy::DEFAULT_WATTS_PER_CORE }
    }
}

/// Counters the engine keeps up to date for metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_bytes: AtomicUsize,
    pub kv_tokens: AtomicUsize,
    pub steps: AtomicU64,
    pub step_sequences: AtomicU64,
    pub step_tokens: AtomicU64,
}

/// What handlers may know about the model without touching the engine thread.
pub struct ModelInfo {
    /// The id clients use in `model`.
    pub id: String,
    /// The name in the GGUF file.
    pub name: String,
    pub vocab: Arc<Vocab>,
    pub prompt: Arc<PromptFormat>,
    pub fim: Option<Fim>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub quantization: String,
    pub file_size: usize,
    pub arch: String,
    pub device: String,
    /// How the engine measures the energy it charges.
    pub energy_method: EnergyMethod,
    /// The grammar compiler over this vocabulary, built on first use (start it empty).
    pub grammars: OnceLock<Result<Arc<Grammars>, GrammarError>>,
}

impl ModelInfo {
    /// Compiles a grammar over this model's vocabulary (the compiler is built on first use).
    pub fn grammar(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let grammars = self.grammars.get_or_init(|| Grammars::new(&self.vocab).map(Arc::new));
        grammars.as_ref().map_err(Clone::clone)?.compile(spec)
    }
}

struct Job {
    req: GenRequest,
    tx: UnboundedSender<Event>,
    queued_at: Instant,
}

/// A cloneable handle to the engine thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    info: Arc<ModelInfo>,
    stats: Arc<EngineStats>,
    queue: usize,
    /// Set when the server stops past its deadline: every sequence ends with an error.
    abort: Arc<std::sync::atomic::AtomicBool>,
}

impl Engine {
    /// Starts the engine thread, which takes ownership of `model`.
    pub fn start(model: Model, id: String, cfg: EngineConfig) -> Engine {
        let energy = EnergyMeter::detect(cfg.watts_per_core);
        let info = Arc::new(ModelInfo {
            id,
            name: model.name.clone(),
            vocab: model.vocab.clone(),
            prompt: model.prompt.clone(),
            fim: model.fim.clone(),
            context_length: model.decoder.spec.context_length,
            vocab_size: model.decoder.spec.vocab_size,
            quantization: model.quantization.clone(),
            file_size: model.file_size,
            arch: model.decoder.spec.arch.gguf_name().to_owned(),
            device: format!("{:?}", model.decoder.device.location()),
            energy_method: energy.method(),
            grammars: OnceLock::new(),
        });
        let stats = Arc::new(EngineStats::default());
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let queue = cfg.queue;
        let thread_stats = stats.clone();
        let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread_abort = abort.clone();
        std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || scheduler::run(model, cfg, energy, rx, thread_stats, thread_abort))
            .expect("spawning the engine thread");
        Engine { tx, info, stats, queue, abort }
    }

    /// Ends every running and waiting sequence, now and from now on, with an error event saying
    /// the server is stopping (what a stop past its deadline does to requests still going).
    pub fn abort_all(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    /// Queues a request; its events arrive on the returned channel. Dropping the receiver
    /// cancels it.
    pub fn submit(&self, req: GenRequest) -> Result<UnboundedReceiver<Event>, EngineError> {
        let (tx, rx) = unbounded_channel();
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        let job = Job { req, tx, queued_at: Instant::now() };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => EngineError::QueueFull(self.queue),
                    TrySendError::Disconnected(_) => EngineError::Stopped,
                })
            }
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
}
