//! What every admin route shares: the authenticated caller (permission checks and audit
//! rows), idempotency, JSON parsing, paging and the response views.

pub(super) use std::collections::BTreeMap;
pub(super) use std::sync::Arc;

pub(super) use axum::extract::{FromRequestParts, Path, Query, State};
pub(super) use axum::http::request::Parts;
pub(super) use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
pub(super) use axum::response::{IntoResponse, Response};
pub(super) use axum::routing::{delete, get, put};
pub(super) use axum::{Extension, Json, Router};
pub(super) use serde::Deserialize;
pub(super) use serde_json::{json, Value};

use super::{target_tenant, Admin};
pub(super) use crate::auth::{
    identify, Identity, PERM_EXTENSION_MANAGE, PERM_EXTENSION_READ, PERM_PLATFORM_OPS, PERM_PLATFORM_PUBLISH,
};
pub(super) use crate::http::body::{BodyLimit, LimitedBytes};
pub(super) use crate::http::error::ApiError;
pub(super) use crate::http::{request_id_layer, RequestId};
pub(super) use crate::idempotency::{self, Lookup};
pub(super) use crate::installs::{self as service, NewInstall};
pub(super) use crate::manifest::CAP_DEBUG_LOGS;
pub(super) use crate::platform::Platform;
pub(super) use crate::publish::{self, BundleLimits};
pub(super) use crate::stores::{
    now_rfc3339, AuditFilter, DebugGrant, ExtensionRecord, InstallRecord, PageRequest, VersionRecord,
};

/// The OpenAPI 3 document of this router (served at `/admin/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

pub(super) type Answer = Result<Response, ApiError>;

/// Who may read extensions and versions (manifests, content hashes): the registry is shared
/// by all tenants, so reading it takes a permission, not just a valid token.
pub(super) const REGISTRY_READERS: &[&str] =
    &[PERM_EXTENSION_READ, PERM_EXTENSION_MANAGE, PERM_PLATFORM_PUBLISH, PERM_PLATFORM_OPS];

/// The authenticated caller (errors get their request id from the router's layer).
pub(super) struct Caller {
    pub(super) identity: Identity,
}

impl FromRequestParts<Arc<Admin>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, Self::Rejection> {
        identify(parts, &admin.platform.jwt)
            .map(|identity| Self { identity })
            .map_err(|e| ApiError::unauthenticated(e.to_string()))
    }
}

impl Caller {
    /// Refuse (and audit) unless the caller holds one of `perms`.
    pub(super) async fn require(&self, platform: &Platform, perms: &[&str], what: &str) -> Result<(), ApiError> {
        if perms.iter().any(|p| self.identity.has(p)) {
            return Ok(());
        }
        let message = format!("{} is required to {what}", perms.join(" or "));
        self.denied(platform, &message).await;
        Err(ApiError::forbidden(message))
    }

    /// The tenant to act on (own, or any for platform:ops); refusals are audited.
    pub(super) async fn tenant(&self, platform: &Platform, requested: Option<&str>) -> Result<String, ApiError> {
        match target_tenant(&self.identity, requested) {
            Ok(t) => Ok(t),
            Err(e) => {
                self.denied(platform, &e.message).await;
                Err(e)
            }
        }
    }

    pub(super) async fn denied(&self, platform: &Platform, reason: &str) {
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

    pub(super) async fn audit(
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
pub(super) struct Meta {
    pub(super) headers: HeaderMap,
    pub(super) method: Method,
    pub(super) uri: Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self { headers: parts.headers.clone(), method: parts.method.clone(), uri: parts.uri.clone() })
    }
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
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

/// The frame every admin mutation runs in: permission ([`Mutation::begin`]) → tenant
/// ([`Mutation::tenant`]) → idempotency → the change → its audit row ([`Mutation::run`]).
/// A change says what to audit in its [`Done`]; the frame writes the row only for a change
/// that ran (a replayed answer is not audited twice, a refused one is not audited as done).
pub(super) struct Mutation<'a> {
    admin: &'a Admin,
    caller: &'a Caller,
    meta: &'a Meta,
}

/// What a change answered, and the audit row it leaves.
pub(super) struct Done {
    status: StatusCode,
    body: Value,
    audit: Option<(Option<String>, String, Option<String>, Value)>,
}

impl Done {
    /// An answer.
    pub(super) fn new(status: StatusCode, body: Value) -> Self {
        Self { status, body, audit: None }
    }

    /// Audit `action` on `target` in `tenant` (`None`: a platform-wide change, e.g. a plan).
    pub(super) fn audited(mut self, tenant: Option<&str>, action: &str, target: Option<&str>, details: Value) -> Self {
        self.audit = Some((tenant.map(str::to_string), action.to_string(), target.map(str::to_string), details));
        self
    }
}

impl<'a> Mutation<'a> {
    /// Refuse (and audit) a caller without one of `perms`.
    pub(super) async fn begin(
        admin: &'a Admin,
        caller: &'a Caller,
        meta: &'a Meta,
        perms: &[&str],
        what: &str,
    ) -> Result<Self, ApiError> {
        caller.require(&admin.platform, perms, what).await?;
        Ok(Self { admin, caller, meta })
    }

    /// The tenant to act on (own, or any for platform:ops); refusals are audited.
    pub(super) async fn tenant(&self, requested: Option<&str>) -> Result<String, ApiError> {
        self.caller.tenant(&self.admin.platform, requested).await
    }

    /// Run the change under the request's `Idempotency-Key` (kept per `tenant`), then audit it.
    pub(super) async fn run<F, Fut>(&self, tenant: &str, body: &[u8], change: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Done, ApiError>>,
    {
        idempotent(self.admin, self.caller, tenant, self.meta, body, || async {
            let done = change().await?;
            if let Some((tenant, action, target, details)) = done.audit {
                self.caller.audit(&self.admin.platform, tenant.as_deref(), &action, target.as_deref(), details).await;
            }
            Ok((done.status, done.body))
        })
        .await
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("malformed JSON body: {e}")))
}

/// The one paging query of every list route: `?limit=&cursor=`.
#[derive(Deserialize)]
pub(super) struct Paging {
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

impl Paging {
    pub(super) fn request(&self) -> PageRequest {
        PageRequest { limit: self.limit, cursor: self.cursor.clone() }
    }
}

/// `?tenant=` (and `?purge=` on uninstall).
#[derive(Deserialize)]
pub(super) struct TenantQuery {
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) purge: Option<bool>,
}

// ------------------------------------------------------------------ views

pub(super) fn extension_view(e: &ExtensionRecord) -> Value {
    json!({"id": e.id, "name": e.name, "publisher": e.publisher, "created_at": e.created_at})
}

pub(super) async fn version_view(platform: &Platform, v: &VersionRecord) -> Value {
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

pub(super) fn install_view(platform: &Platform, i: &InstallRecord) -> Value {
    let effective = platform.plan_defaults.for_install(&i.limits);
    json!({
        "plan": effective.plan,
        "limits": {"overrides": i.limits.overrides, "effective": effective.view()},
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

pub(super) fn page_view<T>(page: crate::stores::Page<T>, view: impl Fn(&T) -> Value) -> Value {
    json!({"items": page.items.iter().map(view).collect::<Vec<_>>(), "next_cursor": page.next_cursor})
}
