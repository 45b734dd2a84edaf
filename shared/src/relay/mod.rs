//! The debug relay (B1–B5): Server-Sent Events of an install's debug stream, capability
//! gated, time limited and audited; a polling variant; the sessions list for operators; and
//! the debug console page. The tenant is always the viewer's own, unless an operator grant
//! names the viewer for another tenant's install.

mod access;
pub mod client;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{identify, Identity, PERM_PLATFORM_OPS};
use crate::http::error::ApiError;
use crate::http::{request_id_layer, RequestId};
use crate::platform::Platform;
use crate::stores::{AuditFilter, PageRequest};

pub use session::{SessionEnd, SSE_RETRY_MS};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Backlog sent first (`EXT_DEBUG_SSE_TAIL_COUNT`, default 200, max 2000).
    pub tail_count: usize,
    /// Longest a session lasts (B3, default 15 min).
    pub max_session: Duration,
    /// Heartbeat comment interval (15 s).
    pub heartbeat: Duration,
    /// Longest one blocking read waits (bounded so faults are noticed within 2 s).
    pub block: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            tail_count: 200,
            max_session: Duration::from_secs(900),
            heartbeat: Duration::from_secs(15),
            block: Duration::from_millis(1000),
        }
    }
}

/// Relay state.
pub struct Relay {
    /// Backends.
    pub platform: Arc<Platform>,
    /// Settings.
    pub settings: RelaySettings,
    /// Refusals per viewer (tenant, sub), so refused requests cannot flood the audit log.
    pub(crate) denials: crate::ratelimit::LocalRateLimiter,
}

impl Relay {
    /// Relay state over a platform (it needs no execution runtime).
    pub fn new(platform: Arc<Platform>, settings: RelaySettings) -> Arc<Self> {
        let denials = crate::ratelimit::LocalRateLimiter::new(access::DENIALS_BURST, 1.0 / access::DENIAL_REFILL_SECS);
        Arc::new(Self { platform, settings, denials })
    }
}

/// The relay router.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/api/ext-debug/stream", get(session::stream).post(session::poll))
        .route("/api/ext-debug/sessions", get(sessions))
        .route("/api/ext-debug/console", get(console))
        .route("/api/ext-debug/healthz", get(health))
        .with_state(relay)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::Extension(crate::http::body::BodyLimit(64 * 1024)))
        .layer(axum::middleware::from_fn(request_id_layer))
}

/// The viewer and the request id.
pub(crate) struct Viewer {
    pub identity: Identity,
    pub request_id: String,
}

impl FromRequestParts<Arc<Relay>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, relay: &Arc<Relay>) -> Result<Self, Self::Rejection> {
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        match identify(parts, &relay.platform.jwt) {
            Ok(identity) => Ok(Self { identity, request_id }),
            Err(e) => Err(ApiError::unauthenticated(e.to_string()).with_request_id(&request_id).into_response()),
        }
    }
}

/// Query of the stream routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuery {
    /// Extension registry id, manifest name or install id.
    pub extension_id: String,
    /// Install id (must match the resolved install when given).
    #[serde(default)]
    pub install_id: Option<String>,
    /// Another tenant — only with an operator grant naming the viewer.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Only this level.
    #[serde(default)]
    pub level: Option<String>,
    /// Only this stream (`stdout`, `stderr`, `log`, `request`).
    #[serde(default)]
    pub stream: Option<String>,
    /// Only this request.
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Deserialize)]
struct SessionsQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    viewer: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

/// Debug sessions (B3), from the audit log: operators, filtered by tenant, viewer and time.
async fn sessions(State(relay): State<Arc<Relay>>, viewer: Viewer, Query(q): Query<SessionsQuery>) -> Response {
    let answer = async {
        let platform = &relay.platform;
        if !viewer.identity.has(PERM_PLATFORM_OPS) {
            crate::audit_log::record(
                platform.audit.as_ref(),
                &viewer.identity.sub,
                Some(&viewer.identity.tenant),
                "access.denied",
                None,
                "denied",
                json!({"api": "relay", "reason": "sessions list needs platform:ops"}),
            )
            .await;
            return Err(ApiError::forbidden("platform:ops is required to list debug sessions"));
        }
        let filter = AuditFilter {
            tenant_id: q.tenant.clone(),
            actor: q.viewer.clone(),
            action: Some(session::SESSION_ACTION.into()),
            since: q.since.clone(),
            until: q.until.clone(),
        };
        let page = platform.audit.query(&filter, &PageRequest { limit: q.limit, cursor: q.cursor.clone() }).await?;
        let items: Vec<_> = page.items.iter().map(|r| r.details.clone()).collect();
        Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
    }
    .await;
    answer.unwrap_or_else(|e: ApiError| e.with_request_id(&viewer.request_id).into_response())
}

/// The debug console: one static page, no build step.
async fn console() -> Response {
    let mut r = Html(include_str!("console.html")).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'".parse().expect("static header"),
    );
    r
}

async fn health(State(relay): State<Arc<Relay>>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "debug_bus": relay.platform.debug.stats()}))
}

/// Accept polling bodies of any content type (Alga's console posts JSON).
pub(crate) fn poll_body(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Poll {
        #[serde(default)]
        last_id: Option<String>,
    }
    let p: Poll =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(p.last_id.filter(|s| !s.is_empty()))
}
