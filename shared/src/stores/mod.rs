//! Control-plane state: the extension registry, tenant installs and the audit log. Each is a
//! trait with an embedded (SQLite) implementation and an AWS (DynamoDB) one.

pub mod dynamodb;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// Errors of the control-plane stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost (duplicate key, stale revision).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend could not be reached; callers answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt row, serialisation).
    #[error("store error: {0}")]
    Internal(String),
}

/// Result of the stores.
pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageRequest {
    /// Page size (clamped to 1..=1000 by the stores; 100 when 0).
    #[serde(default)]
    pub limit: usize,
    /// Opaque cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The effective page size.
    pub fn size(&self) -> usize {
        match self.limit {
            0 => 100,
            n => n.min(1000),
        }
    }
}

/// A page of results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A published extension (all versions share it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtensionRecord {
    /// Registry id (uuid).
    pub id: String,
    /// Manifest name, lower-case.
    pub name: String,
    /// Publisher of the first version.
    pub publisher: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// One immutable published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version id (uuid).
    pub id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Semver string from the manifest.
    pub version: String,
    /// Validated manifest.
    pub manifest: Manifest,
    /// `sha256:<hex>` of the bundle as published.
    pub content_hash: String,
    /// Hex sha256 of the component bytes: the module cache key (empty for a UI-only version).
    pub component_hash: String,
    /// Blob key of the component bytes (empty for a UI-only version).
    pub component_key: String,
    /// Blob key of the bundle.
    pub bundle_key: String,
    /// RFC 3339.
    pub published_at: String,
}

impl VersionRecord {
    /// Whether the version has a handler component; a UI-only version (a bundle with a UI and
    /// no component, as Alga's SDK templates ship) has none.
    pub fn has_component(&self) -> bool {
        !self.component_hash.is_empty()
    }
}

/// A tenant's install of one extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// Install id (uuid).
    pub install_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Installed version id.
    pub version_id: String,
    /// Config map (non-secret).
    pub config: BTreeMap<String, String>,
    /// Bumped on every config change (A2).
    pub config_version: u64,
    /// Secret envelope reference (Secrets Manager id or local key), if secrets were set.
    pub secrets_ref: Option<String>,
    /// Bumped on every secrets change (A2).
    pub secrets_version: u64,
    /// Normalised capabilities granted (defaults are implied).
    pub granted: Vec<String>,
    /// Egress allow-list for `http.fetch`.
    pub egress: Vec<String>,
    /// Disabled installs answer 404.
    pub enabled: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Optimistic-concurrency revision, bumped on every update.
    pub revision: u64,
    /// The tenant's plan as last applied, and the install's own narrower limits.
    #[serde(default)]
    pub limits: crate::limits::InstallLimits,
}

impl InstallRecord {
    /// Whether the install has `cap` (granted or default).
    pub fn has_capability(&self, cap: &str) -> bool {
        crate::manifest::DEFAULT_CAPABILITIES.contains(&cap) || self.granted.iter().any(|g| g == cap)
    }
}

/// Outcome of recording a version.
#[derive(Debug, Clone, PartialEq)]
pub enum PutVersion {
    /// Newly recorded.
    Created,
    /// name@version already existed; here it is.
    Existing(Box<VersionRecord>),
}

/// Extensions and their versions.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Record the extension by name, or return the existing one with that name.
    async fn ensure_extension(&self, ext: &ExtensionRecord) -> StoreResult<ExtensionRecord>;
    /// Extension by registry id.
    async fn get_extension(&self, id: &str) -> StoreResult<Option<ExtensionRecord>>;
    /// Extension by manifest name.
    async fn find_extension_by_name(&self, name: &str) -> StoreResult<Option<ExtensionRecord>>;
    /// All extensions, by name.
    async fn list_extensions(&self, page: &PageRequest) -> StoreResult<Page<ExtensionRecord>>;
    /// Record a version unless name@version exists (then the existing one is returned).
    async fn put_version(&self, version: &VersionRecord) -> StoreResult<PutVersion>;
    /// Version by id.
    async fn get_version(&self, id: &str) -> StoreResult<Option<VersionRecord>>;
    /// Version by extension and semver string.
    async fn find_version(&self, extension_id: &str, version: &str) -> StoreResult<Option<VersionRecord>>;
    /// Version by bundle content hash (`sha256:<hex>`).
    async fn find_version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRecord>>;
    /// Versions of an extension, oldest first.
    async fn list_versions(&self, extension_id: &str, page: &PageRequest) -> StoreResult<Page<VersionRecord>>;
    /// Record the sha256 (hex) of the precompiled artifact of a component for one engine
    /// (`compat_hash`). Written at publish, by the control plane only: the gateway trusts a
    /// blob-store artifact only when it matches this record, never a digest kept beside it.
    async fn put_artifact_digest(&self, component_hash: &str, compat_hash: &str, sha256: &str) -> StoreResult<()>;
    /// The recorded artifact sha256 of a component for an engine.
    async fn artifact_digest(&self, component_hash: &str, compat_hash: &str) -> StoreResult<Option<String>>;
}

/// Tenant installs.
#[async_trait]
pub trait Installs: Send + Sync {
    /// Create; a second install of the same extension in a tenant is a conflict.
    async fn create_install(&self, install: &InstallRecord) -> StoreResult<()>;
    /// Install by tenant and id (another tenant's id is `None`).
    async fn get_install(&self, tenant: &str, install_id: &str) -> StoreResult<Option<InstallRecord>>;
    /// The tenant's install of an extension.
    async fn find_install(&self, tenant: &str, extension_id: &str) -> StoreResult<Option<InstallRecord>>;
    /// A tenant's installs (all tenants with `None`, for operators).
    async fn list_installs(&self, tenant: Option<&str>, page: &PageRequest) -> StoreResult<Page<InstallRecord>>;
    /// Replace an install if its stored revision is `install.revision - 1`.
    async fn update_install(&self, install: &InstallRecord) -> StoreResult<()>;
    /// Delete; returns whether it existed.
    async fn delete_install(&self, tenant: &str, install_id: &str) -> StoreResult<bool>;
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Row id (uuid).
    pub id: String,
    /// RFC 3339 with milliseconds.
    pub ts: String,
    /// Tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// Who (`sub`, or `system`).
    pub actor: String,
    /// What, e.g. `install.create`, `debug.session`, `access.denied`.
    pub action: String,
    /// Object, e.g. an install id.
    pub target: Option<String>,
    /// `ok`, `denied`, `error`.
    pub outcome: String,
    /// Details (never secret values).
    pub details: serde_json::Value,
}

/// Filter for audit queries.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// From (RFC 3339, inclusive).
    pub since: Option<String>,
    /// Until (RFC 3339, exclusive).
    pub until: Option<String>,
}

/// The audit log.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Append a row.
    async fn append(&self, record: &AuditRecord) -> StoreResult<()>;
    /// Rows matching the filter, newest first.
    async fn query(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditRecord>>;
}

/// An operator's grant letting one viewer watch one install's debug stream for a while (B2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugGrant {
    /// Grant id (uuid).
    pub id: String,
    /// Tenant of the install.
    pub tenant_id: String,
    /// The install.
    pub install_id: String,
    /// The viewer's `sub`.
    pub viewer: String,
    /// The viewer's own tenant; `None` (grants made before it was recorded) means the
    /// install's tenant. A `sub` alone names no one: every tenant has its own `alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_tenant: Option<String>,
    /// The issuer of the viewer's token, when the grant is limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_issuer: Option<String>,
    /// Operator who granted it.
    pub granted_by: String,
    /// Why (shown in the audit log).
    pub reason: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; the grant is void from then on.
    pub expires_at: String,
    /// Set when revoked (RFC 3339).
    pub revoked_at: Option<String>,
}

impl DebugGrant {
    /// Whether the grant is in force now.
    pub fn active(&self) -> bool {
        self.revoked_at.is_none() && self.expires_at.as_str() > now_rfc3339().as_str()
    }

    /// Whether the grant names this viewer: subject, tenant and (when recorded) issuer.
    pub fn names(&self, viewer: &GrantViewer<'_>) -> bool {
        self.viewer == viewer.sub
            && self.viewer_tenant.as_deref().unwrap_or(&self.tenant_id) == viewer.tenant
            && self.viewer_issuer.as_deref().is_none_or(|iss| iss == viewer.issuer)
    }
}

/// Who asks to use a debug grant: the identity's subject, tenant and token issuer.
#[derive(Debug, Clone, Copy)]
pub struct GrantViewer<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// The viewer's own tenant.
    pub tenant: &'a str,
    /// `iss` of the viewer's token (empty when it had none).
    pub issuer: &'a str,
}

impl<'a> From<&'a crate::auth::Identity> for GrantViewer<'a> {
    fn from(identity: &'a crate::auth::Identity) -> Self {
        Self { sub: &identity.sub, tenant: &identity.tenant, issuer: &identity.issuer }
    }
}

/// Debug grants.
#[async_trait]
pub trait Grants: Send + Sync {
    /// Record a grant.
    async fn create_grant(&self, grant: &DebugGrant) -> StoreResult<()>;
    /// A grant by tenant and id.
    async fn get_grant(&self, tenant: &str, id: &str) -> StoreResult<Option<DebugGrant>>;
    /// A tenant's grants (every tenant with `None`), newest first, optionally for one viewer.
    async fn list_grants(
        &self,
        tenant: Option<&str>,
        viewer: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<DebugGrant>>;
    /// Mark a grant revoked; returns whether it existed.
    async fn revoke_grant(&self, tenant: &str, id: &str, at: &str) -> StoreResult<bool>;
    /// Whether an active grant names `viewer` for (tenant, install).
    async fn has_active_grant(&self, tenant: &str, install_id: &str, viewer: &GrantViewer<'_>) -> StoreResult<bool>;
}

/// Current time as RFC 3339 with milliseconds (UTC), the timestamp format of every store.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
