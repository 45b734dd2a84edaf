//! A2: config and secrets travel with the execution, and a change is seen by the very next
//! request; expired envelopes are refused.

use std::collections::BTreeMap;

use kelp_runtime::admin::service::{set_config, set_secrets};
use kelp_tests::*;

const JS: &str = "/api/ext/com.kelp.examples.js-notes";

#[tokio::test]
async fn the_next_request_sees_changed_config_and_secrets() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let t = token("acme", RW);
    let secret = json_body(kelp.get(&format!("{JS}/secret"), &t).await).await;
    assert_eq!(secret["present"], false);
    assert_eq!(secret["error"], "missing");

    for (round, greeting, key) in [(1, "Howdy", "12345"), (2, "Ahoy", "1234567890")] {
        let cfg = BTreeMap::from([("greeting".to_string(), greeting.to_string())]);
        set_config(&kelp.platform, "acme", &install.install_id, cfg).await.unwrap();
        let secrets = BTreeMap::from([("api_key".to_string(), key.to_string())]);
        set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();
        let hello = json_body(kelp.get(&format!("{JS}/hello"), &t).await).await;
        assert_eq!(hello["message"], format!("{greeting}, acme!"), "round {round}");
        assert_eq!(hello["configVersion"], (1 + round).to_string());
        let secret = json_body(kelp.get(&format!("{JS}/secret"), &t).await).await;
        assert_eq!(secret["length"], key.len(), "round {round}: the new secret, not a cached one");
        assert_eq!(secret["keys"], serde_json::json!(["api_key"]));
    }
}

#[tokio::test]
async fn an_expired_envelope_is_refused() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let secrets = BTreeMap::from([("api_key".to_string(), "old".to_string())]);
    set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, Some("2001-01-01T00:00:00Z".into())).await.unwrap();
    let secret = json_body(kelp.get(&format!("{JS}/secret"), &token("acme", RW)).await).await;
    assert_eq!(secret["present"], false);
    assert_eq!(secret["error"], "expired");
    assert_eq!(secret["keys"], serde_json::json!([]), "nothing of an expired envelope is listed");
}

#[tokio::test]
async fn secret_values_never_reach_debug_events() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let secrets = BTreeMap::from([("api_key".to_string(), "sup3r-s3cret-value".to_string())]);
    set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();
    assert_eq!(kelp.get(&format!("{JS}/secret"), &token("acme", RW)).await.status(), 200);
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 100).await.unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| !e.event.message.contains("sup3r-s3cret-value")));
}
