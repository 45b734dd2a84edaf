//! `storage` host functions: capability check, validation, then the backend. Backend errors
//! are logged as debug warnings and become the WIT error; they never reach the guest raw.

use std::sync::Arc;

use super::{validate, KvEntry, KvError, KvLimits, KvStore, Scope};
use crate::bindings::alga::extension::storage;
use crate::bindings::types::{StorageEntry, StorageError};
use crate::debug::DebugSink;

/// The per-call state of the storage capability.
pub struct StorageCtx {
    /// Whether the call may use storage (`cap:storage.kv`), decided when it was planned.
    pub granted: bool,
    /// The install's scope: the only data this call can reach.
    pub scope: Scope,
    /// The backend.
    pub backend: Arc<dyn KvStore>,
    /// Storage limits.
    pub limits: KvLimits,
    /// Host warnings of this call.
    pub debug: DebugSink,
}

fn to_wit(e: KvEntry) -> StorageEntry {
    StorageEntry { namespace: e.namespace, key: e.key, value: e.value, revision: Some(e.revision) }
}

impl StorageCtx {
    fn scope(&self) -> Result<Scope, StorageError> {
        if !self.granted {
            self.debug.capability_denied("storage", crate::manifest::CAP_STORAGE_KV);
            return Err(StorageError::Denied);
        }
        Ok(self.scope.clone())
    }

    fn storage_error(&self, op: &str, e: KvError) -> StorageError {
        match e {
            KvError::Missing => StorageError::Missing,
            KvError::Conflict => StorageError::Conflict,
            KvError::Denied(m) => {
                self.debug.host_warning(format!("storage.{op}: denied ({m})"));
                StorageError::Denied
            }
            KvError::Limit(m) => {
                self.debug.host_warning(format!("storage.{op}: {m}"));
                StorageError::Internal
            }
            KvError::Unavailable(m) | KvError::Internal(m) => {
                tracing::warn!(op, error = %m, "storage backend failure");
                self.debug.host_warning(format!("storage.{op}: backend failure"));
                StorageError::Internal
            }
        }
    }
}

impl storage::Host for StorageCtx {
    async fn get(&mut self, namespace: String, key: String) -> Result<StorageEntry, StorageError> {
        let scope = self.scope()?;
        validate(&namespace, Some(&key), None, &self.limits).map_err(|e| self.storage_error("get", e))?;
        match self.backend.get(&scope, &namespace, &key).await {
            Ok(Some(e)) => Ok(to_wit(e)),
            Ok(None) => Err(StorageError::Missing),
            Err(e) => Err(self.storage_error("get", e)),
        }
    }

    async fn put(&mut self, entry: StorageEntry) -> Result<StorageEntry, StorageError> {
        let scope = self.scope()?;
        let limits = self.limits;
        validate(&entry.namespace, Some(&entry.key), Some(&entry.value), &limits)
            .map_err(|e| self.storage_error("put", e))?;
        self.backend
            .put(&scope, &entry.namespace, &entry.key, &entry.value, entry.revision, &limits)
            .await
            .map(to_wit)
            .map_err(|e| self.storage_error("put", e))
    }

    async fn delete(&mut self, namespace: String, key: String) -> Result<(), StorageError> {
        let scope = self.scope()?;
        validate(&namespace, Some(&key), None, &self.limits).map_err(|e| self.storage_error("delete", e))?;
        self.backend.delete(&scope, &namespace, &key).await.map_err(|e| self.storage_error("delete", e))
    }

    /// Pages of 100 in key order; the next page starts after the cursor (the last key seen).
    async fn list_entries(
        &mut self,
        namespace: String,
        cursor: Option<String>,
    ) -> Result<Vec<StorageEntry>, StorageError> {
        let scope = self.scope()?;
        validate(&namespace, None, None, &self.limits).map_err(|e| self.storage_error("list-entries", e))?;
        // The guest only sees entries, so its cursor is the last key of the previous page.
        let after = cursor.filter(|c| !c.is_empty());
        self.backend
            .list(&scope, &namespace, after.as_deref(), self.limits.page_size)
            .await
            .map(|v| v.into_iter().map(to_wit).collect())
            .map_err(|e| self.storage_error("list-entries", e))
    }
}
