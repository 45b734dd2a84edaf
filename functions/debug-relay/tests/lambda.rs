//! The real debug-relay binary under a Lambda Runtime API emulator with response streaming:
//! SSE chunks reach the client as they happen, non-streaming routes return whole bodies.

use std::time::{Duration, Instant};

use kelp_tests::aws::redis_settings;
use kelp_tests::lambda::{fixture, spawn_function, Emulator};
use kelp_tests::services::shared_redis;
use kelp_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_binary_streams_sse_and_answers_its_other_routes() {
    // Gateway (in this process) and relay (the binary) share Redis, as in AWS.
    let redis = shared_redis();
    let prefix = redis_settings(&redis).prefix;
    let kelp =
        TestKelp::start_with(&[("RUNNER_DEBUG_REDIS_URL", &redis), ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix)])
            .await;
    let js = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&js, "demo", &[]).await;
    let hit = |rid: &'static str| {
        kelp.client
            .get(format!("{}/api/ext/com.kelp.examples.js-notes/hello", kelp.base))
            .bearer_auth(token("demo", RW))
            .header("x-request-id", rid)
            .send()
    };
    assert_eq!(hit("before-stream").await.unwrap().status(), 200);
    kelp.platform.debug.flush(Duration::from_secs(2)).await;

    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let env = kelp.function_env(&[
        ("RUNNER_DEBUG_REDIS_URL", &redis),
        ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix),
        ("KELP_DEBUG_SESSION_MAX_SECS", "3"),
    ]);
    let _relay =
        spawn_function(std::path::Path::new(env!("CARGO_BIN_EXE_debug-relay")), &emulator, "kelp-debug-relay", &env);
    eprintln!("debug-relay init (cold start to first poll): {:?}", emulator.wait_ready(spawned).await);

    // The stream: backlog first, then a live event, each in its own chunk as it happens.
    let mut stream = emulator.invoke(fixture("relay/stream.json"));
    let mut body = String::new();
    let mut first_event = None;
    while first_event.is_none() {
        let (at, chunk) =
            tokio::time::timeout(Duration::from_secs(10), stream.chunks.recv()).await.expect("a chunk").expect("open");
        body.push_str(&String::from_utf8_lossy(&chunk));
        if body.contains("before-stream") {
            first_event = Some(at.duration_since(stream.started));
        }
    }
    eprintln!("relay first SSE event through the emulator: {:?}", first_event.unwrap());
    assert!(first_event.unwrap() < Duration::from_secs(2));
    let published = Instant::now();
    assert_eq!(hit("live-event").await.unwrap().status(), 200);
    let live_latency = loop {
        let (at, chunk) = tokio::time::timeout(Duration::from_secs(5), stream.chunks.recv())
            .await
            .expect("the live event arrives")
            .expect("open");
        body.push_str(&String::from_utf8_lossy(&chunk));
        if body.contains("live-event") {
            break at.duration_since(published);
        }
    };
    eprintln!("relay live event (request → SSE chunk at the client): {live_latency:?}");
    assert!(live_latency < Duration::from_secs(2), "streamed promptly, not buffered until the end");
    let outcome = tokio::time::timeout(Duration::from_secs(10), stream.done).await.unwrap().unwrap();
    assert_eq!(
        outcome.headers.get("lambda-runtime-function-response-mode").map(|v| v.to_str().unwrap()),
        Some("streaming")
    );
    let (prelude, sse) = outcome.streamed();
    assert_eq!(prelude["statusCode"], 200);
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
    let sse = String::from_utf8_lossy(&sse);
    assert!(sse.contains("event: end") && sse.contains("max_duration"), "the session ends at its maximum duration");

    // Non-streaming routes return whole bodies under the streaming runtime.
    let poll = emulator.call(fixture("relay/poll.json")).await;
    let (prelude, body) = poll.streamed();
    assert_eq!(prelude["statusCode"], 200);
    let polled: Value = serde_json::from_slice(&body).unwrap();
    assert!(polled["events"].as_array().unwrap().iter().any(|e| e["requestId"] == "live-event"));
    assert!(polled["lastId"].is_string());
    let (prelude, body) = emulator.call(fixture("relay/health.json")).await.streamed();
    assert_eq!(prelude["statusCode"], 200);
    assert!(String::from_utf8_lossy(&body).contains("\"status\":\"ok\""));
    let (prelude, body) = emulator.call(fixture("relay/console.json")).await.streamed();
    assert_eq!(prelude["statusCode"], 200);
    assert!(String::from_utf8_lossy(&body).contains("Kelp debug console"));
    let (prelude, _) = emulator.call(fixture("relay/stream-forbidden.json")).await.streamed();
    assert_eq!(prelude["statusCode"], 403);
    let refused = emulator.call(fixture("invalid/s3-put.json")).await;
    assert!(!refused.ok && refused.json()["errorMessage"].as_str().unwrap().contains("debug-relay function accepts"));
}
