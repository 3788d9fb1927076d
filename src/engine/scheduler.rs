//! The engine loop: admits queued requests between steps, runs one batched forward per step over
//! every running sequence (one token for each decoding sequence, prompt chunks for new ones within
//! a token budget), hands out the logits, retires finished sequences and keeps their KV caches for
//! prefix reuse.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use crate::energy::EnergyMeter;
use crate::model::{Chunk, KvCache, Logits, Model};

use super::sequence::{Progress, Sequence};
use super::{step_shares, EngineConfig, EngineStats, Event, Job};

/// What a sequence ended by [`super::Engine::abort_all`] is told.
const STOPPING: &str = "the server is shutting down; retry on another server";

pub(crate) fn run(model: Model, cfg: EngineConfig, energy: EnergyMeter, rx: Receiver<Job>, stats: Arc<EngineStats>, abort: Arc<AtomicBool>) {
    let pool = PrefixPool { entries: VecDeque::new(), cap: cfg.prefix_cache };
    let mut s = Scheduler { pool, model, cfg, running: Vec::new(), stats, energy };
    loop {
        if abort.load(Ordering::SeqCst) {
            for seq in s.running.drain(..) {
                seq.fail(STOPPING);
            }
            s.publish();
            // Waiting requests, one per turn, and later ones (there should be none: the listener
            // has stopped) fail the same way.
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(job) => {
                    s.stats.queued.fetch_sub(1, Ordering::SeqCst);
                    let _ = job.tx.send(Event::Error { index: 0, message: STOPPING.into() });
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            continue;
        }
        while s.running.len() < s.cfg.max_running {
            let job = if s.running.is_empty() {
                // Woken now and then to see whether the server is stopping.
                match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                    Ok(j) => j,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            s.stats.queued.fetch_sub(1, Ordering::SeqCst);
            s.admit(job);
        }
        if catch_unwind(AssertUnwindSafe(|| s.step())).is_err() {
            tracing::error!("a step panicked; failing its {} sequences", s.running.len());
            for seq in s.running.drain(..) {
                seq.fail("internal error in the engine");
            }
        }
        s.publish();
    }
}

struct Scheduler {
    model: Model,
    cfg: EngineConfig,
    running: Vec<Sequence>,
    pool: PrefixPool,
    stats: Arc<EngineStats>,
    energy: EnergyMeter,
}

/// What one sequence gets in a step.
struct Slot {
    seq: usize,
    start: usize,
    len: usize,
    logits: Logits,
}

impl Scheduler {
    fn admit(&mut self, job: Job) {
        let Job { req, tx, queued_at } = job;
        if tx.is_closed() {
            return;
        }
        let limit = self.model.decoder.spec.context_length;
        if req.prompt.is_empty() || req.prompt.len() + req.max_tokens > limit {
            let message = format!("the prompt ({} tokens) plus max_tokens ({}) must fit the context of {limit} tokens", req.prompt.len(), req.max_tokens);
            let _ = tx.send(Event::Error { index: 0, message });
            return;
        }
        for index in 0..req.n.max(1) {
            let cache = match req.prompt_logprobs {
                true => None,
                false => self.pool.take(&req.prompt),
            };
            let cache = cache.unwrap_or_else(|| self.model.decoder.new_cache());
            self.running.push(Sequence::new(index, &req, tx.clone(), cache, queued_at));
        }
    }

    fn step(&mut self) {
        // Clients that left: keep what their caches computed, drop the rest.
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running).into_iter().partition(|s| s.tx.is_closed());
        self.running = kept;
        for s in gone {
            let (tokens, cache) = s.into_prefix();
            self.pool.put(tokens, cache);
        }
        let slots = self.plan();
        if slots.is_empty() {
            return;
        }
        let mut chunks = Vec::with_capacity(slots.len());
        let mut by_seq: Vec<Option<&Slot>> = vec![None; self.running.len()];
        for slot in &slots {
            by_seq[slot.seq] = Some(slot);
        }
        // Grammar masks for the tokens this step's logits will pick are computed beside the forward.
        let mut masks = Vec::new();
        for (s, slot) in self.running.iter_mut().zip(&by_seq) {
            if let Some(slot) = slot {
                let samples_next = s.wants_mask(slot.len == s.pending());
                let Sequence { tokens, cache, grammar, mask, .. } = s;
                chunks.push(Chunk { tokens: &tokens[slot.start..slot.start + slot.len], cache, logits: slot.logits });
                if samples_next {
                    masks.push((grammar, mask));
                }
            }
        }
        let lens: Vec<usize> = slots.iter().map(|s| s.len).collect();
        let fed: usize = lens.iter().sum();
        let (joules, started) = (self.energy.read(), Instant::now());
        let decoder = &self.model.decoder;
        let result = std::thread::scope(|scope| {
            if !masks.is_empty() {
                scope.spawn(move || masks.into_iter().for_each(|(g, m)| Sequence::prepare_mask(g, m)));
            }
            decoder.forward(&mut chunks)
        });
        drop(chunks);
        let (joules, secs) = (self.energy.read() - joules, started.elapsed().as_secs_f64());
        for (slot, (j, t)) in slots.iter().zip(step_shares(&lens, joules, secs)) {
            self.running[slot.seq].meter.add(j, t);
        }
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.step_sequences.fetch_add(slots.len() as u64, Ordering::Relaxed);
        self.stats.step_tokens.fetch_add(fed as u64, Ordering::Relaxed);
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("forward pass failed: {e}");
                let mut failed: Vec<usize> = slots.iter().map(|s| s.seq).collect();
                failed.sort_unstable();
                for &i in failed.iter().rev() {
                    self.running.remove(i).fail(&format!("the forward pass failed: {e}"));
                }
                return;
            }
        };
        // Sequences in step order; outputs come in the same order.
        let mut ended: Vec<(usize, Result<Progress, String>)> = Vec::new();
        let order: Vec<&Slot> = by_seq.iter().flatten().copied().collect();
        for (slot, rows) in order.into_iter().zip(outputs) {
            match self.running[slot.seq].after_step(&self.model.vocab, slot.start, slot.len, rows) {
                Ok(Progress::Running) => {}
                outcome => ended.push((slot.seq, outcome.map_err(|e| e.to_string()))),
            }
        }
        // Highest index first, so removals leave the others in place.
        for (i, outcome) in ended.into_iter().rev() {
            let mut seq = self.running.remove(i);
            match outcome {
                Err(msg) => {
                    seq.fail(&msg);
                    continue;
                }
                Ok(Progress::Finished(reason)) => seq = seq.report_end(&self.model.vocab, reason),
                Ok(_) => {}
            }
            // Finished or cancelled, what its cache computed may serve a later prompt.
            let (tokens, cache) = seq.into_prefix();
            self.pool.put(tokens, cache);
        }
    }

    /// Decoding sequences first (one token each), then prompt chunks in arrival order while the
    /// step's token budget lasts.
    fn plan(&self) -> Vec<Slot> {
        let mut budget = self.cfg.step_tokens.max(1);
        let mut slots = Vec::new();
        let decoding = self.running.iter().enumerate().filter(|(_, s)| s.is_decoding());
        let prefilling = self.running.iter().enumerate().filter(|(_, s)| !s.is_decoding());
        for (i, s) in decoding.chain(prefilling) {
            let pending = s.pending();
            let len = if s.is_decoding() { pending.min(1) } else { pending.min(budget) };
            if len == 0 {
                continue;
            }
            budget = budget.saturating_sub(len);
            let logits = if s.prompt_logprobs && !s.is_decoding() {
                Logits::From(0)
            } else if len == pending {
                Logits::Last
            } else {
                Logits::None
            };
            slots.push(Slot { seq: i, start: s.cache.len(), len, logits });
        }
        slots
    }


    fn publish(&self) {
        let caches = self.running.iter().map(|s| &s.cache).chain(self.pool.entries.iter().map(|e| &e.1));
        let (bytes, tokens) = caches.fold((0, 0), |(b, t), c| (b + c.bytes(), t + c.len()));
        self.stats.running.store(self.running.len(), Ordering::Relaxed);
        self.stats.kv_bytes.store(bytes, Ordering::Relaxed);
        self.stats.kv_tokens.store(tokens, Ordering::Relaxed);
    }
}

/// KV caches of finished sequences, with the tokens they hold, most recent last.
struct PrefixPool {
    entries: VecDeque<(Vec<u32>, KvCache)>,
    cap: usize,
}

impl PrefixPool {
    fn put(&mut self, tokens: Vec<u32>, cache: KvCache) {
        if self.cap == 0 || tokens.is_empty() {
            return;
        }
        self.entries.push_back((tokens, cache));
        while self.entries.len() > self.cap {
            self.entries.pop_front();
        }
    }

    /// A cache holding the longest prefix `prompt` shares with a kept one. At least the prompt's
    /// last token is always left to compute, since its logits are needed. An entry the prompt
    /// extends is handed over; one it diverges from is copied, so that it stays for others
    /// (two chats sharing only a system prompt must not erase each other's history).
    fn take(&mut self, prompt: &[u32]) -> Option<KvCache> {
        let common = |t: &[u32]| t.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let (i, n) = self.entries.iter().enumerate().map(|(i, e)| (i, common(&e.0))).max_by_key(|&(i, n)| (n, i))?;
        let keep = n.min(prompt.len().saturating_sub(1));
        if keep == 0 {
            return None;
        }
        if n < self.entries[i].0.len() {
            match self.entries[i].1.clone_prefix(keep) {
                Ok(c) => return Some(c),
                Err(e) => tracing::warn!("copying a cached prefix failed: {e}"),
            }
        }
        let (_, mut cache) = self.entries.remove(i)?;
        cache.truncate(keep);
        Some(cache)
    }
}
