//! http.fetch: deny by default, allow-list per install, SSRF guard after DNS resolution.

use axum::routing::get;
use kelp_tests::*;

async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/data", get(|| async { "upstream says hi" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn fetch(kelp: &TestKelp, target: &str) -> (u16, serde_json::Value) {
    let r = kelp
        .client
        .get(format!("{}/api/ext/com.kelp.examples.js-notes/fetch", kelp.base))
        .query(&[("url", target)])
        .bearer_auth(token("acme", RW))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), json_body(r).await)
}

#[tokio::test]
async fn refuses_hosts_not_on_the_allow_list() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &["api.example.com"]).await;
    let (status, body) = fetch(&kelp, "https://other.example.org/x").await;
    assert_eq!((status, body["error"].as_str()), (502, Some("not-allowed")));
    let (_, body) = fetch(&kelp, "http://api.example.com/x").await;
    assert_eq!(body["error"], "not-allowed", "https only unless allow-listed as http");
    let (_, body) = fetch(&kelp, "not a url").await;
    assert_eq!(body["error"], "invalid-url");
}

#[tokio::test]
async fn refuses_loopback_even_when_allow_listed() {
    let port = upstream().await;
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let allow_ip = format!("http://127.0.0.1:{port}");
    let allow_name = format!("http://localhost:{port}");
    kelp.install(&published, "acme", &[&allow_ip, &allow_name]).await;
    let (status, body) = fetch(&kelp, &format!("http://127.0.0.1:{port}/data")).await;
    assert_eq!((status, body["error"].as_str()), (502, Some("not-allowed")), "literal loopback address");
    let (_, body) = fetch(&kelp, &format!("http://localhost:{port}/data")).await;
    assert_eq!(body["error"], "not-allowed", "a name resolving to loopback is refused after DNS resolution");
}

#[tokio::test]
async fn fetches_an_allow_listed_upstream_when_the_operator_allows_loopback() {
    let port = upstream().await;
    let kelp = TestKelp::start_with(&[("KELP_EGRESS_ALLOW_LOOPBACK", "true")]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let allow = format!("http://localhost:{port}");
    kelp.install(&published, "acme", &[&allow]).await;
    let (status, body) = fetch(&kelp, &format!("http://localhost:{port}/data")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "upstream says hi");
    let (_, body) = fetch(&kelp, &format!("http://localhost:{}/data", port.wrapping_add(1))).await;
    assert_eq!(body["error"], "not-allowed", "the allow-listed port is enforced");
}

#[tokio::test]
async fn transport_errors_name_the_host_but_never_the_url() {
    // A port nothing listens on: the connection is refused, a transport error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let kelp = TestKelp::start_with(&[("KELP_EGRESS_ALLOW_LOOPBACK", "true")]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let allow = format!("http://localhost:{port}");
    kelp.install(&published, "acme", &[&allow]).await;
    let (_, body) = fetch(&kelp, &format!("http://user:hunter2@localhost:{port}/data?api_key=s3cr3t-query")).await;
    assert!(body["error"].as_str().is_some(), "{body}");
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 200).await.unwrap();
    let warning = events.iter().find(|e| e.event.message.contains("transport error")).expect("a transport warning");
    assert!(warning.event.message.contains("localhost"), "{}", warning.event.message);
    for e in &events {
        assert!(
            !e.event.message.contains("s3cr3t-query") && !e.event.message.contains("hunter2"),
            "URL leaked: {}",
            e.event.message
        );
    }
    assert!(!body.to_string().contains("s3cr3t-query"), "{body}");
}

/// `KELP_EGRESS_POLICY=alga`: `/v1/execute` calls get Alga's `EXT_EGRESS_ALLOWLIST` with Alga's
/// meaning — a host suffix, any scheme and port — while the address check still applies.
#[tokio::test]
async fn algas_egress_rule_applies_to_runner_calls() {
    use base64::Engine as _;
    let port = upstream().await;
    let kelp = TestKelp::start_with(&[
        ("KELP_RUNNER_SERVICE_TOKEN", "egress-runner-token"),
        ("KELP_EGRESS_POLICY", "alga"),
        ("EXT_EGRESS_ALLOWLIST", " LOCALHOST "),
        ("KELP_EGRESS_ALLOW_LOOPBACK", "true"),
    ])
    .await;
    let p = kelp.publish(&staged_example("js-notes")).await;
    let run = |url: String| {
        let body = serde_json::json!({
            "context": {"tenant_id": "acme", "extension_id": p.extension.id, "content_hash": p.version.content_hash},
            "http": {"method": "GET", "path": "/fetch", "query": {"url": url}, "headers": {}},
            "providers": ["cap:http.fetch"],
        });
        let kelp = &kelp;
        async move {
            let v = json_body(kelp.execute("egress-runner-token", &body).await).await;
            let body = base64::engine::general_purpose::STANDARD.decode(v["body_b64"].as_str().unwrap()).unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    // Any port and plain http on a listed host: no install, no per-install allow-list needed.
    let fetched = run(format!("http://localhost:{port}/data")).await;
    assert_eq!(fetched["body"], "upstream says hi", "{fetched}");
    let refused = run(format!("http://127.0.0.1:{port}/data")).await;
    assert_eq!(refused["error"], "not-allowed", "not on the list: {refused}");
}
