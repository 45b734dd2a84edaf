//! `/admin/audit`: query the audit log.

use super::common::*;
use super::Admin;

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

pub(super) async fn query_audit(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Extension(_id): Extension<RequestId>,
    Query(q): Query<AuditQuery>,
    Query(p): Query<Paging>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS, PERM_EXTENSION_MANAGE], "read the audit log").await?;
    // Operators see everything (or the tenant they name); tenants see their own.
    let tenant = match (&q.tenant, caller.identity.has(PERM_PLATFORM_OPS)) {
        (None, true) => None,
        (requested, _) => Some(caller.tenant(platform, requested.as_deref()).await?),
    };
    for ts in [&q.since, &q.until].into_iter().flatten() {
        chrono::DateTime::parse_from_rfc3339(ts)
            .map_err(|_| ApiError::bad_request("since/until must be RFC 3339 timestamps"))?;
    }
    let filter = AuditFilter {
        tenant_id: tenant,
        actor: q.actor.clone(),
        action: q.action.clone(),
        since: q.since.clone(),
        until: q.until.clone(),
    };
    let page = platform.audit.query(&filter, &p.request()).await?;
    Ok(Json(page_view(page, |r| serde_json::to_value(r).expect("plain data"))).into_response())
}
