//! The gateway router: tenant traffic (`/api/ext/{extensionId}/{*path}`), Alga's runner API
//! (`POST /v1/execute`) and health. The same router runs under lambda_http in Lambda and
//! under axum in `kelp up`.

pub mod headers;
pub mod run;
mod runner_api;
pub(crate) mod tenant;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;

use std::time::Duration;

use crate::executor::ExecLimits;
use crate::http::request_id_layer;
use crate::platform::Platform;

use crate::ratelimit::{LocalRateLimiter, RateLimiter, RedisRateLimiter};

/// The gateway's own settings (the app layer builds them from the environment).
#[derive(Clone)]
pub struct GatewaySettings {
    /// Request and response body cap.
    pub max_body_bytes: usize,
    /// Default per-call limits.
    pub exec: ExecLimits,
    /// Upper bound a `/v1/execute` caller may ask for.
    pub max_timeout: Duration,
    /// Largest memory a `/v1/execute` caller may ask for (the engine's bound).
    pub max_memory_bytes: usize,
    /// Token required on `/v1/execute`.
    pub runner_service_token: Option<crate::redact::Secret>,
    /// Who may call `/v1/execute` without that token.
    pub runner_auth: RunnerAuth,
    /// What `/v1/execute` calls may fetch ([`RunnerEgress`]).
    pub runner_egress: RunnerEgress,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Allow `Origin: null` too (the opaque origin of sandboxed extension UIs).
    pub allow_null_origin: bool,
    /// Store an audit row for every execution.
    pub audit_executions: bool,
    /// Write each request's metrics as an EMF document to stdout (Lambda).
    pub metrics_emf: bool,
    /// Redis to share buckets through, if any.
    pub rate_redis: Option<crate::debug::redis::RedisSettings>,
}

/// The egress rules of `/v1/execute` calls (`KELP_EGRESS_POLICY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerEgress {
    /// `kelp` (default): the install's allow-list when Kelp knows the install, else
    /// `KELP_RUNNER_EGRESS_ALLOW`; Kelp's matching (exact or `*.` hosts, https, default port).
    Kelp {
        /// `KELP_RUNNER_EGRESS_ALLOW`.
        default_allow: Vec<String>,
    },
    /// `alga`: every call gets Alga's `EXT_EGRESS_ALLOWLIST` with Alga's meaning (empty = all
    /// public hosts; suffix matches on any scheme and port), as Alga's runner applies it.
    Alga(crate::egress::EgressAllow),
}

/// How `/v1/execute` callers authenticate (`KELP_RUNNER_AUTH`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RunnerAuth {
    /// `x-runner-service-token` on every call (the default).
    #[default]
    Token,
    /// Also calls without a token that arrive through a private route (see
    /// [`crate::http::exposure`]): Alga's `/api/ext` route and its scheduled jobs call their
    /// runner without one. A call that sends a wrong token is still refused.
    PrivateNetwork(crate::http::exposure::PrivateTrust),
}

/// State of the gateway router.
pub struct Gateway {
    /// Backends and caches.
    pub platform: Arc<Platform>,
    /// The gateway's settings.
    pub settings: GatewaySettings,
    /// Per-(tenant, extension) rate limiter.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// `/v1/execute` idempotent replays.
    pub(crate) replays: runner_api::ReplayCache,
    /// Bundles fetched from Alga's store, one fetch per bundle at a time.
    pub(crate) alga: crate::alga_bundles::AlgaBundles,
}

impl Gateway {
    /// Gateway state with the rate limiter the settings describe: shared through Redis when
    /// Redis is configured (and `KELP_RATE_REDIS` is not off), per instance otherwise.
    pub fn new(platform: Arc<Platform>, settings: GatewaySettings) -> Arc<Self> {
        let s = &settings;
        if let RunnerAuth::PrivateNetwork(trust) = &s.runner_auth {
            let networks: Vec<String> = trust.networks.iter().map(ToString::to_string).collect();
            tracing::warn!(
                vpc_endpoints = %trust.vpc_endpoints.join(","),
                trusted_networks = %networks.join(","),
                "KELP_RUNNER_AUTH=private-network: POST /v1/execute accepts calls WITHOUT x-runner-service-token \
                 from exactly these: in Lambda, a private REST API event through one of vpc_endpoints; on a \
                 socket, a peer address in trusted_networks with no forwarding header. Anyone who can call from \
                 there can run any extension as any tenant."
            );
        }
        let limiter: Arc<dyn RateLimiter> = match s.rate_redis.as_ref().map(|r| r.client()) {
            Some(Ok(client)) => Arc::new(RedisRateLimiter::new(client)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "invalid Redis settings; rate limits are per instance");
                Arc::new(LocalRateLimiter::new(0, 0.0))
            }
            None => Arc::new(LocalRateLimiter::new(0, 0.0)),
        };
        Self::with_rate_limiter(platform, settings, limiter)
    }

    /// Gateway state with a given rate limiter (Redis-backed in AWS).
    pub fn with_rate_limiter(
        platform: Arc<Platform>,
        settings: GatewaySettings,
        rate_limiter: Arc<dyn RateLimiter>,
    ) -> Arc<Self> {
        Arc::new(Self {
            platform,
            settings,
            rate_limiter,
            replays: runner_api::ReplayCache::new(),
            alga: crate::alga_bundles::AlgaBundles::default(),
        })
    }
}

/// The gateway router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/ext/{extension_id}", any(tenant::handle))
        .route("/api/ext/{extension_id}/", any(tenant::handle))
        .route("/api/ext/{extension_id}/{*path}", any(tenant::handle))
        .route("/v1/execute", post(runner_api::handle))
        .route("/healthz", get(health))
        .layer(axum::Extension(crate::http::body::BodyLimit(gateway.settings.max_body_bytes)))
        .with_state(gateway)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_id_layer))
}

async fn health(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let cache = gw.platform.cache();
    Json(json!({
        "status": "ok",
        "allocator": format!("{:?}", cache.engine().allocator),
        "cache": &cache.stats,
        "debug_bus": gw.platform.debug.stats(),
    }))
}
