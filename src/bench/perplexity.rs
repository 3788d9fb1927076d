//! Perplexity of a text, computed as llama.cpp's perplexity tool does: non-overlapping windows of
//! `ctx` tokens, each starting with BOS when the model uses one, scoring only the second half.

use crate::model::{Chunk, Logits, Model, ModelError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub value: f64,
    pub windows: usize,
    pub scored_tokens: usize,
}

/// The text's windows of `ctx` tokens (at most `max` of them), BOS first where the model wants it.
pub fn windows(model: &Model, text: &str, ctx: usize, max: Option<usize>) -> Result<Vec<Vec<u32>>, ModelError> {
    if ctx < 4 || ctx > model.decoder.spec.context_length {
        return Err(ModelError::Input(format!(
            "--ctx must be between 4 and the model's context length {}, got {ctx}",
            model.decoder.spec.context_length
        )));
    }
    let tokens = model.vocab.encode(text, true)?;
    let n = (tokens.len() / ctx).min(max.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(ModelError::Input(format!("the text has {} tokens; at least --ctx = {ctx} are needed", tokens.len())));
    }
    Ok((0..n)
        .map(|w| {
            let mut window = tokens[w * ctx..(w + 1) * ctx].to_vec();
            if let (true, Some(bos)) = (model.vocab.add_bos, model.vocab.bos) {
                window[0] = bos;
            }
            window
        })
        .collect())
}

/// The logits that predict the scored tokens of `window` (its second half), one row per token,
/// with the token each row should predict. The window goes through the model `batch` tokens at a
/// time (as llama.cpp's `-b`); the figures do not depend on it.
pub fn scored_logits(model: &Model, window: &[u32], batch: usize) -> Result<Vec<(Vec<f32>, u32)>, ModelError> {
    let ctx = window.len();
    let first = ctx / 2;
    let mut cache = model.decoder.new_cache();
    let mut rows = Vec::with_capacity(ctx - first);
    for start in (0..ctx).step_by(batch.max(1)) {
        let tokens = &window[start..(start + batch.max(1)).min(ctx)];
        let end = start + tokens.len();
        let logits = if end > first { Logits::From(first.saturating_sub(start)) } else { Logits::None };
        let mut chunk = [Chunk { tokens, cache: &mut cache, logits }];
        if let Some(t) = model.decoder.forward(&mut chunk)?.remove(0) {
            rows.extend(t.to_vec2::<f32>().map_err(|e| ModelError::candle("reading logits", e))?);
        }
    }
    // The last row predicts past the window.
    rows.truncate(ctx - 1 - first);
    Ok(rows.into_iter().enumerate().map(|(j, row)| (row, window[first + j + 1])).collect())
}

/// Perplexity of `text` under `model` with windows of `ctx` tokens, each fed `batch` tokens at a
/// time; `on_window` sees the running value after each window.
pub fn perplexity(model: &Model, text: &str, ctx: usize, batch: usize, mut on_window: impl FnMut(usize, f64)) -> Result<Perplexity, ModelError> {
    let windows = windows(model, text, ctx, None)?;
    let (mut nll, mut count) = (0f64, 0usize);
    for (w, window) in windows.iter().enumerate() {
        for (row, target) in scored_logits(model, window, batch)? {
            nll -= log_softmax_at(&row, target as usize);
            count += 1;
        }
        on_window(w + 1, (nll / count as f64).exp());
    }
    Ok(Perplexity { value: (nll / count as f64).exp(), windows: windows.len(), scored_tokens: count })
}

/// The row's maximum and ln Σ exp(x − maximum), in f64: log softmax(x) = x − max − ln-sum.
pub fn softmax_norm(row: &[f32]) -> (f64, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    (max, sum.ln())
}

/// log p(target) under softmax(row), in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let (max, ln_sum) = softmax_norm(row);
    row[target] as f64 - max - ln_sum
}
