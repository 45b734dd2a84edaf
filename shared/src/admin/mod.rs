//! The admin API: publish versions (precompiled at publish), extensions and versions,
//! installs, config and secrets with version bumps, debug grants, the audit log, plans and
//! usage. JSON in
//! and out; errors are `{"error": {"code", "message", "request_id"}}`. The operations
//! themselves live in the services ([`crate::installs`], [`crate::publish`]) so `kelp up`, the
//! router and tests share one set of rules.

mod audit;
mod common;
mod extensions;
mod grants;
mod installs;
mod plans;

use std::sync::Arc;

use crate::auth::{Identity, PERM_PLATFORM_OPS};
use crate::http::error::ApiError;
use crate::platform::Platform;

pub use common::OPENAPI;

use audit::query_audit;
use common::*;
use extensions::{get_extension, get_version, list_extensions, list_versions, publish_version};
use grants::{create_grant, list_grants, revoke_grant};
use installs::{
    create_install, delete_install, get_install, list_installs, patch_config, patch_secrets, put_config, put_secrets,
    update_install,
};
use plans::{delete_plan, get_plan, get_tenant_plan, list_plans, put_plan, put_tenant_plan, query_usage};

/// The admin API's own settings (the app layer builds them from the environment).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Largest request body (bundles), in bytes.
    pub max_body_bytes: usize,
    /// The token issuer a debug grant names when the operator gives none (the configured
    /// issuer, if any).
    pub default_grant_issuer: Option<String>,
    /// A publish still running after this answers 504 `publish_timeout` (behind API
    /// Gateway, whose 30 s cut would otherwise answer 503 while the work went on).
    pub publish_deadline: Option<std::time::Duration>,
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

/// The admin router.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/extensions", get(list_extensions).post(publish_version))
        .route("/admin/extensions/{extension}", get(get_extension))
        .route("/admin/extensions/{extension}/versions", get(list_versions))
        .route("/admin/extensions/{extension}/versions/{version}", get(get_version))
        .route("/admin/installs", get(list_installs).post(create_install))
        .route("/admin/installs/{install}", get(get_install).patch(update_install).delete(delete_install))
        .route("/admin/installs/{install}/config", put(put_config).patch(patch_config))
        .route("/admin/installs/{install}/secrets", put(put_secrets).patch(patch_secrets))
        .route("/admin/grants", get(list_grants).post(create_grant))
        .route("/admin/grants/{grant}", delete(revoke_grant))
        .route("/admin/audit", get(query_audit))
        .route("/admin/plans", get(list_plans))
        .route("/admin/plans/{plan}", get(get_plan).put(put_plan).delete(delete_plan))
        .route("/admin/tenants/{tenant}/plan", get(get_tenant_plan).put(put_tenant_plan))
        .route("/admin/usage", get(query_usage))
        .layer(Extension(BodyLimit(admin.settings.max_body_bytes)))
        .with_state(admin)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_id_layer))
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
