//! The Alga conformance corpus, through the real gateway binary under the Lambda Runtime API
//! emulator, as an Alga deployment is configured: Kelp as Alga's private runner
//! (`KELP_RUNNER_AUTH=private-network`), bundles fetched by content hash from Alga's bundle
//! store (moto S3, Alga's key layout), Alga's host API (the fake Alga of `kelp_tests::alga`),
//! Vault-encrypted secrets (the transit stand-in of `kelp_tests::vault`), Alga's egress rule,
//! Alga's iframe URLs and per-install UI domains. Every answer is read the way Alga's callers
//! read it: HTTP 200 with the runner's `{status, body_b64, error}`.

use std::time::Instant;

use base64::Engine as _;
use kelp_tests::alga::{fake_alga, FakeAlga, ALGA_AUTH_KEY, RUNNER_AUTH};
use kelp_tests::lambda::{fixture, spawn_function, Emulator};
use kelp_tests::vault::Transit;
use kelp_tests::*;
use serde_json::{json, Value};

const TENANT: &str = "9a6b0b44-2d1e-4a43-9d55-2f1f4c1e0a01";
const CORPUS_EXT: &str = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
const UI_ONLY_EXT: &str = "7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b";
const SDK_EXT: &str = "5d4c3b2a-1f0e-4d9c-8b7a-695847362514";
const VAULT_TOKEN: &str = "hvs.corpus-token";
const VPCE: &str = "vpce-0a1b2c3d4e5f60718";

/// A UI-only bundle as Alga's SDK `basic` template ships it: manifest and `ui/`, no component.
fn ui_only_bundle() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ui")).unwrap();
    let manifest = json!({"name": "com.acme.basic-ui", "publisher": "Your Org", "version": "0.1.0", "runtime": "wasm-js@1",
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Basic"}}}, "assets": ["ui/**/*"]});
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.path().join("ui/index.html"), "<!doctype html><title>basic</title><p>UI-only</p>").unwrap();
    kelp_runtime::publish::pack_dir(dir.path()).unwrap()
}

/// Alga's runner call through the private REST API (no token), as its `/api/ext` route and its
/// scheduled jobs send it.
fn execute_event(context: Value, http: Value, extra: Value) -> Value {
    let mut body = json!({"context": context, "http": http, "limits": {"timeout_ms": 10000}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let mut event = fixture("gateway/runner-execute-private.json");
    event["headers"]["x-alga-tenant"] = json!(TENANT);
    event["headers"]["x-alga-extension"] = context["extension_id"].clone();
    event["multiValueHeaders"]["x-alga-tenant"] = json!([TENANT]);
    event["multiValueHeaders"]["x-alga-extension"] = json!([context["extension_id"]]);
    if let Some(key) = extra.get("idempotency_key") {
        event["headers"]["x-idempotency-key"] = key.clone();
        event["multiValueHeaders"]["x-idempotency-key"] = json!([key]);
    }
    event["body"] = json!(body.to_string());
    event["isBase64Encoded"] = json!(false);
    event
}

fn context(extension: &str, hex: &str) -> Value {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({"request_id": format!("req-corpus-{n}"), "tenant_id": TENANT, "extension_id": extension,
           "install_id": "11111111-2222-4333-8444-555555555555", "version_id": "v-alga-1",
           "content_hash": format!("sha256:{hex}"), "config": {}})
}

fn get(path: &str, query: Value) -> Value {
    json!({"method": "GET", "path": path, "query": query, "headers": {"accept": "application/json"}})
}

/// The runner's whole JSON answer (`{status, headers, body_b64, error}`), always in an HTTP 200.
async fn runner_answer(emulator: &Emulator, event: Value) -> Value {
    let outcome = emulator.call(event).await;
    assert!(outcome.ok, "{}", String::from_utf8_lossy(&outcome.body));
    let answer = outcome.json();
    assert_eq!(answer["statusCode"], 200, "Alga reads the runner's status from its body: {answer}");
    let text = answer["body"].as_str().unwrap_or_default();
    let raw = if answer["isBase64Encoded"] == true {
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    } else {
        text.as_bytes().to_vec()
    };
    serde_json::from_slice(&raw).unwrap()
}

/// The runner's answer as Alga's caller reads it: (status, body JSON or text, error).
async fn run(emulator: &Emulator, event: Value) -> (u64, Value, Option<String>) {
    let runner = runner_answer(emulator, event).await;
    let body = base64::engine::general_purpose::STANDARD.decode(runner["body_b64"].as_str().unwrap_or("")).unwrap();
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    (runner["status"].as_u64().unwrap(), body, runner["error"].as_str().map(str::to_string))
}

/// An HTTP API event for `GET {path}?{query}` on `host`.
fn http_get(path: &str, query: &str, host: &str) -> Value {
    let mut event = fixture("gateway/ui-asset.json");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["headers"]["host"] = json!(host);
    event["requestContext"]["domainName"] = json!(host);
    event["requestContext"].as_object_mut().unwrap().remove("authorizer");
    event
}

fn seed_algas_storage(alga: &FakeAlga, install: &str) {
    let mut state = alga.state.lock().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    // 40 values of 60 KB: a listing of ~3.2 MB of JSON, past one 1 MiB answer.
    for i in 0..40 {
        let value = b64.encode(vec![b'a' + (i % 26) as u8; 60_000]);
        state.storage.insert(
            (install.into(), "corpus".into(), format!("big-{i:02}")),
            (json!(value), json!({"encoding": "base64-bytes"}), 1),
        );
    }
    // Values Alga's own server (or an older runner) wrote without the marker.
    for (key, value) in [
        ("plain", json!("plain text!")),
        ("b64-unmarked", json!(b64.encode("was base64"))),
        ("bytes-object", json!({"_bytes_b64": b64.encode("bytes object")})),
        ("number", json!(42)),
    ] {
        state.storage.insert((install.into(), "corpus".into(), key.into()), (value, json!({}), 1));
    }
}

/// The gateway binary as Alga's private runner over `kelp`'s data, with Alga's bundle store in
/// `bucket` (moto) and `extra` settings.
fn spawn_private_runner(
    kelp: &TestKelp,
    emulator: &Emulator,
    bucket: &str,
    extra: &[(&str, &str)],
) -> tokio::process::Child {
    let moto = kelp_tests::aws::moto_url();
    let mut env = vec![
        ("KELP_RUNNER_AUTH", "private-network"),
        ("KELP_RUNNER_VPC_ENDPOINT_IDS", VPCE),
        ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"),
        ("KELP_ALGA_BUNDLE_BUCKET", bucket),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    env.extend_from_slice(extra);
    spawn_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        emulator,
        "kelp-private-runner",
        &kelp.function_env(&env),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algas_bundles_secrets_storage_and_uis_answer_as_algas_runner_would() {
    let kelp = TestKelp::start().await;
    let corpus = kelp_runtime::publish::pack_dir(&staged_fixture("alga-corpus")).unwrap();
    let ui_only = ui_only_bundle();
    let sdk_dir = tokio::task::spawn_blocking(staged_alga_sdk_extension).await.unwrap();
    let sdk = kelp_runtime::publish::pack_dir(&sdk_dir).unwrap();
    let (bucket, hashes) = kelp_tests::aws::alga_bundle_bucket(&[
        (TENANT, CORPUS_EXT, &corpus),
        (TENANT, UI_ONLY_EXT, &ui_only),
        (TENANT, SDK_EXT, &sdk),
    ])
    .await;
    let (corpus_hex, ui_hex, sdk_hex) = (hashes[0].clone(), hashes[1].clone(), hashes[2].clone());
    let (alga_base, alga) = fake_alga().await;
    let install = "11111111-2222-4333-8444-555555555555";
    seed_algas_storage(&alga, install);
    alga.state.lock().unwrap().hosts.insert(
        "9a6b0b44-3f1c2d4e.apps.example.test".into(),
        json!({"tenant_id": TENANT, "extension_id": UI_ONLY_EXT, "content_hash": format!("sha256:{ui_hex}")}),
    );
    let (vault_addr, vault) = Transit::start(VAULT_TOKEN, &["transit/alga-ext", "transit/other-key"]).await;
    vault.forbidden.lock().unwrap().insert("transit/other-key".into());
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{VAULT_TOKEN}\n")).unwrap();

    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _gateway = spawn_private_runner(
        &kelp,
        &emulator,
        &bucket,
        &[
            ("KELP_HOST_API_PROTOCOL", "alga"),
            ("KELP_HOST_API_URL", &alga_base),
            ("KELP_HOST_API_SECRET", RUNNER_AUTH),
            ("KELP_VAULT_ADDR", &vault_addr),
            ("KELP_VAULT_TOKEN_FILE", token_file.path().to_str().unwrap()),
            ("KELP_SECRETS_TTL_SECS", "1"),
            ("KELP_EGRESS_POLICY", "alga"),
            ("EXT_EGRESS_ALLOWLIST", "allowed.test,127.0.0.1"),
            ("KELP_UI_PUBLIC", "true"),
            ("KELP_UI_DOMAIN_ROOT", "apps.example.test"),
            ("KELP_ALGA_REGISTRY_URL", &alga_base),
            ("KELP_ALGA_AUTH_KEY", ALGA_AUTH_KEY),
            ("KELP_MAX_BODY_BYTES", "100000"),
        ],
    );
    emulator.wait_ready(spawned).await;

    // The scheduled-job caller: no token, no user, `trigger` and `schedule_id` in the context,
    // an idempotency key, a JSON payload as body. Fetches the `0.3.*` bundle on first use.
    let mut scheduled = context(CORPUS_EXT, &corpus_hex);
    scheduled["trigger"] = json!("schedule");
    scheduled["schedule_id"] = json!("sch-1");
    let payload = base64::engine::general_purpose::STANDARD.encode(r#"{"full":true}"#);
    let http = json!({"method": "POST", "path": "/scheduled", "query": {}, "headers": {"x-alga-tenant": TENANT},
                      "body_b64": payload});
    let (status, body, error) =
        run(&emulator, execute_event(scheduled, http, json!({"idempotency_key": "sched-run-1"}))).await;
    assert_eq!((status, error), (200, None), "{body}");
    assert_eq!(body, json!({"ran": true, "body": r#"{"full":true}"#}));
    let fetched = kelp.platform.registry.find_version_by_content_hash(&format!("sha256:{corpus_hex}")).await.unwrap();
    assert_eq!(fetched.unwrap().version, "0.3.0", "Alga's 0.3.* resolved as its registry resolves it");

    // A body over the cap: refused in the runner's shape, so Alga shows 413, not 502.
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 100_001]);
    let http = json!({"method": "POST", "path": "/scheduled", "query": {}, "headers": {}, "body_b64": big});
    let (status, _, error) = run(&emulator, execute_event(context(CORPUS_EXT, &corpus_hex), http, json!({}))).await;
    assert_eq!(status, 413);
    assert!(error.unwrap_or_default().starts_with("payload_too_large"));

    // An extension built with Alga's published SDK, fetched like any other bundle.
    let sdk_call = execute_event(
        context(SDK_EXT, &sdk_hex),
        get("/hello", json!({})),
        json!({"user": {"user_id": "u-1", "user_name": "Ada", "user_type": "internal"}}),
    );
    let (status, body, error) = run(&emulator, sdk_call).await;
    assert_eq!((status, error), (200, None), "{body}");
    assert_eq!((body["hello"].clone(), body["user"].clone()), (json!(TENANT), json!("Ada")), "{body}");

    // cap:user.read is implied as Alga's runner implies it (no providers sent).
    let user = json!({"user_id": "u-7", "user_email": "c@client.test", "user_name": "Client User", "user_type": "client",
                      "client_name": "Acme", "client_id": "cl-9"});
    let (status, body, _) = run(
        &emulator,
        execute_event(context(CORPUS_EXT, &corpus_hex), get("/whoami", json!({})), json!({"user": user})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["ok"]["userType"].clone(), body["ok"]["clientId"].clone()),
        (json!("client"), json!("cl-9")),
        "{body}"
    );

    // Storage in Alga: a listing past 1 MiB pages instead of failing; Alga's cursor passes through.
    let storage = || json!({"providers": ["cap:storage.kv"]});
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = cursor.as_ref().map(|c| json!({ "cursor": c })).unwrap_or(json!({}));
        let (status, body, _) =
            run(&emulator, execute_event(context(CORPUS_EXT, &corpus_hex), get("/kv", query), storage())).await;
        assert_eq!(status, 200);
        let page = &body["ok"];
        assert!(page.is_object(), "a page, not an error: {body}");
        let page_keys: Vec<String> = serde_json::from_value(page["keys"].clone()).unwrap();
        if page_keys.is_empty() {
            break;
        }
        assert!(page_keys.len() <= 25, "Alga's page size");
        keys.extend(page_keys);
        cursor = page["last"].as_str().map(str::to_string);
    }
    assert_eq!(keys.len(), 44, "every entry, page by page: {keys:?}");
    let algas_cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"key":"big-38"}"#);
    let (_, body, _) = run(
        &emulator,
        execute_event(context(CORPUS_EXT, &corpus_hex), get("/kv", json!({"cursor": algas_cursor})), storage()),
    )
    .await;
    assert_eq!(body["ok"]["keys"][0], "big-39", "Alga's own cursor went through as it was: {body}");
    for (key, expected) in
        [("plain", "plain text!"), ("b64-unmarked", "was base64"), ("bytes-object", "bytes object"), ("number", "42")]
    {
        let (_, body, _) = run(
            &emulator,
            execute_event(context(CORPUS_EXT, &corpus_hex), get(&format!("/kv/{key}"), json!({})), storage()),
        )
        .await;
        assert_eq!(body["ok"], expected, "{key} decoded as Alga's runner decodes it");
    }
    let delete = json!({"method": "DELETE", "path": "/kv/nothing-here", "query": {}, "headers": {}});
    let (_, body, _) = run(&emulator, execute_event(context(CORPUS_EXT, &corpus_hex), delete, storage())).await;
    assert_eq!(body, json!({"err": "conflict"}), "an absent key's delete, as Alga's runner answers it");

    // Vault-encrypted secrets, as Alga writes them with its Vault configured.
    let sealed = Transit::seal(&vault_addr, VAULT_TOKEN, "transit", "alga-ext", &json!({"api_key": "k-vault"})).await;
    let envelope = json!({"ciphertext_b64": sealed, "algorithm": "vault-transit:v1", "key_path": "alga-ext",
                          "mount": "transit", "version": "3"});
    let secret_call = || {
        execute_event(
            context(CORPUS_EXT, &corpus_hex),
            get("/secret/api_key", json!({})),
            json!({"providers": ["cap:secrets.get"], "secret_envelope": envelope}),
        )
    };
    let (status, body, error) = run(&emulator, secret_call()).await;
    assert_eq!((status, error), (200, None), "{body}");
    assert_eq!(body["ok"], json!({"value": "k-vault", "keys": ["api_key"]}));
    let decrypts = vault.decrypts.load(std::sync::atomic::Ordering::SeqCst);
    vault.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body, _) = run(&emulator, secret_call()).await;
    assert_eq!((status, body["ok"]["value"].clone()), (200, json!("k-vault")), "served from cache within the TTL");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, error) = run(&emulator, secret_call()).await;
    assert_eq!((status, error.as_deref()), (503, Some("secrets_unavailable")), "Vault down past the TTL");
    vault.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(vault.decrypts.load(std::sync::atomic::Ordering::SeqCst) >= decrypts);
    let mut refused = envelope.clone();
    refused["key_path"] = json!("other-key");
    let (status, _, error) = run(
        &emulator,
        execute_event(
            context(CORPUS_EXT, &corpus_hex),
            get("/secret/api_key", json!({})),
            json!({"providers": ["cap:secrets.get"], "secret_envelope": refused}),
        ),
    )
    .await;
    let error = error.unwrap_or_default();
    assert_eq!(status, 500);
    assert!(error.starts_with("secret_decrypt_failed") && error.contains("other-key"), "names the key: {error}");
    assert!(!error.contains(&sealed) && !error.contains("vault:v1"), "never the ciphertext: {error}");

    // Alga's egress rule (tests/all/egress.rs fetches through it): hosts off the list are
    // refused, and a private address stays blocked even when the list names it.
    for url in ["https://elsewhere.test/", "http://127.0.0.1:9/"] {
        let (_, body, _) = run(
            &emulator,
            execute_event(
                context(CORPUS_EXT, &corpus_hex),
                get("/fetch", json!({ "url": url })),
                json!({"providers": ["cap:http.fetch"]}),
            ),
        )
        .await;
        assert_eq!(body["err"], "not-allowed", "{url}: {body}");
    }

    // A UI-only bundle: its API answers `no_handler`, its UI is served by Alga's registry id.
    let (status, _, error) =
        run(&emulator, execute_event(context(UI_ONLY_EXT, &ui_hex), get("/anything", json!({})), json!({}))).await;
    assert_eq!((status, error.as_deref()), (404, Some("no_handler")));
    let ui_path = format!("/ext-ui/{UI_ONLY_EXT}/sha256%3A{ui_hex}/index.html");
    let page =
        emulator.call(http_get(&ui_path, &format!("path=%2F&tenant={TENANT}"), "kelp.example.test")).await.json();
    assert_eq!(page["statusCode"], 200, "{page}");
    assert!(page["body"].as_str().unwrap().contains("UI-only"));
    // The page's own later requests carry no tenant: the registry id is known by then.
    let again =
        emulator.call(http_get(&format!("/ext-ui/{UI_ONLY_EXT}/{ui_hex}/"), "", "kelp.example.test")).await.json();
    assert_eq!(again["statusCode"], 200, "{again}");
    let other = emulator.call(http_get(&format!("/ext-ui/{CORPUS_EXT}/{ui_hex}/index.html"), "", "kelp.example.test"));
    assert_eq!(other.await.json()["statusCode"], 404, "another extension's id does not reach this UI");

    // Alga's per-install UI domain: `GET /` on it redirects to that install's UI.
    let root = emulator.call(http_get("/", "", "9a6b0b44-3f1c2d4e.apps.example.test")).await.json();
    assert_eq!(root["statusCode"], 307, "{root}");
    let location = root["headers"]["location"].as_str().unwrap();
    assert!(location.starts_with(&format!("/ext-ui/{UI_ONLY_EXT}/sha256%3A{ui_hex}/index.html?tenant=")), "{location}");
    let unknown = emulator.call(http_get("/", "", "nobody-here.apps.example.test")).await.json();
    assert_eq!(unknown["statusCode"], 404);
    let foreign = emulator.call(http_get("/", "", "attacker.example")).await.json();
    assert_eq!(foreign["statusCode"], 404, "hosts outside the UI domain root are never looked up");
}

const OTHER_TENANT: &str = "2b7c1d9e-0f3a-4b5c-8d6e-7f8091a2b3c4";

/// The wat-hello component under another name, version and marker (so each is its own bundle).
fn wat_bundle(name: &str, version: &str, marker: &str) -> Vec<u8> {
    let dir = restaged(&staged_example("wat-hello"), &format!("corpus-{name}-{marker}"), |m| {
        m["name"] = json!(name);
        m["version"] = json!(version);
        m["description_for_tests"] = json!(marker);
    });
    kelp_runtime::publish::pack_dir(&dir).unwrap()
}

/// A WAT guest whose handler answers `count` headers whose values all name the same `len`
/// bytes of zeros at 1 MiB (its memory grown to fit); with `distinct`, header i is named by
/// i + 1 of those zeros, else every header is `content-type`.
fn headers_bundle(name: &str, count: u32, len: u32, distinct: bool) -> Vec<u8> {
    let (name_ptr, name_len) = if distinct {
        ("(i32.const 1048576)", "(i32.add (local.get $body) (i32.const 1))")
    } else {
        ("(i32.const 4160)", "(i32.const 12)")
    };
    let prelude = format!(
        r#"
      (drop (memory.grow (i32.const 96)))
      (local.set $body (i32.const 0))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $body) (i32.const {count})))
        (i32.store (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) {name_ptr})
        (i32.store offset=4 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) {name_len})
        (i32.store offset=8 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const 1048576))
        (i32.store offset=12 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const {len}))
        (local.set $body (i32.add (local.get $body) (i32.const 1)))
        (br $next)))
      (i32.store16 (i32.const 1024) (i32.const 200))
      (i32.store (i32.const 1028) (i32.const 65536))
      (i32.store (i32.const 1032) (i32.const {count}))
      (i32.store8 (i32.const 1036) (i32.const 0))
      (return (i32.const 1024))
    "#
    );
    kelp_runtime::publish::pack_dir(&staged_wat(name, &prelude)).unwrap()
}

fn context_of(tenant: &str, extension: &str, hex: &str) -> Value {
    let mut c = context(extension, hex);
    c["tenant_id"] = json!(tenant);
    c
}

/// An execute event for `tenant` (the fixture's routing headers follow the context).
fn execute_for(tenant: &str, extension: &str, hex: &str, http: Value, extra: Value) -> Value {
    let mut event = execute_event(context_of(tenant, extension, hex), http, extra);
    event["headers"]["x-alga-tenant"] = json!(tenant);
    event["multiValueHeaders"]["x-alga-tenant"] = json!([tenant]);
    event
}

/// The second hardening round's findings, each through the gateway binary: one tenant's
/// bundle cannot squat or shadow another's name@version, an idempotency key answers only its
/// own request, invalid ids are a clear 400, the runner's answer keeps the header caps, the
/// host never copies more than a call's memory limit out of a guest, every UI file is
/// sandboxed, and a UI swapped in the bucket is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_hardening_rounds_findings_hold_in_the_gateway_binary() {
    let kelp = TestKelp::start().await;
    let squatter = wat_bundle("com.victimco.payroll", "2.0.0", "squat");
    let genuine = wat_bundle("com.victimco.payroll", "2.0.0", "genuine");
    let aliased = headers_bundle("test.corpus-aliased", 31, 4 << 20, false);
    let flood = headers_bundle("test.corpus-header-flood", 200, 8, true);
    let (bucket, hashes) = kelp_tests::aws::alga_bundle_bucket(&[
        (OTHER_TENANT, "ext-payroll", &squatter),
        (TENANT, "ext-payroll", &genuine),
        (TENANT, "ext-aliased", &aliased),
        (TENANT, "ext-flood", &flood),
    ])
    .await;
    // A UI published to Kelp, with an SVG that scripts, then swapped in the blob store.
    let ui_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ui_dir.path().join("ui")).unwrap();
    let manifest = json!({"name": "com.acme.swapped-ui", "version": "1.0.0", "runtime": "wasm-js@1",
        "ui": {"type": "iframe", "entry": "ui/index.html"}});
    std::fs::write(ui_dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    let marker = format!("{:?}", std::time::SystemTime::now());
    std::fs::write(ui_dir.path().join("ui/index.html"), format!("<p>genuine {marker}</p>")).unwrap();
    std::fs::write(
        ui_dir.path().join("ui/logo.svg"),
        r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#,
    )
    .unwrap();
    let ui = kelp.publish(ui_dir.path()).await;
    let ui_hex = ui.version.content_hash.trim_start_matches("sha256:").to_string();

    let artifacts = tempfile::tempdir().unwrap();
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _gateway = spawn_private_runner(
        &kelp,
        &emulator,
        &bucket,
        &[("KELP_UI_PUBLIC", "true"), ("KELP_ARTIFACT_DIR", artifacts.path().to_str().unwrap())],
    );
    emulator.wait_ready(spawned).await;
    let hello = || get("/hello", json!({}));

    // #3: the squatter's name@version neither blocks the genuine bundle nor runs for its tenant.
    let (status, _, error) =
        run(&emulator, execute_for(OTHER_TENANT, "ext-payroll", &hashes[0], hello(), json!({}))).await;
    assert_eq!((status, error), (200, None));
    let (status, _, error) = run(&emulator, execute_for(TENANT, "ext-payroll", &hashes[1], hello(), json!({}))).await;
    assert_eq!((status, error), (200, None), "the genuine bundle publishes and runs");
    let (status, _, error) = run(&emulator, execute_for(TENANT, "ext-payroll", &hashes[0], hello(), json!({}))).await;
    assert_eq!((status, error.as_deref()), (404, Some("bundle_not_found")), "the squatter's hash is not this tenant's");

    // #5: one idempotency key, two different requests: the second is refused, not replayed.
    let keyed = |path: &str| {
        execute_for(TENANT, "ext-payroll", &hashes[1], get(path, json!({})), json!({"idempotency_key": "same-key"}))
    };
    let once = keyed("/hello");
    let (status, first, _) = run(&emulator, once.clone()).await;
    assert_eq!(status, 200);
    let (status, again, _) = run(&emulator, once).await;
    assert_eq!((status, again), (200, first), "the same request replays its answer");
    let (status, _, error) = run(&emulator, keyed("/other")).await;
    assert_eq!(status, 409);
    assert!(error.unwrap_or_default().starts_with("idempotency_key_reused"));

    // #9: ids that could leave their key are a clear 400, not a 502 from the store.
    let (status, _, error) = run(&emulator, execute_for("a/b", "ext-payroll", &hashes[1], hello(), json!({}))).await;
    assert_eq!(status, 400);
    assert!(error.unwrap_or_default().starts_with("invalid_tenant"));

    // #10: the runner's answer keeps the gateway's header caps.
    let answer =
        runner_answer(&emulator, execute_for(TENANT, "ext-flood", &hashes[3], get("/run", json!({})), json!({}))).await;
    assert_eq!(answer["status"], 200, "{answer}");
    let kept = answer["headers"].as_object().unwrap().len();
    assert_eq!(kept, kelp_runtime::gateway::headers::MAX_RESPONSE_HEADERS, "200 distinct headers, capped");

    // #7: 31 headers aliasing one 4 MiB string, under a call memory limit of 8 MiB.
    let limited = json!({"limits": {"timeout_ms": 10000, "memory_mb": 8}});
    let mut event = execute_for(TENANT, "ext-aliased", &hashes[2], get("/run", json!({})), json!({}));
    let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body["limits"] = limited["limits"].clone();
    event["body"] = json!(body.to_string());
    let (status, _, error) = run(&emulator, event).await;
    assert_eq!((status, error.as_deref()), (500, Some("extension_memory_limit")));

    // #1: an SVG is sandboxed like HTML.
    let svg =
        emulator.call(http_get(&format!("/ext-ui/com.acme.swapped-ui/{ui_hex}/logo.svg"), "", "kelp.example.test"));
    let svg = svg.await.json();
    assert_eq!(svg["statusCode"], 200, "{svg}");
    let csp = svg["headers"]["content-security-policy"].as_str().unwrap_or_default();
    assert!(csp.contains("sandbox") && !csp.contains("allow-same-origin"), "{csp}");

    // #4: the index and a file swapped in the blob store before this sandbox first loads them.
    let evil = b"<script>steal()</script>";
    kelp.platform.blobs.put(&format!("ui/{ui_hex}/files/index.html"), evil).await.unwrap();
    let index = json!({"entry": "index.html", "files": {"index.html": {"size": evil.len(),
        "sha256": kelp_runtime::publish::content_hash(evil).trim_start_matches("sha256:")}}});
    kelp.platform.blobs.put(&format!("ui/{ui_hex}/index.json"), index.to_string().as_bytes()).await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _fresh_gateway = spawn_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        &emulator,
        "kelp-gateway",
        &kelp.function_env(&[("KELP_UI_PUBLIC", "true"), ("KELP_ARTIFACT_DIR", fresh.path().to_str().unwrap())]),
    );
    emulator.wait_ready(spawned).await;
    let page =
        emulator.call(http_get(&format!("/ext-ui/com.acme.swapped-ui/{ui_hex}/index.html"), "", "kelp.example.test"));
    let page = page.await.json();
    assert_eq!(page["statusCode"], 503, "{page}");
    assert!(!page["body"].as_str().unwrap_or_default().contains("steal"));
}
