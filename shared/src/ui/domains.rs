//! Alga's per-install UI domains and its runner's `/warmup`.
//!
//! In Alga's knative mode every install gets a domain of its own,
//! `{tenant}-{extension}.{EXT_DOMAIN_ROOT}`, and the iframe loads `https://{that domain}/`. Its
//! runner answers `GET /` by asking Alga's `GET /api/installs/lookup-by-host?host=…` (with
//! `x-api-key`) for `{tenant_id, extension_id, content_hash}` and redirecting (307) to
//! `/ext-ui/{extension_id}/{content_hash}/index.html?tenant=…&extensionId=…` on the same host
//! (`ee/runner/src/http/server.rs`); Kelp does the same for hosts under `KELP_UI_DOMAIN_ROOT`.
//! Any other host gets a 404 and no lookup: the `Host` header is the caller's to choose.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::{AlgaUiDomains, UiRoutes};
use crate::http::error::ApiError;
use crate::http::RequestId;

/// How long Alga's lookup may take (its runner waits without a bound; a browser will not).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The lookup client.
pub(crate) struct HostLookup {
    settings: AlgaUiDomains,
    client: reqwest::Client,
}

impl HostLookup {
    pub(crate) fn new(settings: AlgaUiDomains) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(LOOKUP_TIMEOUT)
            .build()
            .expect("building an HTTP client");
        Self { settings, client }
    }

    /// The host without its port, lower-cased, if it is a UI domain under the root.
    fn ui_host(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host });
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let root = self.settings.root.trim_matches('.').to_ascii_lowercase();
        let label = host.strip_suffix(&root)?.strip_suffix('.')?;
        (!label.is_empty() && !label.contains('.')).then_some(host)
    }

    async fn lookup(&self, host: &str) -> Result<Option<(String, String, String)>, String> {
        let mut url = url::Url::parse(&self.settings.registry_url).map_err(|e| e.to_string())?;
        url.set_path("api/installs/lookup-by-host");
        url.query_pairs_mut().append_pair("host", host);
        let response = self
            .client
            .get(url)
            .header("x-api-key", &self.settings.api_key)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            other => return Err(format!("Alga's lookup-by-host answered {other}")),
        }
        let bytes = response.bytes().await.map_err(|e| e.without_url().to_string())?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("Alga's lookup-by-host answer: {e}"))?;
        let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        match (field("tenant_id"), field("extension_id"), field("content_hash")) {
            (Some(t), Some(e), Some(h)) => Ok(Some((t, e, h))),
            _ => Err("Alga's lookup-by-host answer lacks tenant_id, extension_id or content_hash".into()),
        }
    }
}

/// `GET /`: a per-install UI domain's entry, redirected to its UI.
pub async fn root(
    State(ui): State<Arc<UiRoutes>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let lookup = ui.lookups.as_ref().ok_or_else(|| ApiError::not_found("not found"))?;
        let host = lookup.ui_host(&headers).ok_or_else(|| ApiError::not_found("not found"))?;
        let (tenant, extension, hash) = match lookup.lookup(&host).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(ApiError::not_found(format!("no extension UI is installed at {host}"))),
            Err(e) => {
                tracing::warn!(%host, error = %e, "UI domain lookup failed");
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, "lookup_failed", "the UI domain lookup failed"));
            }
        };
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let location = format!(
            "/ext-ui/{}/{}/index.html?tenant={}&extensionId={}",
            enc(&extension),
            enc(&hash),
            enc(&tenant),
            enc(&extension)
        );
        Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".into())])
            .into_response())
    }
    .await;
    answer.unwrap_or_else(|e: ApiError| e.with_request_id(&request_id.0).into_response())
}

/// What `POST /warmup` may say.
#[derive(Debug, Deserialize)]
pub struct WarmupRequest {
    content_hash: String,
    #[serde(default, alias = "tenant")]
    tenant_id: Option<String>,
    #[serde(default, alias = "extensionId")]
    extension_id: Option<String>,
}

/// `POST /warmup {content_hash, tenant_id, extension_id}`: fetch a bundle from Alga's store
/// and unpack its UI ahead of the first page view. Alga's runner refuses every warmup (400,
/// "warmup unsupported without tenant + extension context"); Kelp answers that too when the
/// tenant or extension is missing, and warms when both are given.
pub async fn warmup(
    State(ui): State<Arc<UiRoutes>>,
    Extension(request_id): Extension<RequestId>,
    Json(req): Json<WarmupRequest>,
) -> Response {
    let (Some(tenant), Some(extension)) = (req.tenant_id.as_deref(), req.extension_id.as_deref()) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "warmup_unsupported",
            "warmup unsupported without tenant + extension context",
        )
        .with_request_id(&request_id.0)
        .into_response();
    };
    match ui.alga.fetch(&ui.platform, tenant, extension, &req.content_hash).await {
        Ok(Ok(version)) => {
            (StatusCode::OK, Json(serde_json::json!({"status": "ok", "content_hash": version.content_hash})))
                .into_response()
        }
        Ok(Err(refusal)) => ApiError::new(
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_GATEWAY),
            "warmup_failed",
            refusal.error,
        )
        .with_request_id(&request_id.0)
        .into_response(),
        Err(e) => e.with_request_id(&request_id.0).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> HostLookup {
        HostLookup::new(AlgaUiDomains {
            root: "apps.example.com".into(),
            registry_url: "http://127.0.0.1:9".into(),
            api_key: "k".into(),
        })
    }

    fn host(h: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, h.parse().unwrap());
        headers
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any `Host` a caller sends: looked up only when it is one label under the root.
        #[test]
        fn only_hosts_under_the_root_are_looked_up(raw in "[A-Za-z0-9.:_-]{0,40}(\\.apps\\.example\\.com)?(:[0-9]{1,5})?") {
            let l = lookup();
            let mut headers = HeaderMap::new();
            if let Ok(v) = raw.parse() {
                headers.insert(header::HOST, v);
            }
            if let Some(found) = l.ui_host(&headers) {
                let label = found.strip_suffix(".apps.example.com");
                proptest::prop_assert!(label.is_some_and(|l| !l.is_empty() && !l.contains('.')), "{}", found);
            }
        }
    }

    #[test]
    fn only_one_label_under_the_root_is_a_ui_domain() {
        let l = lookup();
        assert_eq!(
            l.ui_host(&host("acme-1f0e8c4a.apps.example.com")).as_deref(),
            Some("acme-1f0e8c4a.apps.example.com")
        );
        assert_eq!(l.ui_host(&host("ACME-X.Apps.Example.com:443")).as_deref(), Some("acme-x.apps.example.com"));
        for other in
            ["apps.example.com", "a.b.apps.example.com", "attacker.example", "xapps.example.com", "evil.com:80"]
        {
            assert_eq!(l.ui_host(&host(other)), None, "{other}");
        }
        assert_eq!(l.ui_host(&HeaderMap::new()), None);
    }
}
