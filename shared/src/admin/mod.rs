//! The admin API: publish versions (precompiled at publish), extensions and versions,
//! installs, config and secrets with version bumps, debug grants and the audit log. JSON in
//! and out; errors are `{"error": {"code", "message", "request_id"}}`. The operations
//! themselves live in [`service`] so `kelp up`, the router and tests share one set of rules.

pub mod idempotency;
mod routes;
pub mod service;

use std::sync::Arc;

use axum::http::StatusCode;

use crate::auth::{Identity, PERM_PLATFORM_OPS};
use crate::error::ApiError;
use crate::platform::Platform;
use crate::publish::{BundleError, PublishError};
use crate::stores::{now_rfc3339, AuditRecord};
use service::AdminError;

pub use routes::{router, OPENAPI};

/// State of the admin router.
pub struct Admin {
    /// Backends.
    pub platform: Arc<Platform>,
    /// Largest request body (bundles), in bytes.
    pub max_body_bytes: usize,
}

impl Admin {
    /// Admin state over a platform.
    pub fn new(platform: Arc<Platform>) -> Arc<Self> {
        let max_body_bytes = platform.settings.admin_max_body_bytes;
        Arc::new(Self { platform, max_body_bytes })
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
            AdminError::NotFound(m) => ApiError::not_found(m),
            AdminError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AdminError::Store(s) => s.into(),
            AdminError::Secrets(crate::secrets::SecretsError::Unavailable(m)) => {
                tracing::warn!(error = %m, "secrets backend unavailable");
                ApiError::unavailable("the secrets backend is unavailable; retry shortly")
            }
            AdminError::Secrets(other) => ApiError::internal(other),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Bundle(BundleError::TooLarge(m)) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
            }
            PublishError::Bundle(BundleError::Invalid(m)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_bundle", m)
            }
            PublishError::Manifest(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", m.0),
            PublishError::Component(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_component", m),
            PublishError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "version_conflict", m),
            PublishError::Store(s) => s.into(),
            PublishError::Blob(m) => {
                tracing::warn!(error = %m, "blob store unavailable during publish");
                ApiError::unavailable("the blob store is unavailable; retry shortly")
            }
        }
    }
}

/// Append an audit row; a failure is logged, never fatal to the (already done) operation.
pub async fn audit(
    platform: &Platform,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    details: serde_json::Value,
) {
    let record = AuditRecord {
        id: uuid::Uuid::new_v4().to_string(),
        ts: now_rfc3339(),
        tenant_id: tenant.map(str::to_string),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.map(str::to_string),
        outcome: outcome.to_string(),
        details,
    };
    if let Err(e) = platform.audit.append(&record).await {
        tracing::error!(error = %e, action, "audit append failed");
    }
}

/// The tenant an admin call acts on: the caller's own, or — for `platform:ops` — the one
/// named. Naming another tenant without `platform:ops` is refused.
pub fn target_tenant(caller: &Identity, requested: Option<&str>) -> Result<String, ApiError> {
    match requested.filter(|t| !t.is_empty()) {
        None => Ok(caller.tenant.clone()),
        Some(t) if t == caller.tenant || caller.has(PERM_PLATFORM_OPS) => Ok(t.to_string()),
        Some(_) => Err(ApiError::forbidden("only platform:ops may act on another tenant")),
    }
}
