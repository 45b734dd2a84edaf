//! `/admin/installs`: create, read, update (upgrade, enable, grants, egress, debug), uninstall,
//! config and secrets.

use super::common::*;
use super::extensions::{find_extension, resolve_version};
use super::Admin;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateInstall {
    extension: String,
    version: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    debug_logs: bool,
    /// The install's own limits (they only narrow the tenant's plan).
    #[serde(default)]
    limits: crate::limits::LimitSet,
}

/// Who may manage a tenant's installs.
const INSTALL_MANAGERS: &[&str] = &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS];

fn yes() -> bool {
    true
}

pub(super) async fn create_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "manage installs").await?;
    let req: CreateInstall = parse_json(&body)?;
    // `?tenant=` picks the tenant here as on every other admin route; the body's `tenant`
    // (the older way) is still read, and two different answers are refused.
    let chosen = match (q.tenant.as_deref(), req.tenant.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(format!("?tenant={a} and the body's tenant {b:?} differ")))
        }
        (a, b) => a.or(b),
    };
    let tenant = m.tenant(chosen).await?;
    m.run(&tenant, &body, || async {
        let ext = find_extension(platform, &req.extension).await?;
        let version = resolve_version(platform, &ext, &req.version).await?;
        let mut granted = req.capabilities.clone().unwrap_or_else(|| version.manifest.capabilities.clone());
        if req.debug_logs {
            granted.push(CAP_DEBUG_LOGS.into());
        }
        let install = service::create_install(
            platform,
            NewInstall {
                tenant_id: tenant.clone(),
                extension_id: ext.id.clone(),
                version_id: version.id.clone(),
                config: req.config.clone(),
                granted,
                egress: req.egress.clone(),
                enabled: req.enabled,
                limits: req.limits,
            },
        )
        .await?;
        let details = json!({"extension": ext.name, "version": version.version, "capabilities": install.granted,
                             "egress": install.egress, "limits": install.limits.overrides});
        Ok(Done::new(StatusCode::CREATED, install_view(platform, &install)).audited(
            Some(&tenant),
            "install.create",
            Some(&install.install_id),
            details,
        ))
    })
    .await
}

pub(super) async fn list_installs(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<TenantQuery>,
    Query(p): Query<Paging>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, INSTALL_MANAGERS, "list installs").await?;
    // Operators without a tenant filter see every tenant.
    let tenant = match (&q.tenant, caller.identity.has(PERM_PLATFORM_OPS)) {
        (None, true) => None,
        (requested, _) => Some(caller.tenant(platform, requested.as_deref()).await?),
    };
    let page = platform.installs.list_installs(tenant.as_deref(), &p.request()).await?;
    Ok(Json(page_view(page, |i| install_view(platform, i))).into_response())
}

pub(super) async fn load_install(platform: &Platform, tenant: &str, id: &str) -> Result<InstallRecord, ApiError> {
    platform
        .installs
        .get_install(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("install {id} not found")))
}

pub(super) async fn get_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, INSTALL_MANAGERS, "read installs").await?;
    let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
    Ok(Json(install_view(platform, &load_install(platform, &tenant, &id).await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateInstall {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    egress: Option<Vec<String>>,
    #[serde(default)]
    debug_logs: Option<bool>,
    /// Replaces the install's own limits (`{}` removes them).
    #[serde(default)]
    limits: Option<crate::limits::LimitSet>,
}

pub(super) async fn update_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "manage installs").await?;
    let req: UpdateInstall = parse_json(&body)?;
    if let Some(limits) = &req.limits {
        platform.check_limits(limits).map_err(ApiError::bad_request)?;
    }
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    m.run(&tenant, &body, || async {
        // Everything is checked first and applied in one conditional write: a refused
        // part leaves the install untouched.
        let current = load_install(platform, &tenant, &id).await?;
        let from_version = current.version_id.clone();
        let version = match &req.version {
            Some(v) => {
                let ext = find_extension(platform, &current.extension_id).await?;
                resolve_version(platform, &ext, v).await?
            }
            None => (*platform.version(&current.version_id).await?.ok_or_else(|| ApiError::internal("install without version"))?).clone(),
        };
        let to_version = version.id.clone();
        let checked_caps = match &req.capabilities {
            Some(caps) => Some(service::check_grants(caps, &version.manifest.capabilities)?),
            None => None,
        };
        let checked_egress = match &req.egress {
            Some(e) => Some(service::check_egress(e)?),
            None => None,
        };
        let updated = service::update_install(platform, &tenant, &id, |i| {
            i.version_id = to_version;
            if let Some(enabled) = req.enabled {
                i.enabled = enabled;
            }
            if let Some(caps) = checked_caps {
                let debug = i.granted.iter().any(|g| g == CAP_DEBUG_LOGS);
                i.granted = caps;
                if debug && !i.granted.iter().any(|g| g == CAP_DEBUG_LOGS) && req.debug_logs.is_none() {
                    i.granted.push(CAP_DEBUG_LOGS.into());
                }
            }
            if let Some(e) = checked_egress {
                i.egress = e;
            }
            match req.debug_logs {
                Some(true) if !i.granted.iter().any(|g| g == CAP_DEBUG_LOGS) => i.granted.push(CAP_DEBUG_LOGS.into()),
                Some(false) => i.granted.retain(|g| g != CAP_DEBUG_LOGS),
                _ => {}
            }
            if let Some(limits) = req.limits {
                i.limits.overrides = limits;
            }
            Ok(())
        })
        .await?;
        let action = match (&req.version, updated.version_id != from_version) {
            (Some(_), true) => "install.version",
            _ => "install.update",
        };
        let details = json!({"from_version": from_version, "to_version": updated.version_id, "enabled": updated.enabled,
                             "capabilities": updated.granted, "egress": updated.egress, "limits": updated.limits.overrides});
        Ok(Done::new(StatusCode::OK, install_view(platform, &updated)).audited(Some(&tenant), action, Some(&id), details))
    })
    .await
}

pub(super) async fn delete_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "uninstall").await?;
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    let purge = q.purge.unwrap_or(false);
    m.run(&tenant, &[], || async {
        let purged = service::uninstall(platform, &tenant, &id, purge).await?;
        let answer = json!({"deleted": id, "purged_entries": purged, "storage": if purge { "purged" } else { "kept" }});
        let details = json!({"purge": purge, "purged_entries": purged});
        Ok(Done::new(StatusCode::OK, answer).audited(Some(&tenant), "install.delete", Some(&id), details))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigBody {
    config: BTreeMap<String, String>,
}

pub(super) async fn put_config(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "set config").await?;
    let req: ConfigBody = parse_json(&body)?;
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    m.run(&tenant, &body, || async {
        let keys: Vec<String> = req.config.keys().cloned().collect();
        let updated = service::set_config(platform, &tenant, &id, req.config.clone()).await?;
        let version = updated.config_version;
        Ok(Done::new(StatusCode::OK, json!({"install_id": id, "config_version": version})).audited(
            Some(&tenant),
            "install.config",
            Some(&id),
            json!({"keys": keys, "config_version": version}),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretsBody {
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    expires_at: Option<String>,
}

pub(super) async fn put_secrets(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "set secrets").await?;
    let req: SecretsBody = parse_json(&body)?;
    if let Some(ts) = &req.expires_at {
        chrono::DateTime::parse_from_rfc3339(ts)
            .map_err(|_| ApiError::bad_request("expires_at must be an RFC 3339 timestamp"))?;
    }
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    // The fingerprint (not the body) is what idempotency stores: values never persist there.
    m.run(&tenant, &body, || async {
        let updated = service::set_secrets(platform, &tenant, &id, &req.secrets, req.expires_at.clone()).await?;
        let keys: Vec<&String> = req.secrets.keys().collect();
        let version = updated.secrets_version;
        Ok(Done::new(StatusCode::OK, json!({"install_id": id, "secrets_version": version, "keys": keys})).audited(
            Some(&tenant),
            "install.secrets",
            Some(&id),
            json!({"keys": keys, "secrets_version": version}),
        ))
    })
    .await
}

/// `PATCH /admin/installs/{id}/config` and `/secrets`: keys to write and keys to remove; the
/// other keys stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MapPatch {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    /// Secrets only: a new expiry for the envelope (the current one is kept otherwise).
    #[serde(default)]
    expires_at: Option<String>,
}

impl MapPatch {
    fn parse(body: &[u8], what: &str) -> Result<Self, ApiError> {
        let patch: MapPatch = parse_json(body)?;
        if patch.set.is_empty() && patch.unset.is_empty() {
            return Err(ApiError::bad_request(format!("a {what} patch needs `set` or `unset` keys")));
        }
        if let Some(key) = patch.unset.iter().find(|k| patch.set.contains_key(*k)) {
            return Err(ApiError::bad_request(format!("{key:?} is both set and unset")));
        }
        Ok(patch)
    }
}

pub(super) async fn patch_config(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "change config").await?;
    let patch = MapPatch::parse(&body, "config")?;
    if patch.expires_at.is_some() {
        return Err(ApiError::bad_request("expires_at applies to secrets, not config"));
    }
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    m.run(&tenant, &body, || async {
        let updated = service::patch_config(platform, &tenant, &id, &patch.set, &patch.unset).await?;
        let keys: Vec<&String> = updated.config.keys().collect();
        let version = updated.config_version;
        let details =
            json!({"set": patch.set.keys().collect::<Vec<_>>(), "unset": patch.unset, "config_version": version});
        Ok(Done::new(StatusCode::OK, json!({"install_id": id, "config_version": version, "keys": keys})).audited(
            Some(&tenant),
            "install.config",
            Some(&id),
            details,
        ))
    })
    .await
}

pub(super) async fn patch_secrets(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, INSTALL_MANAGERS, "change secrets").await?;
    let patch = MapPatch::parse(&body, "secrets")?;
    if let Some(ts) = &patch.expires_at {
        chrono::DateTime::parse_from_rfc3339(ts)
            .map_err(|_| ApiError::bad_request("expires_at must be an RFC 3339 timestamp"))?;
    }
    let tenant = m.tenant(q.tenant.as_deref()).await?;
    // The fingerprint (not the body) is what idempotency stores: values never persist there.
    m.run(&tenant, &body, || async {
        let (updated, keys) =
            service::patch_secrets(platform, &tenant, &id, &patch.set, &patch.unset, patch.expires_at.clone()).await?;
        let version = updated.secrets_version;
        let details =
            json!({"set": patch.set.keys().collect::<Vec<_>>(), "unset": patch.unset, "secrets_version": version});
        Ok(Done::new(StatusCode::OK, json!({"install_id": id, "secrets_version": version, "keys": keys})).audited(
            Some(&tenant),
            "install.secrets",
            Some(&id),
            details,
        ))
    })
    .await
}
