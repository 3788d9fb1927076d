//! OpenAI's completions answers (`/v1/completions`): `text_completion` bodies and chunks, with
//! echo and completions-style logprobs (tokens, token_logprobs, top_logprobs, text_offset).

use serde_json::{json, Value};

use crate::engine::TokenLogprob;

use super::super::openai::CompletionLogprobs;
use super::super::respond::{Choice, Reply};
use super::{finish_str, openai_body, openai_chunk, openai_end, Delta, Frame, Wire};

pub struct Completions;

pub static COMPLETIONS: Completions = Completions;

impl Completions {
    /// Logprobs of choice `i`: the prompt's first when echoed, then the generated tokens.
    fn choice_logprobs(&self, r: &Reply, i: usize, c: &Choice) -> CompletionLogprobs {
        let gen_ids: Vec<u32> = c.logprobs.iter().map(|l| l.token).collect();
        let gen: Vec<Option<&TokenLogprob>> = c.logprobs.iter().map(Some).collect();
        if !r.plan.echo {
            return logprobs(r, &gen, &gen_ids, 0);
        }
        let mut out = prompt_logprobs(r, i);
        let rest = logprobs(r, &gen, &gen_ids, r.prompt_text(i).chars().count());
        out.tokens.extend(rest.tokens);
        out.token_logprobs.extend(rest.token_logprobs);
        out.top_logprobs.extend(rest.top_logprobs);
        out.text_offset.extend(rest.text_offset);
        out
    }
}

/// Completions-style logprobs of `tokens` (`None` for a token without one), text offsets counted
/// in characters from `offset`.
fn logprobs(r: &Reply, tokens: &[Option<&TokenLogprob>], ids: &[u32], mut offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for (lp, &id) in tokens.iter().zip(ids) {
        let piece = r.piece(id);
        out.text_offset.push(offset);
        offset += piece.chars().count();
        out.tokens.push(piece);
        out.token_logprobs.push(lp.map(|l| l.logprob));
        out.top_logprobs.push(lp.map(|l| l.top.iter().map(|&(t, p)| (r.piece(t), p)).collect()));
    }
    out
}

/// Logprobs of the prompt of choice `i` (echo), offsets from 0.
fn prompt_logprobs(r: &Reply, i: usize) -> CompletionLogprobs {
    let ids = &r.plan.requests[i / r.plan.n].prompt;
    let lps = &r.choices[i].prompt_logprobs;
    let tokens: Vec<Option<&TokenLogprob>> = (0..ids.len()).map(|k| lps.get(k).and_then(Option::as_ref)).collect();
    logprobs(r, &tokens, ids, 0)
}

impl Wire for Completions {
    fn id_prefix(&self) -> &'static str {
        "cmpl"
    }

    fn body(&self, r: &Reply) -> Value {
        openai_body(r, "text_completion", |i, c| {
            let text = if r.plan.echo { format!("{}{}", r.prompt_text(i), c.text) } else { c.text.clone() };
            let logprobs = r.plan.logprobs.map(|_| self.choice_logprobs(r, i, c));
            json!({ "index": i, "text": text, "logprobs": logprobs, "finish_reason": finish_str(c.finish) })
        })
    }

    fn frames(&self, r: &Reply, i: usize, delta: Delta<'_>) -> Vec<Frame> {
        let choice = match delta {
            Delta::Started if r.plan.echo && r.plan.logprobs.is_none() => {
                json!({ "index": i, "text": r.prompt_text(i), "logprobs": null, "finish_reason": null })
            }
            Delta::PromptLogprobs => json!({ "index": i, "text": r.prompt_text(i), "logprobs": prompt_logprobs(r, i), "finish_reason": null }),
            Delta::Text { text, logprob } if !text.is_empty() || logprob.is_some() => {
                let mut offset = r.choices[i].text.chars().count() - text.chars().count();
                if r.plan.echo {
                    offset += r.prompt_text(i).chars().count();
                }
                let lp = logprob.map(|l| logprobs(r, &[Some(l)], &[l.token], offset));
                json!({ "index": i, "text": text, "logprobs": lp, "finish_reason": null })
            }
            Delta::Finished(f) => json!({ "index": i, "text": "", "logprobs": null, "finish_reason": finish_str(Some(f)) }),
            _ => return Vec::new(),
        };
        vec![openai_chunk(r, "text_completion", choice)]
    }

    fn end(&self, r: &Reply) -> Vec<Frame> {
        openai_end(r, "text_completion")
    }
}
