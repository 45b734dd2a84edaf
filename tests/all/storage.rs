//! Storage through a real guest: revisions, compare-and-set conflicts, paging, isolation.

use kelp_tests::*;
use serde_json::json;

const JS: &str = "/api/ext/com.kelp.examples.js-notes";

async fn put(kelp: &TestKelp, tenant: &str, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = kelp
        .client
        .put(format!("{}{JS}/notes/{id}", kelp.base))
        .bearer_auth(token(tenant, RW))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), json_body(r).await)
}

#[tokio::test]
async fn compare_and_set_conflicts_and_revisions_grow_by_one() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    assert_eq!(
        put(&kelp, "acme", "n1", json!({"text": "a"})).await,
        (200, json!({"id": "n1", "text": "a", "revision": 1}))
    );
    assert_eq!(put(&kelp, "acme", "n1", json!({"text": "b"})).await.1["revision"], 2);
    assert_eq!(put(&kelp, "acme", "n1", json!({"text": "c", "revision": 2})).await.1["revision"], 3);
    let (status, body) = put(&kelp, "acme", "n1", json!({"text": "stale", "revision": 2})).await;
    assert_eq!((status, body), (409, json!({"error": "conflict"})));
    let (status, _) = put(&kelp, "acme", "missing", json!({"text": "x", "revision": 1})).await;
    assert_eq!(status, 409, "compare-and-set on a missing key is a conflict");
    let r = kelp.get(&format!("{JS}/notes/n1"), &token("acme", RW)).await;
    assert_eq!(json_body(r).await["text"], "c", "the stale write was not applied");
}

#[tokio::test]
async fn concurrent_writers_with_the_same_revision_exactly_one_wins() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    put(&kelp, "acme", "race", json!({"text": "base"})).await;
    let attempts = (0..8).map(|i| put(&kelp, "acme", "race", json!({"text": format!("w{i}"), "revision": 1})));
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|(s, _)| *s == 200).count();
    let conflicts = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((wins, conflicts), (1, 7), "{results:?}");
}

#[tokio::test]
async fn lists_in_key_order_across_pages_and_tenants_are_isolated() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    kelp.install(&published, "globex", &[]).await;
    let scope = kelp_runtime::storage::Scope {
        tenant_id: "acme".into(),
        install_id: kelp
            .platform
            .installs
            .find_install("acme", &published.extension.id)
            .await
            .unwrap()
            .unwrap()
            .install_id,
    };
    let limits = kelp_runtime::storage::KvLimits::default();
    for i in 0..150 {
        kelp.platform.kv.put(&scope, "notes", &format!("k{i:03}"), b"v", None, &limits).await.unwrap();
    }
    let first = json_body(kelp.get(&format!("{JS}/notes"), &token("acme", RW)).await).await;
    let notes = first["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 100);
    assert_eq!(notes[0]["id"], "k000");
    assert_eq!(first["next"], "k099");
    let second = json_body(kelp.get(&format!("{JS}/notes?cursor=k099"), &token("acme", RW)).await).await;
    let notes = second["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 50);
    assert_eq!(notes[0]["id"], "k100");
    assert_eq!(second["next"], serde_json::Value::Null);
    let other = json_body(kelp.get(&format!("{JS}/notes"), &token("globex", RW)).await).await;
    assert_eq!(other["notes"], json!([]), "globex sees none of acme's keys");
    assert_eq!(kelp.get(&format!("{JS}/notes/k000"), &token("globex", RW)).await.status(), 404);
}

#[tokio::test]
async fn oversized_values_fail_cleanly_without_a_trap() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    // The guest answers its storage error as a 500; the gateway names the limit behind it.
    let (status, body) = put(&kelp, "acme", "big", json!({"text": "x".repeat(64 * 1024 + 1)})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (507, Some("storage_quota_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage_value_bytes") && message.contains("\"default\""), "{message}");
    let (status, _) = put(&kelp, "acme", "fits", json!({"text": "x".repeat(64 * 1024)})).await;
    assert_eq!(status, 200, "exactly at the limit is fine");
}
