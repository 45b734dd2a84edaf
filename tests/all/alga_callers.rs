//! Alga's two callers of its runner, replayed against Kelp byte for byte as Alga's source sends
//! them, and their answers read the way each caller reads them:
//!
//! - the main `/api/ext/{extensionId}/{...path}` route (server/src/app/api/ext/...): no service
//!   token; headers `content-type`, `x-request-id`, `x-alga-tenant`, `x-alga-extension` and,
//!   for anything but GET, `x-idempotency-key`. It answers 502 when the runner's HTTP status is
//!   4xx/5xx or its body is empty or not JSON; otherwise the body's `status` and `body_b64`.
//! - the ext-proxy (packages/product-ext-proxy): `x-runner-service-token` plus `x-ext-*`
//!   headers; a non-2xx HTTP status is an error, else `status`, allow-listed `headers` and
//!   `body_b64` of the body.

use base64::Engine as _;
use kelp_runtime::publish::Published;
use kelp_tests::*;
use serde_json::{json, Value};

const SERVICE_TOKEN: &str = "runner-token-for-alga-callers";

/// The user object of Alga's `/api/ext` route (`UserInfo` there: `company_name`, no client id
/// for internal users).
fn api_ext_user() -> Value {
    json!({"user_id": "u-42", "user_email": "ada@acme.test", "user_name": "Ada Lovelace", "company_name": "Acme", "user_type": "internal"})
}

/// What Alga's `/api/ext` route posts to `{RUNNER_BASE_URL}/v1/execute`.
async fn api_ext_call(
    kelp: &TestKelp,
    p: &Published,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> reqwest::Response {
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    // filterRequestHeaders: the allow-listed browser headers, then the routing pair.
    let mut forwarded = json!({"accept": "application/json", "user-agent": "Mozilla/5.0", "x-request-id": request_id,
                               "x-alga-tenant": "acme", "x-alga-extension": p.extension.id});
    if body.is_some() {
        forwarded["content-type"] = json!("application/json");
    }
    let execute = json!({
        "context": {
            "request_id": request_id, "tenant_id": "acme", "extension_id": p.extension.id, "install_id": "alga-install-1",
            "content_hash": p.version.content_hash, "version_id": "alga-version-1", "config": {"greeting": "Hej"},
        },
        "http": {"method": method, "path": path, "query": {"from": "alga"}, "headers": forwarded,
                 "body_b64": body.map(|b| base64::engine::general_purpose::STANDARD.encode(b))},
        "limits": {"timeout_ms": 30000},
        "providers": ["cap:context.read", "cap:log.emit", "cap:storage.kv", "cap:user.read"],
        "user": api_ext_user(),
    });
    let mut request = kelp
        .client
        .post(format!("{}/v1/execute", kelp.base))
        .header("content-type", "application/json")
        .header("x-request-id", &request_id)
        .header("x-alga-tenant", "acme")
        .header("x-alga-extension", &p.extension.id);
    if method != "GET" {
        // `req.headers.get('x-idempotency-key') || requestId`
        request = request.header("x-idempotency-key", &request_id);
    }
    request.body(execute.to_string()).send().await.unwrap()
}

/// How Alga's `/api/ext` route turns the runner's answer into its response: (status, body).
async fn as_api_ext_reads_it(response: reqwest::Response) -> (u16, Vec<u8>) {
    let http_status = response.status().as_u16();
    let raw = response.text().await.unwrap();
    let bad_gateway = (502, br#"{"error":"bad_gateway"}"#.to_vec());
    if raw.is_empty() {
        return bad_gateway;
    }
    let Ok(payload) = serde_json::from_str::<Value>(&raw) else { return bad_gateway };
    if http_status >= 400 {
        return bad_gateway;
    }
    let status = payload["status"].as_u64().map(|s| s as u16).unwrap_or(http_status);
    let body = payload["body_b64"]
        .as_str()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        .unwrap_or_default();
    (status, body)
}

async fn kelp_with_notes(extra: &[(&str, &str)]) -> (TestKelp, Published) {
    let kelp = TestKelp::start_with(extra).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    (kelp, published)
}

#[tokio::test]
async fn algas_api_ext_route_gets_the_guests_answer_on_a_private_route_without_a_token() {
    let (kelp, p) = kelp_with_notes(&[("KELP_RUNNER_AUTH", "private-network")]).await;

    let (status, body) = as_api_ext_reads_it(api_ext_call(&kelp, &p, "GET", "/hello", None).await).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let hello: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(hello["message"], "Hej, acme!", "Alga's config reaches the guest");
    assert_eq!(hello["context"]["installId"], "alga-install-1");
    assert_eq!(hello["query"]["from"], "alga");

    let (status, body) =
        as_api_ext_reads_it(api_ext_call(&kelp, &p, "PUT", "/notes/n1", Some(r#"{"text":"from Alga"}"#)).await).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = as_api_ext_reads_it(api_ext_call(&kelp, &p, "GET", "/notes/n1", None).await).await;
    assert_eq!((status, serde_json::from_slice::<Value>(&body).unwrap()["text"].clone()), (200, json!("from Alga")));

    let (status, _) = as_api_ext_reads_it(api_ext_call(&kelp, &p, "GET", "/notes/none", None).await).await;
    assert_eq!(status, 404, "the guest's own 404 reaches Alga's client, not a 502");
    let (status, _) = as_api_ext_reads_it(api_ext_call(&kelp, &p, "GET", "/user", None).await).await;
    assert_eq!(status, 200, "the user Alga sends is the guest's user");
}

#[tokio::test]
async fn in_the_default_token_mode_algas_api_ext_route_is_refused() {
    let (kelp, p) = kelp_with_notes(&[("KELP_RUNNER_SERVICE_TOKEN", SERVICE_TOKEN)]).await;
    let response = api_ext_call(&kelp, &p, "GET", "/hello", None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(as_api_ext_reads_it(response).await.0, 502, "what Alga's users see: the reason for the private mode");
}

/// The private mode trusts the peer of the connection, never the listener's address or the
/// `Host`, and never a request a proxy forwarded: behind nginx or an ALB on a trusted address,
/// a forwarded tokenless call is refused; a peer outside `KELP_RUNNER_TRUSTED_NETWORKS` is
/// refused whatever listener it reached.
#[tokio::test]
async fn the_private_mode_trusts_configured_peers_and_no_forwarded_request() {
    let (kelp, p) = kelp_with_notes(&[("KELP_RUNNER_AUTH", "private-network")]).await;
    let forwarded = |name: &'static str, value: &'static str| {
        let p = &p;
        let kelp = &kelp;
        async move {
            let execute = json!({"context": {"tenant_id": "acme", "extension_id": p.extension.id,
                                            "content_hash": p.version.content_hash},
                                 "http": {"method": "GET", "path": "/hello", "query": {}, "headers": {}}});
            kelp.client
                .post(format!("{}/v1/execute", kelp.base))
                .header("x-alga-tenant", "acme")
                .header("x-alga-extension", &p.extension.id)
                .header(name, value)
                .body(execute.to_string())
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        forwarded("host", "attacker.example").await,
        200,
        "a loopback peer (trusted by default); Host says nothing"
    );
    assert_eq!(forwarded("x-forwarded-for", "203.0.113.7").await, 401, "relayed by a proxy");
    assert_eq!(forwarded("forwarded", "for=203.0.113.7;proto=https").await, 401);
    assert_eq!(forwarded("x-real-ip", "203.0.113.7").await, 401);

    let (elsewhere, p) =
        kelp_with_notes(&[("KELP_RUNNER_AUTH", "private-network"), ("KELP_RUNNER_TRUSTED_NETWORKS", "10.0.0.0/8")])
            .await;
    let response = api_ext_call(&elsewhere, &p, "GET", "/hello", None).await;
    assert_eq!(response.status(), 401, "loopback is not trusted when the list does not name it");
    let bad = [("KELP_RUNNER_AUTH", "private-network"), ("KELP_RUNNER_TRUSTED_NETWORKS", "10.0.0.0/33")];
    let env = bad.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert!(kelp_runtime::Settings::from_map(&env).unwrap_err().to_string().contains("KELP_RUNNER_TRUSTED_NETWORKS"));
}

#[tokio::test]
async fn algas_ext_proxy_gets_the_guests_answer_with_its_token() {
    let (kelp, p) = kelp_with_notes(&[("KELP_RUNNER_SERVICE_TOKEN", SERVICE_TOKEN)]).await;
    let request_id = "ext-proxy-req-1";
    // handler.ts: execReq, with the runner backend's headers and the caller's extra ones.
    let execute = json!({
        "context": {"request_id": request_id, "tenant_id": "acme", "extension_id": p.extension.id,
                    "install_id": "alga-install-1", "version_id": "alga-version-1",
                    "content_hash": p.version.content_hash, "config": {"greeting": "Salut"}},
        "http": {"method": "GET", "url": "/hello", "path": "/hello", "query": {},
                 "headers": {"accept": "*/*", "x-request-id": request_id, "x-alga-tenant": "acme", "x-alga-extension": p.extension.id}},
        "limits": {"timeout_ms": 5000},
        "providers": ["cap:context.read", "cap:secrets.get"],
        "secret_envelope": {"ciphertext_b64": base64::engine::general_purpose::STANDARD.encode(r#"{"api_key":"k-123"}"#)},
        "endpoint": "ui-proxy:/hello",
        "user": {"user_id": "u-7", "user_email": "c@client.test", "user_name": "Client User", "user_type": "client",
                 "client_name": "Client Co", "client_id": "client-9", "additional_fields": {"portal": "yes"}},
    });
    let response = kelp
        .client
        .post(format!("{}/v1/execute", kelp.base))
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .header("x-runner-service-token", SERVICE_TOKEN)
        .header("x-alga-tenant", "acme")
        .header("x-alga-extension", &p.extension.id)
        .header("x-ext-install-id", "alga-install-1")
        .header("x-ext-version-id", "alga-version-1")
        .header("x-ext-registry-id", &p.extension.id)
        .header("x-ext-config-version", "4")
        .header("x-ext-secrets-version", "2")
        .body(execute.to_string())
        .send()
        .await
        .unwrap();
    // runner-backend.ts: a non-2xx status is a RunnerRequestError.
    assert!(response.status().is_success(), "{}", response.status());
    let payload: Value = response.json().await.unwrap();
    let status = payload["status"].as_u64().unwrap_or(200);
    let allowed = ["content-type", "cache-control", "x-ext-request-id", "x-ext-warning"];
    let headers: Vec<&String> =
        payload["headers"].as_object().unwrap().keys().filter(|k| allowed.contains(&k.as_str())).collect();
    let body = base64::engine::general_purpose::STANDARD.decode(payload["body_b64"].as_str().unwrap()).unwrap();
    let hello: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers, ["content-type"]);
    assert_eq!(hello["message"], "Salut, acme!");
    assert_eq!(hello["configVersion"], "4", "x-ext-config-version reaches the guest");
    assert_eq!(hello["context"]["requestId"], request_id);
}
