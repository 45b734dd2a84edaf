//! Admin API routes. Every mutation is audited; every refusal of an authenticated caller is
//! audited as `access.denied`; mutating routes honour `Idempotency-Key`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{target_tenant, Admin};
use crate::auth::{
    identify, Identity, PERM_EXTENSION_MANAGE, PERM_EXTENSION_READ, PERM_PLATFORM_OPS, PERM_PLATFORM_PUBLISH,
};
use crate::http::body::{BodyLimit, LimitedBytes};
use crate::http::error::ApiError;
use crate::http::{request_id_layer, RequestId};
use crate::idempotency::{self, Lookup};
use crate::installs::{self as service, NewInstall};
use crate::manifest::CAP_DEBUG_LOGS;
use crate::platform::Platform;
use crate::publish::{self, BundleLimits};
use crate::stores::{now_rfc3339, AuditFilter, DebugGrant, ExtensionRecord, InstallRecord, PageRequest, VersionRecord};

/// The OpenAPI 3 document of this router (served at `/admin/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

type Answer = Result<Response, ApiError>;

/// Who may read extensions and versions (manifests, content hashes): the registry is shared
/// by all tenants, so reading it takes a permission, not just a valid token.
const REGISTRY_READERS: &[&str] =
    &[PERM_EXTENSION_READ, PERM_EXTENSION_MANAGE, PERM_PLATFORM_PUBLISH, PERM_PLATFORM_OPS];

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
        .route("/admin/installs/{install}/config", put(put_config))
        .route("/admin/installs/{install}/secrets", put(put_secrets))
        .route("/admin/grants", get(list_grants).post(create_grant))
        .route("/admin/grants/{grant}", delete(revoke_grant))
        .route("/admin/audit", get(query_audit))
        .layer(Extension(BodyLimit(admin.settings.max_body_bytes)))
        .with_state(admin)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_id_layer))
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The authenticated caller, with the request id for error bodies.
struct Caller {
    identity: Identity,
    request_id: String,
}

impl FromRequestParts<Arc<Admin>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, Self::Rejection> {
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        match identify(parts, &admin.platform.jwt) {
            Ok(identity) => Ok(Self { identity, request_id }),
            Err(e) => Err(ApiError::unauthenticated(e.to_string()).with_request_id(&request_id).into_response()),
        }
    }
}

impl Caller {
    /// Refuse (and audit) unless the caller holds one of `perms`.
    async fn require(&self, platform: &Platform, perms: &[&str], what: &str) -> Result<(), ApiError> {
        if perms.iter().any(|p| self.identity.has(p)) {
            return Ok(());
        }
        let message = format!("{} is required to {what}", perms.join(" or "));
        self.denied(platform, &message).await;
        Err(ApiError::forbidden(message))
    }

    /// The tenant to act on (own, or any for platform:ops); refusals are audited.
    async fn tenant(&self, platform: &Platform, requested: Option<&str>) -> Result<String, ApiError> {
        match target_tenant(&self.identity, requested) {
            Ok(t) => Ok(t),
            Err(e) => {
                self.denied(platform, &e.message).await;
                Err(e)
            }
        }
    }

    async fn denied(&self, platform: &Platform, reason: &str) {
        let id = &self.identity;
        crate::audit_log::record(
            platform.audit.as_ref(),
            &id.sub,
            Some(&id.tenant),
            "access.denied",
            None,
            "denied",
            json!({"api": "admin", "reason": reason}),
        )
        .await;
    }

    async fn audit(
        &self,
        platform: &Platform,
        tenant: Option<&str>,
        action: &str,
        target: Option<&str>,
        details: Value,
    ) {
        crate::audit_log::record(platform.audit.as_ref(), &self.identity.sub, tenant, action, target, "ok", details)
            .await;
    }
}

/// What idempotency needs of a request: its key header, method and path.
struct Meta {
    headers: HeaderMap,
    method: Method,
    uri: Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { headers: parts.headers.clone(), method: parts.method.clone(), uri: parts.uri.clone() })
    }
}

/// Finish a handler: attach the request id to errors.
fn finish(request_id: &str, answer: Answer) -> Response {
    answer.unwrap_or_else(|e| e.with_request_id(request_id).into_response())
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Run a mutation under `Idempotency-Key` (when given): replay a completed answer, refuse a
/// reused key with another request, remember successful answers.
async fn idempotent<F, Fut>(admin: &Admin, caller: &Caller, tenant: &str, meta: &Meta, body: &[u8], run: F) -> Answer
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let key = match meta.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1-255 visible ASCII characters"))?;
            Some(k.to_string())
        }
    };
    let Some(key) = key else {
        let (status, body) = run().await?;
        return Ok(json_response(status, body));
    };
    let platform = &admin.platform;
    let fingerprint = idempotency::fingerprint(meta.method.as_str(), meta.uri.path(), body);
    match idempotency::lookup(platform, tenant, &caller.identity.sub, &key, &fingerprint).await {
        Lookup::Replay(status, body) => {
            let mut r = json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
            r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(r)
        }
        Lookup::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )),
        Lookup::Fresh => {
            let (status, body) = run().await?;
            idempotency::remember(platform, tenant, &caller.identity.sub, &key, &fingerprint, status.as_u16(), &body)
                .await;
            Ok(json_response(status, body))
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("malformed JSON body: {e}")))
}

// ------------------------------------------------------------------ views

fn extension_view(e: &ExtensionRecord) -> Value {
    json!({"id": e.id, "name": e.name, "publisher": e.publisher, "created_at": e.created_at})
}

async fn version_view(platform: &Platform, v: &VersionRecord) -> Value {
    json!({
        "id": v.id,
        "extension_id": v.extension_id,
        "version": v.version,
        "content_hash": v.content_hash,
        "component_hash": v.component_hash,
        "published_at": v.published_at,
        "artifact_present": platform.cache().has_blob_artifact(&v.component_hash).await,
        "manifest": v.manifest,
    })
}

fn install_view(i: &InstallRecord) -> Value {
    json!({
        "install_id": i.install_id,
        "tenant_id": i.tenant_id,
        "extension_id": i.extension_id,
        "version_id": i.version_id,
        "config": i.config,
        "config_version": i.config_version,
        "secrets_version": i.secrets_version,
        "has_secrets": i.secrets_ref.is_some(),
        "capabilities": i.granted,
        "debug_logs": i.granted.iter().any(|g| g == CAP_DEBUG_LOGS),
        "egress": i.egress,
        "enabled": i.enabled,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    })
}

fn page_view<T>(page: crate::stores::Page<T>, view: impl Fn(&T) -> Value) -> Value {
    json!({"items": page.items.iter().map(view).collect::<Vec<_>>(), "next_cursor": page.next_cursor})
}

// ------------------------------------------------------------------ extensions

#[derive(Deserialize)]
struct PublishByReference {
    bundle_key: String,
}

async fn publish_version(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_PLATFORM_PUBLISH], "publish").await?;
        let tenant = caller.identity.tenant.clone();
        idempotent(&admin, &caller, &tenant, &meta, &body, || async {
            // Large bundles (past Lambda's 6 MB payload) are uploaded to the bucket's
            // uploads/ prefix first and published by reference.
            let is_json = meta.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json"));
            let bytes = if is_json {
                let r: PublishByReference = parse_json(&body)?;
                if !r.bundle_key.starts_with("uploads/") {
                    return Err(ApiError::bad_request("bundle_key must be under uploads/"));
                }
                platform
                    .blobs
                    .get(&r.bundle_key)
                    .await
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .ok_or_else(|| ApiError::not_found(format!("{} is not in the bucket", r.bundle_key)))?
            } else {
                body.to_vec()
            };
            let published = publish::publish(platform, bytes, &BundleLimits::default()).await?;
            let view = json!({"extension": extension_view(&published.extension), "version": version_view(platform, &published.version).await, "created": published.created});
            if published.created {
                caller.audit(platform, None, "version.publish", Some(&published.version.id), json!({"name": published.extension.name, "version": published.version.version, "content_hash": published.version.content_hash})).await;
            }
            Ok((if published.created { StatusCode::CREATED } else { StatusCode::OK }, view))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

impl Paging {
    fn request(&self) -> PageRequest {
        PageRequest { limit: self.limit, cursor: self.cursor.clone() }
    }
}

async fn list_extensions(State(admin): State<Arc<Admin>>, caller: Caller, Query(p): Query<Paging>) -> Response {
    let answer = async {
        caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
        let page = admin.platform.registry.list_extensions(&p.request()).await?;
        Ok(Json(page_view(page, extension_view)).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

/// An extension by registry id or manifest name.
async fn find_extension(platform: &Platform, reference: &str) -> Result<ExtensionRecord, ApiError> {
    let found = match platform.registry.get_extension(reference).await? {
        Some(e) => Some(e),
        None => platform.registry.find_extension_by_name(reference).await?,
    };
    found.ok_or_else(|| ApiError::not_found(format!("extension {reference} not found")))
}

async fn get_extension(State(admin): State<Arc<Admin>>, caller: Caller, Path(reference): Path<String>) -> Response {
    let answer = async {
        caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
        let ext = find_extension(&admin.platform, &reference).await?;
        Ok(Json(extension_view(&ext)).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn list_versions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(reference): Path<String>,
    Query(p): Query<Paging>,
) -> Response {
    let answer = async {
        caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
        let platform = &admin.platform;
        let ext = find_extension(platform, &reference).await?;
        let page = platform.registry.list_versions(&ext.id, &p.request()).await?;
        let mut items = Vec::new();
        for v in &page.items {
            items.push(version_view(platform, v).await);
        }
        Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn get_version(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((reference, version)): Path<(String, String)>,
) -> Response {
    let answer = async {
        caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
        let platform = &admin.platform;
        let ext = find_extension(platform, &reference).await?;
        let v = resolve_version(platform, &ext, &version).await?;
        Ok(Json(version_view(platform, &v).await).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

/// A version of `ext` by semver string or version id.
async fn resolve_version(platform: &Platform, ext: &ExtensionRecord, version: &str) -> Result<VersionRecord, ApiError> {
    if let Some(v) = platform.registry.find_version(&ext.id, version).await? {
        return Ok(v);
    }
    match platform.registry.get_version(version).await? {
        Some(v) if v.extension_id == ext.id => Ok(v),
        _ => Err(ApiError::not_found(format!("version {version} of {} not found", ext.name))),
    }
}

// ------------------------------------------------------------------ installs

#[derive(Deserialize)]
struct TenantQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    purge: Option<bool>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstall {
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
}

fn yes() -> bool {
    true
}

async fn create_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "manage installs").await?;
        let req: CreateInstall = parse_json(&body)?;
        let tenant = caller.tenant(platform, req.tenant.as_deref()).await?;
        idempotent(&admin, &caller, &tenant, &meta, &body, || async {
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
                },
            )
            .await?;
            caller
                .audit(platform, Some(&tenant), "install.create", Some(&install.install_id), json!({"extension": ext.name, "version": version.version, "capabilities": install.granted, "egress": install.egress}))
                .await;
            Ok((StatusCode::CREATED, install_view(&install)))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn list_installs(State(admin): State<Arc<Admin>>, caller: Caller, Query(q): Query<TenantQuery>) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "list installs").await?;
        // Operators without a tenant filter see every tenant.
        let tenant = match (&q.tenant, caller.identity.has(PERM_PLATFORM_OPS)) {
            (None, true) => None,
            (requested, _) => Some(caller.tenant(platform, requested.as_deref()).await?),
        };
        let page = platform
            .installs
            .list_installs(tenant.as_deref(), &PageRequest { limit: q.limit, cursor: q.cursor.clone() })
            .await?;
        Ok(Json(page_view(page, install_view)).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn load_install(platform: &Platform, tenant: &str, id: &str) -> Result<InstallRecord, ApiError> {
    platform
        .installs
        .get_install(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("install {id} not found")))
}

async fn get_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "read installs").await?;
        let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
        Ok(Json(install_view(&load_install(platform, &tenant, &id).await?)).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInstall {
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
}

async fn update_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "manage installs").await?;
        let req: UpdateInstall = parse_json(&body)?;
        let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
        idempotent(&admin, &caller, &tenant, &meta, &body, || async {
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
                Ok(())
            })
            .await?;
            let action = match (&req.version, updated.version_id != from_version) {
                (Some(_), true) => "install.version",
                _ => "install.update",
            };
            caller
                .audit(platform, Some(&tenant), action, Some(&id), json!({"from_version": from_version, "to_version": updated.version_id, "enabled": updated.enabled, "capabilities": updated.granted, "egress": updated.egress}))
                .await;
            Ok((StatusCode::OK, install_view(&updated)))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn delete_install(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "uninstall").await?;
        let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
        let purge = q.purge.unwrap_or(false);
        idempotent(&admin, &caller, &tenant, &meta, &[], || async {
            let purged = service::uninstall(platform, &tenant, &id, purge).await?;
            caller
                .audit(
                    platform,
                    Some(&tenant),
                    "install.delete",
                    Some(&id),
                    json!({"purge": purge, "purged_entries": purged}),
                )
                .await;
            Ok((
                StatusCode::OK,
                json!({"deleted": id, "purged_entries": purged, "storage": if purge { "purged" } else { "kept" }}),
            ))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    config: BTreeMap<String, String>,
}

async fn put_config(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "set config").await?;
        let req: ConfigBody = parse_json(&body)?;
        let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
        idempotent(&admin, &caller, &tenant, &meta, &body, || async {
            let keys: Vec<&String> = req.config.keys().collect();
            let updated = service::set_config(platform, &tenant, &id, req.config.clone()).await?;
            caller
                .audit(
                    platform,
                    Some(&tenant),
                    "install.config",
                    Some(&id),
                    json!({"keys": keys, "config_version": updated.config_version}),
                )
                .await;
            Ok((StatusCode::OK, json!({"install_id": id, "config_version": updated.config_version})))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsBody {
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    expires_at: Option<String>,
}

async fn put_secrets(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_EXTENSION_MANAGE, PERM_PLATFORM_OPS], "set secrets").await?;
        let req: SecretsBody = parse_json(&body)?;
        if let Some(ts) = &req.expires_at {
            chrono::DateTime::parse_from_rfc3339(ts)
                .map_err(|_| ApiError::bad_request("expires_at must be an RFC 3339 timestamp"))?;
        }
        let tenant = caller.tenant(platform, q.tenant.as_deref()).await?;
        // The fingerprint (not the body) is what idempotency stores: values never persist there.
        idempotent(&admin, &caller, &tenant, &meta, &body, || async {
            let updated = service::set_secrets(platform, &tenant, &id, &req.secrets, req.expires_at.clone()).await?;
            let keys: Vec<&String> = req.secrets.keys().collect();
            caller
                .audit(
                    platform,
                    Some(&tenant),
                    "install.secrets",
                    Some(&id),
                    json!({"keys": keys, "secrets_version": updated.secrets_version}),
                )
                .await;
            Ok((StatusCode::OK, json!({"install_id": id, "secrets_version": updated.secrets_version, "keys": keys})))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

// ------------------------------------------------------------------ grants

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
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

async fn create_grant(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_PLATFORM_OPS], "grant debug access").await?;
        let req: GrantBody = parse_json(&body)?;
        let ttl = req.ttl_secs.unwrap_or(3600);
        if ttl == 0 || ttl > MAX_GRANT_SECS {
            return Err(ApiError::bad_request(format!("ttl_secs must be 1-{MAX_GRANT_SECS}")));
        }
        if req.viewer.trim().is_empty() {
            return Err(ApiError::bad_request("viewer (the user's sub) is required"));
        }
        idempotent(&admin, &caller, &req.tenant, &meta, &body, || async {
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
            caller.audit(platform, Some(&req.tenant), "grant.create", Some(&grant.id), json!({"install_id": grant.install_id, "viewer": grant.viewer, "viewer_tenant": grant.viewer_tenant, "viewer_issuer": grant.viewer_issuer, "expires_at": grant.expires_at, "reason": grant.reason})).await;
            Ok((StatusCode::CREATED, serde_json::to_value(&grant).expect("plain data")))
        })
        .await
    }
    .await;
    finish(&caller.request_id, answer)
}

#[derive(Deserialize)]
struct GrantQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    viewer: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_grants(State(admin): State<Arc<Admin>>, caller: Caller, Query(q): Query<GrantQuery>) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_PLATFORM_OPS], "list debug grants").await?;
        let page = platform
            .grants
            .list_grants(
                q.tenant.as_deref(),
                q.viewer.as_deref(),
                &PageRequest { limit: q.limit, cursor: q.cursor.clone() },
            )
            .await?;
        Ok(Json(page_view(page, |g| {
            let mut v = serde_json::to_value(g).expect("plain data");
            v["active"] = json!(g.active());
            v
        }))
        .into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

async fn revoke_grant(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
) -> Response {
    let answer = async {
        let platform = &admin.platform;
        caller.require(platform, &[PERM_PLATFORM_OPS], "revoke debug grants").await?;
        let tenant = q.tenant.clone().ok_or_else(|| ApiError::bad_request("tenant query parameter is required"))?;
        if !platform.grants.revoke_grant(&tenant, &id, &now_rfc3339()).await? {
            return Err(ApiError::not_found(format!("grant {id} not found")));
        }
        caller.audit(platform, Some(&tenant), "grant.revoke", Some(&id), json!({})).await;
        Ok(Json(json!({"revoked": id})).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}

// ------------------------------------------------------------------ audit

#[derive(Deserialize)]
struct AuditQuery {
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
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

async fn query_audit(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Extension(_id): Extension<RequestId>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let answer = async {
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
        let page = platform.audit.query(&filter, &PageRequest { limit: q.limit, cursor: q.cursor.clone() }).await?;
        Ok(Json(page_view(page, |r| serde_json::to_value(r).expect("plain data"))).into_response())
    }
    .await;
    finish(&caller.request_id, answer)
}
