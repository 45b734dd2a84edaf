//! Identifiers and caller facts of one execution: the guest-facing types every layer shares
//! (the ids every debug event carries, what `user`/`user-v2` return).

/// Identifiers of one execution (A1): what `context.get-context` returns and what every
/// debug event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecIds {
    /// Request id.
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Install id (always set by Kelp).
    pub install_id: String,
    /// Version id.
    pub version_id: String,
    /// Semver of the version.
    pub version: String,
    /// `sha256:<hex>` of the bundle.
    pub content_hash: String,
}

/// The caller, as the guest may see it through `user`/`user-v2` (with `cap:user.read`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Subject.
    pub user_id: String,
    /// Email.
    pub user_email: String,
    /// Display name.
    pub user_name: String,
    /// `internal` or `client`.
    pub user_type: String,
    /// Client (company) name.
    pub client_name: String,
    /// Client id for client-portal users.
    pub client_id: Option<String>,
    /// Extra fields from the token or the control plane.
    pub additional_fields: Vec<(String, String)>,
}
