//! The second hardening round's findings against the real `kelp up`: its private-network mode
//! trusts the connection's peer and never a forwarded request, and concurrent secret PATCHes
//! through its admin API answer 200 or 409, never 500.

use kelp_tests::*;
use serde_json::{json, Value};

mod common;
use common::kelp_up;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_up_trusts_its_peers_not_forwarded_requests_and_secret_patches_race_cleanly() {
    let up = kelp_up(&["--no-examples"], &[("KELP_RUNNER_AUTH".into(), "private-network".into())]).await;
    let client = reqwest::Client::new();
    let execute = json!({"context": {"tenant_id": "demo", "extension_id": "ext-1", "content_hash": format!("sha256:{}", "0".repeat(64))},
                         "http": {"method": "GET", "path": "/", "query": {}, "headers": {}}});
    let runner = |forwarded: Option<&'static str>| {
        let mut request = client
            .post(format!("{}/v1/execute", up.base))
            .header("content-type", "application/json")
            .header("x-alga-tenant", "demo")
            .header("x-alga-extension", "ext-1")
            .body(execute.to_string());
        if let Some(client_ip) = forwarded {
            request = request.header("x-forwarded-for", client_ip);
        }
        request.send()
    };
    let direct = runner(None).await.unwrap();
    assert_eq!(direct.status(), 200, "a loopback peer, trusted by default");
    let answer: Value = serde_json::from_str(&direct.text().await.unwrap()).unwrap_or(Value::Null);
    assert_eq!(answer["error"], "bundle_not_found", "{answer}");
    assert_eq!(runner(Some("203.0.113.7")).await.unwrap().status(), 401, "relayed by a proxy");

    // An install with secrets, then twenty concurrent PATCHes through the admin API.
    let admin = |method: reqwest::Method, path: &str| {
        client.request(method, format!("{}{path}", up.base)).bearer_auth(&up.admin_token)
    };
    let bundle = kelp_runtime::publish::pack_dir(&staged_example("wat-hello")).unwrap();
    let published = admin(reqwest::Method::POST, "/admin/extensions").body(bundle).send().await.unwrap();
    assert!(published.status().is_success(), "{}", published.status());
    let install = admin(reqwest::Method::POST, "/admin/installs")
        .header("content-type", "application/json")
        .body(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(install.status().is_success(), "{}", install.status());
    let install: Value = serde_json::from_str(&install.text().await.unwrap()).unwrap();
    let url = format!("/admin/installs/{}/secrets", install["install_id"].as_str().unwrap());
    for round in 0..3 {
        let statuses = futures::future::join_all((0..20).map(|i| {
            admin(reqwest::Method::PATCH, &url)
                .header("content-type", "application/json")
                .body(json!({"set": {format!("k{round}-{i}"): "v"}}).to_string())
                .send()
        }))
        .await;
        let statuses: Vec<u16> = statuses.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
        eprintln!("round {round}: 20 concurrent secret PATCHes through kelp up: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "round {round}: {statuses:?}");
        assert!(statuses.contains(&200), "round {round}: {statuses:?}");
    }
}
