//! `cap:secrets.get`: secret envelopes by reference (local file or Secrets Manager), decoded
//! and cached per (install, secrets_version, ciphertext hash) with a TTL (A2). Values never
//! reach a log line: [`SecretMap`]'s `Debug` prints only the keys.

pub mod aws;
pub mod file;
pub mod host;
pub mod vault;

pub use host::SecretsCtx;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest a decoded envelope is served from cache (the spec's bound is 300 s).
pub const MAX_SECRETS_TTL: Duration = Duration::from_secs(300);

/// A secret envelope as stored (Alga's shape).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnvelope {
    /// Encoded map (for `inline/base64`: base64 of the JSON object).
    pub ciphertext_b64: String,
    /// Envelope version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `inline/base64` (default) or `vault-transit:v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// RFC 3339 expiry; an expired envelope is never served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Vault key path (vault-transit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_path: Option<String>,
    /// Vault mount (vault-transit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

impl std::fmt::Debug for SecretEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEnvelope")
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SecretEnvelope {
    /// Wrap a map as an `inline/base64` envelope.
    pub fn inline(values: &BTreeMap<String, String>, expires_at: Option<String>) -> Self {
        let json = serde_json::to_vec(values).expect("serialising a string map");
        Self {
            ciphertext_b64: base64::engine::general_purpose::STANDARD.encode(json),
            version: None,
            algorithm: Some(ALG_INLINE.into()),
            expires_at,
            key_path: None,
            mount: None,
        }
    }

    /// sha256 of the ciphertext: part of the decode cache key, so a reused version label with
    /// new content is never served stale.
    pub fn ciphertext_hash(&self) -> String {
        hex::encode(Sha256::digest(self.ciphertext_b64.as_bytes()))
    }

    /// Whether `expires_at` is in the past (an unparsable value counts as expired: fail closed).
    pub fn is_expired(&self) -> bool {
        match &self.expires_at {
            None => false,
            Some(ts) => chrono::DateTime::parse_from_rfc3339(ts).map(|t| t <= chrono::Utc::now()).unwrap_or(true),
        }
    }

    /// Decode to the secret map.
    pub fn decode(&self) -> Result<SecretMap, SecretsError> {
        match self.algorithm.as_deref().unwrap_or(ALG_INLINE) {
            ALG_INLINE => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(self.ciphertext_b64.trim())
                    .map_err(|_| SecretsError::Invalid("ciphertext_b64 is not valid base64".into()))?;
                let values: BTreeMap<String, String> = serde_json::from_slice(&raw)
                    .map_err(|_| SecretsError::Invalid("inline/base64 envelope is not a JSON map of strings".into()))?;
                Ok(SecretMap(values))
            }
            a if is_vault(a) => Err(SecretsError::UnsupportedAlgorithm(
                "vault-transit:v1 envelopes need Vault: set KELP_VAULT_ADDR and a Vault token".into(),
            )),
            other => Err(SecretsError::UnsupportedAlgorithm(format!("unsupported algorithm {other:?}"))),
        }
    }
}

/// The inline algorithm: Secrets Manager already encrypts at rest with KMS.
pub const ALG_INLINE: &str = "inline/base64";

/// Whether an algorithm is Vault's transit engine: Alga's runner takes any `vault-transit…`
/// label, case aside.
fn is_vault(algorithm: &str) -> bool {
    algorithm.trim().to_ascii_lowercase().starts_with("vault-transit")
}

/// Decoded secrets. `Debug` shows keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretMap(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Secrets failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// No envelope under that reference.
    #[error("secret envelope not found")]
    NotFound,
    /// The backend (Secrets Manager) is unreachable and nothing fresh is cached.
    #[error("secrets backend unavailable: {0}")]
    Unavailable(String),
    /// Envelope present but malformed.
    #[error("invalid secret envelope: {0}")]
    Invalid(String),
    /// Algorithm Kelp cannot decode.
    #[error("{0}")]
    UnsupportedAlgorithm(String),
    /// The key service refused to open the envelope (Vault's 403, an unknown transit key);
    /// the message names the key, never the ciphertext.
    #[error("{0}")]
    Refused(String),
}

/// Where envelopes live: a local file, or Secrets Manager.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// Current envelope under `secret_ref`.
    async fn fetch(&self, secret_ref: &str) -> Result<SecretEnvelope, SecretsError>;
    /// Write (replace) the envelope under `secret_ref`.
    async fn store(&self, secret_ref: &str, envelope: &SecretEnvelope) -> Result<(), SecretsError>;
    /// Delete the envelope under `secret_ref` for good (no recovery window); deleting one
    /// that does not exist succeeds.
    async fn delete(&self, secret_ref: &str) -> Result<(), SecretsError>;
}

/// The secrets of one call.
#[derive(Debug, Clone)]
pub enum SecretsState {
    /// The install has no secrets (or may not read them): every key is `missing`.
    None,
    /// Decoded envelope.
    Ready(ResolvedSecrets),
    /// The envelope exists but cannot be decoded: every key is `internal`.
    Broken,
}

/// Secrets of one execution, as the host functions see them.
#[derive(Debug, Clone)]
pub struct ResolvedSecrets {
    /// Decoded values.
    pub values: Arc<SecretMap>,
    /// Envelope expiry; checked at every `get`.
    pub expires_at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl ResolvedSecrets {
    /// Whether the envelope has expired by now.
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|t| t <= chrono::Utc::now())
    }
}

type DecodeKey = (String, String, String);
type EnvelopeCache = LruCache<(String, String), (Instant, Arc<SecretEnvelope>)>;

/// Fetches and decodes envelopes with two bounded caches: envelopes by (install,
/// secrets_version) for `ttl`, decoded maps by (install, secrets_version, ciphertext hash).
/// `vault-transit:v1` envelopes are opened through Vault when it is configured.
pub struct SecretsResolver {
    source: Arc<dyn SecretSource>,
    vault: Option<vault::VaultTransit>,
    ttl: Duration,
    envelopes: Mutex<EnvelopeCache>,
    decoded: Mutex<LruCache<DecodeKey, (Instant, Arc<SecretMap>)>>,
}

impl SecretsResolver {
    /// A resolver over `source`; `ttl` is capped at [`MAX_SECRETS_TTL`].
    pub fn new(source: Arc<dyn SecretSource>, ttl: Duration) -> Self {
        let cap = NonZeroUsize::new(4096).expect("non-zero");
        Self {
            source,
            vault: None,
            ttl: ttl.min(MAX_SECRETS_TTL),
            envelopes: Mutex::new(LruCache::new(cap)),
            decoded: Mutex::new(LruCache::new(cap)),
        }
    }

    /// Open `vault-transit:v1` envelopes through this Vault.
    pub fn with_vault(mut self, vault: vault::VaultTransit) -> Self {
        self.vault = Some(vault);
        self
    }

    /// The source (the admin API writes through it).
    pub fn source(&self) -> &Arc<dyn SecretSource> {
        &self.source
    }

    /// Secrets of an install at `secrets_version`. A new version is fetched at once (A2); a
    /// cached one is served for the TTL, so a backend outage inside the TTL is invisible and
    /// after it is a clear `Unavailable`.
    pub async fn for_install(
        &self,
        install_id: &str,
        secret_ref: &str,
        secrets_version: &str,
    ) -> Result<ResolvedSecrets, SecretsError> {
        let key = (install_id.to_string(), secrets_version.to_string());
        let cached = self.envelopes.lock().get(&key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, e)| e.clone());
        let envelope = match cached {
            Some(e) => e,
            None => {
                let fetched = Arc::new(self.source.fetch(secret_ref).await?);
                self.envelopes.lock().put(key, (Instant::now(), fetched.clone()));
                fetched
            }
        };
        self.decode(install_id, secrets_version, &envelope).await
    }

    /// Decode an envelope handed over by the caller (`/v1/execute`), with the same cache. An
    /// entry past the TTL is opened again, so a Vault that is down is invisible for the TTL
    /// and then a clear [`SecretsError::Unavailable`].
    pub async fn decode(
        &self,
        install_id: &str,
        secrets_version: &str,
        envelope: &SecretEnvelope,
    ) -> Result<ResolvedSecrets, SecretsError> {
        let expires_at = match &envelope.expires_at {
            None => None,
            Some(ts) => Some(
                chrono::DateTime::parse_from_rfc3339(ts)
                    .map_err(|_| SecretsError::Invalid("expires_at is not an RFC 3339 timestamp".into()))?,
            ),
        };
        let key = (install_id.to_string(), secrets_version.to_string(), envelope.ciphertext_hash());
        let hit = self.decoded.lock().get(&key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, m)| m.clone());
        let values = match hit {
            Some(v) => v,
            None => {
                let opened = match (&self.vault, envelope.algorithm.as_deref()) {
                    (Some(vault), Some(a)) if is_vault(a) => vault.decrypt(envelope).await?,
                    _ => envelope.decode()?,
                };
                let v = Arc::new(opened);
                self.decoded.lock().put(key, (Instant::now(), v.clone()));
                v
            }
        };
        Ok(ResolvedSecrets { values, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn inline_envelopes_round_trip_and_debug_hides_values() {
        let env = SecretEnvelope::inline(&map(&[("api_key", "s3cr3t")]), None);
        let decoded = env.decode().unwrap();
        assert_eq!(decoded.0["api_key"], "s3cr3t");
        assert!(!format!("{decoded:?}").contains("s3cr3t"));
        assert!(!format!("{env:?}").contains(&env.ciphertext_b64));
    }

    #[test]
    fn unknown_algorithms_and_garbage_are_clear_errors() {
        let mut env = SecretEnvelope::inline(&map(&[]), None);
        env.algorithm = Some("rot13".into());
        assert!(matches!(env.decode(), Err(SecretsError::UnsupportedAlgorithm(m)) if m.contains("rot13")));
        env.algorithm = Some("vault-transit:v1".into());
        assert!(matches!(env.decode(), Err(SecretsError::UnsupportedAlgorithm(m)) if m.contains("KELP_VAULT_ADDR")));
        env.algorithm = None;
        env.ciphertext_b64 = "!!!".into();
        assert!(matches!(env.decode(), Err(SecretsError::Invalid(_))));
    }

    #[tokio::test]
    async fn expiry_is_checked() {
        let past = SecretEnvelope::inline(&map(&[("k", "v")]), Some("2001-01-01T00:00:00Z".into()));
        assert!(past.is_expired());
        let future = SecretEnvelope::inline(&map(&[("k", "v")]), Some("2999-01-01T00:00:00Z".into()));
        assert!(!future.is_expired());
        let resolver = SecretsResolver::new(Arc::new(file::FileSecrets::in_memory()), MAX_SECRETS_TTL);
        assert!(resolver.decode("i", "1", &past).await.unwrap().expired());
        assert!(!resolver.decode("i", "1", &future).await.unwrap().expired());
    }

    #[tokio::test]
    async fn a_new_version_is_fetched_fresh_and_a_reused_version_with_new_content_is_not_stale() {
        let source = Arc::new(file::FileSecrets::in_memory());
        let resolver = SecretsResolver::new(source.clone(), MAX_SECRETS_TTL);
        source.store("ref", &SecretEnvelope::inline(&map(&[("k", "one")]), None)).await.unwrap();
        assert_eq!(resolver.for_install("i", "ref", "1").await.unwrap().values.0["k"], "one");
        source.store("ref", &SecretEnvelope::inline(&map(&[("k", "two")]), None)).await.unwrap();
        // Same version: served from the envelope cache within the TTL.
        assert_eq!(resolver.for_install("i", "ref", "1").await.unwrap().values.0["k"], "one");
        // Bumped version: fetched at once.
        assert_eq!(resolver.for_install("i", "ref", "2").await.unwrap().values.0["k"], "two");
        // Envelope handed over directly with a reused version label: the ciphertext hash differs.
        let three = SecretEnvelope::inline(&map(&[("k", "three")]), None);
        assert_eq!(resolver.decode("i", "2", &three).await.unwrap().values.0["k"], "three");
    }
}
