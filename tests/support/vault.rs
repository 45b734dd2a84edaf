//! An in-test stand-in for Vault's transit secrets engine, written from Vault's HTTP API
//! documentation (no Vault server can be installed here): `POST /v1/{mount}/encrypt/{key}`
//! and `POST /v1/{mount}/decrypt/{key}`, authenticated by `X-Vault-Token`, plaintext as
//! base64 in `data.plaintext`, ciphertext as `vault:v1:<base64>`; errors as
//! `{"errors": [...]}` with 400 (bad input), 403 (permission denied) and 404 (no such key).
//! Its "encryption" is a byte-wise XOR under the key's name: enough to make the ciphertext
//! opaque and key-specific, which is all a client can observe.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

/// The stand-in's state.
#[derive(Clone, Default)]
pub struct Transit {
    /// The token it accepts.
    pub token: Arc<Mutex<String>>,
    /// `mount/key` pairs that exist.
    pub keys: Arc<Mutex<BTreeSet<String>>>,
    /// `mount/key` pairs the token may not use (403).
    pub forbidden: Arc<Mutex<BTreeSet<String>>>,
    /// While set, every request answers 503 (sealed / down).
    pub down: Arc<AtomicBool>,
    /// Decrypt requests served.
    pub decrypts: Arc<AtomicUsize>,
    /// The namespace header of the last request, if any.
    pub last_namespace: Arc<Mutex<Option<String>>>,
}

fn xor(key: &str, bytes: &[u8]) -> Vec<u8> {
    let k = key.as_bytes();
    bytes.iter().enumerate().map(|(i, b)| b ^ k[i % k.len()] ^ 0x5a).collect()
}

fn error(status: u16, message: &str) -> (StatusCode, Json<Value>) {
    (StatusCode::from_u16(status).unwrap(), Json(json!({"errors": [message]})))
}

async fn transit(
    State(t): State<Transit>,
    Path((mount, op, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    *t.last_namespace.lock().unwrap() =
        headers.get("x-vault-namespace").and_then(|v| v.to_str().ok()).map(str::to_string);
    if t.down.load(Ordering::SeqCst) {
        return error(503, "Vault is sealed");
    }
    let token = headers.get("x-vault-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if token != *t.token.lock().unwrap() {
        return error(403, "permission denied");
    }
    let id = format!("{mount}/{key}");
    if t.forbidden.lock().unwrap().contains(&id) {
        return error(403, "1 error occurred:\n\t* permission denied\n\n");
    }
    if !t.keys.lock().unwrap().contains(&id) {
        return error(400, "encryption key not found");
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    match op.as_str() {
        "encrypt" => {
            let Some(plain) = body["plaintext"].as_str().and_then(|p| b64.decode(p).ok()) else {
                return error(400, "failed to base64-decode plaintext");
            };
            (
                StatusCode::OK,
                Json(json!({"data": {"ciphertext": format!("vault:v1:{}", b64.encode(xor(&id, &plain)))}})),
            )
        }
        "decrypt" => {
            t.decrypts.fetch_add(1, Ordering::SeqCst);
            let sealed = body["ciphertext"].as_str().and_then(|c| c.strip_prefix("vault:v1:"));
            let Some(bytes) = sealed.and_then(|c| b64.decode(c).ok()) else {
                return error(400, "invalid ciphertext: no prefix");
            };
            (StatusCode::OK, Json(json!({"data": {"plaintext": b64.encode(xor(&id, &bytes))}})))
        }
        _ => error(404, "unsupported path"),
    }
}

impl Transit {
    /// Start on a loopback port with `token` and the `mount/key` pairs in `keys`; its address.
    pub async fn start(token: &str, keys: &[&str]) -> (String, Self) {
        let t = Transit::default();
        *t.token.lock().unwrap() = token.to_string();
        t.keys.lock().unwrap().extend(keys.iter().map(|k| k.to_string()));
        let app = axum::Router::new().route("/v1/{mount}/{op}/{key}", post(transit)).with_state(t.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, t)
    }

    /// Encrypt a secret map as Alga's server does (`JSON.stringify` → base64 → transit).
    pub async fn seal(addr: &str, token: &str, mount: &str, key: &str, secrets: &Value) -> String {
        let plaintext = base64::engine::general_purpose::STANDARD.encode(secrets.to_string());
        let answer: Value = reqwest::Client::new()
            .post(format!("{addr}/v1/{mount}/encrypt/{key}"))
            .header("x-vault-token", token)
            .json(&json!({ "plaintext": plaintext }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"]["ciphertext"].as_str().expect("a ciphertext").to_string()
    }
}
