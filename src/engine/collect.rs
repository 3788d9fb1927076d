//! Running one request to its end on the caller's thread: `hearth run`, benches and tests drive
//! the server's own engine loop (scheduler → sequence → sampler → stop strings) and collect its
//! events here, so there is one token loop, not two.

use std::time::Duration;

use super::{Engine, EngineError, Event, FinishReason, GenRequest};

/// One finished choice, as collected from its events.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish: FinishReason,
    /// From admission to the first generated token (prompt processing and the first sample).
    pub prompt_time: Duration,
    /// From the first generated token to the last.
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

impl Engine {
    /// Runs `req` (its first choice) to the end, blocking this thread, and calls `on_text` with
    /// each piece of text as soon as it is safe to show. Not for use on an async runtime.
    pub fn generate(&self, req: GenRequest, mut on_text: impl FnMut(&str)) -> Result<Generation, EngineError> {
        let mut rx = self.submit(GenRequest { n: 1, ..req })?;
        let mut g = Generation {
            text: String::new(),
            tokens: Vec::new(),
            prompt_tokens: 0,
            finish: FinishReason::Stop,
            prompt_time: Duration::ZERO,
            generate_time: Duration::ZERO,
        };
        let mut emit = |text: &str, g: &mut Generation| {
            if !text.is_empty() {
                g.text.push_str(text);
                on_text(text);
            }
        };
        while let Some(event) = rx.blocking_recv() {
            match event {
                Event::Started { prompt_tokens, .. } => g.prompt_tokens = prompt_tokens,
                Event::PromptLogprobs { .. } => {}
                Event::Token { token, text, .. } => {
                    g.tokens.push(token);
                    emit(&text, &mut g);
                }
                Event::Tail { text, .. } => emit(&text, &mut g),
                Event::Done { finish, stats, .. } => {
                    g.finish = finish;
                    g.prompt_time = stats.time_to_first_token.saturating_sub(stats.queue);
                    g.generate_time = stats.inter_token.iter().sum();
                    return Ok(g);
                }
                Event::Error { message, .. } => return Err(EngineError::Failed(message)),
            }
        }
        Err(EngineError::Stopped)
    }
}
