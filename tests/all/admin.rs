//! The admin API through real HTTP: permission boundaries, bad bundles, precompile at
//! publish, config/secret bumps, upgrade and rollback, grants, audit, idempotency, OpenAPI.

use std::sync::atomic::Ordering;

use kelp_runtime::stores::GrantViewer;
use kelp_tests::*;
use serde_json::{json, Value};

const OPS: &[&str] = &["platform:publish", "platform:ops", "extension:manage"];
const MANAGER: &[&str] = &["extension:manage", "extension:read", "extension:write"];

async fn call(kelp: &TestKelp, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = kelp
        .client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", kelp.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
}

async fn publish_bytes(kelp: &TestKelp, token: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = kelp
        .client
        .post(format!("{}/admin/extensions", kelp.base))
        .bearer_auth(token)
        .header("content-type", "application/zstd")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
}

fn pack(dir: &std::path::Path) -> Vec<u8> {
    kelp_runtime::publish::pack_dir(dir).unwrap()
}

/// The WAT example staged under another manifest version (same component).
fn wat_version(version: &str) -> std::path::PathBuf {
    let example = repo_root().join("examples/wat-hello");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(example.join("manifest.json")).unwrap()).unwrap();
    manifest["version"] = json!(version);
    let sources = fixtures_dir().join("version-sources").join(version);
    std::fs::create_dir_all(&sources).unwrap();
    write_atomic(&sources.join("manifest.json"), manifest.to_string().as_bytes());
    let guest = kelp_runtime::devtools::GuestSources {
        manifest: &sources.join("manifest.json"),
        code: &example.join("hello.wat"),
        world: "alga:extension/runner",
        ui: None,
    };
    kelp_runtime::devtools::stage_guest(&repo_root(), version, &guest, &fixtures_dir().join("staged-versions")).unwrap()
}

#[tokio::test]
async fn publish_install_configure_upgrade_roll_back_and_audit() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", OPS);
    let (status, v1) = publish_bytes(&kelp, &ops, pack(&wat_version("1.0.0"))).await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(v1["version"]["artifact_present"], true, "precompiled at publish");
    let (status, again) = publish_bytes(&kelp, &ops, pack(&wat_version("1.0.0"))).await;
    assert_eq!((status, again["created"].as_bool()), (200, Some(false)), "same content: idempotent");
    let (status, v2) = publish_bytes(&kelp, &ops, pack(&wat_version("1.1.0"))).await;
    assert_eq!(status, 201);

    let manager = token("acme", MANAGER);
    let (status, install) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &manager,
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0", "config": {"a": "1"}})),
    )
    .await;
    assert_eq!(status, 201, "{install}");
    let id = install["install_id"].as_str().unwrap().to_string();
    assert_eq!(install["capabilities"], json!(["cap:log.emit"]), "defaults to what the manifest declares");

    let compiles = kelp.platform.cache().stats.compiles.load(Ordering::Relaxed);
    let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &manager).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        kelp.platform.cache().stats.compiles.load(Ordering::Relaxed),
        compiles,
        "the first gateway request did not compile"
    );

    let (status, cfg) = call(
        &kelp,
        "PUT",
        &format!("/admin/installs/{id}/config"),
        &manager,
        Some(json!({"config": {"greeting": "hi"}})),
    )
    .await;
    assert_eq!((status, cfg["config_version"].as_u64()), (200, Some(2)));
    let (status, sec) = call(
        &kelp,
        "PUT",
        &format!("/admin/installs/{id}/secrets"),
        &manager,
        Some(json!({"secrets": {"token": "t0p-s3cret"}})),
    )
    .await;
    assert_eq!((status, sec["secrets_version"].as_u64()), (200, Some(1)));
    assert!(!sec.to_string().contains("t0p-s3cret"), "secret values are write-only");
    // Oversized maps are refused whole, before anything is written.
    let huge: serde_json::Map<String, Value> = (0..300).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, body) =
        call(&kelp, "PUT", &format!("/admin/installs/{id}/config"), &manager, Some(json!({"config": huge}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let big = "x".repeat(70 * 1024);
    let (status, body) =
        call(&kelp, "PUT", &format!("/admin/installs/{id}/secrets"), &manager, Some(json!({"secrets": {"blob": big}})))
            .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("secrets is"), "{body}");
    let (_, unchanged) = call(&kelp, "GET", &format!("/admin/installs/{id}"), &manager, None).await;
    assert_eq!(
        (unchanged["config_version"].as_u64(), unchanged["secrets_version"].as_u64()),
        (Some(2), Some(1)),
        "nothing half-written: {unchanged}"
    );
    let (_, got) = call(&kelp, "GET", &format!("/admin/installs/{id}"), &manager, None).await;
    assert!(!got.to_string().contains("t0p-s3cret"));
    assert_eq!(got["has_secrets"], true);

    // A refused part refuses the whole change: the version does not move either.
    let (status, _) = call(
        &kelp,
        "PATCH",
        &format!("/admin/installs/{id}"),
        &manager,
        Some(json!({"version": "1.1.0", "capabilities": ["http.fetch"]})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, still) = call(&kelp, "GET", &format!("/admin/installs/{id}"), &manager, None).await;
    assert_eq!(still["version_id"], v1["version"]["id"], "nothing half-applied");
    // Upgrade, then roll back.
    let (status, up) =
        call(&kelp, "PATCH", &format!("/admin/installs/{id}"), &manager, Some(json!({"version": "1.1.0"}))).await;
    assert_eq!((status, up["version_id"].as_str()), (200, v2["version"]["id"].as_str()));
    let (_, back) =
        call(&kelp, "PATCH", &format!("/admin/installs/{id}"), &manager, Some(json!({"version": v1["version"]["id"]})))
            .await;
    assert_eq!(back["version_id"], v1["version"]["id"]);
    let (_, off) =
        call(&kelp, "PATCH", &format!("/admin/installs/{id}"), &manager, Some(json!({"enabled": false}))).await;
    assert_eq!(off["enabled"], false);
    assert_eq!(kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &manager).await.status(), 404, "disabled");
    let (status, _) = call(&kelp, "DELETE", &format!("/admin/installs/{id}?purge=true"), &manager, None).await;
    assert_eq!(status, 200);

    let (_, audit) = call(&kelp, "GET", "/admin/audit?limit=100", &ops, None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for expected in [
        "version.publish",
        "install.create",
        "install.config",
        "install.secrets",
        "install.version",
        "install.update",
        "install.delete",
    ] {
        assert!(actions.contains(&expected), "audit has {expected}: {actions:?}");
    }
    assert_eq!(
        actions.iter().filter(|a| **a == "version.publish").count(),
        2,
        "the idempotent re-publish is not a mutation"
    );
    assert!(!audit.to_string().contains("t0p-s3cret"), "no secret in the audit log");
    let (_, mine) = call(&kelp, "GET", "/admin/audit?action=install.version", &manager, None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 2, "tenants read their own audit rows");
}

#[tokio::test]
async fn permission_boundaries_hold() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", OPS);
    publish_bytes(&kelp, &ops, pack(&staged_example("wat-hello"))).await;
    let user = token("acme", &["extension:read", "extension:write"]);
    let (status, body) = publish_bytes(&kelp, &user, pack(&staged_example("wat-hello"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "a plain user cannot publish");
    let (status, _) = publish_bytes(&kelp, &token("acme", MANAGER), pack(&staged_example("wat-hello"))).await;
    assert_eq!(status, 403, "a manager cannot publish");
    let (status, _) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &user,
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"})),
    )
    .await;
    assert_eq!(status, 403, "a plain user cannot install");

    let globex = token("globex", MANAGER);
    let (_, b) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &globex,
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"})),
    )
    .await;
    let b_id = b["install_id"].as_str().unwrap().to_string();
    let acme = token("acme", MANAGER);
    for (method, path, body) in [
        ("GET", format!("/admin/installs/{b_id}"), None),
        ("PATCH", format!("/admin/installs/{b_id}"), Some(json!({"enabled": false}))),
        ("PUT", format!("/admin/installs/{b_id}/config"), Some(json!({"config": {}}))),
        ("PUT", format!("/admin/installs/{b_id}/secrets"), Some(json!({"secrets": {"x": "y"}}))),
        ("PATCH", format!("/admin/installs/{b_id}/config"), Some(json!({"set": {"a": "b"}}))),
        ("PATCH", format!("/admin/installs/{b_id}/secrets"), Some(json!({"unset": ["x"]}))),
        ("DELETE", format!("/admin/installs/{b_id}"), None),
    ] {
        let (status, _) = call(&kelp, method, &path, &acme, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: acme cannot see globex's install");
        let (status, _) = call(&kelp, method, &format!("{path}?tenant=globex"), &acme, body).await;
        assert_eq!(status, 403, "{method} {path}?tenant=globex: only platform:ops may name another tenant");
    }
    let (_, listed) = call(&kelp, "GET", "/admin/installs", &acme, None).await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    // Grants are a subset of what the manifest declares (cap:debug.logs excepted).
    let (status, body) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &acme,
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0", "capabilities": ["http.fetch"]})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not declared"));
    let (status, _) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &acme,
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0", "egress": ["*"]})),
    )
    .await;
    assert_eq!(status, 400, "a bare * egress entry is refused at install time");
    let (status, ok) = call(&kelp, "POST", "/admin/installs", &acme, Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0", "capabilities": ["log.emit", "debug.logs"]}))).await;
    assert_eq!(status, 201, "{ok}");
    assert_eq!(ok["debug_logs"], true, "cap:debug.logs needs no declaration");
    let (status, got) = call(&kelp, "GET", &format!("/admin/installs/{b_id}?tenant=globex"), &ops, None).await;
    assert_eq!((status, got["tenant_id"].as_str()), (200, Some("globex")), "operators reach any tenant");
    // Installing picks the tenant with ?tenant= like every other route (the body's `tenant`
    // still works; two different answers are refused).
    let wat = json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"});
    let (status, _) = call(&kelp, "POST", "/admin/installs?tenant=initech", &acme, Some(wat.clone())).await;
    assert_eq!(status, 403, "only platform:ops may install into another tenant");
    let (status, body) = call(&kelp, "POST", "/admin/installs?tenant=initech", &ops, Some(wat.clone())).await;
    assert_eq!((status, body["tenant_id"].as_str()), (201, Some("initech")), "{body}");
    let mut both = wat.clone();
    both["tenant"] = json!("hooli");
    let (status, body) = call(&kelp, "POST", "/admin/installs?tenant=initech", &ops, Some(both)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (_, all) = call(&kelp, "GET", "/admin/installs", &ops, None).await;
    assert!(all["items"].as_array().unwrap().iter().any(|i| i["install_id"] == b_id.as_str()));
    let (status, _) = call(&kelp, "GET", "/admin/audit?tenant=globex", &acme, None).await;
    assert_eq!(status, 403);
    let (status, _) =
        call(&kelp, "POST", "/admin/grants", &acme, Some(json!({"tenant": "acme", "install_id": "x", "viewer": "v"})))
            .await;
    assert_eq!(status, 403, "grants are platform:ops only");
    let (_, denied) = call(&kelp, "GET", "/admin/audit?action=access.denied&limit=100", &ops, None).await;
    assert!(denied["items"].as_array().unwrap().len() >= 10, "denied attempts are audited: {denied}");
    let (status, _) = call(&kelp, "GET", "/admin/installs", "garbage", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_bundles_are_refused_and_nothing_is_stored() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", OPS);
    let good = staged_example("wat-hello");
    let manifest: Value = serde_json::from_slice(&std::fs::read(good.join("manifest.json")).unwrap()).unwrap();
    let wasm = std::fs::read(good.join("dist/main.wasm")).unwrap();
    let tar = |entries: Vec<(&str, Vec<u8>, tar::EntryType)>| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, name, "../../etc/passwd").unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
        }
        zstd::encode_all(b.into_inner().unwrap().as_slice(), 3).unwrap()
    };
    let reg = tar::EntryType::Regular;
    let with_manifest =
        |m: Value| vec![("manifest.json", m.to_string().into_bytes(), reg), ("dist/main.wasm", wasm.clone(), reg)];
    let mut unknown_cap = manifest.clone();
    unknown_cap["capabilities"] = json!(["cap:root.shell"]);
    let mut bad_version = manifest.clone();
    bad_version["version"] = json!("one");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "traversal",
            tar(vec![
                ("manifest.json", manifest.to_string().into_bytes(), reg),
                ("../../evil.wasm", wasm.clone(), reg),
            ]),
            400,
            "invalid_bundle",
        ),
        ("absolute path", tar(vec![("/etc/cron.d/x", b"x".to_vec(), reg)]), 400, "invalid_bundle"),
        (
            "symlink",
            tar(vec![
                ("manifest.json", manifest.to_string().into_bytes(), reg),
                ("dist/main.wasm", vec![], tar::EntryType::Symlink),
            ]),
            400,
            "invalid_bundle",
        ),
        (
            "bomb",
            tar(vec![("manifest.json", manifest.to_string().into_bytes(), reg), ("zeros", vec![0u8; 300 << 20], reg)]),
            413,
            "payload_too_large",
        ),
        ("not a bundle", b"PK\x03\x04 this is a zip".to_vec(), 400, "invalid_bundle"),
        ("no manifest", tar(vec![("dist/main.wasm", wasm.clone(), reg)]), 400, "invalid_bundle"),
        ("unknown capability", tar(with_manifest(unknown_cap)), 400, "invalid_manifest"),
        ("bad version", tar(with_manifest(bad_version)), 400, "invalid_manifest"),
        (
            "no component",
            tar(vec![("manifest.json", manifest.to_string().into_bytes(), reg)]),
            400,
            "invalid_component",
        ),
        (
            "garbage component",
            tar(vec![
                ("manifest.json", manifest.to_string().into_bytes(), reg),
                ("dist/main.wasm", b"\0asm garbage".to_vec(), reg),
            ]),
            400,
            "invalid_component",
        ),
    ];
    for (name, bytes, status, code) in cases {
        let (s, body) = publish_bytes(&kelp, &ops, bytes).await;
        assert_eq!((s, body["error"]["code"].as_str()), (status, Some(code)), "{name}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, extensions) = call(&kelp, "GET", "/admin/extensions", &ops, None).await;
    assert_eq!(extensions["items"], json!([]), "nothing half-stored");
    let (status, _) = publish_bytes(&kelp, &ops, pack(&good)).await;
    assert_eq!(status, 201);
    let mut other = manifest.clone();
    other["publisher"] = json!("someone else");
    let (status, body) = publish_bytes(&kelp, &ops, tar(with_manifest(other))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("version_conflict")), "versions are immutable");
    // Unknown keys are accepted and stripped, as Alga's SDK does, with a warning and a hint.
    let mut extra = manifest.clone();
    extra["version"] = json!("1.0.1");
    extra["description"] = json!("not a Kelp key");
    extra["api"]["endpionts"] = json!([]);
    extra["api"]["endpoints"][0]["schedulable"] = json!(false);
    let (status, body) = publish_bytes(&kelp, &ops, tar(with_manifest(extra))).await;
    assert_eq!(status, 201, "{body}");
    let warnings: Vec<&str> = body["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("\"description\"")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("api.\"endpionts\"") && w.contains("did you mean \"endpoints\"")),
        "{warnings:?}"
    );
    let stored = &body["version"]["manifest"];
    assert!(stored.get("description").is_none(), "stripped: {stored}");
    assert_eq!(stored["api"]["endpoints"][0]["schedulable"], false, "schedulable is kept");
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let kelp = TestKelp::start().await;
    publish_bytes(&kelp, &token("acme", OPS), pack(&staged_example("wat-hello"))).await;
    let manager = token("acme", MANAGER);
    let create = json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"});
    let post = |body: Value, key: &'static str| {
        kelp.client
            .post(format!("{}/admin/installs", kelp.base))
            .bearer_auth(&manager)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let first = post(create.clone(), "create-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let replay = post(create.clone(), "create-1").await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["install_id"], first["install_id"], "replayed, not created twice");
    let reused =
        post(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0", "enabled": false}), "create-1")
            .await
            .unwrap();
    assert_eq!(reused.status(), 422);
    let (_, listed) = call(&kelp, "GET", "/admin/installs", &manager, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn debug_grants_are_created_listed_and_revoked() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", OPS);
    publish_bytes(&kelp, &ops, pack(&staged_example("wat-hello"))).await;
    let (_, install) = call(
        &kelp,
        "POST",
        "/admin/installs",
        &token("acme", MANAGER),
        Some(json!({"extension": "com.kelp.examples.wat-hello", "version": "1.0.0"})),
    )
    .await;
    let id = install["install_id"].as_str().unwrap();
    let (status, grant) = call(
        &kelp,
        "POST",
        "/admin/grants",
        &ops,
        Some(
            json!({"tenant": "acme", "install_id": id, "viewer": "support-7", "ttl_secs": 600, "reason": "ticket 42"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{grant}");
    assert_eq!(grant["viewer_tenant"], "acme", "without viewer_tenant the grant names the install's tenant's user");
    let viewer = |sub, tenant| GrantViewer { sub, tenant, issuer: "" };
    assert!(kelp.platform.grants.has_active_grant("acme", id, &viewer("support-7", "acme")).await.unwrap());
    assert!(!kelp.platform.grants.has_active_grant("acme", id, &viewer("someone-else", "acme")).await.unwrap());
    assert!(
        !kelp.platform.grants.has_active_grant("acme", id, &viewer("support-7", "globex")).await.unwrap(),
        "another tenant's support-7"
    );
    let (status, ops_grant) = call(
        &kelp,
        "POST",
        "/admin/grants",
        &ops,
        Some(json!({"tenant": "acme", "install_id": id, "viewer": "ops-2", "viewer_tenant": "kelp-ops"})),
    )
    .await;
    assert_eq!(status, 201, "{ops_grant}");
    assert!(kelp.platform.grants.has_active_grant("acme", id, &viewer("ops-2", "kelp-ops")).await.unwrap());
    assert!(!kelp.platform.grants.has_active_grant("acme", id, &viewer("ops-2", "acme")).await.unwrap());
    let (_, listed) = call(&kelp, "GET", "/admin/grants?viewer=support-7", &ops, None).await;
    assert_eq!(listed["items"][0]["active"], true);
    let (status, _) = call(
        &kelp,
        "POST",
        "/admin/grants",
        &ops,
        Some(json!({"tenant": "acme", "install_id": "nope", "viewer": "v"})),
    )
    .await;
    assert_eq!(status, 404, "a grant names an existing install");
    let (status, _) =
        call(&kelp, "DELETE", &format!("/admin/grants/{}?tenant=acme", grant["id"].as_str().unwrap()), &ops, None)
            .await;
    assert_eq!(status, 200);
    assert!(!kelp.platform.grants.has_active_grant("acme", id, &viewer("support-7", "acme")).await.unwrap(), "revoked");
}

#[tokio::test]
async fn the_openapi_document_matches_the_real_routes() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", OPS);
    let (status, doc) = call(&kelp, "GET", "/admin/openapi.json", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{extension}", "com.nothing")
                .replace("{version}", "1.0.0")
                .replace("{install}", "none")
                .replace("{grant}", "none")
                .replace("{plan}", "none")
                .replace("{tenant}", "acme");
            let (status, body) = call(&kelp, &method.to_uppercase(), &concrete, &ops, Some(json!({}))).await;
            // The route exists: whatever the answer, it is not the router's own 404/405.
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            if status == 404 {
                assert!(
                    body["error"]["message"].as_str().is_some_and(|m| m.contains("not found")),
                    "{method} {path}: {body}"
                );
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 26);
    // And nothing is routed that the document does not describe.
    for (method, path) in [("GET", "/admin/secrets"), ("POST", "/admin/audit"), ("PUT", "/admin/extensions")] {
        let (status, _) = call(&kelp, method, path, &ops, None).await;
        assert!(status == 404 || status == 405, "{method} {path} is routed but undocumented");
    }
}

#[tokio::test]
async fn reading_the_registry_takes_a_permission() {
    let kelp = TestKelp::start().await;
    publish_bytes(&kelp, &token("acme", OPS), pack(&staged_example("wat-hello"))).await;
    let nobody = token("globex", &[]);
    let reader = token("globex", &["extension:read"]);
    for path in [
        "/admin/extensions",
        "/admin/extensions/com.kelp.examples.wat-hello",
        "/admin/extensions/com.kelp.examples.wat-hello/versions",
        "/admin/extensions/com.kelp.examples.wat-hello/versions/1.0.0",
    ] {
        let (status, body) = call(&kelp, "GET", path, &nobody, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
        assert!(!body.to_string().contains("sha256:"), "no content hash in a refusal");
        let (status, body) = call(&kelp, "GET", path, &reader, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}
