//! The HTTP API: the route table, shared state, API-key check, CORS and request counting.
//! OpenAI-compatible endpoints plus llama.cpp's `/infill`, `/tokenize` and `/detokenize`, and the
//! cost ledger's `/v1/ledger`, `/v1/ledger/summary` and `/dashboard`.

mod anthropic;
mod dashboard;
mod error;
mod handlers;
mod heads;
mod listen;
mod metrics;
mod names;
mod ollama;
pub mod openai;
mod recorder;
mod reports;
mod respond;
mod responses;
mod stream;
mod tools;
mod validate;
mod wire;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::engine::Engine;
use crate::ledger::Ledger;

pub use error::{ApiError, Shape};
pub use listen::{raise_file_limit, serve, Limits};
pub use metrics::Metrics;
pub use names::{Alias, ModelNames};

/// Largest request body accepted (an editor may send whole files as context).
pub const MAX_BODY: usize = 32 << 20;

#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// When set, every route but `/health` needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Origins allowed by CORS; none means no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Which model names clients may send.
    pub names: ModelNames,
    /// When set (a server bound to loopback), only these `Host` values besides loopback names
    /// and addresses are answered, so a web page cannot reach the server by DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
}

/// Shared by all handlers. The engine is set once the model has loaded; until then the model
/// routes answer 503.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set once a stop has begun: /health answers 503 so that balancers send no more.
    draining: std::sync::atomic::AtomicBool,
    engine: OnceLock<Engine>,
    ledger: OnceLock<Arc<Ledger>>,
    metrics: Arc<Metrics>,
    config: ServeConfig,
    started: u64,
}

impl AppState {
    pub fn new(config: ServeConfig) -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { inner: Arc::new(Inner { draining: Default::default(), engine: OnceLock::new(), ledger: OnceLock::new(), metrics: Arc::new(Metrics::new()), config, started }) }
    }

    /// A state whose engine is already running.
    pub fn with_engine(config: ServeConfig, engine: Engine) -> Self {
        let s = Self::new(config);
        s.set_engine(engine);
        s
    }

    pub fn set_engine(&self, engine: Engine) {
        let _ = self.inner.engine.set(engine);
    }

    /// Every answered request from now on is written to `ledger`.
    pub fn set_ledger(&self, ledger: Arc<Ledger>) {
        let _ = self.inner.ledger.set(ledger);
    }

    pub fn ledger(&self) -> Option<Arc<Ledger>> {
        self.inner.ledger.get().cloned()
    }

    /// The server is stopping: /health says so (503), requests under way go on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.inner.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The engine, once the model has loaded.
    pub fn running_engine(&self) -> Option<Engine> {
        self.inner.engine.get().cloned()
    }

    fn engine(&self) -> Result<Engine, ApiError> {
        self.inner.engine.get().cloned().ok_or_else(ApiError::loading)
    }

    fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    fn names(&self) -> &ModelNames {
        &self.inner.config.names
    }

    fn started(&self) -> u64 {
        self.inner.started
    }
}

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.inner.config.cors_origins);
    let mut app = Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        // What Ollama answers at its root; some clients probe it.
        .route("/", get(|| async { "Ollama is running" }))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .route("/infill", post(handlers::infill))
        .route("/completion", post(handlers::llama_completion))
        .route("/tokenize", post(handlers::tokenize))
        .route("/detokenize", post(handlers::detokenize))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/ledger", get(reports::rows))
        .route("/v1/ledger/summary", get(reports::summary))
        .route("/dashboard", get(reports::dashboard))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()).shaped(shape_of(req.uri().path())) })
        .method_not_allowed_fallback(|req: Request| async move { ApiError::method(req.method().as_str(), req.uri().path()).shaped(shape_of(req.uri().path())) })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // A body that trickles in is cut off, as headers are by the listener (`listen.rs`).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(60)))
        .with_state(state);
    if let Some(c) = cors {
        app = app.layer(c);
    }
    app
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("x-api-key"), header::HeaderName::from_static("anthropic-version")]),
    )
}

/// Checks the Host, the body's type and the API key, answers heads that api::heads refused, and
/// counts every answer by endpoint and status.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() == heads::REJECTED_PATH {
        let response = rejected(req.uri()).into_response();
        st.inner.metrics.request("rejected", response.status().as_u16());
        return response;
    }
    let endpoint = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let config = &st.inner.config;
    let shape = shape_of(req.uri().path());
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|t| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let response = match &config.api_key {
        _ if config.allowed_hosts.as_ref().is_some_and(|extra| !host_allowed(host, extra)) => ApiError::forbidden_host(host).shaped(shape).into_response(),
        // A browser's cross-origin "simple request" (text/plain, forms) needs no preflight; JSON does.
        _ if req.method() == Method::POST && json.as_deref().is_none_or(|t| t != "application/json" && !t.ends_with("+json")) => {
            ApiError::media_type(json.as_deref().unwrap_or("")).shaped(shape).into_response()
        }
        // Balancers' health checks and Prometheus scrapes carry no key.
        Some(key) if endpoint != "/health" && endpoint != "/metrics" && !authorized(&req, key) => ApiError::unauthorized().shaped(shape).into_response(),
        _ => next.run(req).await,
    };
    st.inner.metrics.request(&endpoint, response.status().as_u16());
    response
}

/// The JSON error for a head api::heads refused, from the query it put on [`heads::REJECTED_PATH`].
fn rejected(uri: &axum::http::Uri) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Q {
        status: u16,
        code: String,
        message: String,
        #[serde(default)]
        path: String,
    }
    match axum::extract::Query::<Q>::try_from_uri(uri) {
        Ok(axum::extract::Query(q)) => ApiError::rejected_head(q.status, &q.code, q.message).shaped(shape_of(&q.path)),
        Err(_) => ApiError::rejected_head(400, "malformed_request", "the request head is malformed"),
    }
}

/// Whether a `Host` header names this loopback server: `localhost`, a `127.x.x.x` or `[::1]`
/// address (any port), or one of `extra`.
fn host_allowed(host: &str, extra: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.is_loopback())
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || extra.iter().any(|e| e.eq_ignore_ascii_case(&name) || e.eq_ignore_ascii_case(host))
}

/// The error shape a path's protocol expects.
fn shape_of(path: &str) -> Shape {
    if path.starts_with("/v1/messages") {
        Shape::Anthropic
    } else if path.starts_with("/api/") {
        Shape::Ollama
    } else {
        Shape::OpenAi
    }
}

/// `Authorization: Bearer KEY` (OpenAI, Ollama) or `x-api-key: KEY` (Anthropic).
fn authorized(req: &Request, key: &str) -> bool {
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = bearer.or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok())) else { return false };
    let given = given.as_bytes();
    // Compare in time independent of where the first difference is.
    given.len() == key.len() && given.iter().zip(key.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
