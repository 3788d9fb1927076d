//! Perplexity of a text, computed as llama.cpp's perplexity tool does: non-overlapping windows of
//! `ctx` tokens, each starting with BOS when the model uses one, scoring only the second half.

use crate::model::{Chunk, Logits, Model, ModelError};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub value: f64,
    pub windows: usize,
    pub scored_tokens: usize,
}

/// Perplexity of `text` under `model` with windows of `ctx` tokens; `on_window` sees the running
/// value after each window.
pub fn perplexity(model: &Model, text: &str, ctx: usize, mut on_window: impl FnMut(usize, f64)) -> Result<Perplexity, ModelError> {
    if ctx < 4 || ctx > model.decoder.spec.context_length {
        return Err(ModelError::Input(format!(
            "--ctx must be between 4 and the model's context length {}, got {ctx}",
            model.decoder.spec.context_length
        )));
    }
    let tokens = model.vocab.encode(text, true).map_err(ModelError::Input)?;
    let windows = tokens.len() / ctx;
    if windows == 0 {
        return Err(ModelError::Input(format!("the text has {} tokens; at least --ctx = {ctx} are needed", tokens.len())));
    }
    let first = ctx / 2;
    let (mut nll, mut count) = (0f64, 0usize);
    for w in 0..windows {
        let mut window = tokens[w * ctx..(w + 1) * ctx].to_vec();
        if let (true, Some(bos)) = (model.vocab.add_bos, model.vocab.bos) {
            window[0] = bos;
        }
        let mut cache = model.decoder.new_cache();
        let mut chunk = [Chunk { tokens: &window, cache: &mut cache, logits: Logits::From(first) }];
        let logits = model.decoder.forward(&mut chunk)?.remove(0).expect("logits were asked for");
        let rows = logits
            .narrow(0, 0, ctx - 1 - first)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(|e| ModelError::candle("reading logits", e))?;
        for (j, row) in rows.iter().enumerate() {
            let target = window[first + j + 1] as usize;
            nll -= log_softmax_at(row, target);
            count += 1;
        }
        on_window(w + 1, (nll / count as f64).exp());
    }
    Ok(Perplexity { value: (nll / count as f64).exp(), windows, scored_tokens: count })
}

/// log p(target) under softmax(row), in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
