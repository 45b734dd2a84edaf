//! A2: config and secrets travel with the execution, and a change is seen by the very next
//! request; expired envelopes are refused.

use std::collections::BTreeMap;

use kelp_runtime::installs::{set_config, set_secrets};
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
    set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, Some("2001-01-01T00:00:00Z".into()))
        .await
        .unwrap();
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

#[tokio::test]
async fn concurrent_secret_writes_leave_the_winners_values_live_and_uninstall_deletes_them() {
    use kelp_runtime::installs::{uninstall, AdminError};
    use kelp_runtime::secrets::SecretsError;
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let source = kelp.platform.secrets.source().clone();
    for round in 0..10 {
        let before = kelp.platform.installs.get_install("acme", &install.install_id).await.unwrap().unwrap();
        let values = |who: &str| BTreeMap::from([("who".to_string(), format!("{who}-{round}"))]);
        let (values_a, values_b) = (values("a"), values("b"));
        let (a, b) = tokio::join!(
            set_secrets(&kelp.platform, "acme", &install.install_id, &values_a, None),
            set_secrets(&kelp.platform, "acme", &install.install_id, &values_b, None),
        );
        let winners: Vec<_> = [("a", &a), ("b", &b)].into_iter().filter(|(_, r)| r.is_ok()).map(|(w, _)| w).collect();
        for r in [&a, &b] {
            assert!(matches!(r, Ok(_) | Err(AdminError::Conflict(_))), "round {round}: {:?}", r.as_ref().err());
        }
        assert!(!winners.is_empty(), "round {round}: at least one write succeeds");
        let live = kelp.platform.installs.get_install("acme", &install.install_id).await.unwrap().unwrap();
        let envelope = source.fetch(live.secrets_ref.as_deref().unwrap()).await.unwrap();
        let who = envelope.decode().unwrap().0["who"].clone();
        let last_winner = live.secrets_version - before.secrets_version;
        assert!(
            winners.iter().any(|w| who.starts_with(w)),
            "round {round}: live values {who:?} belong to a caller answered 2xx {winners:?}"
        );
        assert!(last_winner as usize == winners.len(), "one version per successful write");
        if let Some(replaced) = &before.secrets_ref {
            assert!(
                matches!(source.fetch(replaced).await, Err(SecretsError::NotFound)),
                "round {round}: the replaced envelope is deleted"
            );
        }
    }
    let live = kelp.platform.installs.get_install("acme", &install.install_id).await.unwrap().unwrap();
    uninstall(&kelp.platform, "acme", &install.install_id, false).await.unwrap();
    assert!(
        matches!(source.fetch(live.secrets_ref.as_deref().unwrap()).await, Err(SecretsError::NotFound)),
        "uninstall deletes the envelope"
    );
}
