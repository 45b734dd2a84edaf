//! `storage` host functions: capability check, validation, then the backend. Backend errors
//! are logged as debug warnings and become the WIT error; they never reach the guest raw.

use super::{validate, KvEntry, KvError, Scope};
use crate::bindings::alga::extension::storage;
use crate::bindings::types::{StorageEntry, StorageError};
use crate::host::HostState;
use crate::manifest::CAP_STORAGE_KV;

fn to_wit(e: KvEntry) -> StorageEntry {
    StorageEntry { namespace: e.namespace, key: e.key, value: e.value, revision: Some(e.revision) }
}

impl HostState {
    fn scope(&self) -> Result<Scope, StorageError> {
        if !self.inv.can(CAP_STORAGE_KV) {
            return Err(StorageError::Denied);
        }
        Ok(Scope { tenant_id: self.inv.ids.tenant_id.clone(), install_id: self.inv.ids.install_id.clone() })
    }

    fn storage_error(&self, op: &str, e: KvError) -> StorageError {
        match e {
            KvError::Missing => StorageError::Missing,
            KvError::Conflict => StorageError::Conflict,
            KvError::Limit(m) => {
                self.inv.debug.host_warning(format!("storage.{op}: {m}"));
                StorageError::Internal
            }
            KvError::Unavailable(m) | KvError::Internal(m) => {
                tracing::warn!(op, error = %m, "storage backend failure");
                self.inv.debug.host_warning(format!("storage.{op}: backend failure"));
                StorageError::Internal
            }
        }
    }
}

impl storage::Host for HostState {
    async fn get(&mut self, namespace: String, key: String) -> Result<StorageEntry, StorageError> {
        let scope = self.scope()?;
        validate(&namespace, Some(&key), None, &self.inv.kv_limits).map_err(|e| self.storage_error("get", e))?;
        match self.inv.storage.get(&scope, &namespace, &key).await {
            Ok(Some(e)) => Ok(to_wit(e)),
            Ok(None) => Err(StorageError::Missing),
            Err(e) => Err(self.storage_error("get", e)),
        }
    }

    async fn put(&mut self, entry: StorageEntry) -> Result<StorageEntry, StorageError> {
        let scope = self.scope()?;
        let limits = self.inv.kv_limits;
        validate(&entry.namespace, Some(&entry.key), Some(&entry.value), &limits)
            .map_err(|e| self.storage_error("put", e))?;
        self.inv
            .storage
            .put(&scope, &entry.namespace, &entry.key, &entry.value, entry.revision, &limits)
            .await
            .map(to_wit)
            .map_err(|e| self.storage_error("put", e))
    }

    async fn delete(&mut self, namespace: String, key: String) -> Result<(), StorageError> {
        let scope = self.scope()?;
        validate(&namespace, Some(&key), None, &self.inv.kv_limits).map_err(|e| self.storage_error("delete", e))?;
        self.inv.storage.delete(&scope, &namespace, &key).await.map_err(|e| self.storage_error("delete", e))
    }

    /// Pages of 100 in key order; the next page starts after the cursor (the last key seen).
    async fn list_entries(
        &mut self,
        namespace: String,
        cursor: Option<String>,
    ) -> Result<Vec<StorageEntry>, StorageError> {
        let scope = self.scope()?;
        validate(&namespace, None, None, &self.inv.kv_limits).map_err(|e| self.storage_error("list-entries", e))?;
        // The guest only sees entries, so its cursor is the last key of the previous page.
        let after = cursor.filter(|c| !c.is_empty());
        self.inv
            .storage
            .list(&scope, &namespace, after.as_deref(), self.inv.kv_limits.page_size)
            .await
            .map(|v| v.into_iter().map(to_wit).collect())
            .map_err(|e| self.storage_error("list-entries", e))
    }
}
