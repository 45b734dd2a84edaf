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
    /// Storage limits (the tenant's plan's).
    pub limits: KvLimits,
    /// The plan the limits come from (named when one is hit).
    pub plan: String,
    /// What the call used (usage metering; the first quota hit).
    pub tally: Arc<crate::usage::CallTally>,
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
        crate::usage::CallTally::bump(&self.tally.storage_ops, 1);
        Ok(self.scope.clone())
    }

    /// A write refused by a storage quota of the plan (value size, namespaces, keys): the
    /// stream names the limit and the plan, and the call remembers it, so a guest that then
    /// fails is answered 507 `storage_quota_exceeded` instead of a bare error.
    fn quota_error(&self, op: &str, e: KvError) -> StorageError {
        let KvError::Limit(m) = e else { return self.storage_error(op, e) };
        // The backends' words for each limit (namespaces, keys, value size): named as the
        // plan names them, so the operator knows what to raise.
        let limit = if m.contains("namespaces") {
            "storage_namespaces"
        } else if m.contains(" keys") {
            "storage_keys_per_namespace"
        } else {
            "storage_value_bytes"
        };
        let what = format!("{m}: limit {limit} of plan {:?}", self.plan);
        self.debug.host_warning(format!("storage.{op}: {what}"));
        self.tally.quota_hit(what);
        StorageError::Internal
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
        validate(&entry.namespace, Some(&entry.key), None, &limits).map_err(|e| self.storage_error("put", e))?;
        validate(&entry.namespace, None, Some(&entry.value), &limits).map_err(|e| self.quota_error("put", e))?;
        self.backend
            .put(&scope, &entry.namespace, &entry.key, &entry.value, entry.revision, &limits)
            .await
            .map(to_wit)
            .map_err(|e| self.quota_error("put", e))
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
