//! `cap:storage.kv`: per-(tenant, install) namespaced key-value storage with revisions and
//! compare-and-set, as Alga's storage service behaves. Backends: SQLite (embedded),
//! DynamoDB (conditional writes), and Alga's own storage API when Alga keeps the data.

pub mod alga;
pub mod dynamodb;
pub mod host;
pub mod sqlite;

pub use host::StorageCtx;

use async_trait::async_trait;

/// Whose data: every key lives under one (tenant, install).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Tenant id.
    pub tenant_id: String,
    /// Install id.
    pub install_id: String,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Revision: 1 on first put, +1 on every put.
    pub revision: u64,
}

/// Storage limits (docs/runtime-reference.md, "Storage limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest namespace, in chars.
    pub max_namespace_chars: usize,
    /// Longest key, in chars.
    pub max_key_chars: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Namespaces per install.
    pub max_namespaces: usize,
    /// Keys per namespace.
    pub max_keys_per_namespace: usize,
    /// Entries per `list-entries` page.
    pub page_size: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_namespace_chars: 128,
            max_key_chars: 256,
            max_value_bytes: 64 * 1024,
            max_namespaces: 32,
            max_keys_per_namespace: 5120,
            page_size: 100,
        }
    }
}

/// Storage failures; the host maps them to `storage-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Key absent.
    #[error("missing")]
    Missing,
    /// Compare-and-set lost (stale or absent revision).
    #[error("revision conflict")]
    Conflict,
    /// Name, size or count limit.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The backend refused the install (Alga's storage: 401/403/429).
    #[error("denied: {0}")]
    Denied(String),
    /// Backend unreachable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Internal(String),
}

/// A storage backend. Callers validate names and sizes with [`validate`] first; backends
/// enforce the count limits and revisions atomically.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// Read one entry.
    async fn get(&self, scope: &Scope, namespace: &str, key: &str) -> Result<Option<KvEntry>, KvError>;
    /// Write one entry; `expected` set = compare-and-set against the stored revision.
    async fn put(
        &self,
        scope: &Scope,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        limits: &KvLimits,
    ) -> Result<KvEntry, KvError>;
    /// Delete one entry; `Missing` if absent.
    async fn delete(&self, scope: &Scope, namespace: &str, key: &str) -> Result<(), KvError>;
    /// Up to `limit` entries with keys after `after`, in key order.
    async fn list(
        &self,
        scope: &Scope,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError>;
    /// Delete everything of a scope (uninstall with purge); returns the number of entries.
    async fn purge(&self, scope: &Scope) -> Result<u64, KvError>;
}

/// Check namespace, key and value against the limits.
pub fn validate(namespace: &str, key: Option<&str>, value: Option<&[u8]>, limits: &KvLimits) -> Result<(), KvError> {
    let ns_len = namespace.chars().count();
    if ns_len == 0 || ns_len > limits.max_namespace_chars {
        return Err(KvError::Limit(format!("namespace must be 1-{} characters", limits.max_namespace_chars)));
    }
    if let Some(key) = key {
        let len = key.chars().count();
        if len == 0 || len > limits.max_key_chars || key.contains('/') {
            return Err(KvError::Limit(format!("key must be 1-{} characters without '/'", limits.max_key_chars)));
        }
    }
    if let Some(value) = value {
        if value.len() > limits.max_value_bytes {
            return Err(KvError::Limit(format!(
                "value is {} bytes; the limit is {}",
                value.len(),
                limits.max_value_bytes
            )));
        }
    }
    Ok(())
}
