//! Request bodies read with a cap: a body over its router's limit is refused with the JSON
//! 413 while it streams in, never buffered whole first.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::RequestId;
use crate::http::error::ApiError;

/// The body cap of a router, set as a request extension (`Extension(BodyLimit(n))`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A request body of at most the router's [`BodyLimit`] (1 MiB when none is set).
pub struct LimitedBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBytes {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0).unwrap_or(1 << 20);
        let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        axum::body::to_bytes(req.into_body(), limit).await.map(Self).map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body over {limit} bytes"),
            )
            .with_request_id(&request_id)
            .into_response()
        })
    }
}
