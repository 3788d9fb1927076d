//! The one API error type and the one place errors become HTTP responses, in the shape of the
//! protocol that was spoken: OpenAI's `{"error": {"message", "type", "param", "code"}}`,
//! Anthropic's `{"type": "error", "error": {"type", "message"}}` or Ollama's `{"error": "…"}`.
//! Internal details are logged, not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::engine::{EngineError, SamplerError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// The protocol whose error shape the body takes.
    pub shape: Shape,
}

/// Which protocol's error shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    #[default]
    OpenAi,
    Anthropic,
    Ollama,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, shape: Shape::OpenAi }
    }

    fn with(mut self, param: Option<&str>, code: Option<&'static str>) -> Self {
        self.param = param.map(str::to_owned);
        self.code = code;
        self
    }

    /// Bad input in field `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with(Some(param), None)
    }

    /// Bad input not tied to one field (malformed JSON, an oversized body).
    pub fn bad_body(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "invalid_request_error", message)
    }

    /// A parameter hearth knows but does not implement.
    pub fn unsupported(param: &str, why: &str) -> Self {
        Self::invalid(param, format!("`{param}` is not supported: {why}")).with(Some(param), Some("unsupported_parameter"))
    }

    pub fn model_not_found(asked: &str, served: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("the model `{asked}` does not exist; this server runs `{served}`"))
            .with(Some("model"), Some("model_not_found"))
    }

    /// The prompt (from field `prompt_field`) and the completion limit (field `limit_field`)
    /// together exceed the context; `param` is the one to change.
    pub fn context_length(param: &str, prompt_field: &str, limit_field: &str, (prompt, max_tokens, limit): (usize, usize, usize)) -> Self {
        let message = format!(
            "this model's maximum context length is {limit} tokens, but {} were requested ({prompt} in `{prompt_field}`, {max_tokens} for the completion); shorten `{prompt_field}` or lower `{limit_field}`",
            prompt + max_tokens
        );
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).with(Some(param), Some("context_length_exceeded"))
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "a valid API key is required: send `Authorization: Bearer KEY` or `x-api-key: KEY`")
            .with(None, Some("invalid_api_key"))
    }

    pub fn forbidden_host(host: &str) -> Self {
        let message = format!("the Host `{host}` does not name this server, which answers loopback names only; add it with --allowed-host if it should");
        Self::new(StatusCode::FORBIDDEN, "invalid_request_error", message).with(None, Some("host_not_allowed"))
    }

    pub fn media_type(given: &str) -> Self {
        let message = format!("request bodies must be JSON (`Content-Type: application/json`), got `{given}`");
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", message).with(None, Some("unsupported_media_type"))
    }

    /// A request head refused before routing (api::heads): malformed, too long, or a version or
    /// body framing not served. `code` is one of the codes heads.rs gives.
    pub fn rejected_head(status: u16, code: &str, message: impl Into<String>) -> Self {
        const CODES: [&str; 6] = ["malformed_request", "uri_too_long", "headers_too_large", "http_version_not_supported", "invalid_content_length", "invalid_transfer_encoding"];
        let code = CODES.into_iter().find(|c| *c == code).unwrap_or(CODES[0]);
        let status = match status {
            414 | 431 | 505 => StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_request_error", message).with(None, Some(code))
    }

    pub fn method(method: &str, path: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", format!("{path} does not answer {method}")).with(None, Some("method_not_allowed"))
    }

    pub fn draining() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", "the server is stopping").with(None, Some("draining"))
    }

    pub fn loading() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", "the model is still loading").with(None, Some("model_loading"))
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no route for {path}")).with(None, Some("not_found"))
    }

    /// The engine failed this request for a reason of its own (a broken model, a failed
    /// forward pass): a 500 that says why.
    pub fn engine(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!("engine error: {message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message).with(None, Some("engine_error"))
    }

    /// Something went wrong on our side; the details go to the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the server failed to complete the request; see its log")
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::QueueFull(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", e.to_string()).with(None, Some("queue_full")),
            EngineError::Stopped => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", e.to_string()).with(None, Some("engine_stopped")),
            EngineError::Failed(message) => Self::internal(message),
        }
    }
}

/// A sampling knob out of range, under its OpenAI / llama.cpp name.
impl From<SamplerError> for ApiError {
    fn from(e: SamplerError) -> Self {
        Self::invalid(e.knob.name(), e.to_string())
    }
}

impl ApiError {
    /// The same error, answered in `shape`.
    pub fn shaped(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    /// The error in its protocol's shape, as a body or as the last event of a broken stream.
    pub fn body(&self) -> Value {
        match self.shape {
            Shape::OpenAi => json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } }),
            Shape::Anthropic => {
                let kind = match self.status.as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    503 | 529 => "overloaded_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                json!({ "type": "error", "error": { "type": kind, "message": self.message } })
            }
            Shape::Ollama => json!({ "error": self.message }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}
