//! One running choice of a request: its tokens, KV cache, sampler and stop-string state, and
//! what it does with the logits a step gives it (sample, report, finish).

use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use tokio::sync::mpsc::UnboundedSender;

use crate::model::{KvCache, ModelError, StreamDecoder, Vocab};

use super::grammar::{Grammar, Mask};
use super::sampler::Sampler;
use super::stop::StopStrings;
use super::{Event, FinishReason, GenRequest, Meter, SeqStats, TokenLogprob};

pub(crate) struct Sequence {
    pub index: usize,
    pub tx: UnboundedSender<Event>,
    /// Prompt, then generated tokens; the cache holds all but the last one once decoding.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub cache: KvCache,
    pub cached_tokens: usize,
    /// The request's meter, charged by the scheduler.
    pub meter: Arc<Meter>,
    max_tokens: usize,
    sampler: Sampler,
    stops: StopStrings,
    detok: StreamDecoder,
    logprobs: Option<usize>,
    pub prompt_logprobs: bool,
    prompt_lp: Vec<Option<TokenLogprob>>,
    queued_at: Instant,
    admitted_at: Instant,
    last_token_at: Option<Instant>,
    /// A stop string ended generation: nothing held back may be shown.
    stopped_by_string: bool,
    /// The grammar the output follows, and the mask for the next token when computed ahead
    /// (alongside the forward pass that produces its logits).
    pub grammar: Option<Grammar>,
    pub mask: Option<Mask>,
    stats: SeqStats,
}

/// What a step did to a sequence.
pub(crate) enum Progress {
    Running,
    Finished(FinishReason),
    /// The client is gone; drop the sequence.
    Cancelled,
}

impl Sequence {
    pub fn new(index: usize, req: &GenRequest, tx: UnboundedSender<Event>, cache: KvCache, queued_at: Instant) -> Self {
        let mut sampler_cfg = req.sampler.clone();
        sampler_cfg.seed = sampler_cfg.seed.map(|s| s.wrapping_add(index as u64));
        let cached_tokens = cache.len();
        let mut prompt_lp = Vec::new();
        if req.prompt_logprobs {
            prompt_lp.push(None);
        }
        Self {
            index,
            tx,
            tokens: req.prompt.clone(),
            prompt_len: req.prompt.len(),
            cache,
            cached_tokens,
            meter: req.meter.clone(),
            max_tokens: req.max_tokens,
            sampler: Sampler::new(sampler_cfg),
            stops: StopStrings::new(req.stop.clone()),
            detok: StreamDecoder::new(),
            logprobs: req.logprobs,
            prompt_logprobs: req.prompt_logprobs,
            prompt_lp,
            queued_at,
            admitted_at: Instant::now(),
            last_token_at: None,
            stopped_by_string: false,
            grammar: req.grammar.clone(),
            mask: None,
            stats: SeqStats { prompt_tokens: req.prompt.len(), cached_tokens, ..SeqStats::default() },
        }
    }

    /// Tokens not yet in the cache.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.cache.len()
    }

    pub fn is_decoding(&self) -> bool {
        self.tokens.len() > self.prompt_len
    }

    pub fn send(&self, e: Event) -> bool {
        self.tx.send(e).is_ok()
    }

    /// Handles the logits of a step that fed this sequence `fed` tokens starting at `start`.
    /// `rows` are the logits asked for: every fed row with prompt logprobs, else the last row
    /// when the sequence has caught up, else none.
    pub fn after_step(&mut self, vocab: &Vocab, start: usize, fed: usize, rows: Option<Tensor>) -> Result<Progress, ModelError> {
        let Some(rows) = rows else { return Ok(Progress::Running) };
        let read = |t: Tensor| t.to_vec2::<f32>().map_err(|e| ModelError::candle("reading logits", e));
        let mut rows = read(rows)?;
        if self.prompt_logprobs && start < self.prompt_len {
            // Row i predicts the token at start + i + 1.
            for (i, row) in rows.iter().enumerate().take(fed) {
                let next = start + i + 1;
                if next < self.prompt_len {
                    self.prompt_lp.push(Some(logprob_of(row, self.tokens[next], self.logprobs.unwrap_or(0))));
                }
            }
        }
        if self.pending() > 0 {
            return Ok(Progress::Running);
        }
        let mut row = rows.pop().expect("a logits row for the last token");
        if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
            return Err(ModelError::Input("the model produced non-finite logits (NaN or infinity): its weights or hyper-parameters are broken".into()));
        }
        if !self.is_decoding() {
            let index = self.index;
            let started = Event::Started {
                index,
                queue: self.admitted_at - self.queued_at,
                prompt_tokens: self.prompt_len,
                cached_tokens: self.cached_tokens,
            };
            if !self.send(started) {
                return Ok(Progress::Cancelled);
            }
            if self.prompt_logprobs {
                let logprobs = std::mem::take(&mut self.prompt_lp);
                if !self.send(Event::PromptLogprobs { index, logprobs }) {
                    return Ok(Progress::Cancelled);
                }
            }
        }
        if let Some(g) = self.grammar.as_mut() {
            let mask = match self.mask.take() {
                Some(m) => Ok(m),
                None => g.mask(),
            };
            match mask {
                Ok(m) => m.apply(&mut row),
                Err(e) => return Err(ModelError::Input(format!("the grammar failed: {e}"))),
            }
        }
        Ok(self.next_token(vocab, &mut row))
    }

    /// Whether this sequence samples after the coming step, with a grammar whose mask is not yet
    /// known: such masks are computed while the step runs.
    pub fn wants_mask(&self, logits_next: bool) -> bool {
        logits_next && self.grammar.is_some() && self.mask.is_none()
    }

    /// Computes the next mask ahead of the logits (on another thread, during the forward pass).
    /// A failure is left for `after_step` to report.
    pub fn prepare_mask(grammar: &mut Option<Grammar>, mask: &mut Option<Mask>) {
        if let Some(g) = grammar.as_mut() {
            *mask = g.mask().ok();
        }
    }

    fn next_token(&mut self, vocab: &Vocab, row: &mut [f32]) -> Progress {
        let lp = self.logprobs.map(|top| (row.to_vec(), top));
        let next = self.sampler.sample(row, &self.tokens);
        let now = Instant::now();
        match self.last_token_at {
            None => self.stats.time_to_first_token = now - self.queued_at,
            Some(t) => self.stats.inter_token.push(now - t),
        }
        self.last_token_at = Some(now);
        if vocab.is_end_of_generation(next) {
            return Progress::Finished(FinishReason::Stop);
        }
        if let Some(g) = self.grammar.as_mut() {
            if let Err(e) = g.accept(next) {
                tracing::error!("the grammar refused token {next} it had allowed: {e}");
                return Progress::Finished(FinishReason::Stop);
            }
        }
        self.tokens.push(next);
        self.stats.generated_tokens += 1;
        let logprob = lp.map(|(raw, top)| logprob_of(&raw, next, top));
        let mut text = String::new();
        let mut stopped = false;
        if let Some(piece) = self.detok.push(vocab, next) {
            let step = self.stops.push(&piece);
            text = step.emit;
            stopped = step.stopped;
        }
        if !self.send(Event::Token { index: self.index, token: next, text, logprob }) {
            return Progress::Cancelled;
        }
        if stopped {
            self.stopped_by_string = true;
            return Progress::Finished(FinishReason::StopSequence);
        }
        if self.grammar.as_ref().is_some_and(Grammar::is_finished) {
            return Progress::Finished(FinishReason::Stop);
        }
        if self.stats.generated_tokens >= self.max_tokens {
            return Progress::Finished(FinishReason::Length);
        }
        if self.cache.len() + 1 > self.cache.max_len() {
            return Progress::Finished(FinishReason::ContextFull);
        }
        Progress::Running
    }

    /// Releases held-back text (unless a stop string ended the sequence) and reports the end.
    pub fn report_end(mut self, vocab: &Vocab, reason: FinishReason) -> Self {
        if !self.stopped_by_string {
            let mut tail = String::new();
            let mut stopped = false;
            if let Some(piece) = self.detok.flush(vocab) {
                let step = self.stops.push(&piece);
                tail.push_str(&step.emit);
                stopped = step.stopped;
            }
            if !stopped {
                tail.push_str(&self.stops.finish());
            }
            if !tail.is_empty() {
                self.send(Event::Tail { index: self.index, text: tail });
            }
        }
        self.stats.queue = self.admitted_at - self.queued_at;
        self.stats.total = self.queued_at.elapsed();
        let stats = std::mem::take(&mut self.stats);
        self.send(Event::Done { index: self.index, finish: reason, stats });
        self
    }

    /// The tokens its cache holds, and the cache.
    pub fn into_prefix(self) -> (Vec<u32>, KvCache) {
        let mut tokens = self.tokens;
        tokens.truncate(self.cache.len());
        (tokens, self.cache)
    }

    pub fn fail(&self, message: &str) {
        self.send(Event::Error { index: self.index, message: message.to_owned() });
    }

}

/// Log-softmax of `row` at `token`, with the `top` most likely tokens.
fn logprob_of(row: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = row.iter().copied().filter(|x| x.is_finite()).fold(f32::MIN, f32::max);
    let log_z = max + row.iter().filter(|x| x.is_finite()).map(|&x| (x - max).exp()).sum::<f32>().ln();
    let lp = |x: f32| if x.is_finite() { x - log_z } else { f32::NEG_INFINITY };
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        let mut idx: Vec<u32> = (0..row.len() as u32).collect();
        let k = top.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        best = idx.into_iter().map(|i| (i, lp(row[i as usize]))).collect();
    }
    TokenLogprob { token, logprob: lp(row.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY)), top: best }
}
