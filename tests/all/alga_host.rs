//! `KELP_HOST_API_PROTOCOL=alga`: the business interfaces, ui-proxy and storage answered by an
//! unchanged Alga server (the fake in `kelp_tests::alga`, written from Alga's internal routes).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kelp_tests::alga::{fake_alga, FakeAlga, RUNNER_AUTH};
use kelp_tests::*;
use serde_json::{json, Value};

struct Setup {
    kelp: TestKelp,
    alga: FakeAlga,
    install_id: String,
    extension_id: String,
}

/// Kelp speaking Alga's protocol to the fake (with `runner_auth` as its token, and Alga's UI
/// proxy when `ui_proxy`), the test guest installed for `acme` with an `api_key` secret.
async fn setup(runner_auth: &str, ui_proxy: bool) -> Setup {
    let (base, alga) = fake_alga().await;
    // Configured with a trailing /api, as Alga's runner forgives.
    let (url, ui_base) = (format!("{base}/api"), format!("{base}/ui"));
    let mut env = vec![
        ("KELP_HOST_API_PROTOCOL", "alga"),
        ("KELP_HOST_API_URL", url.as_str()),
        ("KELP_HOST_API_SECRET", runner_auth),
        ("KELP_HOST_API_TIMEOUT_MS", "1000"),
    ];
    if ui_proxy {
        env.push(("KELP_UI_PROXY_BASE_URL", ui_base.as_str()));
    }
    let kelp = TestKelp::start_with(&env).await;
    let published = kelp.publish(&staged_fixture("alga-host")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let secrets = [("api_key".to_string(), "k-123".to_string())].into_iter().collect();
    kelp_runtime::installs::set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();
    Setup { kelp, alga, install_id: install.install_id, extension_id: published.extension.id }
}

async fn call(s: &Setup, method: reqwest::Method, path: &str, body: Option<&str>) -> Value {
    let mut r = s
        .kelp
        .client
        .request(method, format!("{}/api/ext/test.alga-host{path}", s.kelp.base))
        .bearer_auth(token("acme", RW));
    if let Some(body) = body {
        r = r.body(body.to_string());
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn get(s: &Setup, path: &str) -> Value {
    call(s, reqwest::Method::GET, path, None).await
}

#[tokio::test]
async fn business_interfaces_are_answered_by_algas_internal_api() {
    let s = setup(RUNNER_AUTH, true).await;

    let clients = get(&s, "/clients").await;
    assert_eq!(clients["ok"]["items"][0]["clientName"], "Acme Corp", "{clients}");
    assert_eq!((clients["ok"]["totalCount"].clone(), clients["ok"]["page"].clone()), (json!(31), json!(2)));
    {
        let state = s.alga.state.lock().unwrap();
        let (service, install, body) = state.calls.last().unwrap();
        assert_eq!((service.as_str(), install.as_str()), ("ext-clients", s.install_id.as_str()));
        assert_eq!(
            body,
            &json!({"operation": "list", "input": {"search": "ac", "includeInactive": true, "page": 2, "pageSize": 10},
                    "user": {"userId": "user-1", "userType": "internal"}}),
            "Alga's request shape, the caller's id and type included"
        );
    }
    assert_eq!(get(&s, "/clients-bad-page").await, json!({"err": "invalid-input"}), "page size over 100");
    assert_eq!(get(&s, "/client/c1").await["ok"]["clientId"], "c1");
    assert_eq!(get(&s, "/client/nobody").await, json!({}), "{{item: null}} is none");

    let services = get(&s, "/services").await;
    assert_eq!(services["ok"]["items"][0]["billingMethod"], "hourly", "{services}");
    assert_eq!(services["ok"]["items"][0]["defaultRate"], 120.5);
    assert_eq!(
        s.alga.state.lock().unwrap().calls.last().unwrap().2["input"],
        json!({"itemKind": "service", "isActive": true, "billingMethod": "hourly", "page": 1, "pageSize": 5})
    );
    assert_eq!(get(&s, "/service/weird").await, json!({"err": "internal"}), "an item kind the WIT lacks");

    let created = call(&s, reqwest::Method::POST, "/schedule", None).await;
    assert_eq!(created["ok"], json!({"success": true, "scheduleId": "sch-1"}), "{created}");
    let sent = s.alga.state.lock().unwrap().calls.last().unwrap().2.clone();
    assert_eq!(sent["payload"], json!({"full": true}), "the WIT's JSON text goes to Alga as JSON");
    let schedules = get(&s, "/schedules").await;
    assert_eq!(schedules["ok"][0]["cron"], "0 * * * *", "{schedules}");
    assert_eq!(schedules["ok"][0]["payload"], r#"{"full":true}"#);
    assert_eq!(call(&s, reqwest::Method::PUT, "/schedule/sch-1", None).await["ok"]["success"], true);
    assert_eq!(get(&s, "/schedule/sch-1").await["ok"]["enabled"], false);
    assert_eq!(get(&s, "/schedule/sch-9").await, json!({}), "{{schedule: null}} is none");
    let refused = call(&s, reqwest::Method::POST, "/schedule", Some("bad")).await;
    assert_eq!(refused["ok"]["success"], false);
    assert_eq!(refused["ok"]["error"], "Invalid cron expression", "Alga's own message, not just 'validation failed'");
    assert_eq!(refused["ok"]["fieldErrors"], r#"{"cron":"5 fields expected"}"#);
    assert_eq!(call(&s, reqwest::Method::DELETE, "/schedule/sch-1", None).await["ok"]["success"], true);
    assert_eq!(call(&s, reqwest::Method::DELETE, "/schedule/sch-1", None).await["ok"]["success"], false);

    let invoice = call(&s, reqwest::Method::POST, "/invoice", None).await;
    assert_eq!(invoice["ok"]["invoiceNumber"], "INV-0001", "{invoice}");
    assert_eq!(invoice["ok"]["total"], 109.0);
    let sent = s.alga.state.lock().unwrap().calls.last().unwrap().2.clone();
    assert_eq!(
        sent,
        json!({"operation": "createManualInvoice", "clientId": "c1", "dueDate": "2026-12-31", "poNumber": "PO-1",
               "items": [{"serviceId": "s1", "quantity": 2.0, "description": "work", "rate": 50.0},
                         {"serviceId": "s1", "quantity": 1.0, "description": "loyalty", "rate": 10.0, "isDiscount": true,
                          "discountType": "percentage", "appliesToServiceId": "s1"}]}),
        "absent options are left out, never null"
    );

    let proxied = get(&s, "/proxy").await;
    let echoed: Value = serde_json::from_str(proxied["ok"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], format!("/ui/{}/reports/summary?range=7d", s.extension_id));
    assert_eq!(echoed["body"], r#"{"q":1}"#);
    let platform: Value = serde_json::from_str(get(&s, "/proxy-api").await["ok"].as_str().unwrap()).unwrap();
    assert_eq!((platform["method"].as_str(), platform["path"].as_str()), (Some("GET"), Some("/ui/api/v1/tickets")));
    let state = s.alga.state.lock().unwrap();
    let (_, _, headers, _) = state.proxied.last().unwrap();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(h("x-alga-tenant"), "acme");
    assert_eq!(h("x-alga-extension"), s.extension_id);
    assert_eq!(h("x-ext-install-id"), s.install_id);
    assert_eq!(h("x-api-key"), "k-123", "the install's api_key secret authenticates to Alga's platform APIs");
    assert_eq!(h("x-user-id"), "user-1");
}

#[tokio::test]
async fn storage_lives_in_alga() {
    let s = setup(RUNNER_AUTH, false).await;
    let put = call(&s, reqwest::Method::PUT, "/kv/b", Some("bee")).await;
    assert_eq!((put["ok"]["revision"].clone(), put["ok"]["value"].clone()), (json!(1), json!("bee")), "{put}");
    call(&s, reqwest::Method::PUT, "/kv/a", Some("ay")).await;
    call(&s, reqwest::Method::PUT, "/kv/c", Some("sea")).await;
    {
        let state = s.alga.state.lock().unwrap();
        let (value, metadata, _) = &state.storage[&(s.install_id.clone(), "notes".into(), "b".into())];
        assert_eq!(value, "YmVl", "stored in Alga, base64 as Alga's runner writes it");
        assert_eq!(metadata, &json!({"encoding": "base64-bytes"}));
    }
    assert_eq!(get(&s, "/kv/b").await["ok"]["value"], "bee");
    assert_eq!(get(&s, "/kv/zz").await, json!({"err": "missing"}));
    assert_eq!(get(&s, "/kv").await["ok"], json!([["a", "ay", 1], ["b", "bee", 1], ["c", "sea", 1]]));
    assert_eq!(get(&s, "/kv?after=a").await["ok"], json!([["b", "bee", 1], ["c", "sea", 1]]), "Alga's cursor");

    let updated = call(&s, reqwest::Method::PUT, "/kv/b?rev=1", Some("bee 2")).await;
    assert_eq!(updated["ok"]["revision"], 2);
    assert_eq!(call(&s, reqwest::Method::PUT, "/kv/b?rev=1", Some("stale")).await, json!({"err": "conflict"}));
    assert_eq!(call(&s, reqwest::Method::PUT, "/kv/big", Some(&"x".repeat(1000))).await, json!({"err": "internal"}));
    let warnings = s.kelp.platform.debug.backlog("acme", &s.extension_id, 200).await.unwrap();
    assert!(
        warnings.iter().any(|e| e.event.message.contains("value exceeds 1024 bytes")),
        "Alga's reason is in the debug stream"
    );
    assert_eq!(call(&s, reqwest::Method::DELETE, "/kv/b", None).await, json!({}));
    assert_eq!(
        call(&s, reqwest::Method::DELETE, "/kv/b", None).await,
        json!({"err": "conflict"}),
        "an absent key: Alga's {{success: false}}, which Alga's runner gives guests as conflict"
    );

    let scope = kelp_runtime::storage::Scope { tenant_id: "acme".into(), install_id: s.install_id.clone() };
    assert!(
        s.kelp.platform.kv.list(&scope, "notes", None, 100).await.unwrap().is_empty(),
        "nothing of the guest's is kept in Kelp"
    );
}

#[tokio::test]
async fn refusals_timeouts_and_a_missing_ui_proxy_map_as_algas_runner_maps_them() {
    let s = setup("not-the-runner-token", false).await;
    assert_eq!(get(&s, "/kv/a").await, json!({"err": "denied"}), "401 from Alga's storage");
    assert_eq!(get(&s, "/clients").await, json!({"err": "not-allowed"}), "401 from Alga's clients API");
    assert_eq!(get(&s, "/schedules").await, json!({"err": "denied"}));
    assert_eq!(get(&s, "/proxy").await, json!({"err": "route-not-found"}), "no UI_PROXY_BASE_URL");
    assert!(s.alga.state.lock().unwrap().calls.is_empty(), "nothing was accepted without the token");

    let s = setup(RUNNER_AUTH, true).await;
    assert_eq!(call(&s, reqwest::Method::POST, "/schedule", Some("quota")).await["ok"]["success"], false);
    assert_eq!(get(&s, "/client/x").await, json!({}));
    let proxied = get(&s, "/proxy").await;
    assert!(proxied["ok"].is_string(), "{proxied}");
    s.alga.slow.store(true, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(get(&s, "/clients").await, json!({"err": "internal"}), "timed out");
    assert_eq!(get(&s, "/kv/a").await, json!({"err": "internal"}), "timed out");
    assert!(started.elapsed() < Duration::from_millis(2900), "KELP_HOST_API_TIMEOUT_MS bounds each call");
}
