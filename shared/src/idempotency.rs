//! `Idempotency-Key` on mutating admin routes: the first completed answer for a (tenant,
//! actor, key) is stored and replayed for 24 hours; the same key with a different request is
//! refused (422). Stored in the storage KV under a system scope, so every instance (and both
//! backends) share it; bounded to 1,000 keys per tenant, expired ones swept when full.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::Platform;
use crate::storage::{KvError, KvLimits, Scope};

/// How long an answer is replayed.
pub const WINDOW_SECS: i64 = 24 * 3600;
/// Keys kept per tenant.
const PER_TENANT: usize = 1000;

#[derive(Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    status: u16,
    body: serde_json::Value,
    stored_at: i64,
}

/// The outcome of looking a key up.
pub enum Lookup {
    /// First use: run the request, then [`remember`].
    Fresh,
    /// Replay this answer.
    Replay(u16, serde_json::Value),
    /// The key was used for a different request.
    Mismatch,
}

fn scope() -> Scope {
    Scope { tenant_id: "_kelp".into(), install_id: "idempotency".into() }
}

fn limits() -> KvLimits {
    KvLimits { max_namespaces: 1_000_000, max_keys_per_namespace: PER_TENANT, ..KvLimits::default() }
}

fn namespace(tenant: &str) -> String {
    format!("idem:{}", hex::encode(Sha256::digest(tenant.as_bytes())))
}

fn entry_key(actor: &str, key: &str) -> String {
    hex::encode(Sha256::digest(format!("{actor}\n{key}").as_bytes()))
}

/// Fingerprint of a request: method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// Look a key up (an unreadable store counts as fresh: the request still runs).
pub async fn lookup(platform: &Platform, tenant: &str, actor: &str, key: &str, fingerprint: &str) -> Lookup {
    let Ok(Some(entry)) = platform.kv.get(&scope(), &namespace(tenant), &entry_key(actor, key)).await else {
        return Lookup::Fresh;
    };
    let Ok(stored) = serde_json::from_slice::<Stored>(&entry.value) else { return Lookup::Fresh };
    if chrono::Utc::now().timestamp() - stored.stored_at > WINDOW_SECS {
        return Lookup::Fresh;
    }
    if stored.fingerprint != fingerprint {
        return Lookup::Mismatch;
    }
    Lookup::Replay(stored.status, stored.body)
}

/// Store a completed answer.
pub async fn remember(
    platform: &Platform,
    tenant: &str,
    actor: &str,
    key: &str,
    fingerprint: &str,
    status: u16,
    body: &serde_json::Value,
) {
    let stored = Stored {
        fingerprint: fingerprint.into(),
        status,
        body: body.clone(),
        stored_at: chrono::Utc::now().timestamp(),
    };
    let value = serde_json::to_vec(&stored).expect("serialising a stored answer");
    if value.len() > limits().max_value_bytes {
        return; // too large to keep; the request simply is not replayable
    }
    let (ns, k) = (namespace(tenant), entry_key(actor, key));
    let mut result = platform.kv.put(&scope(), &ns, &k, &value, None, &limits()).await;
    if matches!(result, Err(KvError::Limit(_))) {
        sweep(platform, &ns).await;
        result = platform.kv.put(&scope(), &ns, &k, &value, None, &limits()).await;
    }
    if let Err(e) = result {
        tracing::warn!(error = %e, "idempotency key not stored");
    }
}

/// Delete the tenant's expired keys.
async fn sweep(platform: &Platform, ns: &str) {
    let now = chrono::Utc::now().timestamp();
    let mut after: Option<String> = None;
    loop {
        let Ok(page) = platform.kv.list(&scope(), ns, after.as_deref(), 100).await else { return };
        if page.is_empty() {
            return;
        }
        after = page.last().map(|e| e.key.clone());
        for e in page {
            let expired =
                serde_json::from_slice::<Stored>(&e.value).map(|s| now - s.stored_at > WINDOW_SECS).unwrap_or(true);
            if expired {
                let _ = platform.kv.delete(&scope(), ns, &e.key).await;
            }
        }
    }
}
