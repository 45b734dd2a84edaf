//! The real gateway binary under a Lambda Runtime API emulator, fed the events/ fixtures:
//! what `sam local invoke` does, on a machine without Docker.

use std::time::{Duration, Instant};

use base64::Engine as _;
use kelp_tests::lambda::{fixture, spawn_function, Emulator};
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
    let _gateway = spawn_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
        &emulator,
        "kelp-gateway",
        &kelp.function_env(&[
            ("KELP_RUNNER_SERVICE_TOKEN", "kelp-events-runner-token"),
            ("KELP_CORS_ORIGINS", "https://app.example.com"),
        ]),
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
}
