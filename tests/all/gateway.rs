//! The tenant request path: happy paths of both examples and every refusal of the check
//! order (401/403/404/405/413), CORS, request ids, cross-tenant isolation.

use kelp_tests::*;
use serde_json::json;

const WAT: &str = "com.kelp.examples.wat-hello";
const JS: &str = "com.kelp.examples.js-notes";

#[tokio::test]
async fn serves_the_wat_example_by_name_registry_id_and_install_id() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let t = token("acme", RW);
    for ext in [WAT.to_string(), published.extension.id.clone(), install.install_id.clone()] {
        let r = kelp.get(&format!("/api/ext/{ext}/hello?x=1"), &t).await;
        assert_eq!(r.status(), 200, "addressed as {ext}");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(r.headers().contains_key("x-request-id"));
        assert_eq!(r.text().await.unwrap(), "hello from wat: /hello?x=1");
    }
}

#[tokio::test]
async fn serves_the_js_example_with_context_config_and_user() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let r = kelp.get(&format!("/api/ext/{JS}/hello?who=me"), &token("acme", RW)).await;
    assert_eq!(r.status(), 200);
    let body = json_body(r).await;
    assert_eq!(body["message"], "Hello, acme!");
    assert_eq!(body["context"]["tenantId"], "acme");
    assert_eq!(body["context"]["installId"], install.install_id.as_str(), "A1: install id is always set");
    assert_eq!(body["context"]["extensionId"], published.extension.id.as_str());
    assert_eq!(body["context"]["versionId"], published.version.id.as_str());
    assert_eq!(body["query"]["who"], "me");
    let user = json_body(kelp.get(&format!("/api/ext/{JS}/user"), &token("acme", RW)).await).await;
    assert_eq!(user["userId"], "user-1");
    assert_eq!(user["tenantId"], "acme");
}

#[tokio::test]
async fn user_data_needs_the_user_read_capability() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let mut granted = published.version.manifest.capabilities.clone();
    granted.retain(|c| c != "cap:user.read");
    kelp.install_granting(&published, "acme", granted, &[]).await;
    let r = kelp.get(&format!("/api/ext/{JS}/user"), &token("acme", RW)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(json_body(r).await["error"], "not-allowed");
}

async fn error_of(r: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = r.status().as_u16();
    let request_id = r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = json_body(r).await;
    assert_eq!(body["error"]["request_id"], request_id.as_str(), "error body carries the request id");
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string(), body)
}

#[tokio::test]
async fn refuses_missing_bad_and_expired_tokens_with_401() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let url = format!("{}/api/ext/{WAT}/hello", kelp.base);
    let (s, code, _) = error_of(kelp.client.get(&url).send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (401, "unauthenticated"));
    let (s, _, body) = error_of(kelp.client.get(&url).bearer_auth("not.a.jwt").send().await.unwrap()).await;
    assert_eq!(s, 401);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid token") && message.contains("not a JWT"), "{message}");
    assert!(!message.contains("JSON error"), "no library internals: {message}");
    let expired = token_with(json!({"sub": "u", "tenant": "acme", "perms": RW, "exp": 1000}));
    let (s, _, body) = error_of(kelp.get(&format!("/api/ext/{WAT}/hello"), &expired).await).await;
    assert_eq!(s, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    let forged = kelp_runtime::auth::mint_hs256(
        b"another-secret",
        &json!({"sub": "u", "tenant": "acme", "perms": RW, "exp": 9999999999u64}),
    );
    let (s, _, body) = error_of(kelp.get(&format!("/api/ext/{WAT}/hello"), &forged).await).await;
    assert_eq!(s, 401);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("another server") && message.contains("data directory"),
        "a hint, not InvalidSignature: {message}"
    );
}

#[tokio::test]
async fn refuses_missing_permissions_and_tenant_mismatch_with_403() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let read_only = token("acme", &["extension:read"]);
    assert_eq!(kelp.get(&format!("/api/ext/{WAT}/hello"), &read_only).await.status(), 200);
    let r =
        kelp.client.post(format!("{}/api/ext/{WAT}/hello", kelp.base)).bearer_auth(&read_only).send().await.unwrap();
    let (s, code, body) = error_of(r).await;
    assert_eq!((s, code.as_str()), (403, "forbidden"));
    assert!(body["error"]["message"].as_str().unwrap().contains("extension:write"));
    let none = token("acme", &[]);
    assert_eq!(error_of(kelp.get(&format!("/api/ext/{WAT}/hello"), &none).await).await.1, "forbidden");
    let r = kelp
        .client
        .get(format!("{}/api/ext/{WAT}/hello", kelp.base))
        .bearer_auth(token("acme", RW))
        .header("x-alga-tenant", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "tenant_mismatch");
}

#[tokio::test]
async fn client_portal_users_need_the_portal_hook_and_a_client_id() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let client =
        token_with(json!({"sub": "c1", "tenant": "acme", "perms": RW, "user_type": "client", "client_id": "cl-1"}));
    let (s, code, _) = error_of(kelp.get(&format!("/api/ext/{WAT}/hello"), &client).await).await;
    assert_eq!((s, code.as_str()), (403, "forbidden"), "wat-hello has no clientPortalMenu hook");
}

#[tokio::test]
async fn another_tenants_install_or_a_disabled_one_is_not_available() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    let acme = kelp.install(&published, "acme", &[]).await;
    let globex = token("globex", RW);
    for ext in [WAT.to_string(), acme.install_id.clone(), published.extension.id.clone(), "no.such.ext".into()] {
        let (s, code, _) = error_of(kelp.get(&format!("/api/ext/{ext}/hello"), &globex).await).await;
        assert_eq!((s, code.as_str()), (404, "extension_not_available"), "globex must not reach {ext}");
    }
    kelp_runtime::installs::update_install(&kelp.platform, "acme", &acme.install_id, |i| {
        i.enabled = false;
        Ok(())
    })
    .await
    .unwrap();
    let (s, code, _) = error_of(kelp.get(&format!("/api/ext/{WAT}/hello"), &token("acme", RW)).await).await;
    assert_eq!((s, code.as_str()), (404, "extension_not_available"));
}

#[tokio::test]
async fn enforces_manifest_endpoints_with_404_and_405() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let t = token("acme", RW);
    let (s, code, _) = error_of(kelp.get(&format!("/api/ext/{WAT}/nope"), &t).await).await;
    assert_eq!((s, code.as_str()), (404, "endpoint_not_found"));
    assert_eq!(kelp.get(&format!("/api/ext/{WAT}/hello/world"), &t).await.status(), 200, ":param segment");
    let r = kelp.client.delete(format!("{}/api/ext/{WAT}/hello", kelp.base)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    let (s, code, _) = error_of(r).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));
    let head = kelp.client.head(format!("{}/api/ext/{WAT}/hello", kelp.base)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD is served as GET");
    assert!(head.bytes().await.unwrap().is_empty());
    let r = kelp
        .client
        .request(reqwest::Method::from_bytes(b"TRACE").unwrap(), format!("{}/api/ext/{WAT}/hello", kelp.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn refuses_oversized_bodies_with_413() {
    let kelp = TestKelp::start_with(&[("KELP_MAX_BODY_BYTES", "1024")]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let url = format!("{}/api/ext/{WAT}/hello", kelp.base);
    let t = token("acme", RW);
    let ok = kelp.client.post(&url).bearer_auth(&t).body(vec![b'a'; 1024]).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let (s, code, _) =
        error_of(kelp.client.post(&url).bearer_auth(&t).body(vec![b'a'; 1025]).send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));
    // Chunked (no Content-Length) is capped too.
    let stream = futures_body(vec![b'a'; 4096]);
    let (s, _, _) = error_of(kelp.client.post(&url).bearer_auth(&t).body(stream).send().await.unwrap()).await;
    assert_eq!(s, 413);
}

/// A body sent chunked, without Content-Length.
fn futures_body(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn answers_preflight_for_allowed_origins_only_and_echoes_request_ids() {
    let kelp = TestKelp::start_with(&[("KELP_CORS_ORIGINS", "https://app.example.com")]).await;
    let url = format!("{}/api/ext/{WAT}/hello", kelp.base);
    let r = kelp
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let r = kelp
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none(), "never echo an arbitrary origin");
    let r = kelp.client.get(&url).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = kelp.client.get(&url).header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn rate_limits_per_tenant_and_extension() {
    let kelp = TestKelp::start_with(&[("KELP_RATE_BURST", "3"), ("KELP_RATE_PER_SEC", "0.5")]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    kelp.install(&published, "globex", &[]).await;
    let t = token("acme", RW);
    for _ in 0..3 {
        assert_eq!(kelp.get(&format!("/api/ext/{WAT}/hello"), &t).await.status(), 200);
    }
    let r = kelp.get(&format!("/api/ext/{WAT}/hello"), &t).await;
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(error_of(r).await.1, "rate_limited");
    assert_eq!(
        kelp.get(&format!("/api/ext/{WAT}/hello"), &token("globex", RW)).await.status(),
        200,
        "another tenant has its own bucket"
    );
}

#[tokio::test]
async fn execution_records_and_refusals_reach_the_audit_log() {
    let kelp = TestKelp::start_with(&[("KELP_AUDIT_EXECUTIONS", "true")]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    assert_eq!(kelp.get(&format!("/api/ext/{WAT}/hello"), &token("acme", RW)).await.status(), 200);
    let denied = kelp
        .client
        .post(format!("{}/api/ext/{WAT}/hello", kelp.base))
        .bearer_auth(token("acme", &["extension:read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let rows = kelp
        .platform
        .audit
        .query(
            &kelp_runtime::stores::AuditFilter { tenant_id: Some("acme".into()), ..Default::default() },
            &Default::default(),
        )
        .await
        .unwrap();
    let exec =
        rows.items.iter().find(|r| r.action == "extension.execute" && r.outcome == "ok").expect("an execution record");
    assert_eq!(exec.target.as_deref(), Some(install.install_id.as_str()));
    assert_eq!(exec.details["endpoint"], "/hello");
    assert_eq!(exec.details["http_status"], 200);
    assert!(rows.items.iter().any(|r| r.action == "access.denied" && r.actor == "user-1"), "the 403 is audited");
}

#[tokio::test]
async fn header_allow_lists_hold_both_ways() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let r = kelp
        .client
        .post(format!("{}/api/ext/test.echo/echo?x=1", kelp.base))
        .bearer_auth(token("acme", RW))
        .header("cookie", "secret=1")
        .header("x-custom", "nope")
        .header("user-agent", "kelp-test")
        .header("x-idempotency-key", "idem-1")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-ext-trace"], "abc");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.get("set-cookie").is_none(), "never set-cookie");
    assert!(h.get("x-powered-by").is_none(), "not on the allow-list");
    assert!(h.get("x-ext-bad").is_none(), "invalid value dropped, no panic");
    let echo = json_body(r).await;
    let seen = echo["headers"].as_object().unwrap();
    assert!(
        seen.get("authorization").is_none() && seen.get("cookie").is_none() && seen.get("x-custom").is_none(),
        "{seen:?}"
    );
    assert_eq!(seen["user-agent"], "kelp-test");
    assert_eq!(seen["x-idempotency-key"], "idem-1");
    assert_eq!(seen["x-alga-tenant"], "acme");
    assert_eq!(seen["x-alga-extension"], published.extension.id.as_str());
    assert_eq!(echo["url"], "/echo?x=1");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["context"]["installId"], install.install_id.as_str());
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 50).await.unwrap();
    assert!(
        events.iter().any(|e| e.event.message.contains("x-powered-by") && e.event.level == "warn"),
        "dropped headers are reported"
    );
    // The guest's status is the HTTP status; an impossible one is a 502.
    assert_eq!(kelp.get("/api/ext/test.echo/echo?status=418", &token("acme", RW)).await.status(), 418);
    let bad = kelp.get("/api/ext/test.echo/echo?status=1000", &token("acme", RW)).await;
    assert_eq!(bad.status(), 502);
    assert_eq!(json_body(bad).await["error"]["code"], "extension_error");
    for informational in [101, 199] {
        let r = kelp.get(&format!("/api/ext/test.echo/echo?status={informational}"), &token("acme", RW)).await;
        assert_eq!(r.status(), 502, "a guest status of {informational} never switches protocols");
    }
    assert_eq!(kelp.get("/api/ext/test.echo/echo?status=599", &token("acme", RW)).await.status(), 599);
}

#[tokio::test]
async fn a_guest_flooding_response_headers_gets_a_capped_answer_and_one_warning() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    kelp.install(&published, "acme", &[]).await;
    let started = std::time::Instant::now();
    let r = kelp.get("/api/ext/test.echo/echo?headers=30000", &token("acme", RW)).await;
    assert_eq!(r.status(), 200, "no panic, no dropped connection");
    let flooded = r.headers().keys().filter(|n| n.as_str().starts_with("x-ext-h")).count();
    assert!(flooded <= kelp_runtime::gateway::headers::MAX_RESPONSE_HEADERS, "{flooded} guest headers passed");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered within the limit plus grace: {:?}",
        started.elapsed()
    );
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 1000).await.unwrap();
    let warnings: Vec<_> = events.iter().filter(|e| e.event.message.starts_with("response headers dropped")).collect();
    assert_eq!(warnings.len(), 1, "one summary warning per response");
    assert!(events.len() < 20, "{} events for one flooded response", events.len());
}

#[tokio::test]
async fn client_portal_users_are_admitted_with_the_hook_and_a_client_id() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    kelp.install(&published, "acme", &[]).await;
    let with_id =
        token_with(json!({"sub": "c1", "tenant": "acme", "perms": RW, "user_type": "client", "client_id": "cl-1"}));
    assert_eq!(kelp.get("/api/ext/test.echo/echo", &with_id).await.status(), 200);
    let without = token_with(json!({"sub": "c1", "tenant": "acme", "perms": RW, "user_type": "client"}));
    assert_eq!(
        kelp.get("/api/ext/test.echo/echo", &without).await.status(),
        403,
        "a client-portal user needs a client_id"
    );
}

#[tokio::test]
async fn a_post_may_name_its_method_as_algas_proxy_allows() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    kelp.install(&published, "acme", &[]).await;
    let post = |path: &str, body: &'static str, perms: &'static [&'static str]| {
        kelp.client
            .post(format!("{}/api/ext/test.echo{path}", kelp.base))
            .bearer_auth(token("acme", perms))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // In the query: the method is GET, the body is dropped, the parameter is gone.
    let r = post("/echo?x=1&__method=get", r#"{"a":1}"#, RW).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo = json_body(r).await;
    assert_eq!((echo["method"].as_str(), echo["url"].as_str()), (Some("GET"), Some("/echo?x=1")));
    assert_eq!(echo["body"], serde_json::Value::Null);
    // In the body: the field is removed; RBAC and the endpoint policy see the named method.
    let r = post("/echo", r#"{"__method":"GET"}"#, &["extension:read"]).await.unwrap();
    assert_eq!(r.status(), 200, "a reader may POST a GET");
    assert_eq!(json_body(r).await["method"], "GET");
    let r = post("/echo", r#"{"__method":"PUT","keep":true}"#, RW).await.unwrap();
    assert_eq!(r.status(), 405, "PUT /echo is not an endpoint of the manifest");
    let r = post("/echo?__method=TRACE", "", RW).await.unwrap();
    assert_eq!(r.status(), 400);
    // Without an override a POST is a POST, body untouched.
    let echo = json_body(post("/echo", r#"{"b":2}"#, RW).await.unwrap()).await;
    assert_eq!((echo["method"].as_str(), echo["body"].as_str()), (Some("POST"), Some(r#"{"b":2}"#)));
}

#[tokio::test]
async fn an_uncaught_guest_exception_is_one_clean_line_with_its_place_and_a_clear_client_code() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    kelp.install(&published, "acme", &[]).await;
    let r = kelp.get("/api/ext/test.echo/echo?throw=1", &token("acme", RW)).await;
    assert_eq!(r.status(), 500);
    let body = json_body(r).await;
    assert_eq!(body["error"]["code"], "extension_exception", "{body}");
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 50).await.unwrap();
    let failed = events
        .iter()
        .map(|e| e.event.message.as_str())
        .find(|m| m.starts_with("execution failed"))
        .expect("the failure is in the debug stream");
    assert!(
        failed.starts_with(
            "execution failed: uncaught exception: can't access property \"explode\", thing is undefined (at "
        ) && failed.contains("index.js:18:")
            && !failed.contains('\n')
            && !failed.contains("wasm function"),
        "{failed}"
    );
    assert!(events.iter().all(|e| !e.event.message.contains("mozalloc")), "the runtime's abort noise is dropped");
    // The extension still serves the next request (a fresh instance).
    assert_eq!(kelp.get("/api/ext/test.echo/echo", &token("acme", RW)).await.status(), 200);
}

#[tokio::test]
async fn every_request_of_an_install_leaves_one_line_in_its_debug_stream_with_status_duration_and_refusal() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("echo")).await;
    kelp.install(&published, "acme", &[]).await;
    assert_eq!(kelp.get("/api/ext/test.echo/echo?status=201", &token("acme", RW)).await.status(), 201);
    assert_eq!(kelp.get("/api/ext/test.echo/nope", &token("acme", RW)).await.status(), 404);
    let lines: Vec<(String, String)> = kelp
        .platform
        .debug
        .backlog("acme", &published.extension.id, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.stream == "request")
        .inspect(|e| assert_eq!(e.event.version, "1.0.0", "events name the version by semver too"))
        .map(|e| (e.event.level.clone(), e.event.message.clone()))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, "info");
    assert!(lines[0].1.starts_with("GET /echo → 201 in ") && lines[0].1.ends_with(" ms"), "{lines:?}");
    assert_eq!(lines[1].0, "warn");
    assert!(
        lines[1].1.starts_with("GET /nope → 404 in ")
            && lines[1].1.ends_with("(endpoint_not_found: GET /nope is not an endpoint of this extension)"),
        "{lines:?}"
    );
}
