//! The PSA's host API over HTTPS: `POST {base}/v1/{operation}` with a JSON body
//! `{context, user, payload}` and a short-lived HS256 service token naming the tenant,
//! extension and install. Answers: 200 → the result; 403 → denied; 404 → not found;
//! 400/422 → invalid input; anything else, a timeout or a body over the cap → failure.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{Caller, HostApi, HostApiError};
use crate::ids::ExecIds;

/// Host API settings.
#[derive(Clone)]
pub struct HostApiSettings {
    /// Base URL, e.g. `https://psa.example.com/api/ext-host`.
    pub base_url: String,
    /// HS256 key signing the service tokens.
    pub secret: String,
    /// Per-call timeout (also capped by the execution's time left).
    pub timeout: Duration,
    /// Largest answer accepted.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for HostApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostApiSettings")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The HTTP host API client.
pub struct HttpHostApi {
    settings: HostApiSettings,
    client: reqwest::Client,
}

impl HttpHostApi {
    /// A client for the configured host API.
    pub fn new(settings: HostApiSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .build()?;
        Ok(Self { settings, client })
    }

    fn service_token(&self, ids: &ExecIds) -> String {
        let now = chrono::Utc::now().timestamp();
        crate::auth::mint_hs256(
            self.settings.secret.as_bytes(),
            &json!({
                "iss": "kelp", "aud": "alga-host-api", "sub": format!("extension:{}", ids.extension_id),
                "tenant": ids.tenant_id, "extension_id": ids.extension_id, "install_id": ids.install_id,
                "request_id": ids.request_id, "iat": now, "exp": now + 60,
            }),
        )
    }
}

#[async_trait]
impl HostApi for HttpHostApi {
    async fn call(
        &self,
        caller: &Caller<'_>,
        operation: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, HostApiError> {
        let (ids, user) = (caller.ids, caller.user);
        let url = format!("{}/v1/{operation}", self.settings.base_url.trim_end_matches('/'));
        let body = json!({
            "context": {"tenant_id": ids.tenant_id, "extension_id": ids.extension_id, "install_id": ids.install_id,
                        "request_id": ids.request_id, "version_id": ids.version_id, "content_hash": ids.content_hash},
            "user": user.map(|u| json!({"user_id": u.user_id, "user_email": u.user_email, "user_name": u.user_name,
                                         "user_type": u.user_type, "client_name": u.client_name, "client_id": u.client_id})),
            "payload": payload,
        });
        let timeout = self.settings.timeout.min(timeout);
        let call = async {
            let response = self
                .client
                .post(&url)
                .bearer_auth(self.service_token(ids))
                .header("x-request-id", &ids.request_id)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).expect("serialising JSON"))
                .send()
                .await
                // The internal URL stays out of what the guest and the debug stream see.
                .map_err(|e| HostApiError::Failed(format!("unreachable: {}", e.without_url())))?;
            let status = response.status().as_u16();
            let mut bytes = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| HostApiError::Failed(e.without_url().to_string()))?;
                if bytes.len() + chunk.len() > self.settings.max_response_bytes {
                    return Err(HostApiError::Failed(format!(
                        "answer over {} bytes",
                        self.settings.max_response_bytes
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            match status {
                200..=299 => {
                    serde_json::from_slice(&bytes).map_err(|_| HostApiError::Failed("answer is not JSON".into()))
                }
                403 => Err(HostApiError::Denied),
                404 => Err(HostApiError::NotFound),
                400 | 422 => Err(HostApiError::BadRequest(String::from_utf8_lossy(&bytes).chars().take(500).collect())),
                other => Err(HostApiError::Failed(format!("status {other}"))),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(HostApiError::Failed(format!("timed out after {timeout:?}"))))
    }
}
