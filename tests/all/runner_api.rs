//! POST /v1/execute: Alga's runner API.

use base64::Engine as _;
use kelp_tests::*;
use serde_json::{json, Value};

const SERVICE_TOKEN: &str = "runner-token-for-tests";

async fn kelp_with_hello() -> (TestKelp, kelp_runtime::publish::Published) {
    let kelp = TestKelp::start_with(&[("KELP_RUNNER_SERVICE_TOKEN", SERVICE_TOKEN)]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    (kelp, published)
}

fn body(p: &kelp_runtime::publish::Published, path: &str) -> Value {
    json!({
        "context": {
            "request_id": "req-1", "tenant_id": "acme", "extension_id": p.extension.id,
            "install_id": "inst-1", "content_hash": p.version.content_hash, "version_id": p.version.id,
            "config": {"greeting": "Bonjour"}
        },
        "http": {"method": "GET", "path": path, "query": {"a": "1"}, "headers": {"accept": "application/json", "authorization": "Bearer leak"}},
        "limits": {"timeout_ms": 2000, "memory_mb": 128},
        "providers": ["secrets.get", "cap:storage.kv"],
        "secret_envelope": {"ciphertext_b64": base64::engine::general_purpose::STANDARD.encode(r#"{"api_key":"abcdef"}"#)},
        "user": {"user_id": "u1", "user_email": "u@x", "user_name": "U", "user_type": "internal", "company_name": "Acme"}
    })
}

async fn call(kelp: &TestKelp, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = kelp
        .client
        .post(format!("{}/v1/execute", kelp.base))
        .header("x-runner-service-token", SERVICE_TOKEN)
        .header("x-alga-tenant", "acme")
        .header("x-alga-extension", body["context"]["extension_id"].as_str().unwrap_or_default());
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.json(body).send().await.unwrap()
}

fn decoded(answer: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD.decode(answer["body_b64"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn executes_with_the_callers_config_secrets_and_providers() {
    let (kelp, p) = kelp_with_hello().await;
    let r = call(&kelp, &body(&p, "/hello"), &[("x-ext-config-version", "7")]).await;
    assert_eq!(r.status(), 200);
    let answer = json_body(r).await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["headers"]["content-type"], "application/json");
    let hello = decoded(&answer);
    assert_eq!(hello["message"], "Bonjour, acme!");
    assert_eq!(hello["configVersion"], "7");
    assert_eq!(hello["context"]["installId"], "inst-1");
    assert_eq!(hello["context"]["requestId"], "req-1");
    assert_eq!(hello["query"]["a"], "1");
    let secret = decoded(&json_body(call(&kelp, &body(&p, "/secret"), &[]).await).await);
    assert_eq!(secret["length"], 6);
    let user = decoded(&json_body(call(&kelp, &body(&p, "/user"), &[]).await).await);
    assert_eq!(user["userId"], "u1", "user.read is implied on every runner call, as Alga's runner implies it: {user}");
}

#[tokio::test]
async fn carries_the_guests_status_in_a_200() {
    let (kelp, p) = kelp_with_hello().await;
    let answer = json_body(call(&kelp, &body(&p, "/nope"), &[]).await).await;
    assert_eq!(answer["status"], 404, "the guest's own 404");
    let mut unknown = body(&p, "/hello");
    unknown["context"]["content_hash"] = json!("sha256:0000");
    let answer = json_body(call(&kelp, &unknown, &[]).await).await;
    assert_eq!((answer["status"].as_u64(), answer["error"].as_str()), (Some(404), Some("bundle_not_found")));
}

#[tokio::test]
async fn refuses_bad_tokens_missing_headers_and_malformed_json() {
    let (kelp, p) = kelp_with_hello().await;
    let url = format!("{}/v1/execute", kelp.base);
    let r = kelp.client.post(&url).json(&body(&p, "/hello")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = kelp
        .client
        .post(&url)
        .header("x-runner-service-token", "wrong")
        .json(&body(&p, "/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = kelp
        .client
        .post(&url)
        .header("x-runner-service-token", SERVICE_TOKEN)
        .json(&body(&p, "/hello"))
        .send()
        .await
        .unwrap();
    // Refusals of the call itself answer HTTP 200 with the status in the body, as Alga's
    // runner does (its callers turn that status into the response).
    assert_eq!(r.status(), 200);
    let answer = json_body(r).await;
    assert_eq!((answer["status"].as_u64(), answer["error"].as_str()), (Some(400), Some("missing_routing_headers")));
    let r = kelp
        .client
        .post(&url)
        .header("x-runner-service-token", SERVICE_TOKEN)
        .header("x-alga-tenant", "acme")
        .header("x-alga-extension", p.extension.id.as_str())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err = json_body(r).await;
    assert_eq!(err["error"]["code"], "bad_request");
    assert!(err["error"]["message"].as_str().unwrap().contains("malformed"));
    let mut other = body(&p, "/hello");
    other["context"]["tenant_id"] = json!("globex");
    let answer = json_body(call(&kelp, &other, &[]).await).await;
    assert_eq!(answer["status"], 400, "x-alga-tenant must equal context.tenant_id");
    assert!(answer["error"].as_str().unwrap().starts_with("routing_headers_mismatch"));
    let mut providers = body(&p, "/hello");
    providers["providers"] = json!(["cap:storage.kv", "cap:teleport", "mind.read"]);
    let answer = json_body(call(&kelp, &providers, &[]).await).await;
    assert_eq!(
        (answer["status"].as_u64(), answer["error"].as_str()),
        (Some(400), Some("unknown_capabilities: cap:teleport, mind.read"))
    );
    // An envelope of a provider Kelp cannot open says so, instead of a guest-side `internal`.
    let mut vault = body(&p, "/secret");
    vault["secret_envelope"] =
        json!({"ciphertext_b64": "dmF1bHQ6djE6YWJj", "algorithm": "vault-transit:v1", "key_path": "k"});
    let answer = json_body(call(&kelp, &vault, &[]).await).await;
    assert_eq!(answer["status"], 500);
    assert!(answer["error"].as_str().unwrap().starts_with("unsupported_secret_provider: vault-transit"), "{answer}");
}

#[tokio::test]
async fn the_api_is_closed_without_a_configured_token() {
    let kelp = TestKelp::start().await;
    let r = kelp
        .client
        .post(format!("{}/v1/execute", kelp.base))
        .header("x-runner-service-token", "")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn replays_an_idempotent_answer() {
    let (kelp, p) = kelp_with_hello().await;
    let put = |text: &str| {
        let mut b = body(&p, "/notes/idem");
        b["http"]["method"] = json!("PUT");
        b["http"]["body_b64"] =
            json!(base64::engine::general_purpose::STANDARD.encode(json!({"text": text}).to_string()));
        b
    };
    let first = decoded(&json_body(call(&kelp, &put("one"), &[("x-idempotency-key", "k1")]).await).await);
    let replay = decoded(&json_body(call(&kelp, &put("one"), &[("x-idempotency-key", "k1")]).await).await);
    assert_eq!(first, replay, "same key, same request: the completed answer is replayed, not re-executed");
    assert_eq!(first["revision"], 1);
    // Another request under the same key — another user's, other input — never gets the
    // first caller's answer, and does not run either.
    let reused = json_body(call(&kelp, &put("two"), &[("x-idempotency-key", "k1")]).await).await;
    assert_eq!(reused["status"], 409, "{reused}");
    assert!(reused["error"].as_str().unwrap().starts_with("idempotency_key_reused"), "{reused}");
    let mut other_user = put("one");
    other_user["user"] = json!({"user_id": "someone-else", "user_type": "internal"});
    let reused = json_body(call(&kelp, &other_user, &[("x-idempotency-key", "k1")]).await).await;
    assert_eq!(reused["status"], 409, "another user with the same key: {reused}");
    let fresh = decoded(&json_body(call(&kelp, &put("three"), &[("x-idempotency-key", "k2")]).await).await);
    assert_eq!(fresh["revision"], 2, "the refused calls wrote nothing");
}

#[tokio::test]
async fn bodies_are_capped_at_the_configured_limit_not_a_framework_default() {
    let kelp =
        TestKelp::start_with(&[("KELP_RUNNER_SERVICE_TOKEN", SERVICE_TOKEN), ("KELP_MAX_BODY_BYTES", "4194304")]).await;
    let post = |size: usize| {
        kelp.client
            .post(format!("{}/v1/execute", kelp.base))
            .header("x-runner-service-token", SERVICE_TOKEN)
            .header("x-alga-tenant", "acme")
            .header("x-alga-extension", "e")
            .body(vec![b' '; size])
            .send()
    };
    // The JSON carries the body base64-encoded (4/3 of its size) plus up to 1 MiB of context.
    let json_cap = (4usize << 20).div_ceil(3) * 4 + (1 << 20);
    let r = post(json_cap).await.unwrap();
    assert_eq!(r.status(), 400, "under the cap: parsed (and refused as malformed), not a 413");
    let r = post(json_cap + 1).await.unwrap();
    assert_eq!(r.status(), 200, "refused in the runner's shape, so Alga passes the status on instead of a 502");
    let body = json_body(r).await;
    assert_eq!(body["status"], 413);
    assert!(body["error"].as_str().unwrap().starts_with("payload_too_large"), "{body}");
}

#[tokio::test]
async fn kelps_reserved_tenants_cannot_be_named_by_a_caller() {
    let (kelp, p) = kelp_with_hello().await;
    let mut reserved = body(&p, "/hello");
    reserved["context"]["tenant_id"] = json!("_kelp");
    reserved["context"]["install_id"] = json!("idempotency");
    let r = kelp
        .client
        .post(format!("{}/v1/execute", kelp.base))
        .header("x-runner-service-token", SERVICE_TOKEN)
        .header("x-alga-tenant", "_kelp")
        .header("x-alga-extension", p.extension.id.as_str())
        .json(&reserved)
        .send()
        .await
        .unwrap();
    let answer = json_body(r).await;
    assert_eq!(answer["status"], 400);
    assert!(answer["error"].as_str().unwrap().contains("reserved"), "{answer}");
    // Nor through a token: the gateway refuses the identity.
    let r = kelp.get(&format!("/api/ext/{}/hello", p.extension.id), &token("_kelp", RW)).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_service_token_is_checked_whatever_its_length() {
    let (kelp, p) = kelp_with_hello().await;
    for given in ["", "r", "runner-token-for-test", "runner-token-for-testsX", "runner-token-for-tests-but-much-longer"]
    {
        let r = kelp
            .client
            .post(format!("{}/v1/execute", kelp.base))
            .header("x-runner-service-token", given)
            .header("x-alga-tenant", "acme")
            .header("x-alga-extension", p.extension.id.as_str())
            .json(&body(&p, "/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{given:?}");
    }
}

/// A bundle in Alga's bundle store (moto S3, Alga's key layout) that Kelp has never seen.
async fn alga_store_with(bundle: &[u8], tenant: &str, extension: &str) -> (String, String) {
    use kelp_runtime::blobs::BlobStore as _;
    let bucket = format!("alga-bundles-{}", uuid::Uuid::new_v4().simple());
    let settings = kelp_runtime::Settings::from_map(&kelp_tests::aws::aws_env(&kelp_tests::aws::moto_url())).unwrap();
    let s3 = kelp_runtime::aws::AwsClients::new(&settings.aws).await.s3;
    kelp_runtime::blobs::s3::ensure_bucket(&s3, &bucket).await.unwrap();
    let store = kelp_runtime::blobs::s3::S3BlobStore::new(s3, bucket.clone(), String::new());
    let hex = kelp_runtime::publish::content_hash(bundle).trim_start_matches("sha256:").to_string();
    store.put(&format!("tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst"), bundle).await.unwrap();
    (bucket, hex)
}

fn alga_call(hash: &str) -> Value {
    json!({
        "context": {"request_id": "req-alga", "tenant_id": "acme", "extension_id": "alga-ext-1", "install_id": "alga-inst-1",
                    "content_hash": format!("sha256:{hash}"), "version_id": "alga-v1", "config": {}},
        "http": {"method": "GET", "path": "/hello", "query": {}, "headers": {}},
        "limits": {"timeout_ms": 5000}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_never_published_to_kelp_is_fetched_from_algas_store_once() {
    let bundle = kelp_runtime::publish::pack_dir(&staged_example("wat-hello")).unwrap();
    let (bucket, hex) = alga_store_with(&bundle, "acme", "alga-ext-1").await;
    let artifacts = tempfile::tempdir().unwrap();
    let moto = kelp_tests::aws::moto_url();
    let kelp = TestKelp::start_with(&[
        ("KELP_RUNNER_SERVICE_TOKEN", SERVICE_TOKEN),
        ("KELP_ALGA_BUNDLE_BUCKET", &bucket),
        ("KELP_ARTIFACT_DIR", artifacts.path().to_str().unwrap()),
        ("AWS_ENDPOINT_URL", &moto),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ])
    .await;
    assert!(kelp.platform.registry.find_version_by_content_hash(&format!("sha256:{hex}")).await.unwrap().is_none());
    // Concurrent first calls: each answers, the bundle is fetched and compiled once.
    let answers = futures::future::join_all((0..4).map(|_| async {
        let r = call(&kelp, &alga_call(&hex), &[]).await;
        assert_eq!(r.status(), 200);
        json_body(r).await
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer["status"], 200, "{answer}");
        let body = base64::engine::general_purpose::STANDARD.decode(answer["body_b64"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), "hello from wat: /hello");
    }
    let compiles = kelp.platform.cache().stats.compiles.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(compiles, 1, "one compile for four concurrent first calls");
    assert!(kelp.platform.registry.find_version_by_content_hash(&format!("sha256:{hex}")).await.unwrap().is_some());
    // Unknown hashes and bundles that do not match their hash are refused in the runner's shape.
    let unknown = json_body(call(&kelp, &alga_call(&"0".repeat(64)), &[]).await).await;
    assert_eq!((unknown["status"].as_u64(), unknown["error"].as_str()), (Some(404), Some("bundle_not_found")));
    // Whatever sits under a hash's key must hash to it.
    use kelp_runtime::blobs::BlobStore as _;
    let s3 = kelp_runtime::aws::AwsClients::new(&kelp.settings.aws).await.s3;
    let store = kelp_runtime::blobs::s3::S3BlobStore::new(s3, bucket.clone(), String::new());
    let claimed = "b".repeat(64);
    store
        .put(&format!("tenants/acme/extensions/alga-ext-1/sha256/{claimed}/bundle.tar.zst"), &bundle[1..])
        .await
        .unwrap();
    let refused = json_body(call(&kelp, &alga_call(&claimed), &[]).await).await;
    assert_eq!(refused["status"], 502);
    assert!(refused["error"].as_str().unwrap().contains("does not match its sha256"), "{refused}");
}
