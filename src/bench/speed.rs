//! Prompt-processing and generation speed as llama.cpp's `llama-bench` measures them: `pp` random
//! tokens in one batch into an empty cache, and `tg` tokens generated one at a time from an empty
//! context (by each of `parallel` sequences side by side, one batched step per token, as the
//! server runs concurrent streams); one warm-up run, then the median of the repetitions.

use std::time::Instant;

use crate::engine::sampler::argmax;
use crate::engine::{Grammar, GrammarError};
use crate::model::{Chunk, Logits, Model, ModelError};

#[derive(Debug, Clone, Copy)]
pub struct Speed {
    /// Prompt tokens per second (0 when not measured).
    pub pp_tps: f64,
    /// Generated tokens per second, all sequences together (0 when not measured).
    pub tg_tps: f64,
}

/// Token ids spread over the vocabulary, the same for every run.
fn tokens(model: &Model, n: usize, seed: u64) -> Vec<u32> {
    let vocab = model.decoder.spec.vocab_size as u64;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (100 + x % (vocab - 100)) as u32
        })
        .collect()
}

fn prompt_secs(model: &Model, pp: usize, seed: u64) -> Result<f64, ModelError> {
    let toks = tokens(model, pp, seed);
    let mut cache = model.decoder.new_cache();
    let start = Instant::now();
    model.decoder.forward(&mut [Chunk { tokens: &toks, cache: &mut cache, logits: Logits::Last }])?;
    sync(model)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Generation that reads its logits and picks each next token (greedy), under `grammar` when
/// given: every sequence's mask is computed beside the forward pass and applied before the pick,
/// as the engine does; a grammar that ends starts over (the cache goes on). Without a grammar
/// this is the same loop less the masks, so the two times differ by the grammar's cost alone.
fn picked_secs(model: &Model, tg: usize, parallel: usize, grammar: Option<&Grammar>) -> Result<f64, ModelError> {
    let mut caches: Vec<_> = (0..parallel).map(|_| model.decoder.new_cache()).collect();
    let mut grammars: Vec<Option<Grammar>> = (0..parallel).map(|_| grammar.cloned()).collect();
    let mut next: Vec<u32> = (0..parallel).map(|s| tokens(model, 1, s as u64 + 7)[0]).collect();
    let bad = |e: GrammarError| ModelError::Input(format!("the grammar failed: {e}"));
    let start = Instant::now();
    for _ in 0..tg {
        let mut chunks: Vec<Chunk> =
            caches.iter_mut().zip(&next).map(|(cache, t)| Chunk { tokens: std::slice::from_ref(t), cache, logits: Logits::Last }).collect();
        let (out, masks) = std::thread::scope(|scope| {
            let masks = scope.spawn(|| grammars.iter_mut().map(|g| g.as_mut().map(Grammar::mask).transpose()).collect::<Result<Vec<_>, _>>());
            let out = model.decoder.forward(&mut chunks);
            (out, masks.join().expect("the mask thread"))
        });
        let masks = masks.map_err(bad)?;
        for (i, rows) in out?.into_iter().enumerate() {
            let rows = rows.ok_or_else(|| ModelError::Input("no logits".into()))?;
            let mut row: Vec<f32> = rows.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| ModelError::candle("reading logits", e))?;
            if let Some(m) = &masks[i] {
                m.apply(&mut row);
            }
            let t = argmax(&row);
            if let Some(g) = grammars[i].as_mut() {
                let ends = model.vocab.is_end_of_generation(t);
                if !ends {
                    g.accept(t).map_err(bad)?;
                }
                if ends || g.is_finished() {
                    *g = grammar.cloned().expect("a grammar");
                }
            }
            next[i] = t;
        }
    }
    sync(model)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Generation speed with and without `grammar` (tokens per second, all sequences together), in
/// alternating runs, medians of `reps`.
pub fn measure_constrained(model: &Model, tg: usize, parallel: usize, reps: usize, grammar: &Grammar) -> Result<(f64, f64), ModelError> {
    let parallel = parallel.max(1);
    picked_secs(model, tg.min(16), parallel, Some(grammar))?;
    let (mut free, mut bound) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        free.push((tg * parallel) as f64 / picked_secs(model, tg, parallel, None)?);
        bound.push((tg * parallel) as f64 / picked_secs(model, tg, parallel, Some(grammar))?);
    }
    Ok((median(free), median(bound)))
}

fn generate_secs(model: &Model, tg: usize, parallel: usize, seed: u64) -> Result<f64, ModelError> {
    let toks: Vec<Vec<u32>> = (0..parallel as u64).map(|s| tokens(model, tg, seed * 1000 + s)).collect();
    let mut caches: Vec<_> = (0..parallel).map(|_| model.decoder.new_cache()).collect();
    let start = Instant::now();
    for i in 0..tg {
        let mut chunks: Vec<Chunk> = caches
            .iter_mut()
            .zip(&toks)
            .map(|(cache, t)| Chunk { tokens: std::slice::from_ref(&t[i]), cache, logits: Logits::Last })
            .collect();
        model.decoder.forward(&mut chunks)?;
    }
    sync(model)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Waits for the device to finish the queued work: a GPU runs asynchronously, so the clock may
/// only be read once the last step is done.
fn sync(model: &Model) -> Result<(), ModelError> {
    model.decoder.device.synchronize().map_err(|e| ModelError::candle("synchronizing the device", e))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures `pp` and `tg` (either may be 0 to skip it; `tg` by `parallel` sequences at once)
/// over `reps` repetitions.
pub fn measure(model: &Model, pp: usize, tg: usize, parallel: usize, reps: usize) -> Result<Speed, ModelError> {
    let parallel = parallel.max(1);
    let reps = reps.max(1);
    let mut speed = Speed { pp_tps: 0.0, tg_tps: 0.0 };
    if pp > 0 {
        prompt_secs(model, pp, 0)?;
        let runs = (1..=reps as u64).map(|r| prompt_secs(model, pp, r).map(|s| pp as f64 / s)).collect::<Result<Vec<_>, _>>()?;
        speed.pp_tps = median(runs);
    }
    if tg > 0 {
        generate_secs(model, tg.min(16), parallel, 0)?;
        let runs = (1..=reps as u64)
            .map(|r| generate_secs(model, tg, parallel, r).map(|s| (tg * parallel) as f64 / s))
            .collect::<Result<Vec<_>, _>>()?;
        speed.tg_tps = median(runs);
    }
    Ok(speed)
}

/// Peak resident memory of this process so far, in bytes.
pub fn peak_rss() -> u64 {
    // SAFETY: `usage` is a valid rusage for the call to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss as u64 * 1024
}
