//! The real gateway binary under a Lambda Runtime API emulator, fed the events/ fixtures:
//! what `sam local invoke` does, on a machine without Docker.

use std::time::{Duration, Instant};

use base64::Engine as _;
use kelp_tests::lambda::{fixture, spawn_function, spawn_function_with_stdout, Emulator};
use kelp_tests::*;
use serde_json::Value;

fn body_text(answer: &Value) -> String {
    let body = answer["body"].as_str().unwrap_or_default();
    if answer["isBase64Encoded"] == true {
        String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(body).unwrap()).into_owned()
    } else {
        body.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_binary_answers_every_gateway_fixture() {
    let kelp = TestKelp::start().await;
    let js = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&js, "demo", &[]).await;
    let wat = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&wat, "demo", &[]).await;
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let _gateway = spawn_function_with_stdout(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        &emulator,
        "kelp-gateway",
        &kelp.function_env(&[
            ("KELP_RUNNER_SERVICE_TOKEN", "kelp-events-runner-token"),
            ("KELP_CORS_ORIGINS", "https://app.example.com"),
        ]),
        stdout.reopen().unwrap().into(),
    );
    let init = emulator.wait_ready(spawned).await;
    eprintln!("gateway init (cold start to first poll): {init:?}");
    assert!(init < Duration::from_secs(10));

    let started = Instant::now();
    let first = emulator.call(fixture("gateway/js-notes-hello.json")).await.json();
    eprintln!("gateway first JS request after init (precompiled artifact on disk): {:?}", started.elapsed());
    assert_eq!(first["statusCode"], 200, "{first}");
    assert_eq!(serde_json::from_str::<Value>(&body_text(&first)).unwrap()["message"], "Hello, demo!");

    let cases: &[(&str, u16, &str)] = &[
        ("gateway/wat-hello-get.json", 200, "hello from wat: /hello?name=kelp"),
        ("gateway/wat-hello-post.json", 200, "hello from wat: /hello"),
        ("gateway/js-notes-put.json", 200, "\"revision\":1"),
        ("gateway/js-notes-list.json", 200, "written by an event fixture"),
        ("gateway/cors-preflight.json", 204, ""),
        ("gateway/no-identity.json", 401, "unauthenticated"),
        ("gateway/forbidden.json", 403, "extension:write is required"),
        ("gateway/bearer-token.json", 200, "hello from wat"),
        ("gateway/runner-execute.json", 200, "bundle_not_found"),
        ("gateway/ui-asset.json", 404, "not_found"),
        ("gateway/health.json", 200, "\"status\":\"ok\""),
    ];
    for (file, status, needle) in cases {
        let answer = emulator.call(fixture(file)).await;
        assert!(answer.ok, "{file}: the function reported an error: {}", String::from_utf8_lossy(&answer.body));
        let answer = answer.json();
        assert_eq!(answer["statusCode"], *status, "{file}: {answer}");
        assert!(body_text(&answer).contains(needle), "{file}: body {:?} lacks {needle:?}", body_text(&answer));
        let headers = &answer["headers"];
        assert!(headers["x-request-id"].is_string(), "{file}: x-request-id on every response");
    }
    let preflight = emulator.call(fixture("gateway/cors-preflight.json")).await.json();
    assert_eq!(preflight["headers"]["access-control-allow-origin"], "https://app.example.com");

    // A binary UI asset travels base64-encoded through lambda_http.
    let hash = js.version.content_hash.trim_start_matches("sha256:");
    let mut asset = fixture("gateway/ui-asset.json");
    let path = format!("/ext-ui/com.kelp.examples.js-notes/{hash}/icon.png");
    asset["rawPath"] = Value::String(path.clone());
    asset["requestContext"]["http"]["path"] = Value::String(path);
    let answer = emulator.call(asset).await.json();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["isBase64Encoded"], true);
    let png = base64::engine::general_purpose::STANDARD.decode(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(png, std::fs::read(repo_root().join("examples/js-notes/ui/icon.png")).unwrap(), "byte-exact");
    assert_eq!(answer["headers"]["content-type"], "image/png");

    // Authorizer claims in an event from another API are not trusted (KELP_API_ID=abc123):
    // without a bearer token of its own the request is unauthenticated.
    let mut foreign = fixture("gateway/js-notes-hello.json");
    foreign["requestContext"]["apiId"] = Value::String("another-api".into());
    let answer = emulator.call(foreign).await.json();
    assert_eq!(answer["statusCode"], 401, "{answer}");

    // An event of another source: a clear error naming the accepted ones.
    let refused = emulator.call(fixture("invalid/s3-put.json")).await;
    assert!(!refused.ok);
    let error = refused.json();
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("accepts API Gateway HTTP API")
            && message.contains("Function URL")
            && message.contains("Records"),
        "{error}"
    );
    // And the function keeps serving after it.
    assert_eq!(emulator.call(fixture("gateway/wat-hello-get.json")).await.json()["statusCode"], 200);
    // Each tenant request left one CloudWatch EMF document on stdout: namespace Kelp, the
    // extension as a dimension, never a tenant.
    let lines: Vec<Value> = std::fs::read_to_string(stdout.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect();
    let js_hello = lines
        .iter()
        .find(|d| d["Extension"] == "com.kelp.examples.js-notes" && d["Outcome"] == "ok")
        .expect("an EMF document for the JS request");
    let directive = &js_hello["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Kelp");
    assert_eq!(directive["Dimensions"][0], serde_json::json!(["Function", "Extension"]));
    assert_eq!((js_hello["Function"].as_str(), js_hello["Requests"].as_u64()), (Some("gateway"), Some(1)));
    assert!(js_hello["Duration"].as_f64().unwrap() > 0.0);
    assert!(lines.iter().any(|d| d["Code"] == "unauthenticated" && d["Refusals"] == 1), "the 401 is a refusal");
    assert!(
        lines.iter().all(|d| d.get("Tenant").is_none() && !d.to_string().contains("\"demo\"")),
        "no tenant in metrics"
    );
    // Usage is written before each answer leaves the function (in Lambda the sandbox may be
    // frozen right after): the JS install's three requests (hello, put, list) are in the store
    // already, with the storage calls they made.
    let hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600;
    let query = kelp_runtime::usage::UsageQuery {
        tenant: Some("demo".into()),
        extension: Some(js.extension.id.clone()),
        from: kelp_runtime::usage::hour_label(hour - 1),
        to: kelp_runtime::usage::hour_label(hour + 2),
        ..Default::default()
    };
    let used = kelp_runtime::usage::totals(&kelp.platform.usage_store.query(&query).await.unwrap());
    assert_eq!(used.requests, 3, "{used:?}");
    assert!(used.storage_ops >= 2 && used.wall_us > 0, "{used:?}");
}

/// `RunnerAuth=private-network` as template.yaml deploys it: the private REST API's event (no
/// token, as Alga's `/api/ext` route sends it) is served when it names an allowed VPC endpoint;
/// the same call through another endpoint, or through the public HTTP API, needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenless_runner_calls_are_served_only_through_the_private_api() {
    let kelp = TestKelp::start().await;
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _gateway = spawn_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        &emulator,
        "kelp-private-runner",
        &kelp.function_env(&[
            ("KELP_RUNNER_SERVICE_TOKEN", "kelp-events-runner-token"),
            ("KELP_RUNNER_AUTH", "private-network"),
            ("KELP_RUNNER_VPC_ENDPOINT_IDS", "vpce-0a1b2c3d4e5f60718"),
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"),
        ]),
    );
    emulator.wait_ready(spawned).await;
    let status_and_error = |answer: &Value| {
        let body: Value = serde_json::from_str(&body_text(answer)).unwrap_or(Value::Null);
        (answer["statusCode"].as_u64(), body["error"].as_str().map(str::to_string), body["status"].as_u64())
    };

    let private = emulator.call(fixture("gateway/runner-execute-private.json")).await.json();
    assert_eq!(
        status_and_error(&private),
        (Some(200), Some("bundle_not_found".into()), Some(404)),
        "served without a token: the runner's own answer in a 200 ({private})"
    );

    let mut other_endpoint = fixture("gateway/runner-execute-private.json");
    other_endpoint["requestContext"]["identity"]["vpceId"] = Value::String("vpce-0ffffffffffffffff".into());
    let refused = emulator.call(other_endpoint).await.json();
    assert_eq!(refused["statusCode"], 401, "an endpoint not in KELP_RUNNER_VPC_ENDPOINT_IDS: {refused}");

    let mut public_without_token = fixture("gateway/runner-execute.json");
    public_without_token["headers"].as_object_mut().unwrap().remove("x-runner-service-token");
    let refused = emulator.call(public_without_token).await.json();
    assert_eq!(refused["statusCode"], 401, "the public HTTP API never skips the token: {refused}");
    assert!(body_text(&refused).contains("private route"), "the refusal says where tokenless calls work");

    let mut wrong_token = fixture("gateway/runner-execute-private.json");
    wrong_token["headers"]["x-runner-service-token"] = Value::String("not-the-token".into());
    assert_eq!(emulator.call(wrong_token).await.json()["statusCode"], 401, "a wrong token is refused even privately");

    let public_with_token = emulator.call(fixture("gateway/runner-execute.json")).await.json();
    assert_eq!(status_and_error(&public_with_token).0, Some(200), "{public_with_token}");
}

/// Inside Lambda the private mode must name its VPC endpoints; without them the function
/// refuses to start rather than guess which route is private.
#[tokio::test]
async fn the_private_runner_mode_without_vpc_endpoints_refuses_to_start() {
    let kelp = TestKelp::start().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", "kelp-private-runner")
        .envs(kelp.function_env(&[("KELP_RUNNER_AUTH", "private-network")]))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KELP_RUNNER_VPC_ENDPOINT_IDS"), "{stderr}");
}
