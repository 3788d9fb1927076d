//! `hearth run`: one prompt through the same engine the server runs, streamed to stdout.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use crate::engine::{Engine, EngineConfig, GenRequest, Penalties, SamplerConfig};
use crate::model::ChatMessage;

use super::ModelArgs;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    prompt: String,
    /// Apply the model's chat template to the prompt as a user message.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// At most this many tokens; fewer when the context fills first.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Makes sampling reproducible.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<()> {
    let penalties = Penalties {
        repetition: args.repeat_penalty,
        presence: args.presence_penalty,
        frequency: args.frequency_penalty,
        ..Penalties::default()
    };
    let sampler = SamplerConfig::from_params(args.temperature, args.top_k, args.top_p, args.min_p, penalties, args.seed)
        .map_err(|e| anyhow!("--{} {}", e.knob.name().replace('_', "-"), e.reason))?;
    let model = args.model.load()?;
    let (text, add_bos) = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        let text = model.prompt.render(&messages, true)?;
        let bos = !model.prompt.starts_with_bos(&text);
        (text, bos)
    } else {
        (args.prompt.clone(), true)
    };
    let prompt = model.vocab.encode(&text, add_bos).context("tokenizing the prompt")?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let context = model.decoder.spec.context_length;
    if prompt.len() >= context {
        bail!("the prompt has {} tokens; the model's context holds {context}", prompt.len());
    }
    let max_tokens = args.max_tokens.min(context - prompt.len());
    let cfg = EngineConfig { max_running: 1, queue: 1, prefix_cache: 0, ..EngineConfig::default() };
    let engine = Engine::start(model, String::new(), cfg);
    let req = GenRequest { stop: args.stop, ..GenRequest::new(prompt, max_tokens, sampler) };
    let mut out = std::io::stdout().lock();
    let g = engine.generate(req, |piece| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s; generation: {} tokens, {:.1} tok/s; finish: {}",
        g.prompt_tokens,
        g.prompt_tps(),
        g.tokens.len(),
        g.generate_tps(),
        g.finish.as_str()
    );
    Ok(())
}
