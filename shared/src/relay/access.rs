//! Who may watch which stream (B2): the viewer's own tenant with `extension:debug` AND the
//! install's `cap:debug.logs` switch on, OR an unexpired operator grant naming the viewer
//! (subject, own tenant and token issuer) for that tenant and install. Refusals are audited and never reveal another tenant's data.

use axum::http::StatusCode;
use serde_json::json;

use super::{Relay, StreamQuery};
use crate::auth::{Identity, PERM_EXTENSION_DEBUG};
use crate::http::error::ApiError;
use crate::manifest::CAP_DEBUG_LOGS;
use crate::platform::Platform;
use crate::ratelimit::RateDecision;
use crate::stores::InstallRecord;

/// The stream a viewer may watch.
pub(crate) struct Target {
    pub tenant: String,
    pub install: InstallRecord,
    pub via_grant: bool,
}

/// An install of `tenant` addressed by install id, registry id or manifest name (disabled
/// installs included: their last logs are what one wants to read).
async fn find_install(platform: &Platform, tenant: &str, reference: &str) -> Result<Option<InstallRecord>, ApiError> {
    if uuid::Uuid::parse_str(reference).is_ok() {
        if let Some(i) = platform.installs.get_install(tenant, reference).await? {
            return Ok(Some(i));
        }
        return Ok(platform.installs.find_install(tenant, reference).await?);
    }
    match platform.extension_id_by_name(reference).await? {
        Some(id) => Ok(platform.installs.find_install(tenant, &id).await?),
        None => Ok(None),
    }
}

/// Refuse and audit. The row goes to the viewer's own tenant's audit log: a caller must not
/// be able to write rows into the log of a tenant it names (the requested tenant is a detail).
///
/// Refusals are rate-limited per viewer (a burst of [`DENIALS_BURST`], then one every
/// [`DENIAL_REFILL_SECS`] seconds): past that the caller gets 429 and no audit row, so
/// refused requests cannot flood the audit log.
async fn deny(
    relay: &Relay,
    viewer: &Identity,
    requested_tenant: &str,
    target: Option<&str>,
    reason: &str,
) -> ApiError {
    if let RateDecision::Limited { retry_after_secs } = relay.denials.take(&viewer.tenant, &viewer.sub) {
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many refused requests; slow down")
            .with_header(axum::http::header::RETRY_AFTER, &retry_after_secs.to_string());
    }
    let details =
        json!({"api": "relay", "reason": reason, "requested_tenant": requested_tenant, "issuer": viewer.issuer});
    crate::audit_log::record(
        relay.platform.audit.as_ref(),
        &viewer.sub,
        Some(&viewer.tenant),
        "access.denied",
        target,
        "denied",
        details,
    )
    .await;
    ApiError::forbidden(reason.to_string())
}

/// Refusals a viewer may collect at once before being slowed down.
pub const DENIALS_BURST: u32 = 20;
/// Seconds to earn one more refusal after the burst.
pub const DENIAL_REFILL_SECS: f64 = 5.0;

/// Decide whether `viewer` may watch the stream `q` names.
pub(crate) async fn authorize(relay: &Relay, viewer: &Identity, q: &StreamQuery) -> Result<Target, ApiError> {
    let platform = &relay.platform;
    let tenant = q.tenant_id.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| viewer.tenant.clone());
    let install = find_install(platform, &tenant, &q.extension_id)
        .await?
        .filter(|i| q.install_id.as_ref().is_none_or(|id| id == &i.install_id));
    let granted = match &install {
        Some(i) => platform.grants.has_active_grant(&tenant, &i.install_id, &viewer.into()).await?,
        None => false,
    };
    if tenant != viewer.tenant {
        // Another tenant: only an operator grant opens it, and nothing is revealed otherwise.
        return match install {
            Some(install) if granted => Ok(Target { tenant, install, via_grant: true }),
            _ => {
                Err(deny(relay, viewer, &tenant, None, "no debug grant for this viewer on that tenant's install").await)
            }
        };
    }
    let Some(install) = install else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "extension_not_available", "extension not available"));
    };
    if granted {
        return Ok(Target { tenant, install, via_grant: true });
    }
    if !viewer.has(PERM_EXTENSION_DEBUG) {
        return Err(deny(
            relay,
            viewer,
            &tenant,
            Some(&install.install_id),
            "extension:debug is required to watch debug streams",
        )
        .await);
    }
    if !install.granted.iter().any(|g| g == CAP_DEBUG_LOGS) {
        let why = format!(
            "the install's debug stream is off (cap:debug.logs); `kelp debug on {}` switches it on",
            install.install_id
        );
        return Err(deny(relay, viewer, &tenant, Some(&install.install_id), &why).await);
    }
    Ok(Target { tenant, install, via_grant: false })
}
