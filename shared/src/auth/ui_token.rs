//! Tokens scoped to one extension's UI.
//!
//! An extension's iframe UI needs a token to call its extension's API, but the user's own
//! token is good for every extension and the admin API: a UI (or a sibling iframe that reads
//! it) would hold all of that. So the host page exchanges the user's token for a short-lived
//! Kelp token (`POST /api/ext-ui-token/{extensionId}`) that only reaches
//! `/api/ext/{that extension}/…` and its UI assets, with at most `extension:read` and
//! `extension:write`. The admin API and the debug relay refuse it.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::{identity_from_claims, AuthError, Identity, PERM_EXTENSION_READ, PERM_EXTENSION_WRITE};

/// `iss` and `aud` of UI tokens.
pub const UI_TOKEN_ISSUER: &str = "kelp-ui";
/// The claim naming the one extension (registry id) a UI token reaches.
const SCOPE_CLAIM: &str = "kelp_ui_scope";

/// Mints and verifies UI tokens with Kelp's own key.
pub struct UiTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for UiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiTokens").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl UiTokens {
    /// Tokens signed with `key`, valid for `ttl`.
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        Self { encoding: EncodingKey::from_secret(key), decoding: DecodingKey::from_secret(key), ttl }
    }

    /// Tokens signed with a random key of this process: enough where one process mints and
    /// verifies (`kelp up`, tests); several Lambda instances need a shared key.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        Self::new(&key, ttl)
    }

    /// How long a minted token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` that reaches only the extension `extension_id` (registry id).
    pub fn mint(&self, user: &Identity, extension_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let perms: Vec<&String> =
            user.perms.iter().filter(|p| *p == PERM_EXTENSION_READ || *p == PERM_EXTENSION_WRITE).collect();
        let claims = json!({
            "iss": UI_TOKEN_ISSUER, "aud": UI_TOKEN_ISSUER, "iat": now, "nbf": now - 1,
            "exp": now + self.ttl.as_secs() as i64,
            "sub": user.sub, "tenant": user.tenant, "email": user.email, "name": user.name,
            "user_type": user.user_type, "client_id": user.client_id, "client_name": user.client_name,
            "perms": perms, SCOPE_CLAIM: extension_id,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key")
    }

    /// Verify a UI token: the identity it carries, with `ui_scope` set.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_issuer(&[UI_TOKEN_ISSUER]);
        validation.set_audience(&[UI_TOKEN_ISSUER]);
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(format!("UI token: {e}")))?;
        let scope = data.claims.get(SCOPE_CLAIM).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let scope = scope.ok_or_else(|| AuthError::Invalid("UI token names no extension".into()))?;
        let mut identity = identity_from_claims(&data.claims)?;
        identity.ui_scope = Some(scope);
        Ok(identity)
    }
}

/// Whether a compact JWT claims to be a UI token (its payload's `iss`, read without checking
/// the signature: only to choose the verifier, never to trust anything).
pub fn looks_like_ui_token(token: &str) -> bool {
    let Some(payload) = token.split('.').nth(1) else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes)
        .is_ok_and(|claims| claims.get("iss").and_then(Value::as_str) == Some(UI_TOKEN_ISSUER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Identity {
        Identity {
            sub: "u1".into(),
            tenant: "acme".into(),
            perms: vec![
                "extension:read".into(),
                "extension:write".into(),
                "extension:manage".into(),
                "platform:ops".into(),
            ],
            user_type: "internal".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_ui_token_carries_the_user_scoped_to_one_extension_with_at_most_read_and_write() {
        let tokens = UiTokens::random(Duration::from_secs(60));
        let token = tokens.mint(&user(), "ext-1");
        assert!(looks_like_ui_token(&token));
        let identity = tokens.verify(&token).unwrap();
        assert_eq!((identity.sub.as_str(), identity.tenant.as_str()), ("u1", "acme"));
        assert_eq!(identity.ui_scope.as_deref(), Some("ext-1"));
        assert_eq!(identity.perms, ["extension:read", "extension:write"], "manage and platform perms never pass");
    }

    #[test]
    fn another_key_or_an_expired_token_is_refused() {
        let tokens = UiTokens::random(Duration::from_secs(60));
        let token = tokens.mint(&user(), "ext-1");
        assert!(UiTokens::random(Duration::from_secs(60)).verify(&token).is_err(), "another key");
        let expired = UiTokens::new(b"k", Duration::ZERO);
        let old = {
            let now = chrono::Utc::now().timestamp();
            let claims = json!({"iss": UI_TOKEN_ISSUER, "aud": UI_TOKEN_ISSUER, "exp": now - 120, "sub": "u1", "tenant": "acme", SCOPE_CLAIM: "ext-1"});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"k")).unwrap()
        };
        assert!(expired.verify(&old).is_err(), "expired");
        assert!(!looks_like_ui_token("not.a-token"));
        assert!(!looks_like_ui_token(&crate::auth::mint_hs256(b"s", &json!({"iss": "https://idp", "sub": "u"}))));
    }
}
