//! Generating one sequence: chunked prefill, then decode with sampling, end-of-generation tokens,
//! stop strings and a token limit, streaming text through a callback as it is produced.

use std::time::{Duration, Instant};

use crate::model::{Chunk, Logits, Model, ModelError, StreamDecoder};

use super::sampler::{Sampler, SamplerConfig};
use super::stop::StopStrings;

/// Prompt tokens fed per forward pass during prefill.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length | FinishReason::ContextFull => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish: FinishReason,
    pub prompt_time: Duration,
    pub generate_time: Duration,
}

impl Generation {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Decode speed: tokens after the first, over the time after the first.
    pub fn generate_tps(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.generate_time.as_secs_f64().max(1e-9)
    }
}

/// Runs `prompt` through `model` and generates up to `params.max_tokens` tokens, calling
/// `on_text` with each piece of text as soon as it is safe to show.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::Input("the prompt is empty".into()));
    }
    let dec = &model.decoder;
    let mut cache = dec.new_cache();
    if prompt.len() >= cache.max_len() {
        return Err(ModelError::ContextFull { needed: prompt.len() + 1, limit: cache.max_len() });
    }
    let start = Instant::now();
    let mut logits = None;
    for piece in prompt.chunks(PREFILL_CHUNK) {
        let mut chunk = [Chunk { tokens: piece, cache: &mut cache, logits: Logits::Last }];
        logits = dec.forward(&mut chunk)?.pop().flatten();
    }
    let prompt_time = start.elapsed();
    let mut sampler = Sampler::new(params.sampler.clone());
    let mut stops = StopStrings::new(params.stop.clone());
    let mut detok = StreamDecoder::new();
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Length;
    let mut stopped_by_string = false;
    let mut first_token_at = None;
    let mut emit = |s: &str, text: &mut String| {
        if !s.is_empty() {
            text.push_str(s);
            on_text(s);
        }
    };
    while tokens.len() < params.max_tokens {
        let l = logits.take().expect("a forward pass ran");
        let mut row = l
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| ModelError::candle("reading logits", e))?;
        let next = sampler.sample(&mut row, &history);
        first_token_at.get_or_insert_with(Instant::now);
        if model.vocab.is_end_of_generation(next) {
            finish = FinishReason::Stop;
            break;
        }
        tokens.push(next);
        history.push(next);
        if let Some(piece) = detok.push(&model.vocab, next) {
            let step = stops.push(&piece);
            emit(&step.emit, &mut text);
            if step.stopped {
                finish = FinishReason::Stop;
                stopped_by_string = true;
                break;
            }
        }
        if tokens.len() >= params.max_tokens {
            break;
        }
        if cache.len() + 1 > cache.max_len() {
            finish = FinishReason::ContextFull;
            break;
        }
        let one = [next];
        let mut chunk = [Chunk { tokens: &one, cache: &mut cache, logits: Logits::Last }];
        logits = dec.forward(&mut chunk)?.pop().flatten();
    }
    if !stopped_by_string {
        // Release what the detokenizer and the stop check still hold.
        if let Some(piece) = detok.flush(&model.vocab) {
            let step = stops.push(&piece);
            emit(&step.emit, &mut text);
            if step.stopped {
                finish = FinishReason::Stop;
                stopped_by_string = true;
            }
        }
        if !stopped_by_string {
            emit(&stops.finish(), &mut text);
        }
    }
    let generate_time = first_token_at.map_or(Duration::ZERO, |t| t.elapsed());
    Ok(Generation { text, tokens, prompt_tokens: prompt.len(), finish, prompt_time, generate_time })
}
