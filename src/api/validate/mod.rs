//! Wire requests → validated engine requests. Every check happens here, once, and every error
//! names the field and its limit; nothing downstream re-checks input.

use serde_json::Value;

use crate::engine::{GenRequest, ModelInfo, Penalties, SamplerConfig};
use crate::ledger::PromptText;
use crate::model::ContextFile;

use super::error::ApiError;
use super::openai::{ChatRequest, CompletionRequest, InfillRequest};
use super::tools::{self, ToolChoice, ToolPlan};

mod gbnf;
mod messages;
mod structured;

use messages::chat_messages;

/// Most choices per prompt, stop strings, and prompts per request.
pub const MAX_N: usize = 16;
pub const MAX_STOPS: usize = 16;
pub const MAX_PROMPTS: usize = 16;

/// A validated request: one engine request per prompt, and how to answer.
pub struct Plan {
    pub requests: Vec<GenRequest>,
    /// Prompt text per prompt, for `echo`.
    pub prompt_texts: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub echo: bool,
    /// Top alternatives per token, when logprobs were asked for.
    pub logprobs: Option<usize>,
    /// The prompt as a cloud API would have received it, for the ledger's re-count.
    pub cloud_prompt: PromptText,
    /// With tools: the decoded text a call list starts with, to read calls out of each choice.
    pub calls: Option<String>,
}

pub fn completion(r: CompletionRequest, info: &ModelInfo) -> Result<Plan, ApiError> {
    if let Some(b) = r.best_of.filter(|&b| b != 1) {
        return Err(ApiError::unsupported("best_of", &format!("hearth returns every choice it generates; use `n` (got best_of={b})")));
    }
    let echo = r.echo.unwrap_or(false);
    let logprobs = match r.logprobs {
        None => None,
        Some(l) if (0..=5).contains(&l) => Some(l as usize),
        Some(l) => return Err(ApiError::invalid("logprobs", format!("`logprobs` must be between 0 and 5, got {l}"))),
    };
    let (prompts, texts) = match &r.suffix {
        Some(suffix) => {
            if echo {
                return Err(ApiError::invalid("echo", "`echo` cannot be combined with `suffix`"));
            }
            let fim = info.fim.as_ref().ok_or_else(|| {
                ApiError::invalid("suffix", format!("the model `{}` has no fill-in-the-middle tokens, so `suffix` cannot be used", info.id))
            })?;
            let prefixes = prompt_strings(&r.prompt)?;
            let mut prompts = Vec::new();
            for p in &prefixes {
                prompts.push(fim.prompt(&info.vocab, p, suffix, &[]).map_err(|e| ApiError::invalid("prompt", e.to_string()))?);
            }
            (prompts, prefixes)
        }
        None => completion_prompts(&r.prompt, info)?,
    };
    let sampler = sampler(info, r.temperature, r.top_p, r.top_k, r.min_p, r.repeat_penalty, r.presence_penalty, r.frequency_penalty, r.seed, r.logit_bias.as_ref())?;
    let stop = stops(r.stop.as_ref(), "stop")?;
    let n = choices(r.n)?;
    if prompts.len() * n > MAX_N {
        let msg = format!("{} prompts × `n` = {n} would generate {} sequences; at most {MAX_N} per request", prompts.len(), prompts.len() * n);
        return Err(ApiError::invalid("n", msg));
    }
    let grammar = match structured::completion_grammar(r.response_format.as_ref(), r.json_schema.as_ref(), r.grammar.as_deref())? {
        Some((spec, field)) => Some(structured::compile(info, &spec, field)?),
        None => None,
    };
    let mut requests = Vec::new();
    for prompt in prompts {
        let max_tokens = max_tokens(r.max_tokens, "max_tokens", Some(16), prompt.len(), info, "prompt")?;
        requests.push(GenRequest { prompt, n, max_tokens, sampler: sampler.clone(), stop: stop.clone(), logprobs, prompt_logprobs: echo && logprobs.is_some(), meter: Default::default(), grammar: grammar.clone() });
    }
    let include_usage = r.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let cloud_prompt = PromptText::Plain(match &r.suffix {
        Some(suffix) => texts.iter().map(|p| format!("{p}{suffix}")).collect(),
        None => texts.clone(),
    });
    Ok(Plan { requests, prompt_texts: texts, n, stream: r.stream.unwrap_or(false), include_usage, echo, logprobs, cloud_prompt, calls: None })
}

pub fn chat(r: ChatRequest, info: &ModelInfo) -> Result<Plan, ApiError> {
    let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let tools = tools::plan(r.tools.as_ref(), r.functions.as_ref(), r.tool_choice.as_ref(), r.function_call.as_ref(), r.parallel_tool_calls.as_ref())?;
    let format = structured::response_format(r.response_format.as_ref())?;
    for (name, v, why) in [
        ("audio", &r.audio, "this server produces text only"),
        ("prediction", &r.prediction, "predicted outputs are not implemented"),
        ("reasoning_effort", &r.reasoning_effort, "the served model does not reason in a separate phase"),
        ("web_search_options", &r.web_search_options, "this server does not search the web"),
    ] {
        if set(v) {
            return Err(ApiError::unsupported(name, why));
        }
    }
    if let Some(m) = r.modalities.as_ref().and_then(Value::as_array) {
        if m.iter().any(|x| x.as_str() != Some("text")) {
            return Err(ApiError::unsupported("modalities", "this server produces text only"));
        }
    }
    let (messages, mut cloud) = chat_messages(&r.messages, &info.vocab)?;
    let wire_tools = tools.as_ref().map(ToolPlan::wire_tools).unwrap_or_default();
    if !wire_tools.is_empty() {
        // The cloud bills the tool declarations as prompt tokens.
        cloud.insert(0, ("system".to_owned(), serde_json::to_string(&wire_tools).unwrap_or_default()));
    }
    let text = info.prompt.render_chat(&info.vocab, &messages, &wire_tools, true).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    too_long(text.len(), info, "messages")?;
    let prompt = info.vocab.encode(&text, !info.prompt.starts_with_bos(&text)).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let tool_grammar = tools.as_ref().and_then(|t| t.grammar(info.prompt.tools, info).map(|g| (g, t.field)));
    let grammar = match (tool_grammar, format) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("response_format", "`response_format` cannot be combined with tool calls; set `tool_choice` to none, or drop `response_format`")),
        (Some((g, field)), None) => Some(structured::compile(info, &g, field)?),
        (None, Some(g)) => Some(structured::compile(info, &g, "response_format")?),
        (None, None) => None,
    };
    let calls = tools.as_ref().filter(|t| t.choice != ToolChoice::None).map(|_| info.prompt.tools.syntax(&info.vocab).visible_start());
    let logprobs = match (r.logprobs.unwrap_or(false), r.top_logprobs) {
        (false, None) => None,
        (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`")),
        (true, None) => Some(0),
        (true, Some(t)) if (0..=20).contains(&t) => Some(t as usize),
        (true, Some(t)) => return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` must be between 0 and 20, got {t}"))),
    };
    let (limit, field) = match (r.max_completion_tokens, r.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_tokens = max_tokens(limit, field, None, prompt.len(), info, "messages")?;
    let sampler = sampler(info, r.temperature, r.top_p, r.top_k, r.min_p, r.repeat_penalty, r.presence_penalty, r.frequency_penalty, r.seed, r.logit_bias.as_ref())?;
    let n = choices(r.n)?;
    let req = GenRequest { prompt, n, max_tokens, sampler, stop: stops(r.stop.as_ref(), "stop")?, logprobs, prompt_logprobs: false, meter: Default::default(), grammar };
    let include_usage = r.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let cloud_prompt = PromptText::Chat(cloud);
    Ok(Plan { requests: vec![req], prompt_texts: vec![text], n, stream: r.stream.unwrap_or(false), include_usage, echo: false, logprobs, cloud_prompt, calls })
}

pub fn infill(r: InfillRequest, info: &ModelInfo) -> Result<Plan, ApiError> {
    let fim = info.fim.as_ref().ok_or_else(|| {
        ApiError::invalid("input_prefix", format!("the model `{}` has no fill-in-the-middle tokens, so it cannot infill", info.id))
    })?;
    let context: Vec<ContextFile> = r.input_extra.iter().map(|c| ContextFile { filename: c.filename.clone(), text: c.text.clone() }).collect();
    let prefix = format!("{}{}", r.input_prefix, r.prompt);
    let extra: usize = r.input_extra.iter().map(|c| c.text.len() + c.filename.len()).sum();
    too_long(prefix.len() + r.input_suffix.len() + extra, info, "input_prefix")?;
    let prompt = fim.prompt(&info.vocab, &prefix, &r.input_suffix, &context).map_err(|e| ApiError::invalid("input_prefix", e.to_string()))?;
    // llama.cpp's n_predict: -1 means "until the context is full".
    let (limit, field) = match (r.n_predict, r.max_tokens) {
        (Some(-1), _) => (None, "n_predict"),
        (Some(n), _) => (Some(n), "n_predict"),
        (None, m) => (m, "max_tokens"),
    };
    let max_tokens = max_tokens(limit, field, None, prompt.len(), info, "input_prefix")?;
    let sampler = sampler(info, r.temperature, r.top_p, r.top_k, r.min_p, r.repeat_penalty, None, None, r.seed, None)?;
    let req = GenRequest { prompt, n: 1, max_tokens, sampler, stop: stops(r.stop.as_ref(), "stop")?, logprobs: None, prompt_logprobs: false, meter: Default::default(), grammar: None };
    let mut cloud: String = r.input_extra.iter().map(|c| format!("{}\n{}\n", c.filename, c.text)).collect();
    cloud.push_str(&prefix);
    cloud.push_str(&r.input_suffix);
    let cloud_prompt = PromptText::Plain(vec![cloud]);
    Ok(Plan { requests: vec![req], prompt_texts: vec![prefix], n: 1, stream: r.stream.unwrap_or(false), include_usage: false, echo: false, logprobs: None, cloud_prompt, calls: None })
}

/// A chat whose output limit is at most `limit` (from `field`) rather than exactly: what the
/// context leaves when that is less. Claude Code asks for 32,000 tokens and Continue for 4,096
/// whatever the model's context; their protocols' servers stop at the context instead of refusing.
pub fn chat_up_to(mut r: ChatRequest, limit_field: &str, info: &ModelInfo) -> Result<Plan, ApiError> {
    let limit = r.max_tokens.take().or(r.max_completion_tokens.take());
    if let Some(l) = limit.filter(|&l| l < 1) {
        return Err(ApiError::invalid(limit_field, format!("`{limit_field}` must be at least 1, got {l}")));
    }
    let mut plan = chat(r, info)?;
    if let Some(l) = limit {
        for q in &mut plan.requests {
            q.max_tokens = q.max_tokens.min(usize::try_from(l).unwrap_or(usize::MAX));
        }
    }
    Ok(plan)
}

/// The tokens and texts of a completions `prompt`: a string, strings, token ids, or lists of ids.
fn completion_prompts(v: &Value, info: &ModelInfo) -> Result<(Vec<Vec<u32>>, Vec<String>), ApiError> {
    let ids = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|t| match t.as_u64() {
                Some(id) if (id as usize) < info.vocab_size => Ok(id as u32),
                Some(id) => Err(ApiError::invalid("prompt", format!("`prompt` holds token id {id}, outside the vocabulary of {} tokens", info.vocab_size))),
                None => Err(ApiError::invalid("prompt", format!("`prompt` token ids must be non-negative integers, got {t}"))),
            })
            .collect()
    };
    let encode = |s: &str| {
        too_long(s.len(), info, "prompt")?;
        info.vocab.encode(s, true).map_err(|e| ApiError::invalid("prompt", e.to_string()))
    };
    let (prompts, texts): (Vec<Vec<u32>>, Vec<String>) = match v {
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_number) => {
            let p = ids(a)?;
            let t = info.vocab.decode(&p);
            (vec![p], vec![t])
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_array) => {
            let p = a.iter().map(|x| ids(x.as_array().expect("checked"))).collect::<Result<Vec<_>, _>>()?;
            let t = p.iter().map(|x| info.vocab.decode(x)).collect();
            (p, t)
        }
        _ => {
            let s = prompt_strings(v)?;
            (s.iter().map(|x| encode(x)).collect::<Result<_, _>>()?, s)
        }
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompt", format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len())));
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("prompt", "`prompt` is empty and this model has no start token to begin from"));
    }
    Ok((prompts, texts))
}

fn prompt_strings(v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::invalid("prompt", "`prompt` must be a string, an array of strings, an array of token ids, or an array of token-id arrays");
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a.iter().map(|x| x.as_str().map(str::to_owned).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

/// Refuses, before tokenizing it, a text too long to fit the context however it tokenizes (each
/// token stands for at most `max_token_bytes` bytes): a 30 MB prompt costs a comparison, not a
/// minute of tokenization.
fn too_long(bytes: usize, info: &ModelInfo, field: &str) -> Result<(), ApiError> {
    let most = info.context_length.saturating_mul(info.vocab.max_token_bytes);
    if bytes > most {
        let message = format!(
            "`{field}` is {bytes} bytes, more than this model's context of {} tokens can hold (at most {most} bytes at {} bytes per token)",
            info.context_length, info.vocab.max_token_bytes
        );
        let mut e = ApiError::invalid(field, message);
        e.code = Some("context_length_exceeded");
        return Err(e);
    }
    Ok(())
}

fn stops(v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| ApiError::invalid(field, format!("`{field}` must hold strings, got {x}"))))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ApiError::invalid(field, format!("`{field}` must be a string or an array of strings, got {other}"))),
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid(field, format!("`{field}` holds at most {MAX_STOPS} strings, got {}", list.len())));
    }
    Ok(list)
}

fn choices(n: Option<i64>) -> Result<usize, ApiError> {
    match n.unwrap_or(1) {
        n if (1..=MAX_N as i64).contains(&n) => Ok(n as usize),
        n => Err(ApiError::invalid("n", format!("`n` must be between 1 and {MAX_N}, got {n}"))),
    }
}

/// The token limit: as asked (at least 1), or `default`, or what the context leaves. The prompt
/// and the limit must fit the context together; nothing is truncated.
fn max_tokens(asked: Option<i64>, field: &str, default: Option<usize>, prompt: usize, info: &ModelInfo, prompt_field: &str) -> Result<usize, ApiError> {
    let ctx = info.context_length;
    let want = match asked {
        Some(m) if m < 1 => return Err(ApiError::invalid(field, format!("`{field}` must be at least 1, got {m}"))),
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None => default.unwrap_or(ctx.saturating_sub(prompt)).max(1),
    };
    if prompt.saturating_add(want) > ctx {
        let param = if asked.is_some() || prompt < ctx { field } else { prompt_field };
        return Err(ApiError::context_length(param, prompt_field, field, (prompt, want, ctx)));
    }
    Ok(want)
}

#[allow(clippy::too_many_arguments)]
fn sampler(
    info: &ModelInfo,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    repeat: Option<f32>,
    presence: Option<f32>,
    frequency: Option<f32>,
    seed: Option<i64>,
    bias: Option<&std::collections::HashMap<String, f32>>,
) -> Result<SamplerConfig, ApiError> {
    let top_k = match top_k {
        None | Some(0) => None,
        Some(k) if k > 0 => Some(k as usize),
        Some(k) => return Err(ApiError::invalid("top_k", format!("`top_k` must be at least 0, got {k}"))),
    };
    let penalties = Penalties { repetition: repeat.unwrap_or(1.0), presence: presence.unwrap_or(0.0), frequency: frequency.unwrap_or(0.0), ..Penalties::default() };
    let mut cfg = SamplerConfig::from_params(temperature.unwrap_or(1.0), top_k, top_p, min_p, penalties, seed.map(|s| s as u64))?;
    for (k, &v) in bias.into_iter().flatten() {
        let id = k.parse::<u32>().ok().filter(|&id| (id as usize) < info.vocab_size).ok_or_else(|| {
            ApiError::invalid("logit_bias", format!("`logit_bias` keys must be token ids below {}, got `{k}`", info.vocab_size))
        })?;
        if !(-100.0..=100.0).contains(&v) {
            return Err(ApiError::invalid("logit_bias", format!("`logit_bias` values must be between -100 and 100, got {v} for token {id}")));
        }
        // -100 bans the token outright, as OpenAI documents.
        cfg.logit_bias.push((id, if v <= -100.0 { f32::NEG_INFINITY } else { v }));
    }
    Ok(cfg)
}

#[cfg(test)]
pub(crate) mod tests;
