//! `POST /v1/execute`: Alga's runner API, so an existing Alga EE server can use Kelp as its
//! runner. The caller is the trusted control plane (service token, or a private route in the
//! private-network mode, see [`RunnerAuth`]): the body's providers,
//! config, secret envelope and user are authoritative for the call. It answers as Alga's
//! runner does: HTTP 200 carrying the guest's status in the body; HTTP 4xx only when the
//! call itself is refused.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::body::LimitedBytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::headers::{MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEADER_BYTES};
use super::{Gateway, GatewaySettings, RunnerAuth};
use crate::bindings::types::{ContextData, ExecuteRequest, HttpHeader, HttpRequest};
use crate::egress::AllowEntry;
use crate::executor::{ExecError, ExecLimits};
use crate::http::error::ApiError;
use crate::http::exposure::private_route;
use crate::http::RequestId;
use crate::ids::{ExecIds, UserInfo};
use crate::manifest::{normalize_capability, DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES};
use crate::runtime::Plan;
use crate::secrets::SecretEnvelope;
use crate::secrets::SecretsState;

/// How long a completed answer is replayed for the same idempotency key.
const REPLAY_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
struct ExecuteBody {
    context: Context,
    http: HttpPart,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    secret_envelope: Option<SecretEnvelope>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Context {
    #[serde(default)]
    request_id: Option<String>,
    tenant_id: String,
    extension_id: String,
    #[serde(default)]
    install_id: Option<String>,
    content_hash: String,
    #[serde(default)]
    version_id: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct HttpPart {
    method: String,
    path: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body_b64: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Limits {
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    fuel: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct User {
    user_id: String,
    #[serde(default)]
    user_email: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    user_type: String,
    #[serde(default, alias = "company_name")]
    client_name: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    additional_fields: BTreeMap<String, String>,
}

/// The runner's answer.
#[derive(Debug, Clone, Serialize)]
struct ExecuteAnswer {
    status: u16,
    headers: BTreeMap<String, String>,
    body_b64: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl ExecuteAnswer {
    fn failure(status: u16, error: &str) -> Self {
        Self { status, headers: BTreeMap::new(), body_b64: String::new(), error: Some(error.to_string()) }
    }
}

/// (tenant, extension, idempotency key).
type ReplayKey = (String, String, String);

/// Completed answers by (tenant, extension, idempotency key), bounded and time-limited.
pub(crate) struct ReplayCache(Mutex<LruCache<ReplayKey, (Instant, ExecuteAnswer)>>);

impl ReplayCache {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(LruCache::new(NonZeroUsize::new(10_000).expect("non-zero"))))
    }

    fn get(&self, key: &ReplayKey) -> Option<ExecuteAnswer> {
        let mut cache = self.0.lock();
        match cache.get(key) {
            Some((at, answer)) if at.elapsed() < REPLAY_WINDOW => Some(answer.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: ReplayKey, answer: ExecuteAnswer) {
        self.0.lock().put(key, (Instant::now(), answer));
    }
}

/// One fetch per content hash at a time: concurrent first calls for a bundle wait for the one
/// fetching (and precompiling) it, then find it published.
#[derive(Default)]
pub(crate) struct FetchGates(Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A bundle Kelp does not know, from Alga's bundle store (key layout of Alga's:
/// `tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst`): checked against
/// its sha256, published (manifest validated, precompiled, stored in every tier) and returned.
/// `Ok(Err(answer))` is a refusal in the runner's shape.
async fn fetch_from_alga(
    gw: &Gateway,
    tenant: &str,
    extension: &str,
    content_hash: &str,
) -> Result<Result<crate::stores::VersionRecord, ExecuteAnswer>, ApiError> {
    let platform = &gw.platform;
    let Some(store) = &platform.alga_bundles else { return Ok(Err(ExecuteAnswer::failure(404, "bundle_not_found"))) };
    let hex = content_hash.trim_start_matches("sha256:").to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Err(ExecuteAnswer::failure(400, "bundle_fetch_failed: content_hash is not sha256:<hex>")));
    }
    let gate = gw.fetches.0.lock().entry(hex.clone()).or_default().clone();
    let _one_at_a_time = gate.lock().await;
    // The first caller may have published it while this one waited.
    let canonical = format!("sha256:{hex}");
    if let Some(version) = platform.registry.find_version_by_content_hash(&canonical).await? {
        return Ok(Ok(version));
    }
    let key = format!("tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst");
    let bytes = match store.get(&key).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(Err(ExecuteAnswer::failure(404, "bundle_not_found"))),
        Err(e) => {
            tracing::warn!(%key, error = %e, "Alga bundle store unavailable");
            return Ok(Err(ExecuteAnswer::failure(502, "bundle_fetch_failed: the bundle store is unavailable")));
        }
    };
    if crate::publish::content_hash(&bytes) != canonical {
        tracing::warn!(%key, "bundle from Alga's store does not match its content hash");
        return Ok(Err(ExecuteAnswer::failure(502, "bundle_fetch_failed: the bundle does not match its sha256")));
    }
    match crate::publish::publish(platform, bytes, &crate::publish::BundleLimits::default()).await {
        Ok(published) => {
            tracing::info!(%key, version = %published.version.id, "bundle fetched from Alga's store and published");
            Ok(Ok(published.version))
        }
        Err(e) => {
            let reason = ApiError::from(e);
            Ok(Err(ExecuteAnswer::failure(
                if reason.status.is_client_error() { 400 } else { 502 },
                &format!("bundle_fetch_failed: {} ({})", reason.message, reason.code),
            )))
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Handle `POST /v1/execute`.
pub async fn handle(
    State(gw): State<Arc<Gateway>>,
    Extension(request_id): Extension<RequestId>,
    extensions: Extensions,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    if let Err(e) = authenticate(&gw.settings, &headers, &extensions) {
        return e.with_request_id(&request_id.0).into_response();
    }
    match serve(&gw, &request_id.0, &headers, &body).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(e) => e.with_request_id(&request_id.0).into_response(),
    }
}

/// The service token, or — in the private-network mode — no token on a private route.
fn authenticate(settings: &GatewaySettings, headers: &HeaderMap, extensions: &Extensions) -> Result<(), ApiError> {
    // No token configured = no token accepted. Digests are compared in constant time, so
    // neither the token's bytes nor its length show in the timing.
    let expected = settings.runner_service_token.as_deref().unwrap_or("");
    let given = header(headers, "x-runner-service-token");
    let digest = |s: &str| <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes());
    let given_text = given.unwrap_or("");
    if !expected.is_empty() && bool::from(digest(given_text).as_slice().ct_eq(digest(expected).as_slice())) {
        return Ok(());
    }
    if let (RunnerAuth::PrivateNetwork { vpc_endpoints }, None) = (&settings.runner_auth, given) {
        if let Some(route) = private_route(extensions, vpc_endpoints) {
            tracing::debug!(%route, "runner call without a token accepted on a private route");
            return Ok(());
        }
        return Err(ApiError::unauthenticated(
            "a valid x-runner-service-token is required (calls without one are accepted only through the private route)",
        ));
    }
    Err(ApiError::unauthenticated("a valid x-runner-service-token is required"))
}

async fn serve(gw: &Gateway, request_id: &str, headers: &HeaderMap, body: &[u8]) -> Result<ExecuteAnswer, ApiError> {
    let platform = &gw.platform;
    let settings = &gw.settings;
    // A request that is not JSON of the right shape is an HTTP 400, as Alga's runner answers
    // it. Every refusal of the call itself is HTTP 200 with `status` and `error` in the body,
    // as Alga's runner answers them (its callers turn that status into the response).
    let req: ExecuteBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed execute request: {e}")))?;
    let (Some(tenant_h), Some(extension_h)) = (header(headers, "x-alga-tenant"), header(headers, "x-alga-extension"))
    else {
        return Ok(ExecuteAnswer::failure(400, "missing_routing_headers"));
    };
    if crate::auth::is_reserved_tenant(&req.context.tenant_id) {
        return Ok(ExecuteAnswer::failure(400, "reserved_tenant: tenant ids starting with '_' are Kelp's"));
    }
    if req.context.tenant_id != tenant_h || req.context.extension_id != extension_h {
        return Ok(ExecuteAnswer::failure(
            400,
            "routing_headers_mismatch: x-alga-tenant and x-alga-extension must match the context",
        ));
    }
    let body_bytes = match &req.http.body_b64 {
        Some(b) if !b.is_empty() => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => bytes,
            Err(_) => return Ok(ExecuteAnswer::failure(500, "execute_failed: http.body_b64 is not valid base64")),
        },
        _ => Vec::new(),
    };
    let mut capabilities: std::collections::BTreeSet<String> =
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    let unknown: Vec<&str> = req
        .providers
        .iter()
        .filter(|p| !KNOWN_CAPABILITIES.contains(&normalize_capability(p).as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Ok(ExecuteAnswer::failure(400, &format!("unknown_capabilities: {}", unknown.join(", "))));
    }
    capabilities.extend(req.providers.iter().map(|p| normalize_capability(p)));

    let tenant = req.context.tenant_id.clone();
    let idem_key =
        header(headers, "x-idempotency-key").map(|k| (tenant.clone(), req.context.extension_id.clone(), k.to_string()));
    if let Some(key) = &idem_key {
        if let Some(answer) = gw.replays.get(key) {
            return Ok(answer);
        }
    }

    // The bundle is found by content hash: published to Kelp, or fetched once from Alga's
    // bundle store when one is configured.
    let version = match platform.registry.find_version_by_content_hash(&req.context.content_hash).await? {
        Some(version) => version,
        None => match fetch_from_alga(gw, tenant_h, extension_h, &req.context.content_hash).await? {
            Ok(version) => version,
            Err(refusal) => return Ok(refusal),
        },
    };
    let version = platform.version(&version.id).await?.ok_or_else(|| ApiError::internal("version vanished"))?;
    // A1: the install id is always set; when the caller omits it, Kelp's own install of that
    // extension for the tenant supplies it (and its egress allow-list).
    let known_install = match &req.context.install_id {
        Some(id) => platform.installs.get_install(&tenant, id).await?,
        None => platform.installs.find_install(&tenant, &version.extension_id).await?,
    };
    let install_id = req
        .context
        .install_id
        .clone()
        .or_else(|| known_install.as_ref().map(|i| i.install_id.clone()))
        .unwrap_or_else(|| req.context.extension_id.clone());
    let egress_source = known_install.as_ref().map(|i| &i.egress).unwrap_or(&settings.runner_egress_allow);
    let egress_allow = egress_source.iter().filter_map(|e| AllowEntry::parse(e).ok()).collect();

    let secrets_version = header(headers, "x-ext-secrets-version").unwrap_or("0").to_string();
    let secrets = match &req.secret_envelope {
        None => SecretsState::None,
        Some(env) => match platform.secrets.decode(&install_id, &secrets_version, env) {
            Ok(s) => SecretsState::Ready(s),
            // An envelope Kelp cannot open refuses the call with a reason, as Alga's runner
            // refuses one it cannot decrypt (the guest would only see `internal`).
            Err(crate::secrets::SecretsError::UnsupportedAlgorithm(m)) => {
                tracing::warn!(install = %install_id, reason = %m, "secret envelope of an unsupported provider");
                return Ok(ExecuteAnswer::failure(500, &format!("unsupported_secret_provider: {m}")));
            }
            Err(e) => {
                tracing::warn!(install = %install_id, error = %e, "secret envelope unusable");
                return Ok(ExecuteAnswer::failure(500, "secret_decrypt_failed"));
            }
        },
    };
    let limits = ExecLimits {
        timeout: req
            .limits
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(settings.exec.timeout)
            .min(settings.max_timeout),
        max_memory_bytes: req
            .limits
            .memory_mb
            .map(|mb| (mb as usize) << 20)
            .unwrap_or(settings.exec.max_memory_bytes)
            .min(settings.max_memory_bytes),
        fuel: req.limits.fuel.or(settings.exec.fuel),
        max_output_bytes: settings.exec.max_output_bytes,
    };
    let request_id = req.context.request_id.clone().unwrap_or_else(|| request_id.to_string());
    let ids = ExecIds {
        request_id: request_id.clone(),
        tenant_id: tenant.clone(),
        extension_id: req.context.extension_id.clone(),
        install_id: install_id.clone(),
        version_id: req.context.version_id.clone().unwrap_or_else(|| version.id.clone()),
        version: version.version.clone(),
        content_hash: req.context.content_hash.clone(),
    };
    let url = if req.http.query.is_empty() {
        req.http.path.clone()
    } else {
        let q: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&req.http.query).finish();
        format!("{}?{q}", req.http.path)
    };
    let mut guest_headers: Vec<HttpHeader> =
        req.http.headers.iter().map(|(k, v)| HttpHeader { name: k.to_lowercase(), value: v.clone() }).collect();
    guest_headers.retain(|h| h.name != "authorization" && h.name != "cookie");
    let request = ExecuteRequest {
        context: ContextData {
            request_id: Some(request_id),
            tenant_id: tenant.clone(),
            extension_id: ids.extension_id.clone(),
            install_id: Some(install_id),
            version_id: Some(ids.version_id.clone()),
        },
        http: HttpRequest {
            method: req.http.method.to_uppercase(),
            url,
            headers: guest_headers,
            body: (!body_bytes.is_empty()).then_some(body_bytes),
        },
    };
    let user = req.user.map(|u| UserInfo {
        user_id: u.user_id,
        user_email: u.user_email,
        user_name: u.user_name,
        user_type: u.user_type,
        client_name: u.client_name,
        client_id: u.client_id,
        additional_fields: u.additional_fields.into_iter().collect(),
    });
    let runtime = platform.runtime();
    let debug = runtime.sink(&ids);
    let plan = Plan {
        ids,
        version,
        config: Arc::new(req.context.config),
        config_version: header(headers, "x-ext-config-version").unwrap_or("0").to_string(),
        capabilities,
        user,
        secrets,
        egress_allow,
        limits,
        // The caller sends config and secrets with every call, so Kelp cannot tell which
        // calls an instance could safely serve: every /v1/execute call gets a fresh one.
        reuse: None,
    };
    let answer = match runtime.execute(plan, request).await {
        Ok(outcome) => {
            let r = outcome.response;
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            let (mut bytes, mut dropped) = (0usize, 0usize);
            for h in r.headers {
                // The same caps as the gateway's: a header flood is cut, with one warning.
                bytes += h.name.len() + h.value.len();
                if bytes > MAX_RESPONSE_HEADER_BYTES
                    || (headers.len() >= MAX_RESPONSE_HEADERS && !headers.contains_key(&h.name.to_lowercase()))
                {
                    dropped += 1;
                    continue;
                }
                // Alga's runner answers a map: repeated headers are joined as HTTP allows.
                headers
                    .entry(h.name.to_lowercase())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&h.value);
                    })
                    .or_insert(h.value);
            }
            if dropped > 0 {
                debug.host_warning(format!(
                    "response headers dropped: {dropped} past the limit of {MAX_RESPONSE_HEADERS} headers / {MAX_RESPONSE_HEADER_BYTES} bytes"
                ));
            }
            let body = r.body.unwrap_or_default();
            if body.len() > settings.max_body_bytes {
                debug.host_warning(format!("response body over {} bytes", settings.max_body_bytes));
                ExecuteAnswer::failure(502, "response_too_large")
            } else {
                ExecuteAnswer {
                    status: r.status,
                    headers,
                    body_b64: base64::engine::general_purpose::STANDARD.encode(body),
                    error: None,
                }
            }
        }
        Err(ExecError::Timeout(_)) => ExecuteAnswer::failure(504, "extension_timeout"),
        Err(ExecError::MemoryLimit(_)) => ExecuteAnswer::failure(500, "extension_memory_limit"),
        Err(ExecError::Load(crate::cache::CacheError::Unavailable(_))) => {
            ExecuteAnswer::failure(503, "service_unavailable")
        }
        Err(ExecError::Busy(_)) => ExecuteAnswer::failure(503, "overloaded"),
        Err(ExecError::CapabilityDenied { capability, .. }) => {
            ExecuteAnswer::failure(500, &format!("capability_denied: {capability}"))
        }
        Err(ExecError::GuestException { .. }) => ExecuteAnswer::failure(500, "extension_exception"),
        Err(_) => ExecuteAnswer::failure(500, "extension_error"),
    };
    if let Some(key) = idem_key {
        gw.replays.put(key, answer.clone());
    }
    Ok(answer)
}
