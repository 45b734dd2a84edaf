//! What Alga's bundles carry, published and fetched: wildcard versions, UI-only bundles, the
//! body limit in the runner's shape, and fetched bundles kept per tenant (no squatting).

use base64::Engine as _;
use kelp_tests::*;
use serde_json::{json, Value};

const TOKEN: &str = "runner-token-for-bundles";

/// A bundle of `files` (path → text) with `manifest`.
fn bundle(manifest: Value, files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    kelp_runtime::publish::pack_dir(dir.path()).unwrap()
}

/// The wat-hello component under another manifest.
fn wat_bundle(name: &str, version: &str, marker: &str) -> Vec<u8> {
    let staged = staged_example("wat-hello");
    let dir = restaged(&staged, &format!("{name}-{marker}"), |m| {
        m["name"] = json!(name);
        m["version"] = json!(version);
        m["description_for_tests"] = json!(marker);
    });
    kelp_runtime::publish::pack_dir(&dir).unwrap()
}

async fn publish(kelp: &TestKelp, bytes: Vec<u8>) -> Result<kelp_runtime::publish::Published, String> {
    kelp_runtime::publish::publish(&kelp.platform, bytes, &Default::default()).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn algas_wildcard_versions_take_the_next_patch_and_the_same_bytes_stay_one_version() {
    let kelp = TestKelp::start().await;
    let first = publish(&kelp, wat_bundle("com.acme.wild", "0.3.*", "a")).await.unwrap();
    assert_eq!((first.version.version.as_str(), first.version.manifest.version.as_str()), ("0.3.0", "0.3.0"));
    let again = publish(&kelp, wat_bundle("com.acme.wild", "0.3.*", "a")).await.unwrap();
    assert_eq!((again.version.id.as_str(), again.created), (first.version.id.as_str(), false), "idempotent");
    publish(&kelp, wat_bundle("com.acme.wild", "0.3.7-beta.1", "pre")).await.unwrap();
    publish(&kelp, wat_bundle("com.acme.wild", "0.4.2", "other-minor")).await.unwrap();
    let second = publish(&kelp, wat_bundle("com.acme.wild", "0.3.*", "b")).await.unwrap();
    assert_eq!(second.version.version, "0.3.1", "prereleases and other minors are not counted, as Alga counts");
    // Concurrent wildcard publishes of different content each get their own patch.
    let k = &kelp;
    let racing = futures::future::join_all(
        ["c", "d", "e"].map(|m| async move { publish(k, wat_bundle("com.acme.wild", "0.3.*", m)).await }),
    )
    .await;
    let mut versions: Vec<String> = racing.into_iter().map(|r| r.unwrap().version.version).collect();
    versions.sort();
    assert_eq!(versions, ["0.3.2", "0.3.3", "0.3.4"]);
}

#[tokio::test]
async fn a_ui_only_version_publishes_serves_its_ui_and_answers_api_calls_no_handler() {
    let kelp = TestKelp::start_with(&[("KELP_RUNNER_SERVICE_TOKEN", TOKEN), ("KELP_UI_PUBLIC", "true")]).await;
    let manifest = json!({"name": "com.acme.ui-only", "publisher": "Acme", "version": "0.1.0", "runtime": "wasm-js@1",
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "UI"}}}});
    let published = publish(&kelp, bundle(manifest.clone(), &[("ui/index.html", "<p>only a UI</p>")])).await.unwrap();
    assert!(!published.version.has_component());
    kelp.install(&published, "acme", &[]).await;

    let r = kelp.get("/api/ext/com.acme.ui-only/anything", &token("acme", RW)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(json_body(r).await["error"]["code"], "no_handler");
    let execute = json!({"context": {"tenant_id": "acme", "extension_id": published.extension.id,
                                     "content_hash": published.version.content_hash},
                         "http": {"method": "GET", "path": "/", "query": {}, "headers": {}}});
    let answer = call(&kelp, &execute).await;
    assert_eq!((answer["status"].as_u64(), answer["error"].as_str()), (Some(404), Some("no_handler")), "{answer}");
    let hex = published.version.content_hash.trim_start_matches("sha256:");
    let page = kelp.client.get(format!("{}/ext-ui/com.acme.ui-only/{hex}/index.html", kelp.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("only a UI"));

    // Without a UI there must be a component; a named entry must be there.
    let err =
        publish(&kelp, bundle(json!({"name": "com.acme.nothing", "version": "1.0.0", "runtime": "wasm-js@1"}), &[]))
            .await
            .unwrap_err();
    assert!(err.contains("dist/main.wasm is not in the bundle"), "{err}");
    let mut named = manifest;
    named["entry"] = json!("dist/handler.wasm");
    let err = publish(&kelp, bundle(named, &[("ui/index.html", "x")])).await.unwrap_err();
    assert!(err.contains("dist/handler.wasm"), "{err}");
}

fn execute(tenant: &str, extension: &str, hex: &str) -> Value {
    json!({"context": {"tenant_id": tenant, "extension_id": extension, "content_hash": format!("sha256:{hex}")},
           "http": {"method": "GET", "path": "/hello", "query": {}, "headers": {}}})
}

/// A runner call's answer (always HTTP 200: Alga reads the status from the body).
async fn call(kelp: &TestKelp, body: &Value) -> Value {
    let r = kelp.execute(TOKEN, body).await;
    assert_eq!(r.status(), 200);
    json_body(r).await
}

/// Tenant A's upload names tenant B's extension and version: fetched first, it must neither
/// block B's genuine bundle, nor tell B its hash, nor run for B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_bundle_cannot_squat_or_shadow_anothers() {
    let squatter = wat_bundle("com.victimco.payroll", "2.0.0", "squat");
    let genuine = wat_bundle("com.victimco.payroll", "2.0.0", "genuine");
    let (bucket, hashes) = kelp_tests::aws::alga_bundle_bucket(&[
        ("tenant-a", "ext-payroll", &squatter),
        ("tenant-b", "ext-payroll", &genuine),
    ])
    .await;
    let (a_hex, b_hex) = (&hashes[0], &hashes[1]);
    let env = kelp_tests::aws::alga_bucket_env(&bucket);
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("KELP_RUNNER_SERVICE_TOKEN", TOKEN));
    let kelp = TestKelp::start_with(&extra).await;

    let a = call(&kelp, &execute("tenant-a", "ext-payroll", a_hex)).await;
    assert_eq!(a["status"], 200, "{a}");
    let b = call(&kelp, &execute("tenant-b", "ext-payroll", b_hex)).await;
    assert_eq!(b["status"], 200, "the genuine bundle is not blocked by the squatter's name@version: {b}");
    assert!(!b.to_string().contains(a_hex.as_str()), "nothing of A's reaches B");
    let shadow = call(&kelp, &execute("tenant-b", "ext-payroll", a_hex)).await;
    assert_eq!(
        (shadow["status"].as_u64(), shadow["error"].as_str()),
        (Some(404), Some("bundle_not_found")),
        "A's bundle is not B's, even by its hash: {shadow}"
    );
    // The manifest name stays free for the operator's own publish through the admin API.
    let own = publish(&kelp, wat_bundle("com.victimco.payroll", "2.0.0", "operator")).await.unwrap();
    assert_eq!(own.extension.name, "com.victimco.payroll");
    // Ids that could escape a key or a scope are refused before any store call.
    let bad = call(&kelp, &execute("tenant-a", "../x", a_hex)).await;
    assert_eq!(bad["status"], 400, "{bad}");
    let bad = call(&kelp, &execute("a/b", "ext", a_hex)).await;
    assert_eq!(
        (bad["status"].as_u64(), bad["error"].as_str().map(|e| e.starts_with("invalid_tenant"))),
        (Some(400), Some(true))
    );
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused_in_the_runners_shape() {
    let kelp = TestKelp::start_with(&[("KELP_RUNNER_SERVICE_TOKEN", TOKEN), ("KELP_MAX_BODY_BYTES", "1000")]).await;
    let p = kelp.publish(&staged_example("wat-hello")).await;
    let hex = p.version.content_hash.trim_start_matches("sha256:").to_string();
    let mut body = execute("acme", &p.extension.id, &hex);
    body["http"]["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 1001]));
    let answer = call(&kelp, &body).await;
    assert_eq!(answer["status"], 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("payload_too_large"));
    // A JSON document far past the cap is not read whole, and answers the same way.
    body["http"]["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 3 << 20]));
    assert_eq!(call(&kelp, &body).await["status"], 413);
    body["http"]["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 1000]));
    assert_eq!(call(&kelp, &body).await["status"], 200, "at the cap");
}
