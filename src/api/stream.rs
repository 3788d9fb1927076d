//! From engine events to HTTP: merging the event channels of a request's prompts, collecting them
//! into one body, or streaming them as Server-Sent Events that end with `data: [DONE]`. A client
//! that goes away drops the channels, which cancels its sequences in the engine.

use std::convert::Infallible;

use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, select_all, BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::engine::Event;
use crate::ledger::Outcome;

use super::error::ApiError;
use super::respond::{Kind, Reply};

/// Events of all prompts of a request, each tagged with its choice index.
pub type Events = BoxStream<'static, (usize, Event)>;

pub fn merge(rxs: Vec<UnboundedReceiver<Event>>, n: usize) -> Events {
    let streams = rxs.into_iter().enumerate().map(|(p, rx)| {
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(move |e| (p * n + index_of(&e), e))
            .boxed()
    });
    select_all(streams).boxed()
}

fn index_of(e: &Event) -> usize {
    match e {
        Event::Started { index, .. }
        | Event::PromptLogprobs { index, .. }
        | Event::Token { index, .. }
        | Event::Tail { index, .. }
        | Event::Done { index, .. }
        | Event::Error { index, .. } => *index,
    }
}

/// Waits for every choice to finish and answers with one JSON body.
pub async fn collect(mut reply: Reply, mut events: Events) -> Result<Response, ApiError> {
    while let Some((i, e)) = events.next().await {
        if let Err(message) = reply.apply(i, &e) {
            reply.record(Outcome::Error).await;
            return Err(ApiError::internal(message));
        }
        if reply.all_done() {
            reply.record(reply.outcome()).await;
            return Ok((reply.headers(true), Json(reply.body())).into_response());
        }
    }
    reply.record(Outcome::Error).await;
    Err(ApiError::internal("the engine stopped before the request finished"))
}

/// Streams the answer. The response starts once the first choice has processed its prompt, so
/// a failure before that still gets a proper status, and the headers carry the queue time.
pub async fn stream(mut reply: Reply, mut events: Events) -> Result<Response, ApiError> {
    let mut first = Vec::new();
    loop {
        let Some((i, e)) = events.next().await else {
            reply.record(Outcome::Error).await;
            return Err(ApiError::internal("the engine stopped before the request started"));
        };
        if let Err(message) = reply.apply(i, &e) {
            reply.record(Outcome::Error).await;
            return Err(ApiError::internal(message));
        }
        first.extend(chunks(&reply, i, &e));
        if matches!(e, Event::Started { .. }) {
            break;
        }
    }
    let headers = reply.headers(false);
    let (tx, rx) = mpsc::channel::<Sse>(64);
    tokio::spawn(async move {
        for chunk in first {
            if tx.send(Sse::default().data(chunk.to_string())).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                e = events.next() => e,
            };
            let Some((i, e)) = next else {
                reply.record(Outcome::Error).await;
                let _ = tx.send(error_event("the engine stopped before the request finished")).await;
                return;
            };
            if let Err(message) = reply.apply(i, &e) {
                reply.record(Outcome::Error).await;
                tracing::error!("engine error while streaming: {message}");
                let _ = tx.send(error_event("the server failed to complete the request; see its log")).await;
                return;
            }
            for chunk in chunks(&reply, i, &e) {
                if tx.send(Sse::default().data(chunk.to_string())).await.is_err() {
                    return;
                }
            }
            if reply.all_done() {
                break;
            }
        }
        // Committed before the client hears the request is over.
        reply.record(reply.outcome()).await;
        if reply.plan.include_usage && reply.kind != Kind::Infill {
            let usage = json!({ "id": reply.id, "object": object(reply.kind), "created": reply.created, "model": reply.model,
                                "choices": [], "usage": reply.usage() });
            let _ = tx.send(Sse::default().data(usage.to_string())).await;
        }
        if reply.kind != Kind::Infill {
            let _ = tx.send(Sse::default().data("[DONE]")).await;
        }
    });
    let body = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok((headers, axum::response::Sse::new(body).keep_alive(KeepAlive::default())).into_response())
}

fn error_event(message: &str) -> Sse {
    let body = json!({ "error": { "message": message, "type": "server_error", "param": null, "code": null } });
    Sse::default().data(body.to_string())
}

fn object(kind: Kind) -> &'static str {
    match kind {
        Kind::Chat => "chat.completion.chunk",
        _ => "text_completion",
    }
}

/// The SSE chunks that event `e` of choice `i` produces, after it was applied to `reply`.
fn chunks(reply: &Reply, i: usize, e: &Event) -> Vec<Value> {
    let c = &reply.choices[i];
    let base = |choice: Value| {
        json!({ "id": reply.id, "object": object(reply.kind), "created": reply.created, "model": reply.model, "choices": [choice] })
    };
    match (reply.kind, e) {
        (Kind::Completion, Event::Started { .. }) if reply.plan.echo && reply.plan.logprobs.is_none() => {
            vec![base(json!({ "index": i, "text": reply.prompt_text(i), "logprobs": null, "finish_reason": null }))]
        }
        (Kind::Completion, Event::PromptLogprobs { .. }) => {
            let lp = reply.prompt_logprobs(i);
            vec![base(json!({ "index": i, "text": reply.prompt_text(i), "logprobs": lp, "finish_reason": null }))]
        }
        (Kind::Completion, Event::Token { text, logprob, .. }) if !text.is_empty() || logprob.is_some() => {
            let mut offset = c.text.chars().count() - text.chars().count();
            if reply.plan.echo {
                offset += reply.prompt_text(i).chars().count();
            }
            let lp = logprob.as_ref().map(|l| reply.completion_logprobs(&[Some(l)], &[l.token], offset));
            vec![base(json!({ "index": i, "text": text, "logprobs": lp, "finish_reason": null }))]
        }
        (Kind::Completion, Event::Tail { text, .. }) => vec![base(json!({ "index": i, "text": text, "logprobs": null, "finish_reason": null }))],
        (Kind::Completion, Event::Done { finish, .. }) => {
            vec![base(json!({ "index": i, "text": "", "logprobs": null, "finish_reason": Reply::finish_str(Some(*finish)) }))]
        }
        (Kind::Chat, Event::Started { .. }) => {
            vec![base(json!({ "index": i, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }))]
        }
        (Kind::Chat, Event::Token { text, logprob, .. }) if !text.is_empty() || logprob.is_some() => {
            let lp = logprob.as_ref().map(|l| json!({ "content": reply.chat_logprobs(std::slice::from_ref(l)) }));
            vec![base(json!({ "index": i, "delta": { "content": text }, "logprobs": lp, "finish_reason": null }))]
        }
        (Kind::Chat, Event::Tail { text, .. }) => vec![base(json!({ "index": i, "delta": { "content": text }, "logprobs": null, "finish_reason": null }))],
        (Kind::Chat, Event::Done { finish, .. }) => {
            vec![base(json!({ "index": i, "delta": {}, "logprobs": null, "finish_reason": Reply::finish_str(Some(*finish)) }))]
        }
        (Kind::Infill, Event::Token { text, .. } | Event::Tail { text, .. }) if !text.is_empty() => {
            vec![json!({ "content": text, "stop": false, "index": 0 })]
        }
        (Kind::Infill, Event::Done { .. }) => vec![reply.infill_final(String::new())],
        _ => Vec::new(),
    }
}
