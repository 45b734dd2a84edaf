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

#[tokio::test]
async fn config_and_secrets_patches_merge_keep_the_other_keys_and_refuse_nonsense() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let manager = token("acme", &["extension:manage"]);
    let patch = |what: &str, body: serde_json::Value| {
        kelp.client
            .patch(format!("{}/admin/installs/{}/{what}", kelp.base, install.install_id))
            .bearer_auth(&manager)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let t = token("acme", RW);
    let r = patch("config", serde_json::json!({"set": {"greeting": "Moi", "other": "1"}})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = json_body(patch("config", serde_json::json!({"unset": ["other"]})).await.unwrap()).await;
    assert_eq!((r["config_version"].as_u64(), &r["keys"]), (Some(3), &serde_json::json!(["greeting"])));
    let hello = json_body(kelp.get(&format!("{JS}/hello"), &t).await).await;
    assert_eq!(hello["message"], "Moi, acme!", "the kept key is live");

    let r = json_body(patch("secrets", serde_json::json!({"set": {"api_key": "1234567"}})).await.unwrap()).await;
    assert_eq!(r["keys"], serde_json::json!(["api_key"]));
    let r = json_body(patch("secrets", serde_json::json!({"set": {"other": "x"}})).await.unwrap()).await;
    assert_eq!((r["secrets_version"].as_u64(), &r["keys"]), (Some(2), &serde_json::json!(["api_key", "other"])));
    let secret = json_body(kelp.get(&format!("{JS}/secret"), &t).await).await;
    assert_eq!((secret["length"].as_u64(), &secret["keys"]), (Some(7), &serde_json::json!(["api_key", "other"])));
    let r = json_body(patch("secrets", serde_json::json!({"unset": ["api_key"]})).await.unwrap()).await;
    assert_eq!(r["keys"], serde_json::json!(["other"]));
    let secret = json_body(kelp.get(&format!("{JS}/secret"), &t).await).await;
    assert_eq!((&secret["present"], &secret["keys"]), (&serde_json::json!(false), &serde_json::json!(["other"])));

    for (what, body) in [
        ("config", serde_json::json!({})),
        ("config", serde_json::json!({"set": {"a": "1"}, "unset": ["a"]})),
        ("config", serde_json::json!({"set": {"a": "1"}, "expires_at": "2030-01-01T00:00:00Z"})),
        ("secrets", serde_json::json!({"set": {"a": "1"}, "expires_at": "next tuesday"})),
        ("secrets", serde_json::json!({"sett": {"a": "1"}})),
    ] {
        let r = patch(what, body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{what} {body}");
        let err = json_body(r).await;
        // bad_request for a rule of the patch, invalid_request for a body that does not parse.
        assert!(matches!(err["error"]["code"].as_str(), Some("bad_request" | "invalid_request")), "{err}");
    }
    let after = kelp.platform.installs.get_install("acme", &install.install_id).await.unwrap().unwrap();
    assert_eq!((after.config_version, after.secrets_version), (3, 3), "refused patches changed nothing");
}

/// Twenty concurrent `PATCH …/secrets`: each is merged and made live, or refused with 409 —
/// never a 500 because it read an envelope a concurrent winner had just replaced and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_secret_patches_answer_200_or_409_and_never_lose_a_winner() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    set_secrets(&kelp.platform, "acme", &install.install_id, &BTreeMap::from([("base".into(), "0".into())]), None)
        .await
        .unwrap();
    let manager = token("acme", &["extension:manage"]);
    let url = format!("{}/admin/installs/{}/secrets", kelp.base, install.install_id);
    for round in 0..3 {
        let answers = futures::future::join_all((0..20).map(|i| {
            let body = serde_json::json!({"set": {format!("k{round}-{i}"): "v"}});
            kelp.client.patch(&url).bearer_auth(&manager).json(&body).send()
        }))
        .await;
        let statuses: Vec<u16> = answers.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
        assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "round {round}: {statuses:?}");
        let winners = statuses.iter().filter(|s| **s == 200).count();
        assert!(winners >= 1, "round {round}: {statuses:?}");
        let live = kelp.platform.installs.get_install("acme", &install.install_id).await.unwrap().unwrap();
        let envelope = kelp.platform.secrets.source().fetch(live.secrets_ref.as_deref().unwrap()).await.unwrap();
        let keys = envelope.decode().unwrap().0;
        assert!(keys.contains_key("base"), "round {round}: a merge never drops the other keys");
    }
}
