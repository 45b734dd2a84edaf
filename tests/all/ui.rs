//! Extension UI assets through real HTTP (and raw TCP for paths a client would normalise),
//! and the example UI in headless Chromium.

use std::time::Duration;

use kelp_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::browser::browse;

async fn kelp_with_ui(extra: &[(&str, &str)]) -> (TestKelp, String) {
    let kelp = TestKelp::start_with(extra).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let hash = published.version.content_hash.trim_start_matches("sha256:").to_string();
    (kelp, hash)
}

/// A raw GET: the path is sent exactly as given (no client-side dot-segment normalisation).
async fn raw_get(kelp: &TestKelp, path: &str, token: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(kelp.addr).await.unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn serves_assets_with_types_etags_caching_and_a_sandboxing_csp() {
    let (kelp, hash) = kelp_with_ui(&[]).await;
    let t = token("acme", RW);
    let base = format!("/ext-ui/com.kelp.examples.js-notes/{hash}");
    let js = kelp.get(&format!("{base}/app.js"), &t).await;
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(js.headers()["x-content-type-options"], "nosniff");
    assert_eq!(js.headers()["cache-control"], "public, max-age=31536000, immutable");
    let csp = js.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("sandbox"), "every type is sandboxed if opened as a document: {csp}");
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "strong sha256 ETag: {etag}");
    assert!(js.text().await.unwrap().contains("api/ext/com.kelp.examples.js-notes"));
    let cached = kelp
        .client
        .get(format!("{}{base}/app.js", kelp.base))
        .bearer_auth(&t)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());

    let html = kelp.get(&format!("{base}/"), &t).await;
    assert_eq!(html.status(), 200);
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let csp = html.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self';") && csp.contains("; frame-ancestors 'self'"),
        "{csp}"
    );
    // Each UI document runs in its own opaque origin: never `allow-same-origin`.
    assert!(csp.ends_with(kelp_runtime::ui::UI_SANDBOX) && !csp.contains("allow-same-origin"), "{csp}");
    let entry = html.text().await.unwrap();
    assert!(entry.contains("<h1>Notes</h1>"));
    // Client routes and directories fall back to the entry (single-page apps).
    let spa = kelp.get(&format!("{base}/notes/42?path=/notes/42"), &t).await;
    assert_eq!(spa.status(), 200);
    assert_eq!(spa.text().await.unwrap(), entry);
    assert_eq!(kelp.get(&format!("{base}/style.css"), &t).await.headers()["content-type"], "text/css; charset=utf-8");
    // The URL Alga's buildExtUiSrc makes: segments percent-encoded, the hash with its prefix.
    let alga = format!("/ext-ui/com.kelp.examples.js-notes/sha256%3A{hash}/index.html?path=%2Fnotes&extensionId=x");
    let r = kelp.get(&alga, &t).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), entry);
}

#[tokio::test]
async fn refuses_traversal_other_tenants_unknown_hashes_and_oversized_files() {
    let (kelp, hash) = kelp_with_ui(&[("KELP_UI_MAX_FILE_BYTES", "1200")]).await;
    let t = token("acme", RW);
    let base = format!("/ext-ui/com.kelp.examples.js-notes/{hash}");
    for bad in [
        "../../../etc/passwd",
        "%2e%2e/%2e%2e/secret",
        "..%2f..%2fsecret",
        "%2Fetc%2Fpasswd",
        "a%00.js",
        "a%5c..%5cb",
        "a\\b",
        "./index.html",
        "a//b",
    ] {
        assert_eq!(raw_get(&kelp, &format!("{base}/{bad}"), &t).await, 400, "{bad} must be refused");
    }
    let globex = token("globex", RW);
    assert_eq!(kelp.get(&format!("{base}/index.html"), &globex).await.status(), 404, "another tenant's hash");
    assert_eq!(
        kelp.get(&format!("/ext-ui/com.kelp.examples.js-notes/{}/index.html", "0".repeat(64)), &t).await.status(),
        404
    );
    assert_eq!(
        kelp.get(&format!("/ext-ui/com.kelp.examples.wat-hello/{hash}/index.html"), &t).await.status(),
        404,
        "hash of another extension"
    );
    assert_eq!(
        kelp.client.get(format!("{}{base}/index.html", kelp.base)).send().await.unwrap().status(),
        401,
        "private by default"
    );
    assert_eq!(kelp.get(&format!("{base}/style.css"), &t).await.status(), 200, "small file");
    let big = kelp.get(&format!("{base}/app.js"), &t).await;
    assert_eq!(big.status(), 413, "app.js is over the 1200-byte cap");
    assert_eq!(json_body(big).await["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn public_mode_serves_published_hashes_without_identity() {
    let (kelp, hash) = kelp_with_ui(&[("KELP_UI_PUBLIC", "true")]).await;
    let url = format!("{}/ext-ui/com.kelp.examples.js-notes/{hash}/app.js", kelp.base);
    assert_eq!(kelp.client.get(&url).send().await.unwrap().status(), 200);
    let other = format!("{}/ext-ui/com.kelp.examples.js-notes/{}/app.js", kelp.base, "1".repeat(64));
    assert_eq!(kelp.client.get(&other).send().await.unwrap().status(), 404);
}

/// Exchange a user's token for a UI token of `extension`.
async fn ui_token(kelp: &TestKelp, extension: &str, user_token: &str) -> (u16, serde_json::Value) {
    let r = kelp
        .client
        .post(format!("{}/api/ext-ui-token/{extension}", kelp.base))
        .bearer_auth(user_token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_ui_token_reaches_only_its_extensions_api_and_ui() {
    let (kelp, hash) = kelp_with_ui(&[]).await;
    let wat = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&wat, "acme", &[]).await;
    let user = token("acme", &["extension:read", "extension:write", "extension:manage", "extension:debug"]);
    let (status, minted) = ui_token(&kelp, "com.kelp.examples.js-notes", &user).await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(minted["token_type"], "Bearer");
    assert_eq!(minted["expires_in"], 900);
    let ui = minted["token"].as_str().unwrap().to_string();
    // Its own extension: API and UI assets.
    assert_eq!(kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &ui).await.status(), 200);
    assert_eq!(kelp.get(&format!("/ext-ui/com.kelp.examples.js-notes/{hash}/app.js"), &ui).await.status(), 200);
    // Any other extension, the admin API, the debug relay, minting: refused.
    let other = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &ui).await;
    assert_eq!(other.status(), 403);
    assert!(json_body(other).await["error"]["message"].as_str().unwrap().contains("another extension"));
    assert_eq!(kelp.get("/admin/installs", &ui).await.status(), 401, "the admin API refuses UI tokens");
    let relay = kelp.get("/api/ext-debug/stream?extensionId=com.kelp.examples.js-notes", &ui).await;
    assert_eq!(relay.status(), 401, "the debug relay refuses UI tokens");
    assert_eq!(ui_token(&kelp, "com.kelp.examples.wat-hello", &ui).await.0, 401, "a UI token cannot mint another");
    // Minting needs extension:read and the tenant's own install.
    assert_eq!(ui_token(&kelp, "com.kelp.examples.js-notes", &token("acme", &[])).await.0, 403);
    assert_eq!(ui_token(&kelp, "com.kelp.examples.js-notes", &token("globex", RW)).await.0, 404);
    // A UI token of another tenant's user never reaches acme's install.
    let globex_wat = kelp.install(&wat, "globex", &[]).await;
    let (_, globex) = ui_token(&kelp, "com.kelp.examples.wat-hello", &token("globex", RW)).await;
    let globex = globex["token"].as_str().unwrap();
    let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", globex).await;
    assert_eq!(r.status(), 200, "globex's own install");
    assert!(r.text().await.unwrap().starts_with("hello from wat"));
    let _ = globex_wat;
    // A forged UI token (another key) is refused.
    let forged = kelp_runtime::auth::UiTokens::random(std::time::Duration::from_secs(60)).mint(
        &kelp_runtime::auth::Identity {
            sub: "x".into(),
            tenant: "acme".into(),
            perms: vec!["extension:read".into()],
            ..Default::default()
        },
        &wat.extension.id,
    );
    assert_eq!(kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &forged).await.status(), 401);
}

#[tokio::test]
async fn sandboxed_uis_get_cors_for_the_null_origin_without_credentials() {
    let (kelp, _) = kelp_with_ui(&[]).await;
    let preflight = kelp
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/ext/com.kelp.examples.js-notes/hello", kelp.base))
        .header("origin", "null")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "null");
    assert!(preflight.headers().get("access-control-allow-credentials").is_none());
    let other = kelp
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/ext/com.kelp.examples.js-notes/hello", kelp.base))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "other origins are not echoed");
    let (kelp, _) = kelp_with_ui(&[("KELP_UI_SANDBOX", "false")]).await;
    let off = kelp
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/ext/com.kelp.examples.js-notes/hello", kelp.base))
        .header("origin", "null")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(off.headers().get("access-control-allow-origin").is_none(), "null is allowed only for sandboxed UIs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_ui_renders_its_handlers_answer_in_chromium() {
    let (kelp, hash) = kelp_with_ui(&[("KELP_UI_PUBLIC", "true")]).await;
    // The host page's part: a UI token of this extension only, in the iframe's fragment.
    let (_, minted) = ui_token(&kelp, "com.kelp.examples.js-notes", &token("acme", RW)).await;
    let url =
        format!("{}/ext-ui/com.kelp.examples.js-notes/{hash}/#token={}", kelp.base, minted["token"].as_str().unwrap());
    let result = browse(&url, "h1", "#message", "Hello, acme!", "example-ui.png", || async {}).await;
    assert_eq!(result["ok"], true, "{result}");
}

/// Active content other than HTML — SVG, XML with a stylesheet, XHTML, XSL — opened directly
/// is a document of the gateway's origin unless it is sandboxed. Each is served with the CSP
/// (scripts off, a unique origin): Chromium opens the SVG and XHTML and their inline scripts
/// do not run; HTML of one extension is not reachable under another's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_ui_types_opened_directly_run_no_script_as_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ui = dir.path().join("ui");
    std::fs::create_dir_all(&ui).unwrap();
    let manifest = serde_json::json!({"name": "com.evil.ui", "version": "1.0.0", "runtime": "wasm-js@1",
        "ui": {"type": "iframe", "entry": "ui/index.html"}});
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(ui.join("index.html"), "<p>ok</p>").unwrap();
    let script = "document.getElementById('status').textContent = 'pwned ' + document.domain;";
    std::fs::write(
        ui.join("evil.svg"),
        format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="80"><text id="status" x="10" y="40">safe</text><script>{script}</script></svg>"#),
    )
    .unwrap();
    std::fs::write(
        ui.join("evil.xhtml"),
        format!(r#"<html xmlns="http://www.w3.org/1999/xhtml"><body><p id="status">safe</p><script>{script}</script></body></html>"#),
    )
    .unwrap();
    std::fs::write(
        ui.join("evil.xml"),
        r#"<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="evil.xsl"?><r/>"#,
    )
    .unwrap();
    std::fs::write(
        ui.join("evil.xsl"),
        r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>"#,
    )
    .unwrap();
    let kelp = TestKelp::start_with(&[("KELP_UI_PUBLIC", "true"), ("KELP_UI_SANDBOX", "false")]).await;
    let published = kelp_runtime::publish::publish_dir(&kelp.platform, dir.path()).await.unwrap();
    let other = kelp.publish(&staged_example("wat-hello")).await;
    let hash = published.version.content_hash.trim_start_matches("sha256:").to_string();
    let base = format!("{}/ext-ui/com.evil.ui/{hash}", kelp.base);
    for file in ["evil.svg", "evil.xhtml", "evil.xml", "evil.xsl"] {
        let r = kelp.client.get(format!("{base}/{file}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{file}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("sandbox allow-scripts") && !csp.contains("allow-same-origin"), "{file}: {csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let html = kelp.client.get(format!("{base}/index.html")).send().await.unwrap();
    let csp = html.headers()["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("sandbox"), "KELP_UI_SANDBOX=false leaves the operator's HTML same-origin: {csp}");
    let elsewhere = format!("{}/ext-ui/{}/{hash}/index.html", kelp.base, other.extension.id);
    assert_eq!(kelp.client.get(elsewhere).send().await.unwrap().status(), 404, "HTML under another extension");
    for (file, shot) in [("evil.svg", "ui-evil-svg.png"), ("evil.xhtml", "ui-evil-xhtml.png")] {
        let result = browse(&format!("{base}/{file}"), "#status", "#status", "safe", shot, || async {}).await;
        assert_eq!(result["ok"], true, "{file}: its script ran or the page failed: {result}");
        let texts = result["texts"].to_string();
        assert!(!texts.contains("pwned"), "{file}: {texts}");
    }
}

/// A UI bundle with `marker` in its entry page, published; its content hex.
async fn publish_ui(kelp: &TestKelp, name: &str, marker: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ui")).unwrap();
    let manifest = serde_json::json!({"name": name, "version": "1.0.0", "runtime": "wasm-js@1",
        "ui": {"type": "iframe", "entry": "ui/index.html"}});
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.path().join("ui/index.html"), format!("<p>genuine {marker}</p>")).unwrap();
    let published = kelp_runtime::publish::publish_dir(&kelp.platform, dir.path()).await.unwrap();
    published.version.content_hash.trim_start_matches("sha256:").to_string()
}

/// Swap a UI's entry page and the index beside it in the blob store, as someone with write
/// access to the bucket could.
async fn tamper(kelp: &TestKelp, hex: &str) {
    use sha2::Digest as _;
    let evil = b"<script>steal()</script>";
    kelp.platform.blobs.put(&format!("ui/{hex}/files/index.html"), evil).await.unwrap();
    let index = serde_json::json!({"entry": "index.html",
        "files": {"index.html": {"size": evil.len(), "sha256": hex::encode(sha2::Sha256::digest(evil))}}});
    kelp.platform.blobs.put(&format!("ui/{hex}/index.json"), index.to_string().as_bytes()).await.unwrap();
}

/// A fresh process over the same data (a new sandbox: nothing of the UI on local disk).
async fn fresh_process(kelp: &TestKelp) -> (TestKelp, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let data = kelp.data_dir().to_string_lossy().into_owned();
    let art = artifacts.path().to_string_lossy().into_owned();
    let fresh =
        TestKelp::start_with(&[("KELP_UI_PUBLIC", "true"), ("KELP_DATA_DIR", &data), ("KELP_ARTIFACT_DIR", &art)])
            .await;
    (fresh, artifacts)
}

#[tokio::test]
async fn ui_files_are_checked_against_the_registrys_record_not_an_index_beside_them() {
    let artifacts = tempfile::tempdir().unwrap();
    let art = artifacts.path().to_string_lossy().into_owned();
    let kelp = TestKelp::start_with(&[("KELP_UI_PUBLIC", "true"), ("KELP_ARTIFACT_DIR", &art)]).await;
    let page =
        |k: &TestKelp, name: &str, hex: &str| k.client.get(format!("{}/ext-ui/{name}/{hex}/index.html", k.base)).send();

    // Recorded at publish: a swapped file and index are refused, never served.
    let recorded = publish_ui(&kelp, "com.acme.recorded-ui", "one").await;
    tamper(&kelp, &recorded).await;
    let (fresh, _a) = fresh_process(&kelp).await;
    let r = page(&fresh, "com.acme.recorded-ui", &recorded).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(!r.text().await.unwrap().contains("steal"));

    // Published before digests were recorded: checked against the bundle itself.
    let legacy = publish_ui(&kelp, "com.acme.legacy-ui", "two").await;
    let db = rusqlite::Connection::open(kelp.data_dir().join("kelp.db")).unwrap();
    let removed =
        db.execute("DELETE FROM artifact_digests WHERE component_hash = ?1", [format!("ui/{legacy}")]).unwrap();
    assert_eq!(removed, 1, "the record written at publish");
    let (fresh, _b) = fresh_process(&kelp).await;
    let r = page(&fresh, "com.acme.legacy-ui", &legacy).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("genuine two"));
    tamper(&kelp, &legacy).await;
    let (fresh, _c) = fresh_process(&kelp).await;
    assert_eq!(page(&fresh, "com.acme.legacy-ui", &legacy).await.unwrap().status(), 503);
}
