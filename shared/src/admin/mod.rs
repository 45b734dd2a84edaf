//! The admin API: publish versions (precompiled at publish), extensions and versions,
//! installs, config and secrets with version bumps, debug grants and the audit log. JSON in
//! and out; errors are `{"error": {"code", "message", "request_id"}}`. The operations
//! themselves live in the services ([`crate::installs`], [`crate::publish`]) so `kelp up`, the
//! router and tests share one set of rules.

mod routes;

use std::sync::Arc;

use crate::auth::{Identity, PERM_PLATFORM_OPS};
use crate::http::error::ApiError;
use crate::platform::Platform;

pub use routes::{router, OPENAPI};

/// The admin API's own settings (the app layer builds them from the environment).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Largest request body (bundles), in bytes.
    pub max_body_bytes: usize,
    /// The token issuer a debug grant names when the operator gives none (the configured
    /// issuer, if any).
    pub default_grant_issuer: Option<String>,
}

/// State of the admin router.
pub struct Admin {
    /// Backends.
    pub platform: Arc<Platform>,
    /// The admin API's settings.
    pub settings: AdminSettings,
}

impl Admin {
    /// Admin state over a platform.
    pub fn new(platform: Arc<Platform>, settings: AdminSettings) -> Arc<Self> {
        Arc::new(Self { platform, settings })
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
