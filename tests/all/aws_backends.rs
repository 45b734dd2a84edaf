//! The gateway over the AWS backends (moto, redis-server): the same behaviour as on the
//! embedded default, and the fault behaviour: answer from cache where the spec allows,
//! otherwise a clear 503, recover on its own, never hang past the timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kelp_runtime::installs::set_secrets;
use kelp_tests::aws::{aws_env, moto_url, redis_settings};
use kelp_tests::services::{moto, shared_redis, FaultProxy, OwnRedis};
use kelp_tests::*;

const JS: &str = "/api/ext/com.kelp.examples.js-notes";

#[tokio::test]
async fn serves_the_examples_over_dynamodb_s3_and_secrets_manager() {
    let kelp = TestKelp::start_aws(&[]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    assert!(kelp.platform.cache().has_blob_artifact(&published.version.component_hash).await, "artifact in S3");
    let secrets = BTreeMap::from([("api_key".to_string(), "from-secrets-manager".to_string())]);
    set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();
    let t = token("acme", RW);
    assert_eq!(json_body(kelp.get(&format!("{JS}/hello"), &t).await).await["message"], "Hello, acme!");
    assert_eq!(json_body(kelp.get(&format!("{JS}/secret"), &t).await).await["length"], 20);
    let r = kelp
        .client
        .put(format!("{}{JS}/notes/n1", kelp.base))
        .bearer_auth(&t)
        .body(r#"{"text":"dynamo"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(r).await["revision"], 1);
    assert_eq!(json_body(kelp.get(&format!("{JS}/notes/n1"), &t).await).await["text"], "dynamo");
    assert_eq!(kelp.get(&format!("{JS}/hello"), &token("globex", RW)).await.status(), 404);
}

/// A gateway whose DynamoDB, S3 and Secrets Manager each go through their own cuttable proxy.
async fn kelp_behind_proxies(extra: &[(&str, &str)]) -> (TestKelp, FaultProxy, FaultProxy, FaultProxy) {
    let (ddb, s3, sm) = (
        FaultProxy::start(moto().port).await,
        FaultProxy::start(moto().port).await,
        FaultProxy::start(moto().port).await,
    );
    let mut env = aws_env(&moto_url());
    env.insert("AWS_ENDPOINT_URL_DYNAMODB".into(), ddb.url());
    env.insert("AWS_ENDPOINT_URL_S3".into(), s3.url());
    env.insert("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), sm.url());
    (TestKelp::start_env(env, extra).await, ddb, s3, sm)
}

async fn timed_get(kelp: &TestKelp, path: &str) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let r = kelp.get(path, &token("acme", RW)).await;
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null);
    (status, body, started.elapsed())
}

#[tokio::test]
async fn dynamodb_down_is_a_clear_503_and_recovers() {
    let (kelp, ddb, _s3, _sm) = kelp_behind_proxies(&[]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let path = "/api/ext/com.kelp.examples.wat-hello/hello";
    assert_eq!(timed_get(&kelp, path).await.0, 200);
    ddb.cut();
    let (status, body, took) = timed_get(&kelp, path).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("service_unavailable")), "{body}");
    assert!(took < Duration::from_secs(6), "bounded by the SDK timeouts, took {took:?}");
    ddb.restore();
    let mut recovered = false;
    for _ in 0..20 {
        if timed_get(&kelp, path).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "the gateway recovers on its own when DynamoDB returns");
}

#[tokio::test]
async fn s3_down_serves_cached_components_and_503s_a_cold_one() {
    let artifacts = tempfile::tempdir().unwrap();
    let dir = artifacts.path().to_string_lossy().into_owned();
    let (kelp, _ddb, s3, _sm) = kelp_behind_proxies(&[("KELP_ARTIFACT_DIR", &dir)]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let path = "/api/ext/com.kelp.examples.wat-hello/hello";
    assert_eq!(timed_get(&kelp, path).await.0, 200);
    s3.cut();
    assert_eq!(timed_get(&kelp, path).await.0, 200, "memory tier answers without S3");
    kelp.platform.cache().clear_memory();
    assert_eq!(timed_get(&kelp, path).await.0, 200, "local artifact tier answers without S3");
    kelp.platform.cache().clear_memory();
    std::fs::remove_dir_all(artifacts.path()).unwrap();
    let (status, body, took) = timed_get(&kelp, path).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("service_unavailable")), "{body}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    s3.restore();
    assert_eq!(timed_get(&kelp, path).await.0, 200, "recovers when S3 returns");
}

#[tokio::test]
async fn secrets_manager_down_serves_cached_secrets_until_the_ttl_then_503() {
    let (kelp, _ddb, _s3, sm) = kelp_behind_proxies(&[("KELP_SECRETS_TTL_SECS", "2")]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let secrets = BTreeMap::from([("api_key".to_string(), "abc".to_string())]);
    set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();
    assert_eq!(timed_get(&kelp, &format!("{JS}/secret")).await.1["length"], 3);
    sm.cut();
    let (status, body, _) = timed_get(&kelp, &format!("{JS}/secret")).await;
    assert_eq!((status, body["length"].as_u64()), (200, Some(3)), "cached within the TTL");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body, took) = timed_get(&kelp, &format!("{JS}/secret")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("secrets_unavailable")), "{body}");
    assert!(took < Duration::from_secs(6));
    let (status, _, _) = timed_get(&kelp, &format!("{JS}/hello")).await;
    assert_eq!(status, 503, "the install may read secrets, so no request runs without them");
    sm.restore();
    assert_eq!(timed_get(&kelp, &format!("{JS}/secret")).await.1["length"], 3, "recovers");
}

#[tokio::test]
async fn the_last_invocations_events_reach_redis_before_the_response() {
    let redis = shared_redis();
    let settings = redis_settings(&redis);
    let prefix = settings.prefix.clone();
    let kelp =
        TestKelp::start_with(&[("RUNNER_DEBUG_REDIS_URL", &redis), ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix)])
            .await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let app = kelp_runtime::local::lambda_gateway_app(kelp.platform.clone(), &kelp.settings);
    use tower::ServiceExt;
    let req = axum::http::Request::get(format!("{JS}/log?lines=50"))
        .header("authorization", format!("Bearer {}", token("acme", RW)))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    // No waiting: what the Lambda invocation published must already be in Redis.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}acme:{}", published.extension.id);
    let len: usize = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(len, 50 + 1 + 1 + 1 + 1, "50 stdout lines, 1 stderr line, 2 log lines, the request line: {len}");
}

#[tokio::test]
async fn redis_down_never_fails_or_slows_requests_and_publishing_resumes() {
    let redis = OwnRedis::start();
    let settings = redis_settings(&redis.url());
    let prefix = settings.prefix.clone();
    let kelp = TestKelp::start_with(&[
        ("RUNNER_DEBUG_REDIS_URL", &redis.url()),
        ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix),
        ("KELP_RATE_BURST", "1000"),
    ])
    .await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    let path = "/api/ext/com.kelp.examples.wat-hello/hello";
    let mut healthy = Vec::new();
    for _ in 0..20 {
        let (s, took) = {
            let t = Instant::now();
            let r = kelp.get(path, &token("acme", RW)).await;
            (r.status(), t.elapsed())
        };
        assert_eq!(s, 200);
        healthy.push(took);
    }
    redis.stop();
    let mut down = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(kelp.get(path, &token("acme", RW)).await.status(), 200, "Redis down never fails a request");
        down.push(t.elapsed());
    }
    healthy.sort();
    down.sort();
    assert!(
        down[10] < healthy[10] + Duration::from_millis(50),
        "p50 with Redis down {:?} vs up {:?}",
        down[10],
        healthy[10]
    );
    assert!(down[19] < Duration::from_secs(1), "no request waits on Redis: max {:?}", down[19]);
    kelp.platform.debug.flush(Duration::from_secs(2)).await;
    assert!(kelp.platform.debug.stats().fallback > 0, "events went to the in-process bus, counted");
    redis.resume();
    // The publisher reconnects with backoff; new events reach Redis again.
    let client = redis::Client::open(redis.url().as_str()).unwrap();
    let key = format!("{prefix}acme:{}", published.extension.id);
    let mut arrived = false;
    for _ in 0..60 {
        assert_eq!(kelp.get(path, &token("acme", RW)).await.status(), 200);
        kelp.platform.debug.flush(Duration::from_millis(500)).await;
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let len: usize = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await.unwrap_or(0);
            if len > 0 {
                arrived = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(arrived, "publishing resumes when Redis returns");
}

#[tokio::test]
async fn rate_limits_are_shared_through_redis_and_fall_back_per_instance() {
    let redis = OwnRedis::start();
    let env =
        [("RUNNER_DEBUG_REDIS_URL", redis.url()), ("KELP_RATE_BURST", "4".into()), ("KELP_RATE_PER_SEC", "0.1".into())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Two gateway instances over one Redis: one bucket between them.
    let a = TestKelp::start_with(&env).await;
    let published = a.publish(&staged_example("wat-hello")).await;
    a.install(&published, "acme", &[]).await;
    let gw_b = kelp_runtime::gateway::Gateway::new(a.platform.clone(), a.settings.gateway());
    let app_b = kelp_runtime::gateway::router(gw_b);
    let path = "/api/ext/com.kelp.examples.wat-hello/hello";
    let t = token("acme", RW);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let status = if i % 2 == 0 {
            a.get(path, &t).await.status().as_u16()
        } else {
            use tower::ServiceExt;
            let req = axum::http::Request::get(path)
                .header("authorization", format!("Bearer {t}"))
                .body(axum::body::Body::empty())
                .unwrap();
            app_b.clone().oneshot(req).await.unwrap().status().as_u16()
        };
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "one shared bucket of 4 across both instances");
    redis.stop();
    let r = a.get(path, &t).await;
    assert_eq!(r.status(), 200, "per-instance fallback bucket (full) answers while Redis is down");
}

#[tokio::test]
async fn a_fresh_sandbox_fetches_the_compressed_artifact_once_verified_and_compiles_nothing() {
    let env = aws_env(&moto_url());
    let publisher = TestKelp::start_env(env.clone(), &[]).await;
    let published = publisher.publish(&staged_example("js-notes")).await;
    publisher.install(&published, "acme", &[]).await;
    let hash = &published.version.component_hash;
    let compat = publisher.platform.cache().engine().compat_hash.clone();
    let stored =
        publisher.platform.blobs.get(&kelp_runtime::blobs::artifact_key(&compat, hash)).await.unwrap().unwrap();
    let artifact = std::fs::read(publisher.platform.cache().local_artifact_path(hash)).unwrap();
    assert_eq!(stored[..4], [0x28, 0xb5, 0x2f, 0xfd], "publish stores the artifact zstd-compressed");
    assert!(stored.len() * 2 < artifact.len(), "{} compressed of {}", stored.len(), artifact.len());

    // A fresh sandbox: the same tables and bucket, nothing in its artifact dir.
    let artifacts = tempfile::tempdir().unwrap();
    let dir = artifacts.path().to_string_lossy().into_owned();
    let sandbox = TestKelp::start_env(env, &[("KELP_ARTIFACT_DIR", &dir)]).await;
    let t = token("acme", RW);
    let hello = format!("{JS}/hello");
    let calls = (0..12).map(|_| sandbox.get(&hello, &t));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
    }
    let stats = &sandbox.platform.cache().stats;
    assert_eq!(stats.blob_hits.load(std::sync::atomic::Ordering::Relaxed), 1, "one fetch for 12 waiting requests");
    assert_eq!(stats.compiles.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing compiled");
    assert_eq!(
        std::fs::read(sandbox.platform.cache().local_artifact_path(hash)).unwrap(),
        artifact,
        "the artifact written is the one published"
    );
    let leftovers: Vec<_> = std::fs::read_dir(artifacts.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".cwasm") && !n.ends_with(".cwasm.xxh3"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}
