//! Warm instance reuse (manifest `instances.reuse`): an instance serves further requests of the
//! same install only while its version, grants, config and secrets stay the same, one request
//! at a time; it is dropped after a failure, after `maxRequests` or `maxAgeSeconds`; without
//! the opt-in (or with `KELP_INSTANCE_REUSE=false`) every request gets a fresh instance.
//!
//! The guest (tests/fixtures/warm) counts the requests its instance served in a module-level
//! variable: only a reused instance answers more than 1.

use std::path::PathBuf;
use std::time::Duration;

use kelp_runtime::publish::Published;
use kelp_runtime::stores::InstallRecord;
use kelp_tests::*;
use serde_json::{json, Value};

/// The warm fixture staged under another name/version and `instances` policy (the component
/// is the same, so it compiles once).
fn variant(name: &str, version: &str, instances: Option<Value>) -> PathBuf {
    restaged(&staged_fixture("warm"), &format!("{name}-{version}-{}", std::process::id()), |manifest| {
        manifest["name"] = json!(name);
        manifest["version"] = json!(version);
        match instances {
            Some(policy) => manifest["instances"] = policy,
            None => {
                manifest.as_object_mut().unwrap().remove("instances");
            }
        }
    })
}

fn reuse(max_requests: u32, max_age_seconds: u32) -> Option<Value> {
    Some(json!({"reuse": true, "maxRequests": max_requests, "maxAgeSeconds": max_age_seconds}))
}

/// GET `path` of extension `name` as `tenant`: (status, body, x-request-id).
async fn call(kelp: &TestKelp, tenant: &str, name: &str, path: &str) -> (u16, Value, String) {
    let r = kelp.get(&format!("/api/ext/{name}{path}"), &token(tenant, RW)).await;
    let status = r.status().as_u16();
    let request_id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, r.json().await.unwrap_or(Value::Null), request_id)
}

/// How many requests the serving instance had served, checking the answer is the caller's
/// own (its tenant, install and request id, not an earlier call's).
async fn served(kelp: &TestKelp, tenant: &str, name: &str, install: &InstallRecord) -> u64 {
    let (status, body, request_id) = call(kelp, tenant, name, "/count").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], tenant, "{body}");
    assert_eq!(body["install"], install.install_id.as_str(), "{body}");
    assert_eq!(body["request"], request_id.as_str(), "the guest sees this call's context: {body}");
    body["served"].as_u64().unwrap()
}

async fn install(kelp: &TestKelp, published: &Published, tenant: &str) -> InstallRecord {
    kelp.install(published, tenant, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_serves_only_its_own_install_and_version_and_config() {
    let kelp = TestKelp::start().await;
    let v1 = kelp.publish(&variant("test.warm", "1.0.0", reuse(4, 300))).await;
    let acme = install(&kelp, &v1, "acme").await;
    let globex = install(&kelp, &v1, "globex").await;
    let name = "test.warm";

    for expected in 1..=3 {
        assert_eq!(served(&kelp, "acme", name, &acme).await, expected, "acme's instance keeps its state");
    }
    assert_eq!(served(&kelp, "globex", name, &globex).await, 1, "another tenant's install never shares it");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 4);
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "replaced after maxRequests (4)");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 2);

    let config = [("greeting".to_string(), "Hi".to_string())].into_iter().collect();
    let acme = kelp_runtime::installs::set_config(&kelp.platform, "acme", &acme.install_id, config).await.unwrap();
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "a config change starts a fresh instance");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 2);

    let secrets = [("token".to_string(), "s3cr3t".to_string())].into_iter().collect();
    let acme =
        kelp_runtime::installs::set_secrets(&kelp.platform, "acme", &acme.install_id, &secrets, None).await.unwrap();
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "new secrets start a fresh instance");

    let v2 = kelp.publish(&variant("test.warm", "1.0.1", reuse(4, 300))).await;
    let acme = kelp_runtime::installs::update_install(&kelp.platform, "acme", &acme.install_id, |i| {
        i.version_id = v2.version.id.clone();
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "an upgrade starts a fresh instance");
    assert_eq!(served(&kelp, "globex", name, &globex).await, 2, "globex's own instance is still there");
    assert_eq!(
        kelp.platform.runtime().executor.idle_warm_instances(),
        2,
        "one idle instance per install: those of acme's earlier config, secrets and version are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_failed_is_not_reused() {
    let kelp = TestKelp::start_with(&[("KELP_EXEC_TIMEOUT_MS", "1500")]).await;
    let published = kelp.publish(&variant("test.warm-failing", "1.0.0", reuse(100, 300))).await;
    let acme = install(&kelp, &published, "acme").await;
    let name = "test.warm-failing";

    assert_eq!(served(&kelp, "acme", name, &acme).await, 1);
    assert_eq!(served(&kelp, "acme", name, &acme).await, 2);
    let (status, body, _) = call(&kelp, "acme", name, "/throw").await;
    assert_eq!((status, body["error"]["code"].as_str()), (500, Some("extension_exception")), "{body}");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "the instance that threw is gone");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 2);
    let (status, body, _) = call(&kelp, "acme", name, "/spin").await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("extension_timeout")), "{body}");
    assert_eq!(served(&kelp, "acme", name, &acme).await, 1, "the instance that timed out is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_opt_in_every_request_gets_a_fresh_instance() {
    let kelp = TestKelp::start().await;
    let fresh = kelp.publish(&variant("test.warm-fresh", "1.0.0", None)).await;
    let acme = install(&kelp, &fresh, "acme").await;
    for _ in 0..3 {
        assert_eq!(served(&kelp, "acme", "test.warm-fresh", &acme).await, 1, "no opt-in, no reuse");
    }

    let brief = kelp.publish(&variant("test.warm-brief", "1.0.0", reuse(1000, 1))).await;
    let acme_brief = install(&kelp, &brief, "acme").await;
    assert_eq!(served(&kelp, "acme", "test.warm-brief", &acme_brief).await, 1);
    assert_eq!(served(&kelp, "acme", "test.warm-brief", &acme_brief).await, 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(served(&kelp, "acme", "test.warm-brief", &acme_brief).await, 1, "replaced after maxAgeSeconds (1)");

    // The operator's switch overrides the manifest.
    let off = TestKelp::start_with(&[("KELP_INSTANCE_REUSE", "false")]).await;
    let published = off.publish(&variant("test.warm-off", "1.0.0", reuse(1000, 300))).await;
    let acme_off = install(&off, &published, "acme").await;
    for _ in 0..2 {
        assert_eq!(served(&off, "acme", "test.warm-off", &acme_off).await, 1, "KELP_INSTANCE_REUSE=false");
    }
    assert_eq!(off.platform.runtime().executor.idle_warm_instances(), 0);
}

/// Idle warm instances hold pool slots; a call of another install takes one over instead of
/// waiting for it, and concurrent calls of one install each get their own instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_give_their_slots_to_other_installs() {
    let kelp = TestKelp::start_with(&[("KELP_POOL_INSTANCES", "2"), ("KELP_EXEC_TIMEOUT_MS", "3000")]).await;
    let published = kelp.publish(&variant("test.warm-slots", "1.0.0", reuse(1000, 300))).await;
    let name = "test.warm-slots";
    let mut installs = Vec::new();
    for tenant in ["t1", "t2", "t3"] {
        installs.push((tenant, install(&kelp, &published, tenant).await));
    }
    for (tenant, install) in &installs[..2] {
        assert_eq!(served(&kelp, tenant, name, install).await, 1);
    }
    assert_eq!(kelp.platform.runtime().executor.idle_warm_instances(), 2, "both slots hold idle instances");
    let (tenant, third) = &installs[2];
    assert_eq!(served(&kelp, tenant, name, third).await, 1, "served at once, not 503 after waiting");
    assert_eq!(kelp.platform.runtime().executor.idle_warm_instances(), 2, "one idle instance gave way");

    // One install, two requests at once: each gets an instance (an idle one is evicted for
    // the second if need be), and no more instances stay than there are slots.
    let (tenant, first) = &installs[0];
    futures::future::join(served(&kelp, tenant, name, first), served(&kelp, tenant, name, first)).await;
    assert!(kelp.platform.runtime().executor.idle_warm_instances() <= 2);
}
