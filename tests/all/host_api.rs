//! Business interfaces through the PSA host API: a small HTTP server started by the test
//! plays the PSA; capability, configuration, errors, timeouts and size caps are checked.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use kelp_tests::*;
use serde_json::{json, Value};

const SECRET: &str = "host-api-test-secret";

#[derive(Default)]
struct Seen {
    calls: Vec<(String, Value, Value)>,
}

async fn psa(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&["alga-host-api"]);
    let Ok(claims) =
        jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &v)
    else {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad service token"})));
    };
    seen.lock().unwrap().calls.push((op.clone(), claims.claims, body.clone()));
    match op.as_str() {
        "clients.list" => (
            StatusCode::OK,
            Json(
                json!({"items": [{"client_id": "c1", "client_name": "Acme Corp", "client_type": null, "is_inactive": false,
            "default_currency_code": "USD", "account_manager_id": null, "account_manager_name": null, "billing_email": "ap@acme.test"}],
            "total_count": 1, "page": 1, "page_size": 10}),
            ),
        ),
        "clients.get" => (StatusCode::NOT_FOUND, Json(json!({}))),
        "services.list" => (StatusCode::FORBIDDEN, Json(json!({"error": "no"}))),
        "scheduler.list" => {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            (StatusCode::OK, Json(json!([])))
        }
        "scheduler.create" => (
            StatusCode::OK,
            Json(json!({"success": true, "schedule_id": "sch-1", "error": null, "field_errors": null})),
        ),
        "invoicing.create-manual-invoice" => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "rate must be positive"})))
        }
        "ui-proxy.call-route" => (StatusCode::OK, Json(json!({"body_b64": "eyJvayI6dHJ1ZX0="}))),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
    }
}

async fn fake_psa() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new().route("/host/v1/{op}", post(psa)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/host", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

async fn route(kelp: &TestKelp, method: reqwest::Method, path: &str) -> Value {
    let r = kelp
        .client
        .request(method, format!("{}/api/ext/test.business{path}", kelp.base))
        .bearer_auth(token("acme", RW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn business_interfaces_call_the_host_api_with_a_signed_token_and_context() {
    let (url, seen) = fake_psa().await;
    let kelp = TestKelp::start_with(&[
        ("KELP_HOST_API_URL", &url),
        ("KELP_HOST_API_SECRET", SECRET),
        ("KELP_HOST_API_TIMEOUT_MS", "1000"),
    ])
    .await;
    let published = kelp.publish(&staged_fixture("business")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let clients = route(&kelp, reqwest::Method::GET, "/clients").await;
    assert_eq!(clients["ok"]["items"][0]["clientName"], "Acme Corp", "{clients}");
    assert_eq!(clients["ok"]["totalCount"], 1);
    {
        let calls = &seen.lock().unwrap().calls;
        let (op, claims, body) = &calls[0];
        assert_eq!(op, "clients.list");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["install_id"], install.install_id.as_str());
        assert_eq!(body["context"]["extension_id"], published.extension.id.as_str());
        assert_eq!(body["user"]["user_id"], "user-1");
        assert_eq!(body["payload"]["search"], "ac");
    }
    assert_eq!(
        route(&kelp, reqwest::Method::GET, "/client").await,
        json!({}),
        "404 from the PSA is none (undefined in JS)"
    );
    assert_eq!(
        route(&kelp, reqwest::Method::GET, "/services").await,
        json!({"err": "not-allowed"}),
        "403 from the PSA"
    );
    let started = std::time::Instant::now();
    assert_eq!(route(&kelp, reqwest::Method::GET, "/schedules").await, json!({"err": "internal"}), "timeout");
    assert!(started.elapsed() < std::time::Duration::from_millis(2500), "the host API timeout bounds the call");
    let created = route(&kelp, reqwest::Method::POST, "/schedule").await;
    assert_eq!(created["ok"]["scheduleId"], "sch-1");
    let invoice = route(&kelp, reqwest::Method::POST, "/invoice").await;
    assert_eq!(invoice["ok"]["success"], false, "validation failures come back as the result's error");
    assert!(invoice["ok"]["error"].as_str().unwrap().contains("rate must be positive"));
    assert_eq!(route(&kelp, reqwest::Method::GET, "/proxy").await, json!({"ok": "{\"ok\":true}"}));
    let endpoints = route(&kelp, reqwest::Method::GET, "/endpoints").await;
    let list = endpoints["ok"].as_array().unwrap();
    assert_eq!(list.len(), 10, "answered from the manifest");
    let item = list.iter().find(|e| e["path"] == "/items/:id").unwrap();
    assert_eq!(item["schedulable"], false);
    assert_eq!(list.iter().find(|e| e["path"] == "/clients").unwrap()["schedulable"], true);
}

#[tokio::test]
async fn host_api_calls_per_request_are_bounded() {
    let (url, seen) = fake_psa().await;
    let kelp = TestKelp::start_with(&[("KELP_HOST_API_URL", &url), ("KELP_HOST_API_SECRET", SECRET)]).await;
    let published = kelp.publish(&staged_fixture("business")).await;
    kelp.install(&published, "acme", &[]).await;
    let many = route(&kelp, reqwest::Method::GET, "/clients-many").await;
    let max = kelp_runtime::business::host::MAX_HOST_API_CALLS;
    assert_eq!(many["made"], max, "{many}");
    assert_eq!(many["err"], "internal", "{many}");
    assert_eq!(seen.lock().unwrap().calls.len(), max as usize, "the refused call never reached the PSA");
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 200).await.unwrap();
    assert!(events.iter().any(|e| e.event.message.contains(&format!("more than {max} host API calls"))));
    // The bound is per request: the next one gets its own.
    assert_eq!(route(&kelp, reqwest::Method::GET, "/clients-many").await["made"], max);
}

#[tokio::test]
async fn without_a_host_api_or_the_capability_they_return_their_denied_case() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_fixture("business")).await;
    kelp.install(&published, "acme", &[]).await;
    assert_eq!(route(&kelp, reqwest::Method::GET, "/clients").await, json!({"err": "not-allowed"}));
    assert_eq!(route(&kelp, reqwest::Method::GET, "/proxy").await, json!({"err": "denied"}));
    assert_eq!(route(&kelp, reqwest::Method::GET, "/schedules").await, json!({"err": "denied"}));
    let invoice = route(&kelp, reqwest::Method::POST, "/invoice").await;
    assert_eq!(invoice["ok"]["success"], false);
    assert_eq!(
        route(&kelp, reqwest::Method::GET, "/endpoints").await["ok"].as_array().unwrap().len(),
        10,
        "get-endpoints needs no host API"
    );

    let (url, seen) = fake_psa().await;
    let kelp = TestKelp::start_with(&[("KELP_HOST_API_URL", &url), ("KELP_HOST_API_SECRET", SECRET)]).await;
    let published = kelp.publish(&staged_fixture("business")).await;
    kelp.install_granting(&published, "acme", vec!["cap:service.read".into()], &[]).await;
    assert_eq!(route(&kelp, reqwest::Method::GET, "/clients").await, json!({"err": "not-allowed"}), "not granted");
    assert_eq!(route(&kelp, reqwest::Method::GET, "/endpoints").await, json!({"err": "denied"}));
    assert!(
        seen.lock().unwrap().calls.iter().all(|(op, _, _)| op != "clients.list"),
        "an ungranted call never reaches the PSA"
    );
}
