//! Request handlers: parse the body (errors name the field), validate off the async runtime,
//! submit to the engine and answer, streaming or not.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::engine::{Engine, ModelInfo};

use super::error::ApiError;
use super::openai::{ChatRequest, CompletionRequest, DetokenizeRequest, InfillRequest, LlamaCompletionRequest, TokenizeRequest};
use super::recorder::Recorder;
use super::respond::Reply;
use super::stream::{collect, merge, stream};
use super::validate::{self, Plan};
use super::wire::{Wire, CHAT, COMPLETIONS, INFILL};
use super::AppState;

/// A JSON body whose errors come back in OpenAI's shape, naming the offending field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::bad_body(e.status(), e.body_text()))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(ApiJson).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            if inner.is_syntax() || inner.is_eof() {
                return ApiError::bad_body(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {msg}"));
            }
            let quoted = msg.split('`').nth(1).unwrap_or("").to_owned();
            if msg.starts_with("unknown field") {
                let mut e = ApiError::invalid(&quoted, format!("unrecognized request argument `{quoted}`"));
                e.code = Some("unknown_parameter");
                return e;
            }
            if msg.starts_with("missing field") {
                return ApiError::invalid(&quoted, format!("`{quoted}` is required"));
            }
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            ApiError::invalid(&path, format!("`{path}`: {msg}"))
        })
    }
}

pub async fn completions(State(st): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<CompletionRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
    let plan = validated(&st, &engine, "/v1/completions", &headers, move |info| validate::completion(req, info)).await?;
    answer(&st, &engine, &COMPLETIONS, "/v1/completions", &headers, plan, asked).await
}

pub async fn chat(State(st): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<ChatRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
    let plan = validated(&st, &engine, "/v1/chat/completions", &headers, move |info| validate::chat(req, info)).await?;
    answer(&st, &engine, &CHAT, "/v1/chat/completions", &headers, plan, asked).await
}

pub async fn infill(State(st): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<InfillRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
    let plan = validated(&st, &engine, "/infill", &headers, move |info| validate::infill(req, info)).await?;
    answer(&st, &engine, &INFILL, "/infill", &headers, plan, asked).await
}

/// llama.cpp's `/completion`, validated as a completions request and answered in llama.cpp's
/// shape (`content`, `stop`, timings). `n_predict` -1 or absent: until the context is full.
pub async fn llama_completion(State(st): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<LlamaCompletionRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let asked = st.names().resolve(req.model.as_deref(), engine.info())?;
    let limit = req.n_predict.filter(|&n| n >= 0);
    if limit == Some(0) {
        return Err(ApiError::invalid("n_predict", "`n_predict` must be at least 1, or -1 for no limit"));
    }
    let body = json!({
        "prompt": req.prompt, "temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "min_p": req.min_p,
        "repeat_penalty": req.repeat_penalty, "presence_penalty": req.presence_penalty, "frequency_penalty": req.frequency_penalty,
        "seed": req.seed, "stop": req.stop, "stream": req.stream, "json_schema": req.json_schema, "grammar": req.grammar,
    });
    let req: CompletionRequest = serde_json::from_value(body).map_err(|e| ApiError::invalid("prompt", format!("the request cannot be read: {e}")))?;
    let plan = validated(&st, &engine, "/completion", &headers, move |info| {
        let mut plan = validate::completion(req, info)?;
        for r in &mut plan.requests {
            let room = info.context_length.saturating_sub(r.prompt.len()).max(1);
            r.max_tokens = limit.map_or(room, |l| room.min(l as usize));
        }
        Ok(plan)
    })
    .await?;
    answer(&st, &engine, &INFILL, "/completion", &headers, plan, asked).await
}

/// Runs validation (templates, tokenization: possibly slow on big prompts) on a blocking thread.
/// A refused request is recorded in the ledger as an error.
pub(super) async fn validated(
    st: &AppState,
    engine: &Engine,
    endpoint: &'static str,
    headers: &HeaderMap,
    f: impl FnOnce(&ModelInfo) -> Result<Plan, ApiError> + Send + 'static,
) -> Result<Plan, ApiError> {
    let (e, started) = (engine.clone(), std::time::Instant::now());
    let plan = tokio::task::spawn_blocking(move || f(e.info())).await.map_err(ApiError::internal)?;
    if plan.is_err() {
        if let Some(ledger) = st.ledger() {
            Recorder::new(ledger, endpoint, headers, engine.info()).refused(&engine.info().id, started.elapsed()).await;
        }
    }
    plan
}

/// Runs a validated request and answers it in `wire`'s format, under the model name the client
/// asked for (`asked`; the served one is in the `x-hearth-model` header and the ledger).
pub(super) async fn answer(st: &AppState, engine: &Engine, wire: &'static dyn Wire, endpoint: &'static str, headers: &HeaderMap, plan: Plan, asked: String) -> Result<Response, ApiError> {
    let recorder = st.ledger().map(|ledger| {
        let mut r = Recorder::new(ledger, endpoint, headers, engine.info());
        r.asked_model = Some(asked.clone()).filter(|a| *a != engine.info().id);
        r.attach(plan.requests.iter().map(|q| q.meter.clone()).collect(), plan.cloud_prompt.clone());
        r
    });
    let requests = plan.requests.clone();
    if requests.iter().any(|r| r.grammar.is_some()) {
        st.metrics().constrained();
    }
    let mut reply = Reply::new(wire, asked, plan, engine.info().vocab.clone(), st.metrics(), recorder);
    reply.served = engine.info().id.clone();
    let mut rxs = Vec::with_capacity(requests.len());
    for r in requests {
        match engine.submit(r) {
            Ok(rx) => rxs.push(rx),
            Err(e) => {
                drop(rxs);
                reply.record(crate::ledger::Outcome::Error).await;
                return Err(e.into());
            }
        }
    }
    let events = merge(rxs, reply.plan.n);
    if reply.plan.stream {
        stream(reply, events).await
    } else {
        collect(reply, events).await
    }
}

fn model_object(info: &ModelInfo, created: u64) -> serde_json::Value {
    json!({
        "id": info.id, "object": "model", "created": created, "owned_by": "hearth",
        "meta": { "name": info.name, "arch": info.arch, "quantization": info.quantization, "context_length": info.context_length,
                  "vocab_size": info.vocab_size, "file_size": info.file_size, "device": info.device,
                  "fill_in_the_middle": info.fim.is_some() }
    })
}

pub async fn models(State(st): State<AppState>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let info = engine.info();
    let mut data = vec![model_object(info, st.started())];
    for a in st.names().aliases.iter().filter(|a| a.model == info.id || a.model == info.name) {
        data.push(json!({ "id": a.pattern, "object": "model", "created": st.started(), "owned_by": "hearth", "meta": { "alias_of": info.id } }));
    }
    Ok(Json(json!({ "object": "list", "data": data })).into_response())
}

pub async fn model(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    st.names().resolve(Some(&id), engine.info())?;
    Ok(Json(model_object(engine.info(), st.started())).into_response())
}

pub async fn health(State(st): State<AppState>) -> Result<Response, ApiError> {
    st.engine()?;
    if st.draining() {
        return Err(ApiError::draining());
    }
    Ok(Json(json!({ "status": "ok" })).into_response())
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let engine = st.engine().ok();
    if let Some(l) = st.ledger() {
        st.metrics().set_spooled(tokio::task::spawn_blocking(move || l.spooled()).await.unwrap_or(0));
    }
    let text = st.metrics().render(engine.as_ref().map(|e| e.stats()));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

pub async fn tokenize(State(st): State<AppState>, ApiJson(req): ApiJson<TokenizeRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    st.names().resolve(req.model.as_deref(), engine.info())?;
    let e = engine.clone();
    let ids = tokio::task::spawn_blocking(move || e.info().vocab.encode(&req.content, req.add_special))
        .await
        .map_err(ApiError::internal)?
        .map_err(|m| ApiError::invalid("content", m.to_string()))?;
    let vocab = &engine.info().vocab;
    let tokens: serde_json::Value = if req.with_pieces {
        ids.iter().map(|&id| json!({ "id": id, "piece": vocab.decode(&[id]) })).collect()
    } else {
        json!(ids)
    };
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

pub async fn detokenize(State(st): State<AppState>, ApiJson(req): ApiJson<DetokenizeRequest>) -> Result<Response, ApiError> {
    let engine = st.engine()?;
    let info = engine.info();
    st.names().resolve(req.model.as_deref(), info)?;
    let ids = req
        .tokens
        .iter()
        .map(|&t| match u32::try_from(t) {
            Ok(id) if (id as usize) < info.vocab_size => Ok(id),
            _ => Err(ApiError::invalid("tokens", format!("`tokens` holds token id {t}, outside the vocabulary of {} tokens", info.vocab_size))),
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(Json(json!({ "content": info.vocab.decode(&ids) })).into_response())
}
