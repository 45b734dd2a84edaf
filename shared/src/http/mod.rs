//! HTTP plumbing every router shares: the JSON error shape, body caps, request ids, CORS
//! and running a router as a Lambda function. Nothing here knows a router.

pub mod body;
pub mod cors;
pub mod error;
pub mod exposure;
pub mod lambda;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The request id of a request: the client's `x-request-id` when it is a sane token
/// (≤ 128 chars of `[A-Za-z0-9._:-]`), else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn from_request(req: &Request) -> Self {
        let given = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        });
        Self(given.map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
    }
}

/// Middleware: assign the request id and echo it on every response.
pub async fn request_id_layer(mut req: Request, next: Next) -> Response {
    let id = RequestId::from_request(&req);
    req.extensions_mut().insert(id.clone());
    let mut response = next.run(req).await;
    // The one place errors get their request id: a handler's `Err(ApiError)` is rendered
    // again with it.
    if let Some(error::Unfinished(e)) = response.extensions_mut().remove::<error::Unfinished>() {
        response = e.with_request_id(&id.0).into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
