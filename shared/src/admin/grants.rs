//! `/admin/grants`: operators' time-limited debug grants.

use super::common::*;
use super::installs::load_install;
use super::Admin;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    tenant: String,
    install_id: String,
    viewer: String,
    /// The viewer's own tenant (default: the install's tenant).
    #[serde(default)]
    viewer_tenant: Option<String>,
    /// The issuer of the viewer's tokens (default: the configured issuer, if any).
    #[serde(default)]
    viewer_issuer: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    reason: String,
}

/// Longest a debug grant may run.
const MAX_GRANT_SECS: u64 = 7 * 24 * 3600;

pub(super) async fn create_grant(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_OPS], "grant debug access").await?;
    let req: GrantBody = parse_json(&body)?;
    let ttl = req.ttl_secs.unwrap_or(3600);
    if ttl == 0 || ttl > MAX_GRANT_SECS {
        return Err(ApiError::bad_request(format!("ttl_secs must be 1-{MAX_GRANT_SECS}")));
    }
    if req.viewer.trim().is_empty() {
        return Err(ApiError::bad_request("viewer (the user's sub) is required"));
    }
    m.run(&req.tenant, &body, || async {
        load_install(platform, &req.tenant, &req.install_id).await?;
        let now = chrono::Utc::now();
        let grant = DebugGrant {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: req.tenant.clone(),
            install_id: req.install_id.clone(),
            viewer: req.viewer.clone(),
            viewer_tenant: Some(req.viewer_tenant.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| req.tenant.clone())),
            viewer_issuer: req.viewer_issuer.clone().filter(|i| !i.is_empty()).or_else(|| admin.settings.default_grant_issuer.clone()),
            granted_by: caller.identity.sub.clone(),
            reason: req.reason.clone(),
            created_at: now_rfc3339(),
            expires_at: (now + chrono::Duration::seconds(ttl as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            revoked_at: None,
        };
        platform.grants.create_grant(&grant).await?;
        let details = json!({"install_id": grant.install_id, "viewer": grant.viewer, "viewer_tenant": grant.viewer_tenant, "viewer_issuer": grant.viewer_issuer, "expires_at": grant.expires_at, "reason": grant.reason});
        Ok(Done::new(StatusCode::CREATED, serde_json::to_value(&grant).expect("plain data"))
            .audited(Some(&req.tenant), "grant.create", Some(&grant.id), details))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct GrantQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    viewer: Option<String>,
}

pub(super) async fn list_grants(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<GrantQuery>,
    Query(p): Query<Paging>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS], "list debug grants").await?;
    let page = platform.grants.list_grants(q.tenant.as_deref(), q.viewer.as_deref(), &p.request()).await?;
    Ok(Json(page_view(page, |g| {
        let mut v = serde_json::to_value(g).expect("plain data");
        v["active"] = json!(g.active());
        v
    }))
    .into_response())
}

pub(super) async fn revoke_grant(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_OPS], "revoke debug grants").await?;
    let tenant = q.tenant.clone().ok_or_else(|| ApiError::bad_request("tenant query parameter is required"))?;
    m.run(&tenant, &[], || async {
        if !platform.grants.revoke_grant(&tenant, &id, &now_rfc3339()).await? {
            return Err(ApiError::not_found(format!("grant {id} not found")));
        }
        Ok(Done::new(StatusCode::OK, json!({"revoked": id})).audited(
            Some(&tenant),
            "grant.revoke",
            Some(&id),
            json!({}),
        ))
    })
    .await
}
