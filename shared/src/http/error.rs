//! The JSON error every router answers with: `{"error": {"code", "message", "request_id"}}`.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `extension_not_available`.
    pub code: &'static str,
    /// Human-readable message (never a secret, never internal details of another tenant).
    pub message: String,
    /// Request id, echoed in the body.
    pub request_id: Option<String>,
    /// Extra headers (`Allow`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), request_id: None, headers: Vec::new() }
    }

    /// Attach the request id.
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    /// Add a header.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 `service_unavailable`: a backend is down and nothing cached can answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }

    /// 500 `internal_error`; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
    }
}

impl From<crate::stores::StoreError> for ApiError {
    fn from(e: crate::stores::StoreError) -> Self {
        match e {
            crate::stores::StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "control-plane store unavailable");
                Self::unavailable("the control-plane store is unavailable; retry shortly")
            }
            crate::stores::StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => Self::internal(other),
        }
    }
}

/// An error rendered without its request id: [`crate::http::request_id_layer`] finishes it
/// (adds the id to the body), so handlers just return `Result<_, ApiError>`.
#[derive(Clone)]
pub(crate) struct Unfinished(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unfinished = self.request_id.is_none().then(|| Unfinished(self.clone()));
        let body = json!({"error": {"code": self.code, "message": self.message, "request_id": self.request_id}});
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(unfinished) = unfinished {
            response.extensions_mut().insert(unfinished);
        }
        response
    }
}
