//! The debug relay through real HTTP: gating (B2), resume, max duration and audit (B3),
//! Redis down (B4), polling, and load with two viewers and a stalled one.

use std::time::{Duration, Instant};

use kelp_tests::aws::redis_settings;
use kelp_tests::services::{shared_redis, OwnRedis};
use kelp_tests::sse::{FrameJson, Sse};
use kelp_tests::*;
use serde_json::{json, Value};

const EXT: &str = "com.kelp.examples.js-notes";
const DEBUGGER: &[&str] = &["extension:read", "extension:write", "extension:debug"];

fn stream_url(kelp: &TestKelp, extra: &str) -> String {
    format!("{}/api/ext-debug/stream?extensionId={EXT}{extra}", kelp.base)
}

async fn setup(
    extra: &[(&str, &str)],
) -> (TestKelp, kelp_runtime::publish::Published, kelp_runtime::stores::InstallRecord) {
    let kelp = TestKelp::start_with(extra).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await; // grants cap:debug.logs
    (kelp, published, install)
}

async fn hit(kelp: &TestKelp, path: &str, request_id: &str) -> u16 {
    kelp.client
        .get(format!("{}/api/ext/{EXT}{path}", kelp.base))
        .bearer_auth(token("acme", RW))
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn streams_backlog_then_live_events_and_resumes_without_gaps_or_duplicates() {
    let (kelp, _, install) = setup(&[]).await;
    hit(&kelp, "/hello", "before-1").await;
    let t = token("acme", DEBUGGER);
    let mut sse = Sse::open(&stream_url(&kelp, &format!("&installId={}", install.install_id)), &t, None).await;
    assert_eq!(sse.status, 200);
    let backlog = sse.next_event(Duration::from_secs(5)).await.expect("backlog event");
    assert_eq!(backlog.json()["requestId"], "before-1");
    assert_eq!(backlog.json()["installId"], install.install_id.as_str());
    hit(&kelp, "/log?lines=3", "live-1").await;
    let mut ids = Vec::new();
    let mut messages = Vec::new();
    while let Some(f) = sse.next_event(Duration::from_secs(3)).await {
        if f.json()["requestId"] == "live-1" {
            ids.push(f.id.clone().unwrap());
            messages.push(f.json()["message"].as_str().unwrap().to_string());
        }
        if messages.iter().any(|m| m.starts_with("wrote 3 lines")) {
            break;
        }
    }
    assert_eq!(messages.len(), 6, "{messages:?}");
    drop(sse);
    // Reconnect after the third live event: exactly the remaining three, none twice.
    hit(&kelp, "/hello", "after-1").await;
    let mut resumed = Sse::open(&stream_url(&kelp, ""), &t, Some(&ids[2])).await;
    let mut rest = Vec::new();
    while let Some(f) = resumed.next_event(Duration::from_secs(2)).await {
        rest.push((f.id.clone().unwrap(), f.json()["requestId"].as_str().unwrap_or("").to_string()));
        if f.json()["requestId"] == "after-1" && f.json()["stream"] == "log" {
            break;
        }
    }
    let resumed_ids: Vec<&String> = rest.iter().map(|(id, _)| id).collect();
    assert_eq!(&resumed_ids[..3], &ids[3..].iter().collect::<Vec<_>>()[..], "no gap");
    assert!(rest.iter().all(|(id, _)| !ids[..3].contains(id)), "no duplicate");
    assert!(rest.iter().any(|(_, r)| r == "after-1"));
}

#[tokio::test]
async fn gates_on_permission_capability_tenant_and_grants() {
    let (kelp, published, install) = setup(&[]).await;
    let url = stream_url(&kelp, "");
    assert_eq!(Sse::open(&url, "garbage", None).await.status, 401);
    let no_perm = Sse::open(&url, &token("acme", RW), None).await;
    assert_eq!((no_perm.status, no_perm.error["error"]["code"].as_str()), (403, Some("forbidden")));
    // Another tenant never reaches acme's stream, by name or by tenantId.
    let globex = token("globex", DEBUGGER);
    assert_eq!(Sse::open(&url, &globex, None).await.status, 404, "globex has no such install");
    assert_eq!(Sse::open(&format!("{url}&tenantId=acme"), &globex, None).await.status, 403);
    // The install's switch off: extension:debug alone is not enough.
    kelp_runtime::installs::update_install(&kelp.platform, "acme", &install.install_id, |i| {
        i.granted.retain(|g| g != "cap:debug.logs");
        Ok(())
    })
    .await
    .unwrap();
    let off = Sse::open(&url, &token("acme", DEBUGGER), None).await;
    assert_eq!(off.status, 403);
    assert!(off.error["error"]["message"].as_str().unwrap().contains("cap:debug.logs"));
    // An operator grant naming the viewer opens it, even across tenants.
    let grant = |viewer: &str| kelp_runtime::stores::DebugGrant {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: "acme".into(),
        install_id: install.install_id.clone(),
        viewer: viewer.into(),
        viewer_tenant: Some("kelp-ops".into()),
        viewer_issuer: None,
        granted_by: "ops".into(),
        reason: "test".into(),
        created_at: kelp_runtime::stores::now_rfc3339(),
        expires_at: "2999-01-01T00:00:00.000Z".into(),
        revoked_at: None,
    };
    kelp.platform.grants.create_grant(&grant("support-7")).await.unwrap();
    let support = token_with(json!({"sub": "support-7", "tenant": "kelp-ops", "perms": []}));
    assert_eq!(Sse::open(&format!("{url}&tenantId=acme"), &support, None).await.status, 200, "granted viewer");
    let other = token_with(json!({"sub": "support-8", "tenant": "kelp-ops", "perms": ["extension:debug"]}));
    assert_eq!(Sse::open(&format!("{url}&tenantId=acme"), &other, None).await.status, 403, "grants are per viewer");
    // The same `sub` in another tenant is another person: the grant does not open for them.
    let namesake = token_with(json!({"sub": "support-7", "tenant": "globex", "perms": []}));
    assert_eq!(
        Sse::open(&format!("{url}&tenantId=acme"), &namesake, None).await.status,
        403,
        "grants name the viewer's tenant"
    );
    // A grant limited to one issuer refuses the same sub and tenant from another issuer.
    let mut by_issuer = grant("support-10");
    by_issuer.viewer_issuer = Some("https://idp.example".into());
    kelp.platform.grants.create_grant(&by_issuer).await.unwrap();
    let other_iss =
        token_with(json!({"sub": "support-10", "tenant": "kelp-ops", "iss": "https://evil.example", "perms": []}));
    assert_eq!(
        Sse::open(&format!("{url}&tenantId=acme"), &other_iss, None).await.status,
        403,
        "grants name the issuer"
    );
    let right_iss =
        token_with(json!({"sub": "support-10", "tenant": "kelp-ops", "iss": "https://idp.example", "perms": []}));
    assert_eq!(Sse::open(&format!("{url}&tenantId=acme"), &right_iss, None).await.status, 200);
    let mut expired = grant("support-9");
    expired.expires_at = "2001-01-01T00:00:00.000Z".into();
    kelp.platform.grants.create_grant(&expired).await.unwrap();
    let late = token_with(json!({"sub": "support-9", "tenant": "kelp-ops", "perms": []}));
    assert_eq!(Sse::open(&format!("{url}&tenantId=acme"), &late, None).await.status, 403, "expired grant");
    let _ = published;
    let denied = kelp
        .platform
        .audit
        .query(
            &kelp_runtime::stores::AuditFilter { action: Some("access.denied".into()), ..Default::default() },
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(denied.items.len() >= 4, "denied attempts are audited");
    // A refused cross-tenant attempt is audited in the viewer's own tenant, never written
    // into the log of the tenant it named.
    let globex_row = denied
        .items
        .iter()
        .find(|r| r.details["requested_tenant"] == "acme" && r.tenant_id.as_deref() == Some("globex"));
    assert!(globex_row.is_some(), "globex's attempt on acme is in globex's audit: {:?}", denied.items);
    assert!(
        !denied.items.iter().any(|r| r.tenant_id.as_deref() == Some("acme")
            && r.details["requested_tenant"] == "acme"
            && r.actor == "support-7"),
        "nothing from other tenants' viewers lands in acme's audit"
    );
}

#[tokio::test]
async fn sessions_end_after_the_maximum_duration_and_are_audited() {
    let (kelp, _, install) = setup(&[("KELP_DEBUG_SESSION_MAX_SECS", "1"), ("KELP_DEBUG_HEARTBEAT_SECS", "1")]).await;
    hit(&kelp, "/hello", "r1").await;
    let t = token_with(json!({"sub": "dev-1", "tenant": "acme", "perms": DEBUGGER}));
    let started = Instant::now();
    let mut sse = Sse::open(&stream_url(&kelp, ""), &t, None).await;
    let mut end = None;
    while let Some(f) = sse.next_event(Duration::from_secs(5)).await {
        if f.event == "end" {
            end = Some(f);
            break;
        }
    }
    let end = end.expect("an end event");
    assert_eq!(end.json()["reason"], "max_duration");
    assert!(started.elapsed() < Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ops = token_with(json!({"sub": "ops-1", "tenant": "kelp-ops", "perms": ["platform:ops"]}));
    let r = kelp
        .client
        .get(format!("{}/api/ext-debug/sessions?tenant=acme&viewer=dev-1", kelp.base))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    let sessions: Value = r.json().await.unwrap();
    let s = &sessions["items"][0];
    assert_eq!(s["viewer"], "dev-1");
    assert_eq!(s["install"], install.install_id.as_str());
    assert_eq!(s["reason"], "max_duration");
    assert!(s["events_sent"].as_u64().unwrap() >= 1);
    assert!(s["started"].as_str().unwrap() < s["ended"].as_str().unwrap());
    let r = kelp.client.get(format!("{}/api/ext-debug/sessions", kelp.base)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 403, "the sessions list is for operators");
}

#[tokio::test]
async fn polling_clients_get_events_and_a_last_id() {
    let (kelp, _, _) = setup(&[]).await;
    hit(&kelp, "/hello", "p1").await;
    let t = token("acme", DEBUGGER);
    let post = |body: Value| {
        kelp.client
            .post(stream_url(&kelp, ""))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let first: Value = post(json!({})).await.unwrap().json().await.unwrap();
    let last = first["lastId"].as_str().unwrap().to_string();
    assert!(first["events"].as_array().unwrap().iter().any(|e| e["requestId"] == "p1"));
    // Flat events as Alga's debug API answers them, with their stream id for resuming.
    let event = &first["events"][0];
    assert!(event["message"].is_string() && event["tenantId"] == "acme" && event["id"].is_string(), "{event}");
    let none: Value = post(json!({"lastId": last})).await.unwrap().json().await.unwrap();
    assert_eq!(none["events"], json!([]));
    assert_eq!(none["lastId"], last.as_str());
    hit(&kelp, "/hello", "p2").await;
    let next: Value = post(json!({"lastId": last})).await.unwrap().json().await.unwrap();
    let reqs: Vec<&str> = next["events"].as_array().unwrap().iter().map(|e| e["requestId"].as_str().unwrap()).collect();
    assert!(!reqs.is_empty() && reqs.iter().all(|r| *r == "p2"), "{reqs:?}");
    let bad = kelp.client.post(stream_url(&kelp, "")).bearer_auth(&t).body("{nope").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lines_reach_two_viewers_without_loss_and_a_stalled_viewer_blocks_no_request() {
    let redis = shared_redis();
    let prefix = redis_settings(&redis).prefix;
    let (kelp, _, _) = setup(&[
        ("RUNNER_DEBUG_REDIS_URL", &redis),
        ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix),
        ("RUNNER_DEBUG_REDIS_MAXLEN", "50000"),
        ("KELP_MAX_OUTPUT_BYTES", "4194304"),
        ("KELP_MAX_DEBUG_EVENTS", "2000"),
        ("KELP_RATE_BURST", "0"),
    ])
    .await;
    let t = token("acme", DEBUGGER);
    let url = stream_url(&kelp, "");
    // A stalled viewer: connected, never reads.
    let stalled = Sse::open(&url, &t, None).await;
    assert_eq!(stalled.status, 200);
    let viewers: Vec<_> = (0..2)
        .map(|_| {
            let (url, t) = (url.clone(), t.clone());
            tokio::spawn(async move {
                let mut sse = Sse::open(&url, &t, None).await;
                let mut count = 0usize;
                let mut seen = std::collections::HashSet::new();
                while let Some(f) = sse.next_event(Duration::from_secs(10)).await {
                    let req = f.json()["requestId"].as_str().unwrap_or("").to_string();
                    if req.starts_with("load-") {
                        assert!(seen.insert(f.id.clone().unwrap()), "duplicate event");
                        count += 1;
                        if count == 10_000 {
                            break;
                        }
                    }
                }
                count
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 10 requests × (997 stdout + 1 stderr + 2 log lines) = 10,000 events.
    // With the stalled viewer's socket buffers full, tenant requests still complete: nothing
    // on the request path waits for a viewer. (How much a stalled viewer costs a request is
    // measured side by side in kelp-bench, not timed here: this suite runs tests in parallel.)
    for i in 0..10 {
        assert_eq!(hit(&kelp, "/log?lines=997", &format!("load-{i}")).await, 200);
        let probe = tokio::time::timeout(Duration::from_secs(5), hit(&kelp, "/hello", &format!("probe-{i}"))).await;
        assert_eq!(probe.ok(), Some(200), "a tenant request hung or failed behind a stalled viewer");
    }
    for v in viewers {
        assert_eq!(v.await.unwrap(), 10_000, "every event reached the viewer");
    }
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_stream_warns_within_two_seconds_and_recovers() {
    let redis = OwnRedis::start();
    let prefix = redis_settings(&redis.url()).prefix;
    let (kelp, _, _) =
        setup(&[("RUNNER_DEBUG_REDIS_URL", &redis.url()), ("RUNNER_DEBUG_REDIS_STREAM_PREFIX", &prefix)]).await;
    let t = token("acme", DEBUGGER);
    hit(&kelp, "/hello", "up-1").await;
    let mut sse = Sse::open(&stream_url(&kelp, ""), &t, None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next_event(Duration::from_secs(5)).await.unwrap().json()["requestId"], "up-1");
    let stopped = Instant::now();
    redis.stop();
    let mut warning = None;
    while let Some(f) = sse.next_event(Duration::from_secs(3)).await {
        if f.event == "warning" {
            warning = Some(f);
            break;
        }
    }
    let warning = warning.expect("a warning event");
    assert!(stopped.elapsed() < Duration::from_millis(2500), "warned after {:?}", stopped.elapsed());
    assert!(warning.json()["message"].as_str().unwrap().contains("Redis"));
    assert_eq!(hit(&kelp, "/hello", "down-1").await, 200, "requests still succeed");
    let mut saw_down = false;
    while let Some(f) = sse.next_event(Duration::from_secs(3)).await {
        if f.json()["requestId"] == "down-1" {
            saw_down = true;
            break;
        }
    }
    assert!(saw_down, "events continue from the in-process bus of this instance");
    redis.resume();
    let mut recovered = false;
    while let Some(f) = sse.next_event(Duration::from_secs(8)).await {
        if f.event == "recovered" {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the stream says Redis is back");
    let mut saw_after = false;
    for i in 0..20 {
        hit(&kelp, "/hello", &format!("back-{i}")).await;
        if let Some(f) = sse.next_event(Duration::from_secs(2)).await {
            if f.json()["requestId"].as_str().is_some_and(|r| r.starts_with("back-")) {
                saw_after = true;
                break;
            }
        }
    }
    assert!(saw_after, "live events flow again from Redis");
}

#[tokio::test]
async fn malformed_last_event_ids_are_refused_and_a_far_future_one_does_not_flood() {
    let (kelp, _, _) = setup(&[]).await;
    let t = token("acme", DEBUGGER);
    for bad in ["x", "$", "-1"] {
        let sse = Sse::open(&stream_url(&kelp, ""), &t, Some(bad)).await;
        assert_eq!(sse.status, 400, "Last-Event-ID {bad:?}");
        assert_eq!(sse.error["error"]["code"], "invalid_last_event_id");
        let polled = kelp
            .client
            .post(stream_url(&kelp, ""))
            .bearer_auth(&t)
            .body(json!({"lastId": bad}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(polled.status(), 400, "lastId {bad:?}");
    }
    // Valid syntax past every event: a quiet session (only the retry line), not a frame flood.
    let mut sse = Sse::open(&stream_url(&kelp, ""), &t, Some("18446744073709551615-18446744073709551615")).await;
    assert_eq!(sse.status, 200);
    let mut frames = 0;
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(_frame) = sse.next(until.saturating_duration_since(Instant::now())).await {
        frames += 1;
        assert!(frames < 10, "frames keep coming for a resume id past the end");
    }
}

#[tokio::test]
async fn tenants_differing_only_in_case_never_see_each_others_events() {
    let kelp = TestKelp::start().await;
    let wat = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&wat, "acme", &[]).await;
    kelp.install(&wat, "Acme", &[]).await;
    for (tenant, request_id) in [("Acme", "upper-1"), ("acme", "lower-1")] {
        let r = kelp
            .client
            .get(format!("{}/api/ext/com.kelp.examples.wat-hello/hello", kelp.base))
            .bearer_auth(token(tenant, RW))
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let url = format!("{}/api/ext-debug/stream?extensionId=com.kelp.examples.wat-hello", kelp.base);
    let polled: Value = kelp
        .client
        .post(&url)
        .bearer_auth(token("acme", DEBUGGER))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen: Vec<&str> =
        polled["events"].as_array().unwrap().iter().map(|e| e["requestId"].as_str().unwrap()).collect();
    assert!(seen.contains(&"lower-1") && !seen.contains(&"upper-1"), "{seen:?}");
    let mut sse = Sse::open(&url, &token("Acme", DEBUGGER), None).await;
    let mut streamed = Vec::new();
    while let Some(f) = sse.next_event(Duration::from_millis(500)).await {
        streamed.push(f.json()["requestId"].as_str().unwrap_or_default().to_string());
    }
    assert!(streamed.contains(&"upper-1".to_string()) && !streamed.contains(&"lower-1".to_string()), "{streamed:?}");
}

#[tokio::test]
async fn refused_viewers_are_slowed_down_and_cannot_flood_the_audit_log() {
    let kelp = TestKelp::start().await;
    let wat = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&wat, "acme", &[]).await;
    let url = format!("{}/api/ext-debug/stream?extensionId=com.kelp.examples.wat-hello", kelp.base);
    let nosy = token_with(json!({"sub": "nosy", "tenant": "acme", "perms": []}));
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(kelp.client.post(&url).bearer_auth(&nosy).body("{}").send().await.unwrap().status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert!((20..=22).contains(&refused), "a burst of refusals, then 429: {statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
    let rows = kelp
        .platform
        .audit
        .query(
            &kelp_runtime::stores::AuditFilter { action: Some("access.denied".into()), ..Default::default() },
            &kelp_runtime::stores::PageRequest { limit: 200, cursor: None },
        )
        .await
        .unwrap();
    let nosy_rows = rows.items.iter().filter(|r| r.actor == "nosy").count();
    assert_eq!(nosy_rows, refused, "one audit row per refusal, none for the slowed-down requests");
}
