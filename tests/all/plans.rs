//! Tenant plans through the real gateway and admin API: each tenant runs under its plan's
//! deadline, memory, request rates, egress and storage quotas; a plan change (or a new
//! assignment) applies on the next request; an install's own limits only narrow.

use kelp_tests::*;
use serde_json::{json, Value};

const OPS: &[&str] = &["platform:ops"];

/// An admin call as an operator: (status, body).
async fn admin(kelp: &TestKelp, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = kelp
        .client
        .request(method, format!("{}{path}", kelp.base))
        .bearer_auth(token("ops", OPS))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), json_body(r).await)
}

async fn put_plan(kelp: &TestKelp, name: &str, limits: Value) {
    let (status, body) =
        admin(kelp, reqwest::Method::PUT, &format!("/admin/plans/{name}"), json!({"limits": limits})).await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

async fn assign(kelp: &TestKelp, tenant: &str, plan: &str) -> Value {
    let (status, body) =
        admin(kelp, reqwest::Method::PUT, &format!("/admin/tenants/{tenant}/plan"), json!({"plan": plan})).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// GET an extension's path as `tenant`: (status, error code or "", body).
async fn call(kelp: &TestKelp, tenant: &str, path: &str) -> (u16, String, Value) {
    let r = kelp.get(path, &token(tenant, RW)).await;
    let status = r.status().as_u16();
    // The WAT guests answer plain text; refusals are JSON.
    let body = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string(), body)
}

/// A guest that counts to 200 million in a global: a few hundred milliseconds of CPU.
fn busy_guest() -> std::path::PathBuf {
    staged_wat_with(
        "test.plans-busy",
        "(global $n (mut i32) (i32.const 0))",
        "(global.set $n (i32.const 0))
         (loop $more
           (global.set $n (i32.add (global.get $n) (i32.const 1)))
           (br_if $more (i32.lt_u (global.get $n) (i32.const 200000000))))",
    )
}

/// A guest that grows its memory by 40 MiB once.
fn growing_guest() -> std::path::PathBuf {
    staged_wat("test.plans-grow", "(drop (memory.grow (i32.const 640)))")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_runs_under_its_plans_deadline_and_memory_and_a_change_applies_on_the_next_request() {
    let kelp = TestKelp::start().await;
    let busy = kelp.publish(&busy_guest()).await;
    let grow = kelp.publish(&growing_guest()).await;
    for tenant in ["small-co", "big-co"] {
        kelp.install(&busy, tenant, &[]).await;
        kelp.install(&grow, tenant, &[]).await;
    }
    put_plan(&kelp, "small", json!({"timeout_ms": 20, "memory_mb": 16})).await;
    put_plan(&kelp, "big", json!({"timeout_ms": 10000, "memory_mb": 64})).await;
    assert_eq!(assign(&kelp, "small-co", "small").await["installs_updated"], 2);
    assign(&kelp, "big-co", "big").await;

    let (status, code, body) = call(&kelp, "small-co", "/api/ext/test.plans-busy/run").await;
    assert_eq!((status, code.as_str()), (504, "extension_timeout"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("20 ms"), "{body}");
    let (status, _, body) = call(&kelp, "big-co", "/api/ext/test.plans-busy/run").await;
    assert_eq!(status, 200, "the same guest finishes on the large plan: {body}");

    let (status, code, body) = call(&kelp, "small-co", "/api/ext/test.plans-grow/run").await;
    assert_eq!((status, code.as_str()), (500, "extension_memory_limit"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("16 MiB"), "{body}");
    assert_eq!(call(&kelp, "big-co", "/api/ext/test.plans-grow/run").await.0, 200);

    // A new assignment: the next request runs under it.
    assign(&kelp, "small-co", "big").await;
    assert_eq!(call(&kelp, "small-co", "/api/ext/test.plans-busy/run").await.0, 200);
    // A plan change reaches every tenant on it at its next request.
    put_plan(&kelp, "big", json!({"timeout_ms": 20})).await;
    for tenant in ["small-co", "big-co"] {
        assert_eq!(call(&kelp, tenant, "/api/ext/test.plans-busy/run").await.1, "extension_timeout", "{tenant}");
        // Unset limits are the default plan's again (256 MiB), not the plan's old 64.
        assert_eq!(call(&kelp, tenant, "/api/ext/test.plans-grow/run").await.0, 200, "{tenant}");
    }
    // The same limits again change nothing: no new revision, no install rewritten.
    let (status, again) =
        admin(&kelp, reqwest::Method::PUT, "/admin/plans/big", json!({"limits": {"timeout_ms": 20}})).await;
    assert_eq!((status, again["installs_updated"].as_u64(), again["revision"].as_u64()), (200, Some(0), Some(2)));

    // An install's own limits narrow its plan and never widen it.
    let installs = admin(&kelp, reqwest::Method::GET, "/admin/installs?tenant=big-co", Value::Null).await.1;
    let busy_install =
        installs["items"].as_array().unwrap().iter().find(|i| i["extension_id"] == busy.extension.id.as_str()).unwrap()
            ["install_id"]
            .as_str()
            .unwrap()
            .to_string();
    let path = format!("/admin/installs/{busy_install}?tenant=big-co");
    let (status, view) = admin(&kelp, reqwest::Method::PATCH, &path, json!({"limits": {"timeout_ms": 60000}})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["plan"], "big");
    assert_eq!(view["limits"]["effective"]["timeout_ms"], 20, "an override cannot raise the plan: {view}");
    assert_eq!(call(&kelp, "big-co", "/api/ext/test.plans-busy/run").await.1, "extension_timeout");
    put_plan(&kelp, "big", json!({"timeout_ms": 10000})).await;
    let (_, view) = admin(&kelp, reqwest::Method::PATCH, &path, json!({"limits": {"timeout_ms": 20}})).await;
    assert_eq!(view["limits"]["effective"]["timeout_ms"], 20, "{view}");
    assert_eq!(call(&kelp, "big-co", "/api/ext/test.plans-busy/run").await.1, "extension_timeout");
    assert_eq!(call(&kelp, "small-co", "/api/ext/test.plans-busy/run").await.0, 200, "the other tenant's install");

    // Every change is in the audit log; a plan a tenant is on cannot be deleted.
    let (status, body) = admin(&kelp, reqwest::Method::DELETE, "/admin/plans/big", Value::Null).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (_, audit) = admin(&kelp, reqwest::Method::GET, "/admin/audit", Value::Null).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    for action in ["plan.put", "tenant.plan", "install.update"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
}

#[tokio::test]
async fn request_rates_of_a_plan_refuse_with_429_naming_the_plan_and_the_limit() {
    let kelp = TestKelp::start().await;
    let a = kelp.publish(&staged_wat("test.plans-rate-a", "")).await;
    let b = kelp.publish(&staged_wat("test.plans-rate-b", "")).await;
    for tenant in ["metered-co", "pooled-co"] {
        kelp.install(&a, tenant, &[]).await;
        kelp.install(&b, tenant, &[]).await;
    }
    // Two a minute: a burst of one.
    put_plan(&kelp, "metered", json!({"install_requests_per_minute": 2})).await;
    put_plan(&kelp, "pooled", json!({"tenant_requests_per_minute": 2})).await;
    assign(&kelp, "metered-co", "metered").await;
    assign(&kelp, "pooled-co", "pooled").await;

    assert_eq!(call(&kelp, "metered-co", "/api/ext/test.plans-rate-a/run").await.0, 200);
    let r = kelp.get("/api/ext/test.plans-rate-a/run", &token("metered-co", RW)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    let body = json_body(r).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(message.contains("\"metered\"") && message.contains("install_requests_per_minute"), "{message}");
    assert_eq!(call(&kelp, "metered-co", "/api/ext/test.plans-rate-b/run").await.0, 200, "another install's bucket");

    // The tenant's bucket spans its installs.
    assert_eq!(call(&kelp, "pooled-co", "/api/ext/test.plans-rate-a/run").await.0, 200);
    let (status, code, body) = call(&kelp, "pooled-co", "/api/ext/test.plans-rate-b/run").await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tenant_requests_per_minute"), "{body}");

    // The install's debug stream says which limit was hit.
    let events = kelp.platform.debug.backlog("metered-co", &a.extension.id, 50).await.unwrap();
    assert!(
        events.iter().any(|e| e.event.message.contains("429")
            && e.event.message.contains("rate_limited")
            && e.event.message.contains("install_requests_per_minute")),
        "{:?}",
        events.iter().map(|e| &e.event.message).collect::<Vec<_>>()
    );
    // A larger plan applies at once (the bucket takes the new shape).
    put_plan(&kelp, "metered", json!({"install_requests_per_minute": 6000})).await;
    assert_eq!(call(&kelp, "metered-co", "/api/ext/test.plans-rate-a/run").await.0, 200);
}

#[tokio::test]
async fn a_storage_quota_of_the_plan_is_507_naming_the_limit_and_the_plan() {
    let kelp = TestKelp::start().await;
    let notes = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&notes, "tiny-co", &[]).await;
    put_plan(&kelp, "tiny", json!({"storage_keys_per_namespace": 2})).await;
    assign(&kelp, "tiny-co", "tiny").await;
    let put = |id: &'static str| {
        let kelp = &kelp;
        async move {
            let r = kelp
                .client
                .put(format!("{}/api/ext/com.kelp.examples.js-notes/notes/{id}", kelp.base))
                .bearer_auth(token("tiny-co", RW))
                .body(json!({"text": id}).to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), json_body(r).await)
        }
    };
    assert_eq!(put("n1").await.0, 200);
    assert_eq!(put("n2").await.0, 200);
    let (status, body) = put("n3").await;
    assert_eq!((status, body["error"]["code"].as_str()), (507, Some("storage_quota_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage_keys_per_namespace") && message.contains("\"tiny\""), "{message}");
    assert_eq!(put("n1").await.0, 200, "writing a key it holds is within the quota");
    let events = kelp.platform.debug.backlog("tiny-co", &notes.extension.id, 100).await.unwrap();
    assert!(
        events.iter().any(|e| e.event.level == "warn"
            && e.event.message.contains("storage.put")
            && e.event.message.contains("storage_keys_per_namespace")),
        "the stream names the limit"
    );
    // A tenant on the default plan is not limited by another's plan.
    kelp.install(&notes, "roomy-co", &[]).await;
    for id in ["a", "b", "c"] {
        let r = kelp
            .client
            .put(format!("{}/api/ext/com.kelp.examples.js-notes/notes/{id}", kelp.base))
            .bearer_auth(token("roomy-co", RW))
            .body(json!({"text": id}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn egress_limits_and_installs_per_tenant_come_from_the_plan() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/data", axum::routing::get(|| async { "upstream says hi" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kelp = TestKelp::start_with(&[("KELP_EGRESS_ALLOW_LOOPBACK", "true")]).await;
    let notes = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&notes, "net-co", &[&format!("http://localhost:{port}")]).await;
    let fetch = || async {
        let r = kelp
            .client
            .get(format!("{}/api/ext/com.kelp.examples.js-notes/fetch", kelp.base))
            .query(&[("url", format!("http://localhost:{port}/data"))])
            .bearer_auth(token("net-co", RW))
            .send()
            .await
            .unwrap();
        json_body(r).await
    };
    assert_eq!(fetch().await["body"], "upstream says hi", "the default plan allows it");
    put_plan(&kelp, "offline", json!({"egress_calls": 0})).await;
    assign(&kelp, "net-co", "offline").await;
    assert_eq!(fetch().await["error"], "not-allowed");
    put_plan(&kelp, "small-responses", json!({"egress_response_bytes": 5})).await;
    assign(&kelp, "net-co", "small-responses").await;
    assert_eq!(fetch().await["error"], "transport", "a 16-byte answer is over 5 bytes");
    let events = kelp.platform.debug.backlog("net-co", &notes.extension.id, 100).await.unwrap();
    let messages: Vec<&str> = events.iter().map(|e| e.event.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("egress_calls")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("egress_response_bytes")), "{messages:?}");

    // Installs per tenant: the second install is refused, naming the plan.
    put_plan(&kelp, "single", json!({"installs": 1})).await;
    assign(&kelp, "net-co", "single").await;
    let other = kelp.publish(&staged_wat("test.plans-second", "")).await;
    let (status, body) = admin(
        &kelp,
        reqwest::Method::POST,
        "/admin/installs?tenant=net-co",
        json!({"extension": other.extension.id, "version": other.version.version}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("quota_exceeded")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"single\""), "{body}");
    // Unknown limits and impossible values are refused whole.
    let (status, body) =
        admin(&kelp, reqwest::Method::PUT, "/admin/plans/typo", json!({"limits": {"timeout": 5}})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        admin(&kelp, reqwest::Method::PUT, "/admin/plans/huge", json!({"limits": {"memory_mb": 100000}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(admin(&kelp, reqwest::Method::GET, "/admin/plans/huge", Value::Null).await.0, 404);
    let (status, _) = admin(&kelp, reqwest::Method::PUT, "/admin/tenants/net-co/plan", json!({"plan": "nope"})).await;
    assert_eq!(status, 404);
    // Only operators manage plans.
    let r = kelp
        .client
        .put(format!("{}/admin/plans/mine", kelp.base))
        .bearer_auth(token("net-co", &["extension:manage"]))
        .json(&json!({"limits": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// The same plans over the AWS backends (moto): plans and assignments live in DynamoDB and the
/// install records carry them.
#[tokio::test]
async fn plans_apply_over_the_aws_backends() {
    let kelp = TestKelp::start_aws(&[]).await;
    let tenant = format!("aws-plan-{}", uuid::Uuid::new_v4().simple());
    let hello = kelp.publish(&staged_wat(&format!("test.plans-aws-{}", &tenant[9..17]), "")).await;
    kelp.install(&hello, &tenant, &[]).await;
    let plan = format!("p-{}", &tenant[9..17]);
    put_plan(&kelp, &plan, json!({"install_requests_per_minute": 2})).await;
    assign(&kelp, &tenant, &plan).await;
    let path = format!("/api/ext/{}/run", hello.extension.name);
    assert_eq!(call(&kelp, &tenant, &path).await.0, 200);
    let (status, _, body) = call(&kelp, &tenant, &path).await;
    assert_eq!(status, 429, "{body}");
    let (_, plans) = admin(&kelp, reqwest::Method::GET, "/admin/plans", Value::Null).await;
    let names: Vec<&str> = plans["items"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names[0] == "default" && names.contains(&plan.as_str()), "{names:?}");
}
