//! How far a model's next-token distributions drift from a reference variant of the same model,
//! as llama.cpp's `--kl-divergence` reports it: mean and 99th-percentile KL(reference ‖ model) and
//! the rate at which both put the same token on top, over the scored tokens of the same windows.

use super::perplexity::{scored_logits, softmax_norm, windows};
use crate::model::{Model, ModelError};

/// Quality of one model on a text, and against the reference when one was given.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quality {
    pub perplexity: f64,
    pub scored_tokens: usize,
    pub kl_mean: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    /// Fraction of scored tokens where the model's most likely token is the reference's.
    pub same_top: f64,
}

/// log-softmax in f64, as [`log_softmax_at`](super::perplexity::log_softmax_at) computes each entry.
fn log_probs(row: &[f32]) -> Vec<f64> {
    let (max, ln_sum) = softmax_norm(row);
    row.iter().map(|&x| x as f64 - max - ln_sum).collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// KL(p ‖ q) from log-probabilities.
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(&lp, &lq)| if lp == f64::NEG_INFINITY { 0.0 } else { lp.exp() * (lp - lq) }).sum::<f64>().max(0.0)
}

/// The value below which `q` of the sorted `v` lies (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Scores `model` on `text` (windows of `ctx`, at most `max_windows`), against `reference` when
/// given (the same windows, from the reference's tokenizer). `on_window` sees (done, total).
pub fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    text: &str,
    ctx: usize,
    max_windows: Option<usize>,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Quality, ModelError> {
    if let Some(r) = reference {
        if r.decoder.spec.vocab_size != model.decoder.spec.vocab_size {
            return Err(ModelError::Input(format!(
                "{} has {} tokens in its vocabulary and the reference {} has {}: KL divergence needs variants of one model",
                model.name, model.decoder.spec.vocab_size, r.name, r.decoder.spec.vocab_size
            )));
        }
    }
    let wins = windows(reference.unwrap_or(model), text, ctx, max_windows)?;
    let (mut nll, mut kls, mut same) = (0f64, Vec::new(), 0usize);
    for (w, window) in wins.iter().enumerate() {
        let rows = scored_logits(model, window, window.len())?;
        let refs = match reference {
            Some(r) => Some(scored_logits(r, window, window.len())?),
            None => None,
        };
        for (j, (row, target)) in rows.iter().enumerate() {
            let lq = log_probs(row);
            nll -= lq[*target as usize];
            match &refs {
                Some(refs) => {
                    let lp = log_probs(&refs[j].0);
                    kls.push(kl(&lp, &lq));
                    same += usize::from(argmax(&lp) == argmax(&lq));
                }
                None => {
                    kls.push(0.0);
                    same += 1;
                }
            }
        }
        on_window(w + 1, wins.len());
    }
    let n = kls.len();
    let kl_mean = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    Ok(Quality {
        perplexity: (nll / n as f64).exp(),
        scored_tokens: n,
        kl_mean,
        kl_p99: percentile(&kls, 0.99),
        kl_max: kls.last().copied().unwrap_or(0.0),
        same_top: same as f64 / n as f64,
    })
}
