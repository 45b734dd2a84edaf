//! What a deploy configures beyond the environment: secrets given as Secrets Manager ARNs,
//! the IdP's keys read from its jwks_uri or S3 (rotated without a redeploy), Cognito access
//! tokens, and a publish bounded by a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use kelp_tests::aws::{aws_env, moto_url};
use kelp_tests::*;
use serde_json::{json, Value};
use std::sync::Mutex;

const WAT: &str = "/api/ext/com.kelp.examples.wat-hello/hello";

/// A fresh RSA key (openssl): its signing key and its JWK under `kid`.
fn rsa_key(kid: &str) -> (EncodingKey, Value) {
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("key.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let pem = run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    std::fs::write(&pem_path, &pem).unwrap();
    let modulus = run(&["rsa", "-in", pem_path.to_str().unwrap(), "-noout", "-modulus"]);
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64.encode(n), "e": "AQAB"});
    (EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(), jwk)
}

fn rs256(key: &EncodingKey, kid: &str, mut claims: Value) -> String {
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    claims["iss"] = json!("https://idp.test");
    let header = Header { kid: Some(kid.into()), ..Header::new(jsonwebtoken::Algorithm::RS256) };
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn tenant_claims() -> Value {
    json!({"sub": "user-1", "tenant": "acme", "perms": RW, "user_type": "internal"})
}

/// A loopback JWKS endpoint whose document can change, counting its fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Vec<Value>) -> JwksServer {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let keys = served.lock().unwrap().clone();
                axum::Json(json!({ "keys": keys }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    JwksServer { url, keys, fetches }
}

async fn status_and_error(kelp: &TestKelp, token: &str) -> (u16, String) {
    let r = kelp.get(WAT, token).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"]["message"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn keys_come_from_the_jwks_uri_and_a_rotation_needs_no_restart() {
    let (key1, jwk1) = rsa_key("k1");
    let (key2, jwk2) = rsa_key("k2");
    let idp = jwks_server(vec![jwk1]).await;
    let kelp = TestKelp::start_with(&[
        ("KELP_JWT_JWKS_URL", &idp.url),
        ("KELP_JWT_ISSUER", "https://idp.test"),
        ("KELP_JWT_AUDIENCE", "kelp-app"),
    ])
    .await;
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "read once at start");
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;

    let mut claims = tenant_claims();
    claims["aud"] = json!("kelp-app");
    assert_eq!(status_and_error(&kelp, &rs256(&key1, "k1", claims.clone())).await.0, 200);
    // A Cognito access token: the app client in client_id, no aud.
    let mut cognito = tenant_claims();
    cognito["client_id"] = json!("kelp-app");
    cognito["token_use"] = json!("access");
    assert_eq!(status_and_error(&kelp, &rs256(&key1, "k1", cognito.clone())).await.0, 200);
    cognito["client_id"] = json!("another-app");
    let (status, message) = status_and_error(&kelp, &rs256(&key1, "k1", cognito)).await;
    assert_eq!(status, 401, "{message}");

    // The IdP rotates: k2 appears in its JWKS. The first token signed with it is refused while
    // the set is read again; then it passes, with no restart.
    idp.keys.lock().unwrap().push(jwk2);
    let rotated = rs256(&key2, "k2", claims.clone());
    let (status, message) = status_and_error(&kelp, &rotated).await;
    assert_eq!(status, 401);
    assert!(message.contains("being read again"), "{message}");
    let started = Instant::now();
    loop {
        if status_and_error(&kelp, &rotated).await.0 == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the new key was never picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);

    // Tokens naming made-up keys do not turn into fetches: one per 30 s at most.
    for i in 0..20 {
        let (status, _) = status_and_error(&kelp, &rs256(&key2, &format!("forged-{i}"), claims.clone())).await;
        assert_eq!(status, 401);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2, "no fetch storm from unknown kids");
}

#[tokio::test]
async fn keys_come_from_s3_for_functions_without_nat() {
    let (key, jwk) = rsa_key("s3-key");
    let env = aws_env(&moto_url());
    let settings = kelp_runtime::Settings::from_map(&env).unwrap();
    kelp_runtime::Platform::bootstrap_aws(&settings).await.unwrap();
    let s3 = kelp_runtime::aws::AwsClients::new(&settings.aws).await.s3;
    let bucket = env["KELP_BUCKET"].clone();
    s3.put_object()
        .bucket(&bucket)
        .key("config/jwks.json")
        .body(json!({"keys": [jwk]}).to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let location = format!("s3://{bucket}/config/jwks.json");
    let kelp = TestKelp::start_env(env, &[("KELP_JWT_JWKS_URL", &location)]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    assert_eq!(status_and_error(&kelp, &rs256(&key, "s3-key", tenant_claims())).await.0, 200);
    let (other, _) = rsa_key("s3-key");
    assert_eq!(
        status_and_error(&kelp, &rs256(&other, "s3-key", tenant_claims())).await.0,
        401,
        "another key, same kid"
    );
}

#[tokio::test]
async fn secrets_given_as_arns_are_read_from_secrets_manager_at_start() {
    let env = aws_env(&moto_url());
    let settings = kelp_runtime::Settings::from_map(&env).unwrap();
    let sm = kelp_runtime::aws::AwsClients::new(&settings.aws).await.secrets;
    let mut arns = HashMap::new();
    for (name, value) in [
        ("runner-token", "runner-token-value"),
        ("host-key", r#"{"password":"host-key-value"}"#),
        ("alga-key", "alga-key-value"),
    ] {
        let out = sm
            .create_secret()
            .name(format!("{}-{name}", env["KELP_SECRET_PREFIX"].trim_end_matches('/')))
            .secret_string(value)
            .send()
            .await
            .unwrap();
        arns.insert(name, out.arn().unwrap().to_string());
    }
    let mut with_arns = env.clone();
    for (var, value) in [
        ("KELP_RUNNER_SERVICE_TOKEN_ARN", arns["runner-token"].clone()),
        ("KELP_HOST_API_URL", "https://psa.test".to_string()),
        ("KELP_HOST_API_SECRET_ARN", arns["host-key"].clone()),
        ("KELP_UI_DOMAIN_ROOT", "ext.psa.test".to_string()),
        ("KELP_ALGA_AUTH_KEY_ARN", arns["alga-key"].clone()),
    ] {
        with_arns.insert(var.into(), value);
    }
    let settings = kelp_runtime::wiring::settings_reading_secret_arns(with_arns.clone()).await.unwrap();
    assert_eq!(settings.runner_service_token.as_deref(), Some("runner-token-value"));
    match &settings.host_api {
        Some(kelp_runtime::config::HostApiChoice::Kelp(h)) => assert_eq!(h.secret, "host-key-value"),
        other => panic!("host API: {other:?}"),
    }
    assert_eq!(settings.ui.alga_domains.as_ref().unwrap().api_key, "alga-key-value");
    let shown = format!("{settings:?}");
    assert!(!shown.contains("runner-token-value") && !shown.contains("host-key-value"), "secrets never reach logs");

    // Both forms at once, or an ARN that does not exist: a start-up error naming the setting.
    let mut both = with_arns.clone();
    both.insert("KELP_RUNNER_SERVICE_TOKEN".into(), "plain".into());
    let err = kelp_runtime::wiring::settings_reading_secret_arns(both).await.unwrap_err().to_string();
    assert!(err.contains("KELP_RUNNER_SERVICE_TOKEN and KELP_RUNNER_SERVICE_TOKEN_ARN"), "{err}");
    let mut missing = with_arns;
    missing.insert(
        "KELP_ALGA_AUTH_KEY_ARN".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf".into(),
    );
    let err = format!("{:#}", kelp_runtime::wiring::settings_reading_secret_arns(missing).await.unwrap_err());
    assert!(err.contains("KELP_ALGA_AUTH_KEY_ARN"), "{err}");
}

#[tokio::test]
async fn a_publish_past_its_deadline_answers_504_and_records_no_version() {
    let kelp = TestKelp::start_with(&[("KELP_PUBLISH_DEADLINE_MS", "1")]).await;
    let bundle = kelp_runtime::publish::pack_dir(&staged_example("js-notes")).unwrap();
    let publisher = token("acme", &["platform:publish"]);
    let r = kelp
        .client
        .post(format!("{}/admin/extensions", kelp.base))
        .bearer_auth(&publisher)
        .header("content-type", "application/zstd")
        .body(bundle)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "publish_timeout", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("publish the same bundle again"), "{body}");
    let found = kelp.platform.registry.find_extension_by_name("com.kelp.examples.js-notes").await.unwrap();
    assert!(found.is_none(), "nothing recorded");
}
