//! The gateway router: tenant traffic (`/api/ext/{extensionId}/{*path}`), Alga's runner API
//! (`POST /v1/execute`) and health. The same router runs under lambda_http in Lambda and
//! under axum in `kelp up`.

mod cors;
pub mod headers;
pub mod ratelimit;
pub mod run;
mod runner_api;
pub(crate) mod tenant;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::platform::Platform;

pub use ratelimit::{LocalRateLimiter, RateDecision, RateLimiter, RedisRateLimiter};

/// State of the gateway router.
pub struct Gateway {
    /// Backends and caches.
    pub platform: Arc<Platform>,
    /// Per-(tenant, extension) rate limiter.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// `/v1/execute` idempotent replays.
    pub(crate) replays: runner_api::ReplayCache,
}

impl Gateway {
    /// Gateway state with the rate limiter the settings describe: shared through Redis when
    /// Redis is configured (and `KELP_RATE_REDIS` is not off), per instance otherwise.
    pub fn new(platform: Arc<Platform>) -> Arc<Self> {
        let s = &platform.settings;
        let limiter: Arc<dyn RateLimiter> = match s.redis.as_ref().filter(|_| s.rate_redis).map(|r| r.client()) {
            Some(Ok(client)) => Arc::new(RedisRateLimiter::new(client, s.rate_burst, s.rate_per_sec)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "invalid Redis settings; rate limits are per instance");
                Arc::new(LocalRateLimiter::new(s.rate_burst, s.rate_per_sec))
            }
            None => Arc::new(LocalRateLimiter::new(s.rate_burst, s.rate_per_sec)),
        };
        Self::with_rate_limiter(platform, limiter)
    }

    /// Gateway state with a given rate limiter (Redis-backed in AWS).
    pub fn with_rate_limiter(platform: Arc<Platform>, rate_limiter: Arc<dyn RateLimiter>) -> Arc<Self> {
        Arc::new(Self { platform, rate_limiter, replays: runner_api::ReplayCache::new() })
    }
}

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
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The gateway router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/ext/{extension_id}", any(tenant::handle))
        .route("/api/ext/{extension_id}/", any(tenant::handle))
        .route("/api/ext/{extension_id}/{*path}", any(tenant::handle))
        .route("/v1/execute", post(runner_api::handle))
        .route("/ext-ui/{extension_id}/{content_hash}", get(crate::ui::handle))
        .route("/ext-ui/{extension_id}/{content_hash}/", get(crate::ui::handle))
        .route("/ext-ui/{extension_id}/{content_hash}/{*path}", get(crate::ui::handle))
        .route("/api/ext-ui-token/{extension_id}", any(crate::ui::issue_token))
        .route("/healthz", get(health))
        .layer(axum::Extension(crate::body::BodyLimit(gateway.platform.settings.max_body_bytes)))
        .with_state(gateway)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_id_layer))
}

/// The gateway router for Lambda: after every response, the invocation's pending debug
/// events are flushed (bounded by 50 ms) before the environment is frozen.
pub fn lambda_router(gateway: Arc<Gateway>) -> Router {
    let debug = gateway.platform.debug.clone();
    router(gateway).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let debug = debug.clone();
        async move {
            let response = next.run(req).await;
            debug.flush(LAMBDA_FLUSH_BOUND).await;
            response
        }
    }))
}

/// Longest an invocation waits for its debug events to reach Redis.
pub const LAMBDA_FLUSH_BOUND: std::time::Duration = std::time::Duration::from_millis(50);

async fn health(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let cache = gw.platform.cache();
    Json(json!({
        "status": "ok",
        "allocator": format!("{:?}", cache.engine().allocator),
        "cache": &cache.stats,
        "debug_bus": gw.platform.debug.stats(),
    }))
}
