//! From engine events to HTTP: merging the event channels of a request's prompts, collecting them
//! into one body, or streaming them as Server-Sent Events in the reply's wire format. A client
//! that goes away drops the channels, which cancels its sequences in the engine.

use std::convert::Infallible;

use axum::response::sse::{Event as Sse, KeepAlive};
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, select_all, BoxStream, StreamExt};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::engine::Event;
use crate::ledger::Outcome;

use super::error::ApiError;
use super::respond::Reply;
use super::wire::Frame;

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
            return Err(ApiError::engine(message));
        }
        if reply.all_done() {
            reply.record(reply.outcome()).await;
            return Ok((reply.headers(true), Json(reply.wire.body(&reply))).into_response());
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
        match reply.apply(i, &e) {
            Ok(deltas) => {
                for delta in deltas {
                    first.extend(reply.wire.frames(&reply, i, delta));
                }
            }
            Err(message) => {
                reply.record(Outcome::Error).await;
                return Err(ApiError::engine(message));
            }
        }
        if matches!(e, Event::Started { .. }) {
            break;
        }
    }
    let headers = reply.headers(false);
    let wire = reply.wire;
    let (tx, rx) = mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        for frame in first {
            if tx.send(frame).await.is_err() {
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
                let _ = tx.send(wire.error_frame(&ApiError::internal("the engine stopped before the request finished"))).await;
                return;
            };
            let deltas = match reply.apply(i, &e) {
                Ok(deltas) => deltas,
                Err(message) => {
                    reply.record(Outcome::Error).await;
                    let _ = tx.send(wire.error_frame(&ApiError::engine(message))).await;
                    return;
                }
            };
            for frame in deltas.into_iter().flat_map(|d| wire.frames(&reply, i, d)) {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
            if reply.all_done() {
                break;
            }
        }
        // Committed before the client hears the request is over.
        reply.record(reply.outcome()).await;
        for frame in wire.end(&reply) {
            let _ = tx.send(frame).await;
        }
    });
    let frames = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    if wire.ndjson() {
        let lines = frames.map(|f| Ok::<_, Infallible>(ndjson(f)));
        let mut response = (headers, Body::from_stream(lines)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        return Ok(response);
    }
    let events = frames.map(|f| Ok::<_, Infallible>(sse(f)));
    Ok((headers, axum::response::Sse::new(events).keep_alive(KeepAlive::default())).into_response())
}

/// A frame as a Server-Sent Event.
fn sse(frame: Frame) -> Sse {
    match frame {
        Frame::Json(v) => Sse::default().data(v.to_string()),
        Frame::Event(name, v) => Sse::default().event(name).data(v.to_string()),
        Frame::Done => Sse::default().data("[DONE]"),
    }
}

/// A frame as one line of newline-delimited JSON (no end marker: the last object says `done`).
fn ndjson(frame: Frame) -> String {
    match frame {
        Frame::Json(v) | Frame::Event(_, v) => format!("{v}\n"),
        Frame::Done => String::new(),
    }
}
