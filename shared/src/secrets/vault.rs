//! `vault-transit:v1` envelopes, as Alga writes them whenever its Vault is configured
//! (`ee/server/src/lib/extensions/installConfig.ts`) and its runner opens them
//! (`ee/runner/src/secrets.rs`): the install's whole secret map as JSON, base64-encoded as
//! Vault's plaintext and encrypted by the transit key `key_path` under `mount`, so
//! `ciphertext_b64` holds Vault's own `vault:v<N>:…` text. Opening one is Vault's transit API:
//! `POST {addr}/v1/{mount}/decrypt/{key}` with `{"ciphertext": …}` and `X-Vault-Token` (plus
//! `X-Vault-Namespace` on Vault Enterprise), answering the base64 plaintext in
//! `data.plaintext`.
//!
//! The resolver caches what this opens like any other envelope; a failure is never cached.
//! Messages name the mount and key, never the ciphertext or a value.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{SecretEnvelope, SecretMap, SecretsError};

/// Where the Vault token comes from.
#[derive(Clone)]
pub enum VaultToken {
    /// The token itself: `KELP_VAULT_TOKEN` (local runs), or read once at start from Secrets
    /// Manager (`KELP_VAULT_TOKEN_SECRET_ARN`, the Lambda way).
    Literal(String),
    /// A file read at every decrypt, so an agent that renews it is followed
    /// (`KELP_VAULT_TOKEN_FILE`, Alga's `ALGA_VAULT_TOKEN_FILE`).
    File(PathBuf),
}

/// How to reach Vault's transit engine.
#[derive(Clone)]
pub struct VaultSettings {
    /// Vault's address, e.g. `https://vault.internal:8200`.
    pub addr: String,
    /// The token.
    pub token: VaultToken,
    /// Vault Enterprise namespace, if any.
    pub namespace: Option<String>,
    /// Transit mount when the envelope names none (`transit`, as Alga's default).
    pub default_mount: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSettings")
            .field("addr", &self.addr)
            .field("namespace", &self.namespace)
            .field("default_mount", &self.default_mount)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A client of Vault's transit engine.
pub struct VaultTransit {
    settings: VaultSettings,
    client: reqwest::Client,
}

impl VaultTransit {
    /// A client for the configured Vault.
    pub fn new(settings: VaultSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .build()?;
        Ok(Self { settings, client })
    }

    fn token(&self) -> Result<String, SecretsError> {
        let token = match &self.settings.token {
            VaultToken::Literal(t) => t.clone(),
            VaultToken::File(path) => std::fs::read_to_string(path).map_err(|e| {
                SecretsError::Unavailable(format!("reading the Vault token file {}: {e}", path.display()))
            })?,
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(SecretsError::Unavailable("the Vault token is empty".into()));
        }
        Ok(token)
    }

    /// Open an envelope: the secret map it holds.
    pub async fn decrypt(&self, envelope: &SecretEnvelope) -> Result<SecretMap, SecretsError> {
        let trim = |s: &str| s.trim_matches('/').to_string();
        let key =
            envelope.key_path.as_deref().map(trim).filter(|k| !k.is_empty()).ok_or_else(|| {
                SecretsError::Invalid("a vault-transit envelope needs key_path (the transit key)".into())
            })?;
        let mount = envelope
            .mount
            .as_deref()
            .map(trim)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.settings.default_mount.clone());
        let at = format!("transit key {key:?} under mount {mount:?}");
        let url = format!(
            "{}/v1/{}/decrypt/{}",
            self.settings.addr.trim_end_matches('/'),
            path_segments(&mount),
            path_segments(&key)
        );
        let mut request = self
            .client
            .post(url)
            .header("x-vault-token", self.token()?)
            .header("content-type", "application/json")
            .body(json!({ "ciphertext": envelope.ciphertext_b64.trim() }).to_string());
        if let Some(ns) = &self.settings.namespace {
            request = request.header("x-vault-namespace", ns);
        }
        // Vault's address stays out of what reaches a debug stream or a caller.
        let response = request
            .send()
            .await
            .map_err(|e| SecretsError::Unavailable(format!("Vault is unreachable: {}", e.without_url())))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200 => {}
            403 => {
                return Err(SecretsError::Refused(format!(
                    "Vault refused to decrypt with {at} (403): the token's policy must allow update on {mount}/decrypt/{key}"
                )))
            }
            400 | 404 => {
                // Vault's own errors name the problem (unknown key, malformed ciphertext);
                // they never echo the ciphertext.
                let why = body["errors"].as_array().and_then(|e| e.first()).and_then(Value::as_str).unwrap_or("");
                return Err(SecretsError::Refused(format!("Vault could not decrypt with {at} ({status}): {why}")));
            }
            _ => return Err(SecretsError::Unavailable(format!("Vault answered {status} to a decrypt with {at}"))),
        }
        let plaintext = body
            .pointer("/data/plaintext")
            .and_then(Value::as_str)
            .ok_or_else(|| SecretsError::Invalid(format!("Vault's answer for {at} has no data.plaintext")))?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(plaintext.trim())
            .map_err(|_| SecretsError::Invalid(format!("the plaintext from {at} is not base64")))?;
        serde_json::from_slice(&json)
            .map(SecretMap)
            .map_err(|_| SecretsError::Invalid(format!("the plaintext from {at} is not a JSON map of strings")))
    }
}

/// A mount or key path with each segment percent-encoded (`/` separates segments, as Vault
/// nests mounts).
fn path_segments(path: &str) -> String {
    path.split('/')
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let s = VaultSettings {
            addr: "https://vault".into(),
            token: VaultToken::Literal("hvs.secret-token".into()),
            namespace: None,
            default_mount: "transit".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("hvs."));
    }

    #[test]
    fn mounts_and_keys_are_encoded_per_segment() {
        assert_eq!(path_segments("team a/transit"), "team+a/transit");
        assert_eq!(path_segments("alga-ext"), "alga-ext");
    }

    #[tokio::test]
    async fn an_envelope_without_a_key_is_invalid_before_any_call() {
        let vault = VaultTransit::new(VaultSettings {
            addr: "http://127.0.0.1:9".into(),
            token: VaultToken::Literal("t".into()),
            namespace: None,
            default_mount: "transit".into(),
            timeout: Duration::from_millis(200),
        })
        .unwrap();
        let mut env = SecretEnvelope::inline(&Default::default(), None);
        env.algorithm = Some("vault-transit:v1".into());
        assert!(matches!(vault.decrypt(&env).await, Err(SecretsError::Invalid(m)) if m.contains("key_path")));
        env.key_path = Some("alga-ext".into());
        assert!(matches!(vault.decrypt(&env).await, Err(SecretsError::Unavailable(_))), "nothing listens there");
    }
}
