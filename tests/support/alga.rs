//! A fake Alga server for `KELP_HOST_API_PROTOCOL=alga`, written from Alga's internal routes
//! (ee/server/src/app/api/internal/ext-*/install/[installId]/route.ts and the services they
//! call): the `x-runner-auth` check, one `operation` per POST, camelCase answers, Alga's status
//! codes (401, 403, 404, 409, 400 with `{success: false}`, 429), its storage cursor, and its
//! UI proxy target.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{any, post};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

/// The `x-runner-auth` token the fake accepts.
pub const RUNNER_AUTH: &str = "alga-runner-storage-token";

/// What the fake holds and saw.
#[derive(Default)]
pub struct Alga {
    /// (install, namespace, key) → (value, metadata, revision).
    pub storage: BTreeMap<(String, String, String), (Value, Value, u64)>,
    pub schedules: BTreeMap<String, Value>,
    /// (service, install, body) of every authenticated internal call.
    pub calls: Vec<(String, String, Value)>,
    /// (method, path?query, headers, body) of every ui-proxy request.
    pub proxied: Vec<(String, String, HeaderMap, String)>,
    /// UI domain → `{tenant_id, extension_id, content_hash}` for `lookup-by-host`.
    pub hosts: BTreeMap<String, Value>,
}

/// The `x-api-key` Alga's `lookup-by-host` accepts (its `ALGA_AUTH_KEY`).
pub const ALGA_AUTH_KEY: &str = "alga-auth-key-for-tests";

/// The fake, shared with its server task.
#[derive(Clone, Default)]
pub struct FakeAlga {
    /// Its state.
    pub state: Arc<Mutex<Alga>>,
    /// While set, internal calls answer after 3 s.
    pub slow: Arc<AtomicBool>,
}

type Answer = (StatusCode, Json<Value>);

fn answer(status: u16, body: Value) -> Answer {
    (StatusCode::from_u16(status).unwrap(), Json(body))
}

async fn internal(
    State(alga): State<FakeAlga>,
    Path((service, install)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    if headers.get("x-runner-auth").and_then(|v| v.to_str().ok()) != Some(RUNNER_AUTH) {
        return answer(401, json!({"error": "Invalid runner token", "code": "UNAUTHORIZED"}));
    }
    if alga.slow.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let op = body["operation"].as_str().unwrap_or_default().to_string();
    let mut state = alga.state.lock().unwrap();
    state.calls.push((service.clone(), install.clone(), body.clone()));
    match service.as_str() {
        "ext-storage" => storage(&mut state, &install, &op, &body),
        "ext-scheduler" => scheduler(&mut state, &op, &body),
        "ext-invoicing" if op == "createManualInvoice" => answer(
            200,
            json!({"success": true, "invoice": {"invoiceId": "inv-1", "invoiceNumber": "INV-0001", "status": "draft",
                   "subtotal": 109.0, "tax": 0, "total": 109.0}}),
        ),
        "ext-clients" => match op.as_str() {
            "list" => answer(
                200,
                json!({"items": [{"clientId": "c1", "clientName": "Acme Corp", "clientType": "company", "isInactive": false,
                        "defaultCurrencyCode": "USD", "accountManagerId": null, "accountManagerName": null, "billingEmail": "ap@acme.test"}],
                       "totalCount": 31, "page": body["input"]["page"], "pageSize": body["input"]["pageSize"]}),
            ),
            _ if body["input"]["clientId"] == "c1" => {
                answer(200, json!({"item": {"clientId": "c1", "clientName": "Acme Corp", "isInactive": false}}))
            }
            _ => answer(200, json!({"item": null})),
        },
        "ext-services" => match op.as_str() {
            "list" => answer(
                200,
                json!({"items": [{"serviceId": "s1", "serviceName": "Support", "itemKind": "service", "billingMethod": "hourly",
                        "serviceTypeId": "t1", "serviceTypeName": "Labor", "defaultRate": 120.5, "unitOfMeasure": "hour",
                        "isActive": true, "sku": null}], "totalCount": 1, "page": 1, "pageSize": 5}),
            ),
            _ if body["input"]["serviceId"] == "weird" => answer(
                200,
                json!({"item": {"serviceId": "weird", "serviceName": "?", "itemKind": "bundle", "billingMethod": "fixed"}}),
            ),
            _ => answer(200, json!({"item": null})),
        },
        _ => answer(400, json!({"error": "Unsupported operation"})),
    }
}

/// Alga's storage service: revisions, `ifRevision`, `{success}` deletes, keys after the cursor.
fn storage(state: &mut Alga, install: &str, op: &str, body: &Value) -> Answer {
    let ns = body["namespace"].as_str().unwrap_or_default().to_string();
    let key = body["key"].as_str().unwrap_or_default().to_string();
    let id = (install.to_string(), ns.clone(), key.clone());
    match op {
        "put" => {
            if body["value"].as_str().is_some_and(|v| v.len() > 1024) {
                return answer(400, json!({"error": "value exceeds 1024 bytes", "code": "LIMIT_EXCEEDED"}));
            }
            let current = state.storage.get(&id).map(|e| e.2);
            if let Some(expected) = body["ifRevision"].as_u64() {
                if current != Some(expected) {
                    return answer(
                        409,
                        json!({"error": "ifRevision did not match stored revision", "code": "REVISION_MISMATCH"}),
                    );
                }
            }
            let revision = current.unwrap_or(0) + 1;
            state.storage.insert(id, (body["value"].clone(), body["metadata"].clone(), revision));
            answer(200, json!({"namespace": ns, "key": key, "revision": revision, "ttlExpiresAt": null}))
        }
        "get" => match state.storage.get(&id) {
            Some((value, metadata, revision)) => answer(
                200,
                json!({"namespace": ns, "key": key, "revision": revision, "value": value, "metadata": metadata}),
            ),
            None => answer(404, json!({"error": "record not found", "code": "NOT_FOUND"})),
        },
        "delete" => answer(200, json!({"success": state.storage.remove(&id).is_some()})),
        "list" => {
            let after = body["cursor"].as_str().map(|c| {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).expect("Alga's cursor");
                serde_json::from_slice::<Value>(&bytes).unwrap()["key"].as_str().unwrap().to_string()
            });
            let limit = body["limit"].as_u64().unwrap_or(25) as usize;
            let items: Vec<Value> = state
                .storage
                .iter()
                .filter(|((i, n, k), _)| i == install && *n == ns && after.as_ref().is_none_or(|a| k > a))
                .take(limit)
                .map(|((_, n, k), (v, m, r))| json!({"namespace": n, "key": k, "revision": r, "value": v, "metadata": m}))
                .collect();
            answer(200, json!({"items": items, "nextCursor": null}))
        }
        _ => answer(400, json!({"error": "Unsupported operation"})),
    }
}

fn scheduler(state: &mut Alga, op: &str, body: &Value) -> Answer {
    let id = body["scheduleId"].as_str().unwrap_or_default().to_string();
    match op {
        "list" => answer(200, json!({"schedules": state.schedules.values().cloned().collect::<Vec<_>>()})),
        "get" => answer(200, json!({"schedule": state.schedules.get(&id)})),
        "create" if body["cron"] == "quota" => answer(429, json!({"error": "Rate limit exceeded"})),
        "create" if body["cron"] == "bad" => answer(
            400,
            json!({"success": false, "error": "Invalid cron expression", "fieldErrors": {"cron": "5 fields expected"}}),
        ),
        "create" => {
            let id = format!("sch-{}", state.schedules.len() + 1);
            state.schedules.insert(
                id.clone(),
                json!({"id": id, "endpointPath": body["endpoint"], "endpointMethod": "GET", "name": body["name"],
                       "cron": body["cron"], "timezone": body["timezone"], "enabled": body["enabled"], "payload": body["payload"],
                       "lastRunAt": null, "lastRunStatus": null, "lastError": null, "createdAt": "2026-12-02T00:00:00Z"}),
            );
            answer(201, json!({"success": true, "scheduleId": id}))
        }
        "update" => match state.schedules.get_mut(&id) {
            Some(s) => {
                for field in ["cron", "enabled"] {
                    if let Some(v) = body.get(field) {
                        s[field] = v.clone();
                    }
                }
                answer(200, json!({"success": true}))
            }
            None => answer(400, json!({"success": false, "error": "Schedule not found"})),
        },
        "delete" => answer(200, json!({"success": state.schedules.remove(&id).is_some()})),
        _ => answer(400, json!({"error": "Unsupported operation"})),
    }
}

/// Alga's UI proxy target: echoes what it was sent; `/missing` is a 404.
async fn ui_proxy(
    State(alga): State<FakeAlga>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Answer {
    let path = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    alga.state.lock().unwrap().proxied.push((method.to_string(), path.clone(), headers, body.clone()));
    if path.contains("/missing") {
        return answer(404, json!({"error": "no such route"}));
    }
    answer(200, json!({"method": method.as_str(), "path": path, "body": body}))
}

/// `GET /api/installs/lookup-by-host?host=`: Alga's answer for a per-install UI domain.
async fn lookup_by_host(
    State(alga): State<FakeAlga>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Answer {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(ALGA_AUTH_KEY) {
        return answer(401, json!({"error": "unauthorized"}));
    }
    let host = q.get("host").cloned().unwrap_or_default();
    match alga.state.lock().unwrap().hosts.get(&host) {
        Some(found) => answer(200, found.clone()),
        None => answer(404, json!({"error": "not found"})),
    }
}

/// Start the fake on a loopback port: its base URL (`/api/internal/...`, `/ui/...`).
pub async fn fake_alga() -> (String, FakeAlga) {
    let alga = FakeAlga::default();
    let app = axum::Router::new()
        .route("/api/internal/{service}/install/{install}", post(internal))
        .route("/ui/{*rest}", any(ui_proxy))
        .route("/api/installs/lookup-by-host", axum::routing::get(lookup_by_host))
        .with_state(alga.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, alga)
}
