//! Storage kept by Alga (`KELP_HOST_API_PROTOCOL=alga`): every call goes to Alga's
//! `ext-storage` internal API for the install, as Alga's runner sends it: values as base64
//! with `metadata.encoding = "base64-bytes"`, compare-and-set as `ifRevision`, list pages
//! after a key through Alga's cursor (`base64url({"key": …})`, keys strictly after it).
//!
//! Status mapping (Alga's runner's, `ee/runner/src/engine/host_api.rs`): 401/403/429 →
//! denied, 404 → missing, 409 → conflict, 400 → a limit with Alga's message, anything else →
//! internal; a delete Alga answers `{success: false}` (no such key) → conflict.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{KvEntry, KvError, KvLimits, KvStore, Scope};
use crate::alga_host::{AlgaAnswer, AlgaCallError, AlgaHost, AlgaService};

/// Storage through Alga's internal API.
pub struct AlgaKv {
    host: Arc<AlgaHost>,
    /// Bound of each call (storage calls carry no execution deadline in the trait).
    timeout: Duration,
}

impl AlgaKv {
    /// Storage on the given Alga.
    pub fn new(host: Arc<AlgaHost>, timeout: Duration) -> Self {
        Self { host, timeout }
    }

    async fn call(&self, scope: &Scope, operation: &str, payload: Value) -> Result<AlgaAnswer, KvError> {
        let answer =
            self.host.call(AlgaService::Storage, &scope.install_id, operation, payload, self.timeout).await.map_err(
                |e| match e {
                    AlgaCallError::Unreachable(_) | AlgaCallError::TimedOut(_) => KvError::Unavailable(e.to_string()),
                    other => KvError::Internal(other.to_string()),
                },
            )?;
        if answer.ok() {
            return Ok(answer);
        }
        Err(match answer.status {
            401 | 403 | 429 => KvError::Denied(answer.message()),
            404 => KvError::Missing,
            409 => KvError::Conflict,
            400 => KvError::Limit(answer.message()),
            _ => KvError::Internal(format!("Alga's storage answered {}: {}", answer.status, answer.message())),
        })
    }
}

/// An entry as Alga returns it (`get`, `list` items), its value decoded in the order Alga's
/// runner decodes it, so values written by Alga's own server or by older runners read the
/// same: marked `base64-bytes` → base64 (anything else is malformed); an object with
/// `_bytes_b64` → that field's base64; any other string → base64 if it decodes, else its
/// UTF-8 bytes; any other JSON value → its compact JSON text.
fn entry(v: &Value, namespace: &str, key: Option<&str>) -> Result<KvEntry, KvError> {
    let malformed = || KvError::Internal("malformed storage entry from Alga".into());
    let key = v.get("key").and_then(Value::as_str).or(key).ok_or_else(malformed)?;
    let encoding = v.pointer("/metadata/encoding").and_then(Value::as_str);
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = match v.get("value").unwrap_or(&Value::Null) {
        Value::String(s) if encoding == Some("base64-bytes") => b64.decode(s).map_err(|_| malformed())?,
        _ if encoding == Some("base64-bytes") => return Err(malformed()),
        Value::Object(o) if o.contains_key("_bytes_b64") => {
            o["_bytes_b64"].as_str().and_then(|s| b64.decode(s).ok()).ok_or_else(malformed)?
        }
        Value::String(s) => b64.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec()),
        other => serde_json::to_vec(other).map_err(|_| malformed())?,
    };
    Ok(KvEntry {
        namespace: v.get("namespace").and_then(Value::as_str).unwrap_or(namespace).to_string(),
        key: key.to_string(),
        value,
        revision: v.get("revision").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Alga's list cursor for "keys after `key`".
fn cursor_after(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "key": key }).to_string())
}

/// The cursor to send for a guest's: one that already is Alga's (a guest written for Alga's
/// runner passes Alga's cursors on verbatim, as that runner does) goes as it is; anything else
/// is Kelp's convention, the last key the guest saw.
fn alga_cursor(guest_cursor: &str) -> String {
    let is_algas = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(guest_cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|v| v.get("key").is_some_and(Value::is_string));
    if is_algas {
        guest_cursor.to_string()
    } else {
        cursor_after(guest_cursor)
    }
}

/// Entries per `list` page. Alga's server answers 25 when no limit is sent (what guests get
/// from Alga's runner, which sends none); with values capped at 64 KiB by Alga, a page is at
/// most ~2.3 MB of JSON, within [`crate::alga_host::STORAGE_MAX_ANSWER_BYTES`].
pub const ALGA_LIST_PAGE: usize = 25;

#[async_trait]
impl KvStore for AlgaKv {
    async fn get(&self, scope: &Scope, namespace: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        match self.call(scope, "get", json!({"namespace": namespace, "key": key})).await {
            Ok(answer) => entry(&answer.body, namespace, Some(key)).map(Some),
            Err(KvError::Missing) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put(
        &self,
        scope: &Scope,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        _limits: &KvLimits,
    ) -> Result<KvEntry, KvError> {
        let mut payload = Map::new();
        payload.insert("namespace".into(), namespace.into());
        payload.insert("key".into(), key.into());
        payload.insert("value".into(), base64::engine::general_purpose::STANDARD.encode(value).into());
        payload.insert("metadata".into(), json!({"encoding": "base64-bytes"}));
        if let Some(revision) = expected {
            payload.insert("ifRevision".into(), revision.into());
        }
        let answer = self.call(scope, "put", Value::Object(payload)).await?;
        Ok(KvEntry {
            namespace: namespace.into(),
            key: key.into(),
            value: value.to_vec(),
            revision: answer.body.get("revision").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    async fn delete(&self, scope: &Scope, namespace: &str, key: &str) -> Result<(), KvError> {
        let answer = self.call(scope, "delete", json!({"namespace": namespace, "key": key})).await?;
        // Alga answers `{success: false}` for a key that was not there, and Alga's runner gives
        // the guest `conflict` for it: guests written for Alga see the same here (Kelp's own
        // backends answer `missing`; docs/alga-integration.md lists the difference).
        match answer.body.get("success").and_then(Value::as_bool) {
            Some(false) => Err(KvError::Conflict),
            _ => Ok(()),
        }
    }

    async fn list(
        &self,
        scope: &Scope,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let mut payload = json!({
            "namespace": namespace, "includeValues": true, "includeMetadata": true,
            "limit": limit.clamp(1, ALGA_LIST_PAGE),
        });
        if let Some(after) = after {
            payload["cursor"] = alga_cursor(after).into();
        }
        let answer = self.call(scope, "list", payload).await?;
        answer
            .body
            .get("items")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(|item| entry(item, namespace, None)).collect())
            .unwrap_or(Ok(Vec::new()))
    }

    /// Alga keeps (and removes) an install's storage itself; Kelp has nothing to purge.
    async fn purge(&self, scope: &Scope) -> Result<u64, KvError> {
        tracing::info!(install = %scope.install_id, "storage is kept by Alga: nothing to purge in Kelp");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_algas_encoding_of_the_last_key() {
        let c = cursor_after("k-42");
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&decoded).unwrap(), json!({"key": "k-42"}));
    }

    #[test]
    fn entries_decode_base64_values_and_json_values_as_algas_runner_does() {
        let b64 = json!({"namespace": "n", "key": "k", "revision": 3, "value": "aGk=", "metadata": {"encoding": "base64-bytes"}});
        assert_eq!(entry(&b64, "n", None).unwrap().value, b"hi");
        assert_eq!(entry(&b64, "n", None).unwrap().revision, 3);
        let json_value = json!({"key": "k", "revision": 1, "value": {"a": 1}, "metadata": {}});
        assert_eq!(entry(&json_value, "n", None).unwrap().value, br#"{"a":1}"#);
        assert!(entry(&json!({"revision": 1}), "n", None).is_err(), "no key");
        let value = |v: Value| entry(&json!({"key": "k", "value": v}), "n", None).map(|e| e.value);
        assert_eq!(value(json!({"_bytes_b64": "aGk="})).unwrap(), b"hi", "Alga's bytes object");
        assert_eq!(value(json!("aGk=")).unwrap(), b"hi", "an unmarked string that is base64");
        assert_eq!(value(json!("plain text!")).unwrap(), b"plain text!", "an unmarked string that is not");
        assert_eq!(value(json!(42)).unwrap(), b"42");
        assert!(value(json!({"_bytes_b64": "!!"})).is_err());
        let marked_non_string = json!({"key": "k", "value": 1, "metadata": {"encoding": "base64-bytes"}});
        assert!(entry(&marked_non_string, "n", None).is_err(), "a marked value must be base64 text");
    }

    #[test]
    fn algas_own_cursors_pass_through_and_last_keys_are_encoded() {
        let algas = cursor_after("k-7");
        assert_eq!(alga_cursor(&algas), algas);
        assert_eq!(alga_cursor("k-7"), algas, "Kelp's convention: the last key seen");
        // A key that happens to be valid base64url but is not Alga's JSON is still a key.
        assert_eq!(alga_cursor("abcd"), cursor_after("abcd"));
    }
}
