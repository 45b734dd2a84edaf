//! Caller identity: API Gateway JWT authorizer claims when the request came through one,
//! else `Authorization: Bearer <JWT>` verified here (HS256 secret, RS256 PEM keys or a
//! JWKS document, inline or read from the IdP, see [`jwks`]). `alg: none`, unknown keys, bad
//! signatures and expired tokens are refused.

pub mod jwks;
mod ui_token;

use std::collections::HashMap;

use axum::http::request::Parts;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use ui_token::{looks_like_ui_token, UiTokens, UI_TOKEN_ISSUER};

/// Permission to call an extension's read endpoints (GET/HEAD).
pub const PERM_EXTENSION_READ: &str = "extension:read";
/// Permission to call an extension's other endpoints.
pub const PERM_EXTENSION_WRITE: &str = "extension:write";
/// Permission to watch debug streams of the tenant's installs.
pub const PERM_EXTENSION_DEBUG: &str = "extension:debug";
/// Permission to manage the tenant's installs, config and secrets.
pub const PERM_EXTENSION_MANAGE: &str = "extension:manage";
/// Permission to publish versions.
pub const PERM_PLATFORM_PUBLISH: &str = "platform:publish";
/// Operator permission: grants, audit, any tenant.
pub const PERM_PLATFORM_OPS: &str = "platform:ops";

/// Who is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Subject.
    pub sub: String,
    /// Tenant: the only tenant this caller acts in.
    pub tenant: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `internal` or `client`.
    pub user_type: String,
    /// Client id (client-portal users).
    pub client_id: Option<String>,
    /// Client (company) name.
    pub client_name: String,
    /// Permissions.
    pub perms: Vec<String>,
    /// `iss` of the token (empty when it had none): with `sub` and `tenant` it names a
    /// person across issuers, e.g. in debug grants.
    #[serde(default)]
    pub issuer: String,
    /// Set for a UI token: the one extension (registry id) it reaches.
    #[serde(default)]
    pub ui_scope: Option<String>,
}

impl Identity {
    /// Whether the identity holds a permission.
    pub fn has(&self, perm: &str) -> bool {
        self.perms.iter().any(|p| p == perm)
    }
}

/// Why no identity could be established (always 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("no credentials: send Authorization: Bearer <JWT>")]
    Missing,
    /// Credentials present but not acceptable.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Token verification keys and expectations.
#[derive(Clone, Default)]
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    rs256: Vec<(Option<String>, DecodingKey)>,
    /// The IdP's key set, read from its `jwks_uri` or S3 and kept fresh.
    remote: Option<jwks::RemoteJwks>,
    issuer: Option<String>,
    audience: Option<String>,
    /// API Gateway HTTP APIs whose JWT authorizer claims are trusted (`requestContext.apiId`).
    trusted_api_ids: Vec<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256_keys", &self.rs256.len())
            .field("remote_jwks", &self.remote.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("trusted_api_ids", &self.trusted_api_ids)
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier; configure keys with the builder methods.
    pub fn new(issuer: Option<String>, audience: Option<String>) -> Self {
        Self { issuer, audience, ..Default::default() }
    }

    /// Trust JWT authorizer claims of events from these API Gateway HTTP APIs only. Claims in
    /// an event from any other API (another API in the account wired to this function, say)
    /// are ignored and the bearer token is verified instead. An empty list trusts the claims
    /// of any API allowed to invoke the function (its resource policy decides which).
    pub fn with_trusted_api_ids(mut self, api_ids: Vec<String>) -> Self {
        self.trusted_api_ids = api_ids;
        self
    }

    /// Accept HS256 tokens signed with `secret`.
    pub fn with_hs256(mut self, secret: &[u8]) -> Self {
        self.hs256 = Some(DecodingKey::from_secret(secret));
        self
    }

    /// Accept RS256 tokens signed by this PEM public key (matched by `kid` when given).
    pub fn with_rs256_pem(mut self, kid: Option<String>, pem: &[u8]) -> anyhow::Result<Self> {
        self.rs256.push((kid, DecodingKey::from_rsa_pem(pem)?));
        Ok(self)
    }

    /// Accept RS256 tokens signed by the keys of a JWKS document.
    pub fn with_jwks(mut self, jwks: &str) -> anyhow::Result<Self> {
        self.rs256.extend(jwks::parse_jwks(jwks)?);
        Ok(self)
    }

    /// Also accept RS256 tokens signed by the keys of a key set read from the IdP.
    pub fn with_remote_jwks(mut self, remote: jwks::RemoteJwks) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Whether any key is configured.
    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || !self.rs256.is_empty() || self.remote.is_some()
    }

    /// Verify a compact JWT and return its claims as an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(explain(&e)))?;
        let remote = match (&self.remote, header.alg) {
            (Some(r), Algorithm::RS256) => r.keys(),
            _ => Default::default(),
        };
        let key = match header.alg {
            Algorithm::HS256 => {
                self.hs256.as_ref().ok_or_else(|| AuthError::Invalid("HS256 is not accepted".into()))?
            }
            Algorithm::RS256 => {
                let matching: Vec<_> = self
                    .rs256
                    .iter()
                    .chain(remote.iter())
                    .filter(|(kid, _)| header.kid.is_none() || kid.is_none() || *kid == header.kid)
                    .collect();
                match (matching.as_slice(), &header.kid) {
                    ([(_, key)], _) => key,
                    (keys, Some(kid)) => match keys.iter().find(|(k, _)| k.as_ref() == Some(kid)) {
                        Some((_, key)) => key,
                        None => return Err(self.unknown_key(kid)),
                    },
                    ([], None) if self.remote.as_ref().is_some_and(|r| !r.is_loaded()) => {
                        return Err(AuthError::Invalid(
                            "the identity provider's key set (KELP_JWT_JWKS_URL) could not be read yet".into(),
                        ))
                    }
                    ([], None) => return Err(AuthError::Invalid("RS256 is not accepted".into())),
                    (_, None) => {
                        return Err(AuthError::Invalid("token has no kid and several keys are configured".into()))
                    }
                }
            }
            other => return Err(AuthError::Invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        // A token is not valid before its `nbf` either (jsonwebtoken checks it only on request).
        validation.validate_nbf = true;
        // A configured issuer/audience must be present, not merely match when present.
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        // The audience is checked below: a Cognito access token names its app client in
        // `client_id` and has no `aud`, which the library's check cannot accept.
        validation.validate_aud = false;
        let data =
            decode::<HashMap<String, Value>>(token, key, &validation).map_err(|e| AuthError::Invalid(explain(&e)))?;
        if let Some(aud) = &self.audience {
            check_audience(&data.claims, aud)?;
        }
        identity_from_claims(&data.claims)
    }

    fn unknown_key(&self, kid: &str) -> AuthError {
        match &self.remote {
            Some(remote) => {
                remote.unknown_key();
                AuthError::Invalid(format!(
                    "unknown key id {kid:?} (the identity provider's key set is being read again; retry shortly)"
                ))
            }
            None => AuthError::Invalid(format!("unknown key id {kid:?}")),
        }
    }
}

/// `aud` (a string or a list) must name `expected`; a token without `aud` passes when its
/// `client_id` is `expected` (Cognito access tokens).
fn check_audience(claims: &HashMap<String, Value>, expected: &str) -> Result<(), AuthError> {
    let ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
        Some(_) => false,
        None => match claims.get("client_id") {
            Some(client) => client.as_str() == Some(expected),
            None => return Err(AuthError::Invalid("the token has no aud claim (nor a client_id)".into())),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid("the token's audience (aud, or client_id without aud) is not the configured one".into()))
    }
}

/// Tenant ids Kelp keeps for itself (e.g. `_kelp`, the scope of idempotency records): no
/// caller may act in them.
pub fn is_reserved_tenant(tenant: &str) -> bool {
    tenant.starts_with('_')
}

/// A token error in words a caller can act on (the library's own names, such as
/// `InvalidSignature` or `JSON error: expected value at line 1 column 1`, say little).
fn explain(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => {
            "the signature does not match this server's key (a token minted for another server, or by `kelp token` for another data directory?)".into()
        }
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the configured one".into(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not the configured one".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "not a JWT (expected header.payload.signature, base64url-encoded JSON)".into()
        }
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        _ => format!("unusable token ({e})"),
    }
}

/// Build an identity from claims (JWT payload, or API Gateway's flattened claim strings).
pub fn identity_from_claims(claims: &HashMap<String, Value>) -> Result<Identity, AuthError> {
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let sub = text("sub").filter(|s| !s.is_empty()).ok_or_else(|| AuthError::Invalid("token has no sub".into()))?;
    let tenant = text("tenant")
        .or_else(|| text("tenant_id"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Invalid("token has no tenant".into()))?;
    if is_reserved_tenant(&tenant) {
        return Err(AuthError::Invalid("tenant ids starting with '_' are reserved for Kelp".into()));
    }
    let perms = match claims.get("perms") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => parse_flattened_list(s),
        _ => Vec::new(),
    };
    Ok(Identity {
        sub,
        tenant,
        email: text("email").unwrap_or_default(),
        name: text("name").unwrap_or_default(),
        // Without the claim a caller is a client-portal user, the narrower of the two: a
        // token must say `internal` to be treated as staff.
        user_type: text("user_type").filter(|t| !t.is_empty()).unwrap_or_else(|| "client".into()),
        client_id: text("client_id").filter(|s| !s.is_empty()),
        client_name: text("client_name").or_else(|| text("company_name")).unwrap_or_default(),
        perms,
        issuer: text("iss").unwrap_or_default(),
        ui_scope: None,
    })
}

/// API Gateway HTTP APIs flatten list claims to strings like `[a b c]`; accept that, a JSON
/// array string, or a space/comma separated list.
fn parse_flattened_list(s: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(s) {
        return list;
    }
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The identity of a request: authorizer claims first (the request came through API
/// Gateway, which verified the token), else the bearer token. UI tokens are refused here:
/// routes that accept them call [`identify_in_extension`].
pub fn identify(parts: &Parts, verifier: &JwtVerifier) -> Result<Identity, AuthError> {
    identify_with(parts, verifier, None)
}

/// The identity of a request to one extension's API or UI: a user's token as in
/// [`identify`], or a UI token (its `ui_scope` then names the only extension it reaches; the
/// caller must check it against the extension it resolves).
pub fn identify_in_extension(
    parts: &Parts,
    verifier: &JwtVerifier,
    ui_tokens: &UiTokens,
) -> Result<Identity, AuthError> {
    identify_with(parts, verifier, Some(ui_tokens))
}

/// Both of the above in one pass over the request (the claims, the header and the token's
/// payload are each read once): UI tokens are verified with `ui_tokens`, or refused without.
fn identify_with(parts: &Parts, verifier: &JwtVerifier, ui_tokens: Option<&UiTokens>) -> Result<Identity, AuthError> {
    if let Some(claims) = authorizer_claims(parts, &verifier.trusted_api_ids) {
        let claims: HashMap<String, Value> = claims.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        return identity_from_claims(&claims);
    }
    let token = bearer(parts)?;
    if looks_like_ui_token(token) {
        return match ui_tokens {
            Some(ui_tokens) => ui_tokens.verify(token),
            None => Err(AuthError::Invalid("a UI token only reaches its extension's API".into())),
        };
    }
    if !verifier.is_configured() {
        return Err(AuthError::Invalid("no token verification key is configured".into()));
    }
    verifier.verify(token)
}

/// The bearer token of the `Authorization` header.
fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = header.to_str().map_err(|_| AuthError::Invalid("malformed Authorization header".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| AuthError::Invalid("Authorization must be a Bearer token".into()))?;
    Ok(token.trim())
}

/// JWT authorizer claims of an API Gateway v2 event from a trusted API.
fn authorizer_claims(parts: &Parts, trusted_api_ids: &[String]) -> Option<HashMap<String, String>> {
    use lambda_http::request::RequestContext;
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let claims = ctx.authorizer.as_ref()?.jwt.as_ref()?;
            let api = ctx.apiid.as_deref().unwrap_or_default();
            if !trusted_api_ids.is_empty() && !trusted_api_ids.iter().any(|t| t == api) {
                tracing::warn!(api_id = api, "ignoring authorizer claims of an API that is not in KELP_API_ID");
                return None;
            }
            Some(claims.claims.clone())
        }
        _ => None,
    }
}

/// Mint an HS256 token (local development and tests; production tokens come from the IdP).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing with an in-memory key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
        encode(&Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn a_token_without_user_type_is_a_client_and_reserved_tenants_are_refused() {
        let claims = |extra: Value| -> HashMap<String, Value> {
            let mut c = json!({"sub": "u", "tenant": "acme"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            serde_json::from_value(c).unwrap()
        };
        assert_eq!(identity_from_claims(&claims(json!({}))).unwrap().user_type, "client");
        assert_eq!(identity_from_claims(&claims(json!({"user_type": "internal"}))).unwrap().user_type, "internal");
        assert!(identity_from_claims(&claims(json!({"tenant": "_kelp"}))).is_err());
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf() {
        let key = EncodingKey::from_secret(b"s");
        let v = JwtVerifier::new(None, None).with_hs256(b"s");
        let later = chrono::Utc::now().timestamp() + 3600;
        let t = token(Algorithm::HS256, &key, json!({"sub": "u", "tenant": "acme", "exp": later + 60, "nbf": later}));
        assert!(v.verify(&t).is_err());
    }

    fn claims(exp_offset: i64) -> Value {
        json!({"sub": "u1", "tenant": "t1", "perms": ["extension:read"], "exp": chrono::Utc::now().timestamp() + exp_offset})
    }

    #[test]
    fn verifies_hs256_and_refuses_expired_wrong_key_and_none() {
        let v = JwtVerifier::new(None, None).with_hs256(b"secret");
        let good = token(Algorithm::HS256, &EncodingKey::from_secret(b"secret"), claims(60));
        let id = v.verify(&good).unwrap();
        assert_eq!((id.sub.as_str(), id.tenant.as_str()), ("u1", "t1"));
        assert!(id.has("extension:read"));
        let expired = token(Algorithm::HS256, &EncodingKey::from_secret(b"secret"), claims(-3600));
        assert!(matches!(v.verify(&expired), Err(AuthError::Invalid(m)) if m.contains("expired")));
        let wrong = token(Algorithm::HS256, &EncodingKey::from_secret(b"other"), claims(60));
        assert!(v.verify(&wrong).is_err());
        // alg: none, hand-made.
        use base64::Engine as _;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims(60)));
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let v = JwtVerifier::new(Some("https://issuer".into()), Some("kelp".into())).with_hs256(b"k");
        let key = EncodingKey::from_secret(b"k");
        let mut c = claims(60);
        assert!(v.verify(&token(Algorithm::HS256, &key, c.clone())).is_err());
        c["iss"] = json!("https://issuer");
        assert!(
            matches!(v.verify(&token(Algorithm::HS256, &key, c.clone())), Err(AuthError::Invalid(m)) if m.contains("no aud"))
        );
        c["aud"] = json!("other");
        assert!(v.verify(&token(Algorithm::HS256, &key, c.clone())).is_err());
        c["aud"] = json!(["other", "kelp"]);
        assert!(v.verify(&token(Algorithm::HS256, &key, c.clone())).is_ok());
        c["aud"] = json!("kelp");
        assert!(v.verify(&token(Algorithm::HS256, &key, c.clone())).is_ok());
        // A Cognito access token: client_id, no aud.
        c.as_object_mut().unwrap().remove("aud");
        c["client_id"] = json!("kelp");
        assert!(v.verify(&token(Algorithm::HS256, &key, c.clone())).is_ok());
        c["client_id"] = json!("another-app");
        assert!(v.verify(&token(Algorithm::HS256, &key, c)).is_err());
    }

    #[test]
    fn parses_api_gateway_flattened_lists() {
        assert_eq!(parse_flattened_list("[extension:read extension:write]"), vec!["extension:read", "extension:write"]);
        assert_eq!(parse_flattened_list(r#"["a","b"]"#), vec!["a", "b"]);
        assert_eq!(parse_flattened_list("a,b"), vec!["a", "b"]);
    }
}
