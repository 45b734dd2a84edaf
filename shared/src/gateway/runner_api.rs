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

use axum::body::Body;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::headers::runner_response_headers;
use super::{Gateway, GatewaySettings, RunnerAuth, RunnerEgress};
use crate::bindings::types::{ContextData, ExecuteRequest, HttpHeader, HttpRequest};
use crate::egress::EgressAllow;
use crate::executor::{ExecError, ExecLimits};
use crate::http::error::ApiError;
use crate::http::exposure::private_route;
use crate::http::RequestId;
use crate::ids::{ExecIds, UserInfo};
use crate::manifest::{normalize_capability, CAP_USER_READ, DEFAULT_CAPABILITIES, KNOWN_CAPABILITIES};
use crate::runtime::Plan;
use crate::secrets::{SecretEnvelope, SecretsError, SecretsState};

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
    /// `schedule` from Alga's scheduled-job caller (`extensionScheduledInvocationHandler.ts`);
    /// Alga's runner ignores it, Kelp records it in the request's log line.
    #[serde(default)]
    trigger: Option<String>,
    /// The schedule that fired, from the same caller.
    #[serde(default)]
    schedule_id: Option<String>,
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

/// A completed answer and the sha256 of the request it answered.
type Replay = (Instant, [u8; 32], ExecuteAnswer);

/// Completed answers by (tenant, extension, idempotency key), bounded and time-limited. An
/// answer is replayed only to the same request (same body, routing headers included in the
/// key): the same key with another request — another user's, other input — is refused, as
/// the admin API refuses it, never answered with someone else's result.
pub(crate) struct ReplayCache(Mutex<LruCache<ReplayKey, Replay>>);

/// What a call with a replayed key finds.
enum Replayed {
    /// Nothing (or nothing fresh): run it.
    No,
    /// The answer to this very request.
    Same(ExecuteAnswer),
    /// The key answered another request.
    Reused,
}

impl ReplayCache {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(LruCache::new(NonZeroUsize::new(10_000).expect("non-zero"))))
    }

    fn get(&self, key: &ReplayKey, request: &[u8; 32]) -> Replayed {
        let mut cache = self.0.lock();
        match cache.get(key) {
            Some((at, digest, answer)) if at.elapsed() < REPLAY_WINDOW => {
                if digest == request {
                    Replayed::Same(answer.clone())
                } else {
                    Replayed::Reused
                }
            }
            Some(_) => {
                cache.pop(key);
                Replayed::No
            }
            None => Replayed::No,
        }
    }

    fn put(&self, key: ReplayKey, request: [u8; 32], answer: ExecuteAnswer) {
        self.0.lock().put(key, (Instant::now(), request, answer));
    }
}

/// What a runner call may carry besides its (base64) body: context, config, headers, secret
/// envelope and user. The JSON read is capped at the body cap's base64 size plus this.
const ENVELOPE_ALLOWANCE: usize = 1 << 20;

/// The refusal of a body over `KELP_MAX_BODY_BYTES`, in the runner's shape so Alga's callers
/// pass 413 on to the user (an HTTP 413 would reach them as Alga's 502).
fn too_large(max_body_bytes: usize) -> ExecuteAnswer {
    ExecuteAnswer::failure(413, &format!("payload_too_large: the request body is over {max_body_bytes} bytes"))
}

/// A version already known for this call: the tenant's own fetched copy, or a version
/// published to Kelp under its manifest name. Another tenant's fetched copy is never used,
/// even with the same content hash: its bytes came from that tenant's store.
async fn find_version(
    gw: &Gateway,
    tenant: &str,
    extension: &str,
    content_hash: &str,
) -> Result<Option<Arc<crate::stores::VersionRecord>>, ApiError> {
    let platform = &gw.platform;
    let hex = crate::alga_bundles::content_hex(content_hash);
    if let Some(hex) = &hex {
        if let Some(v) = gw.alga.cached(platform, tenant, extension, hex).await? {
            return Ok(Some(v));
        }
    }
    // One registry read, as before scopes existed, for a version published to Kelp.
    if let Some(found) = platform.registry.find_version_by_content_hash(content_hash).await? {
        let name = platform.extension_name(&found.extension_id).await?.unwrap_or_default();
        if !crate::alga_bundles::is_scope_name(&name) {
            return Ok(platform.version(&found.id).await?);
        }
    }
    match &hex {
        Some(hex) => gw.alga.find(platform, tenant, extension, hex).await,
        None => Ok(None),
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
    body: Body,
) -> Response {
    if let Err(e) = authenticate(&gw.settings, &headers, &extensions) {
        return e.with_request_id(&request_id.0).into_response();
    }
    let max_body = gw.settings.max_body_bytes;
    let json_cap = max_body.div_ceil(3) * 4 + ENVELOPE_ALLOWANCE;
    let Ok(body) = axum::body::to_bytes(body, json_cap).await else {
        return (StatusCode::OK, Json(too_large(max_body))).into_response();
    };
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
    if let (RunnerAuth::PrivateNetwork(trust), None) = (&settings.runner_auth, given) {
        return match private_route(extensions, headers, trust) {
            Ok(route) => {
                tracing::debug!(%route, "runner call without a token accepted on a private route");
                Ok(())
            }
            Err(why) => {
                tracing::info!(%why, "runner call without a token refused");
                Err(ApiError::unauthenticated(
                    "a valid x-runner-service-token is required (calls without one are accepted only through the private route)",
                ))
            }
        };
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
    if !crate::alga_bundles::is_valid_id(&req.context.tenant_id) {
        return Ok(ExecuteAnswer::failure(
            400,
            "invalid_tenant: a tenant id is 1-128 of letters, digits, '.', '_' and '-'",
        ));
    }
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
    if body_bytes.len() > settings.max_body_bytes {
        return Ok(too_large(settings.max_body_bytes));
    }
    if let Some(trigger) = &req.context.trigger {
        tracing::info!(%trigger, schedule = ?req.context.schedule_id, "runner call from Alga's scheduler");
    }
    // Alga's runner grants these to every call, whatever `providers` says (its
    // `providers/mod.rs`): the user is readable whenever the caller sent one.
    let mut capabilities: std::collections::BTreeSet<String> =
        DEFAULT_CAPABILITIES.iter().chain([&CAP_USER_READ]).map(|c| c.to_string()).collect();
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
    // The request's digest only when it may be replayed: most calls carry no key.
    let idem_key = header(headers, "x-idempotency-key").map(|k| {
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(body).into();
        ((tenant.clone(), req.context.extension_id.clone(), k.to_string()), digest)
    });
    if let Some((key, request_digest)) = &idem_key {
        match gw.replays.get(key, request_digest) {
            Replayed::Same(answer) => return Ok(answer),
            Replayed::Reused => {
                return Ok(ExecuteAnswer::failure(
                    409,
                    "idempotency_key_reused: this x-idempotency-key already answered a different request",
                ))
            }
            Replayed::No => {}
        }
    }

    // The bundle is found by content hash: fetched before from this tenant's part of Alga's
    // bundle store, published to Kelp through the admin API, or fetched now.
    let version = match find_version(gw, tenant_h, extension_h, &req.context.content_hash).await? {
        Some(version) => version,
        None => match gw.alga.fetch(platform, tenant_h, extension_h, &req.context.content_hash).await? {
            Ok(version) => version,
            Err(refusal) => return Ok(ExecuteAnswer::failure(refusal.status, &refusal.error)),
        },
    };
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
    let egress_allow = match &settings.runner_egress {
        RunnerEgress::Alga(allow) => allow.clone(),
        RunnerEgress::Kelp { default_allow } => {
            EgressAllow::from_entries(known_install.as_ref().map(|i| &i.egress).unwrap_or(default_allow))
        }
    };

    let secrets_version = header(headers, "x-ext-secrets-version").unwrap_or("0").to_string();
    let secrets = match &req.secret_envelope {
        None => SecretsState::None,
        Some(env) => match platform.secrets.decode(&install_id, &secrets_version, env).await {
            Ok(s) => SecretsState::Ready(s),
            // An envelope Kelp cannot open refuses the call with a reason, as Alga's runner
            // refuses one it cannot decrypt (the guest would only see `internal`).
            Err(SecretsError::UnsupportedAlgorithm(m)) => {
                tracing::warn!(install = %install_id, reason = %m, "secret envelope of an unsupported provider");
                return Ok(ExecuteAnswer::failure(500, &format!("unsupported_secret_provider: {m}")));
            }
            Err(SecretsError::Unavailable(m)) => {
                tracing::warn!(install = %install_id, error = %m, "secrets unavailable");
                return Ok(ExecuteAnswer::failure(503, "secrets_unavailable"));
            }
            Err(SecretsError::Refused(m)) => {
                tracing::warn!(install = %install_id, reason = %m, "secret envelope refused");
                return Ok(ExecuteAnswer::failure(500, &format!("secret_decrypt_failed: {m}")));
            }
            Err(e) => {
                tracing::warn!(install = %install_id, error = %e, "secret envelope unusable");
                return Ok(ExecuteAnswer::failure(500, "secret_decrypt_failed"));
            }
        },
    };
    let exec = ExecLimits {
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
    // Alga decides the deadline and memory of its runner's calls; the rest is the default
    // plan (Alga's tenants have no Kelp plan on this path).
    let limits = crate::call_limits::Limits { exec, ..platform.plan_defaults.clone() };
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
    let debug = runtime.sink(&ids, limits.debug_events);
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
        tally: Default::default(),
        // The caller sends config and secrets with every call, so Kelp cannot tell which
        // calls an instance could safely serve: every /v1/execute call gets a fresh one.
        reuse: None,
    };
    let answer = match runtime.execute(plan, request).await {
        Ok(outcome) => {
            let r = outcome.response;
            let headers = runner_response_headers(&r.headers, &debug);
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
        Err(ExecError::NoHandler) => ExecuteAnswer::failure(404, "no_handler"),
        Err(ExecError::CapabilityDenied { capability, .. }) => {
            ExecuteAnswer::failure(500, &format!("capability_denied: {capability}"))
        }
        Err(ExecError::GuestException { .. }) => ExecuteAnswer::failure(500, "extension_exception"),
        Err(ExecError::QuotaExceeded(_)) => ExecuteAnswer::failure(507, "storage_quota_exceeded"),
        Err(_) => ExecuteAnswer::failure(500, "extension_error"),
    };
    if let Some((key, request_digest)) = idem_key {
        gw.replays.put(key, request_digest, answer.clone());
    }
    Ok(answer)
}
