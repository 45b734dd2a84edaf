//! Tenant traffic: `/api/ext/{extensionId}/{*path}` → identity → install → RBAC → manifest
//! endpoint → rate limit → body limits → execute → real HTTP response. Checks run in the
//! order of docs/api-routing.md ("Checks, in order"); the first that fails answers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers::{client_response_headers, guest_request_headers};
use super::run::{exec_error_response, exec_status};
use super::Gateway;
use crate::auth::{identify_in_extension, Identity, PERM_EXTENSION_READ, PERM_EXTENSION_WRITE};
use crate::bindings::types::{ContextData, ExecuteRequest, HttpRequest};
use crate::call_limits::Limits;
use crate::debug::{DebugSink, EventContext};
use crate::egress::EgressAllow;
use crate::executor::{ExecError, Reuse};
use crate::http::error::ApiError;
use crate::http::{cors, RequestId};
use crate::ids::{ExecIds, UserInfo};
use crate::installs::resolve_install;
use crate::manifest::{EndpointMatch, CAP_DEBUG_LOGS, CAP_SECRETS_GET, DEFAULT_CAPABILITIES};
use crate::platform::Platform;
use crate::ratelimit::RateDecision;
use crate::runtime::Plan;
use crate::secrets::SecretsError;
use crate::secrets::SecretsState;
use crate::stores::{InstallRecord, VersionRecord};
use crate::usage::CallTally;

const METHODS: &[Method] =
    &[Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// A request line is short; this only bounds a long refusal message.
const REQUEST_LINE_MAX_BYTES: usize = 2048;

/// The execution record of a request (docs/api-routing.md, "Checks, in order"), logged as one JSON line.
#[derive(Default)]
struct Record {
    actor: String,
    tenant: String,
    /// The extension's registry id; `name` is its manifest name, what people call it.
    extension: String,
    name: String,
    install: String,
    version: String,
    semver: String,
    content_hash: String,
    endpoint: String,
    status: &'static str,
    method: String,
    path: String,
    /// The module cache tier that had the component, when the guest ran.
    tier: Option<&'static str>,
    /// Whether a warm instance served the request.
    reused: bool,
    /// What the execution used, when the guest ran.
    tally: Option<Arc<CallTally>>,
}

impl Record {
    /// One line per request in the install's debug stream, between the guest's own lines (what
    /// `kelp tail`, `kelp dev` and the console show): method, path, status, duration and, for
    /// a refusal, its code and reason. Only once the install is known: the stream is the
    /// install's.
    fn request_line(
        &self,
        platform: &Platform,
        request_id: &str,
        http_status: u16,
        started: Instant,
        refusal: Option<(&str, &str)>,
    ) {
        if self.install.is_empty() {
            return;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut line = format!("{} {} → {http_status} in {ms:.1} ms", self.method, self.path);
        if let Some((code, message)) = refusal {
            line.push_str(&format!(" ({code}: {message})"));
        }
        let level = match http_status {
            500.. => "error",
            400.. => "warn",
            _ => "info",
        };
        let context = EventContext {
            tenant_id: self.tenant.clone(),
            extension_id: self.extension.clone(),
            install_id: self.install.clone(),
            request_id: request_id.to_string(),
            version_id: self.version.clone(),
            version: self.semver.clone(),
            content_hash: self.content_hash.clone(),
        };
        DebugSink::new(platform.debug.clone(), context, REQUEST_LINE_MAX_BYTES).emit_final(level, "request", line);
    }

    /// Store the record in the audit log (`KELP_AUDIT_EXECUTIONS`).
    async fn audit(&self, platform: &Platform, request_id: &str, http_status: u16, started: Instant) {
        let details = serde_json::json!({
            "request_id": request_id, "name": self.name, "semver": self.semver, "extension": self.extension,
            "install": self.install, "version": self.version,
            "endpoint": self.endpoint, "status": self.status, "http_status": http_status,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        let outcome = if self.status == "ok" { "ok" } else { self.status };
        crate::audit_log::record(
            platform.audit.as_ref(),
            &self.actor,
            Some(&self.tenant),
            "extension.execute",
            Some(&self.install),
            outcome,
            details,
        )
        .await;
    }

    fn emit(&self, request_id: &str, http_status: u16, started: Instant) {
        tracing::info!(
            target: "kelp::execution",
            request_id,
            tenant = %self.tenant,
            name = %self.name,
            semver = %self.semver,
            extension = %self.extension,
            install = %self.install,
            version = %self.version,
            endpoint = %self.endpoint,
            status = self.status,
            http_status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "execution"
        );
    }
}

/// Handle one tenant request.
pub async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let settings = &gw.settings;
    let origin = cors::allowed_origin(req.headers(), &settings.cors_origins, settings.allow_null_origin);
    let mut record = Record { status: "policy_denied", ..Default::default() };
    let (mut response, refusal) = match serve(&gw, req, &request_id, &mut record).await {
        Ok(r) => (r, None),
        Err(e) => {
            let refusal = (e.code, e.message.clone());
            (e.with_request_id(&request_id).into_response(), Some(refusal))
        }
    };
    let observed = crate::metrics::Observation {
        extension: if record.name.is_empty() { "-" } else { &record.name },
        outcome: record.status,
        http_status: response.status().as_u16(),
        duration: started.elapsed(),
        tier: record.tier,
        reused: record.reused,
        code: refusal.as_ref().map(|(code, _)| *code),
    };
    gw.platform.metrics.observe(&observed);
    if let (Some(meter), false) = (&gw.platform.usage, record.install.is_empty()) {
        meter_request(meter, &record, &observed).await;
    }
    if gw.settings.metrics_emf {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // stdout, one line: what CloudWatch reads EMF from (the tracing logs go to stderr).
        println!("{}", crate::metrics::emf("gateway", &observed, now.as_millis()));
    }
    if !record.tenant.is_empty() {
        let status = response.status().as_u16();
        record.emit(&request_id, status, started);
        let refusal = refusal.as_ref().map(|(code, message)| (*code, message.as_str()));
        record.request_line(&gw.platform, &request_id, status, started, refusal);
        if gw.settings.audit_executions {
            record.audit(&gw.platform, &request_id, status, started).await;
        }
        // Refusals of an identified caller are audited (a 401 has no caller to name).
        if status == 403 {
            let details =
                serde_json::json!({"api": "gateway", "extension": record.extension, "request_id": request_id});
            crate::audit_log::record(
                gw.platform.audit.as_ref(),
                &record.actor,
                Some(&record.tenant),
                "access.denied",
                None,
                "denied",
                details,
            )
            .await;
        }
    }
    cors::decorate(&mut response, origin);
    response
}

async fn serve(gw: &Gateway, req: Request, request_id: &str, record: &mut Record) -> Result<Response, ApiError> {
    let platform = &gw.platform;
    // 1. Route and method. OPTIONS is the gateway's own (CORS preflight), before identity.
    let mut method = req.method().clone();
    if method == Method::OPTIONS {
        let settings = &gw.settings;
        return Ok(cors::preflight(cors::allowed_origin(
            req.headers(),
            &settings.cors_origins,
            settings.allow_null_origin,
        )));
    }
    if !METHODS.contains(&method) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} is not supported"),
        ));
    }
    let (extension_ref, path) = split_route(req.uri().path()).ok_or_else(|| ApiError::not_found("no such route"))?;
    record.method = method.to_string();
    record.path = path.clone();
    let mut query = req.uri().query().map(str::to_string);
    let (parts, body) = req.into_parts();
    let cap = gw.settings.max_body_bytes;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body over {cap} bytes"));
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());

    // 2. Identity; the tenant comes from it alone.
    let identity = identify_in_extension(&parts, &platform.jwt, &platform.ui_tokens)
        .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
    for h in ["x-alga-tenant", "x-tenant-id"] {
        if let Some(v) = parts.headers.get(h) {
            if v.to_str().map(|v| v != identity.tenant).unwrap_or(true) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "tenant_mismatch",
                    format!("{h} does not match the caller's tenant"),
                ));
            }
        }
    }
    record.tenant = identity.tenant.clone();
    record.actor = identity.sub.clone();
    record.extension = extension_ref.clone();

    // 3. Install of the caller's tenant; missing, another tenant's or disabled look the same.
    let (install, version) = resolve_install(platform, &identity.tenant, &extension_ref)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "extension_not_available", "extension not available"))?;
    record.extension = install.extension_id.clone();
    record.install = install.install_id.clone();
    record.version = version.id.clone();
    record.content_hash = version.content_hash.clone();
    record.semver = version.version.clone();
    record.name = version.manifest.name.clone();
    check_ui_scope(&identity, &install.extension_id)?;

    // 3b. Alga's ext-proxy lets a POST say which method it means (`__method`, in the query or
    // the JSON body): honoured the same way, before RBAC and the endpoint match see it. Only
    // then is a POST body read, under its cap, for an identified caller.
    let mut body = BodyState::Unread(body);
    if method == Method::POST {
        let mut bytes = body.read(declared, cap).await.map_err(|_| too_large())?;
        if let Some(over) = method_override(&mut query, &mut bytes)? {
            method = over;
            record.method = method.to_string();
        }
        body = BodyState::Read(bytes);
    }

    // 4. RBAC (A3).
    authorize(&identity, &method, &version)?;

    // 5. Manifest endpoints (A4, fail closed). A UI-only version has none to call.
    if !version.has_component() {
        return Err(exec_error_response(&ExecError::NoHandler));
    }
    let endpoint = match version.manifest.match_endpoint(method.as_str(), &path) {
        EndpointMatch::Matched(e) => e.path.clone(),
        EndpointMatch::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "endpoint_not_found",
                format!("{method} {path} is not an endpoint of this extension"),
            ));
        }
        EndpointMatch::MethodNotAllowed(allow) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} does not accept {method}"),
            )
            .with_header(header::ALLOW, &allow.join(", ")));
        }
    };
    record.endpoint = endpoint;

    // 6. Rate limits of the tenant's plan: the tenant's bucket, then the install's.
    let limits = platform.plan_defaults.for_install(&install.limits);
    let buckets = [
        ("", limits.tenant_rate, "this tenant", "tenant_requests_per_minute"),
        (install.extension_id.as_str(), limits.install_rate, "this extension", "install_requests_per_minute"),
    ];
    for (bucket, rate, whose, limit) in buckets {
        if let RateDecision::Limited { retry_after_secs } = gw.rate_limiter.check(&identity.tenant, bucket, rate).await
        {
            let per_minute = (rate.per_sec * 60.0).round();
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests for {whose}: plan {:?} allows {per_minute} a minute (limit {limit})",
                    limits.plan
                ),
            )
            .with_header(header::RETRY_AFTER, &retry_after_secs.to_string()));
        }
    }

    // 7. Body limit (a POST's body was read at 3b); then the guest's view of the request.
    let body = body.read(declared, cap).await.map_err(|_| too_large())?;

    // 8. Execute.
    let plan = plan_for(gw, &install, version.clone(), &identity, request_id, limits).await?;
    record.tally = Some(plan.tally.clone());
    let runtime = platform.runtime();
    let debug_ctx = runtime.sink(&plan.ids, plan.limits.debug_events);
    let url = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let request = ExecuteRequest {
        context: ContextData {
            request_id: Some(request_id.to_string()),
            tenant_id: install.tenant_id.clone(),
            extension_id: install.extension_id.clone(),
            install_id: Some(install.install_id.clone()),
            version_id: Some(version.id.clone()),
        },
        http: HttpRequest {
            method: method.as_str().to_string(),
            url,
            headers: guest_request_headers(&parts.headers, request_id, &install.tenant_id, &install.extension_id),
            body: (!body.is_empty()).then(|| body.to_vec()),
        },
    };
    let outcome = match runtime.execute(plan, request).await {
        Ok(o) => {
            record.tier = Some(o.tier.label());
            record.reused = o.reused;
            o
        }
        Err(e) => {
            record.status = exec_status(&e);
            return Err(exec_error_response(&e));
        }
    };

    // 9. Real HTTP response. A guest answering 5xx after its plan's storage quota refused a
    // write gets the refusal that names the limit instead.
    let guest = outcome.response;
    if let Some(what) = record.tally.as_ref().and_then(|t| t.first_quota()).filter(|_| guest.status >= 500) {
        record.status = "error";
        return Err(super::run::storage_quota_refusal(&what));
    }
    // 1xx would switch protocols or confuse the client; a guest answers with 200–599 only.
    let status = StatusCode::from_u16(guest.status).ok().filter(|s| (200..=599).contains(&s.as_u16()));
    let Some(status) = status else {
        record.status = "error";
        debug_ctx.host_warning(format!("handler returned an invalid HTTP status {}", guest.status));
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "extension_error",
            format!("the extension returned an invalid status {}", guest.status),
        ));
    };
    let body = guest.body.unwrap_or_default();
    if body.len() > cap {
        record.status = "error";
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "response_too_large",
            format!("the extension's response is over {cap} bytes"),
        ));
    }
    record.status = "ok";
    let mut response = Response::new(if method == Method::HEAD { Body::empty() } else { Body::from(body) });
    *response.status_mut() = status;
    *response.headers_mut() = client_response_headers(&guest.headers, &debug_ctx);
    Ok(response)
}

/// Count a request of a known install as usage; in Lambda (flush interval zero) write it
/// before the answer leaves, since the sandbox may be frozen or reaped right after.
async fn meter_request(meter: &crate::usage::UsageMeter, record: &Record, observed: &crate::metrics::Observation<'_>) {
    let mut counters = match &record.tally {
        Some(tally) => tally.counters(crate::engine::EPOCH_TICK),
        None => crate::usage::Counters { requests: 1, ..Default::default() },
    };
    counters.wall_us = observed.duration.as_micros() as u64;
    counters.warm_hits = u64::from(record.reused);
    if let Some(code) = observed.code {
        let by_code = if observed.http_status >= 500 { &mut counters.errors } else { &mut counters.refusals };
        by_code.insert(code.to_string(), 1);
    }
    meter.record(&record.tenant, &record.install, &record.extension, std::time::SystemTime::now(), &counters);
    if meter.flushes_each_request() {
        meter.flush_after_request().await;
    }
}

/// `/api/ext/{extensionId}/{*path}` → (extensionId, "/" + path).
fn split_route(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/ext/")?;
    let (ext, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if ext.is_empty() {
        return None;
    }
    Some((ext.to_string(), format!("/{tail}")))
}

/// A request body, read at most once, under the router's cap.
enum BodyState {
    Unread(Body),
    Read(axum::body::Bytes),
}

impl BodyState {
    /// The body's bytes; `Err` when it is (or says it is) over `cap`.
    async fn read(self, declared: Option<usize>, cap: usize) -> Result<axum::body::Bytes, ()> {
        match self {
            Self::Read(bytes) => Ok(bytes),
            Self::Unread(_) if declared.is_some_and(|n| n > cap) => Err(()),
            Self::Unread(body) => axum::body::to_bytes(body, cap).await.map_err(|_| ()),
        }
    }
}

/// Methods a `__method` override may name.
const OVERRIDE_METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The method a POST asks for with `__method`: the query parameter first, else a field of a
/// JSON object body. The parameter or field is removed; a GET drops the body, and a body left
/// as `{}` becomes empty.
fn method_override(query: &mut Option<String>, body: &mut axum::body::Bytes) -> Result<Option<Method>, ApiError> {
    let parse =
        |m: &str| {
            let upper = m.to_ascii_uppercase();
            OVERRIDE_METHODS.iter().find(|known| known.as_str() == upper).cloned().ok_or_else(|| {
                ApiError::bad_request(format!("__method {m:?} is not one of GET, POST, PUT, PATCH, DELETE"))
            })
        };
    let mut chosen = None;
    if let Some(q) = query.as_deref() {
        let (overrides, rest): (Vec<&str>, Vec<&str>) = q.split('&').partition(|p| p.starts_with("__method="));
        if let Some(p) = overrides.first() {
            chosen = Some(parse(&p["__method=".len()..])?);
            *query = (!rest.is_empty()).then(|| rest.join("&"));
        }
    }
    // Only a body that mentions the field is parsed (bodies may be megabytes of JSON).
    let mentions = body.windows(b"__method".len()).any(|w| w == b"__method");
    if let Some(Ok(serde_json::Value::Object(mut fields))) =
        mentions.then(|| serde_json::from_slice::<serde_json::Value>(body))
    {
        if let Some(m) = fields.remove("__method") {
            let m = m.as_str().ok_or_else(|| ApiError::bad_request("__method must be a string"))?;
            let from_body = parse(m)?;
            chosen = chosen.or(Some(from_body));
            *body = if fields.is_empty() {
                axum::body::Bytes::new()
            } else {
                serde_json::to_vec(&serde_json::Value::Object(fields)).expect("plain JSON").into()
            };
        }
    }
    if chosen == Some(Method::GET) {
        *body = axum::body::Bytes::new();
    }
    Ok(chosen)
}

/// A UI token reaches only the extension it was minted for.
pub(crate) fn check_ui_scope(identity: &Identity, extension_id: &str) -> Result<(), ApiError> {
    match &identity.ui_scope {
        Some(scope) if scope != extension_id => {
            Err(ApiError::forbidden("this UI token is scoped to another extension"))
        }
        _ => Ok(()),
    }
}

fn authorize(identity: &Identity, method: &Method, version: &VersionRecord) -> Result<(), ApiError> {
    let needed =
        if *method == Method::GET || *method == Method::HEAD { PERM_EXTENSION_READ } else { PERM_EXTENSION_WRITE };
    if !identity.has(needed) {
        return Err(ApiError::forbidden(format!("{needed} is required")));
    }
    if identity.user_type == "client" && !(version.manifest.allows_client_portal() && identity.client_id.is_some()) {
        return Err(ApiError::forbidden("this extension is not available in the client portal"));
    }
    Ok(())
}

/// Effective capabilities: granted ∩ declared by the installed version (an upgrade that drops
/// a capability drops the grant), plus the defaults.
pub(crate) fn effective_capabilities(install: &InstallRecord, version: &VersionRecord) -> BTreeSet<String> {
    let declared = &version.manifest.capabilities;
    install
        .granted
        .iter()
        .filter(|g| declared.contains(g) || g.as_str() == CAP_DEBUG_LOGS)
        .cloned()
        .chain(DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()))
        .collect()
}

/// Warm instance reuse for a call of `install`, when its version opts in and the deployment
/// allows it. The key holds everything an instance may have seen of the install, so any
/// change to it (version, grants, egress, config, secrets: each bumps the revision) starts
/// from fresh instances.
fn reuse_for(install: &InstallRecord, version: &VersionRecord, limits: &Limits) -> Option<Reuse> {
    let policy = version.manifest.instances.filter(|p| p.reuse && limits.warm_reuse)?;
    Some(Reuse {
        scope: [install.tenant_id.as_str(), &install.install_id].join("\u{0}"),
        key: [
            install.tenant_id.as_str(),
            &install.install_id,
            &version.id,
            &install.revision.to_string(),
            &install.config_version.to_string(),
            &install.secrets_version.to_string(),
        ]
        .join("\u{0}"),
        max_requests: policy.max_requests,
        max_age: Duration::from_secs(policy.max_age_seconds.into()),
    })
}

async fn plan_for(
    gw: &Gateway,
    install: &InstallRecord,
    version: Arc<VersionRecord>,
    identity: &Identity,
    request_id: &str,
    limits: Limits,
) -> Result<Plan, ApiError> {
    let platform = &gw.platform;
    let capabilities = effective_capabilities(install, &version);
    let secrets = match (&install.secrets_ref, capabilities.contains(CAP_SECRETS_GET)) {
        (Some(secret_ref), true) => {
            match platform
                .secrets
                .for_install(&install.install_id, secret_ref, &install.secrets_version.to_string())
                .await
            {
                Ok(s) => SecretsState::Ready(s),
                Err(SecretsError::Unavailable(m)) => {
                    tracing::warn!(install = %install.install_id, error = %m, "secrets backend unavailable");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "secrets_unavailable",
                        "the extension's secrets are temporarily unavailable",
                    ));
                }
                Err(SecretsError::NotFound) => SecretsState::None,
                Err(SecretsError::Refused(m)) => {
                    tracing::warn!(install = %install.install_id, reason = %m, "secret envelope refused");
                    return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "secret_decrypt_failed", m));
                }
                Err(e) => {
                    tracing::warn!(install = %install.install_id, error = %e, "secret envelope unusable");
                    SecretsState::Broken
                }
            }
        }
        _ => SecretsState::None,
    };
    let egress_allow = EgressAllow::from_entries(&install.egress);
    Ok(Plan {
        ids: ExecIds {
            request_id: request_id.to_string(),
            tenant_id: install.tenant_id.clone(),
            extension_id: install.extension_id.clone(),
            install_id: install.install_id.clone(),
            version_id: version.id.clone(),
            version: version.version.clone(),
            content_hash: version.content_hash.clone(),
        },
        config: Arc::new(install.config.clone()),
        config_version: install.config_version.to_string(),
        capabilities,
        user: Some(user_info(identity)),
        secrets,
        egress_allow,
        reuse: reuse_for(install, &version, &limits),
        limits,
        tally: Default::default(),
        version,
    })
}

fn user_info(identity: &Identity) -> UserInfo {
    UserInfo {
        user_id: identity.sub.clone(),
        user_email: identity.email.clone(),
        user_name: identity.name.clone(),
        user_type: identity.user_type.clone(),
        client_name: identity.client_name.clone(),
        client_id: identity.client_id.clone(),
        additional_fields: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_routes() {
        assert_eq!(split_route("/api/ext/com.acme/items/7"), Some(("com.acme".into(), "/items/7".into())));
        assert_eq!(split_route("/api/ext/com.acme"), Some(("com.acme".into(), "/".into())));
        assert_eq!(split_route("/api/ext/com.acme/"), Some(("com.acme".into(), "/".into())));
        assert_eq!(split_route("/api/ext/"), None);
    }
}
