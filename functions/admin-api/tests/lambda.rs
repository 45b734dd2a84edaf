//! The real admin-api binary under a Lambda Runtime API emulator, fed the events/ fixtures.

use std::time::Instant;

use kelp_tests::lambda::{fixture, spawn_function, Emulator};
use kelp_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_binary_answers_every_admin_fixture() {
    let kelp = TestKelp::start().await;
    kelp.publish(&staged_example("wat-hello")).await;
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _admin = spawn_function(
        std::path::Path::new(env!("CARGO_BIN_EXE_admin-api")),
        &emulator,
        "kelp-admin-api",
        &kelp.function_env(&[]),
    );
    eprintln!("admin-api init (cold start to first poll): {:?}", emulator.wait_ready(spawned).await);
    let cases: &[(&str, u16, &str)] = &[
        ("admin/openapi.json", 200, "\"3.0.3\""),
        ("admin/list-extensions.json", 200, "com.kelp.examples.wat-hello"),
        ("admin/create-install.json", 201, "\"tenant_id\":\"events-tenant\""),
        ("admin/create-install.json", 201, "\"tenant_id\":\"events-tenant\""), // Idempotency-Key replay
        ("admin/list-installs.json", 200, "events-tenant"),
        ("admin/audit.json", 200, "install.create"),
        ("admin/publish-denied.json", 403, "platform:publish is required"),
    ];
    for (file, status, needle) in cases {
        let answer = emulator.call(fixture(file)).await;
        assert!(answer.ok, "{file}: {}", String::from_utf8_lossy(&answer.body));
        let answer = answer.json();
        let short: String = answer.to_string().chars().take(600).collect();
        assert_eq!(answer["statusCode"], *status, "{file}: {short}");
        assert!(answer["body"].as_str().unwrap_or_default().contains(needle), "{file}: {short}");
    }
    let installs = emulator.call(fixture("admin/list-installs.json")).await.json();
    let listed: Value = serde_json::from_str(installs["body"].as_str().unwrap()).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the replayed create made no second install");
    let refused = emulator.call(fixture("invalid/s3-put.json")).await;
    assert!(!refused.ok && refused.json()["errorMessage"].as_str().unwrap().contains("admin-api function accepts"));
}
