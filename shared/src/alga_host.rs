//! Alga's internal host API, called the way Alga's own runner calls it, for deployments where
//! an unchanged Alga server owns storage and the business data (`KELP_HOST_API_PROTOCOL=alga`):
//!
//! - `POST {base}/api/internal/ext-{storage,scheduler,invoicing,clients,services}/install/{install}`
//!   with a JSON body whose `operation` field names the call, authenticated by the header
//!   `x-runner-auth` (Alga's `RUNNER_STORAGE_API_TOKEN`, else its `RUNNER_SERVICE_TOKEN`);
//! - ui-proxy as a plain `GET`/`POST` to `{UI_PROXY_BASE_URL}/{extension}/{route}` (or
//!   `{UI_PROXY_BASE_URL}/api/...` for Alga's platform APIs), with the tenant, extension,
//!   install and user in `x-*` headers and the install's `api_key` secret as `x-api-key`.
//!
//! This module only speaks HTTP: each capability (storage, business) maps operations and
//! status codes onto its own WIT errors. See docs/alga-integration.md.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// Where Alga is and how to authenticate to it.
#[derive(Clone)]
pub struct AlgaHostSettings {
    /// Alga's origin, e.g. `https://alga.internal:3000` (a trailing `/api` is dropped, as Alga's
    /// runner drops it).
    pub base_url: String,
    /// The `x-runner-auth` token (never logged: no `Debug` of it).
    pub runner_auth: String,
    /// Alga's `UI_PROXY_BASE_URL`: where ui-proxy routes go; unset, `ui-proxy.call-route`
    /// answers `route-not-found`, as Alga's runner does.
    pub ui_proxy_base: Option<url::Url>,
    /// Per-call timeout of the internal API (also capped by the execution's time left).
    pub timeout: Duration,
    /// Per-call timeout of ui-proxy calls (Alga's `UI_PROXY_TIMEOUT_MS`).
    pub ui_proxy_timeout: Duration,
    /// Largest answer accepted.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for AlgaHostSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlgaHostSettings")
            .field("base_url", &self.base_url)
            .field("ui_proxy_base", &self.ui_proxy_base.as_ref().map(url::Url::as_str))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Largest storage answer accepted: a `list` page of [`crate::storage::alga::ALGA_LIST_PAGE`]
/// entries of up to 64 KiB each (base64 in JSON) is ~2.3 MB, over the other calls' cap.
pub const STORAGE_MAX_ANSWER_BYTES: usize = 4 << 20;

/// Alga's internal host services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgaService {
    /// `ext-storage`.
    Storage,
    /// `ext-scheduler`.
    Scheduler,
    /// `ext-invoicing`.
    Invoicing,
    /// `ext-clients`.
    Clients,
    /// `ext-services`.
    Services,
}

impl AlgaService {
    fn path(self) -> &'static str {
        match self {
            Self::Storage => "ext-storage",
            Self::Scheduler => "ext-scheduler",
            Self::Invoicing => "ext-invoicing",
            Self::Clients => "ext-clients",
            Self::Services => "ext-services",
        }
    }
}

/// Alga's answer: its status and JSON body (`Null` when empty or, for an error status, not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct AlgaAnswer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

impl AlgaAnswer {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Alga's `error` message, if the body carries one.
    pub fn message(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("status {}", self.status))
    }
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgaCallError {
    /// Connection refused, reset, DNS…
    #[error("Alga is unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("Alga did not answer within {0:?}")]
    TimedOut(Duration),
    /// The answer was larger than the cap.
    #[error("Alga's answer is over {0} bytes")]
    TooLarge(usize),
    /// A 2xx answer that is not JSON.
    #[error("Alga's answer is not JSON")]
    NotJson,
    /// ui-proxy is not configured (`UI_PROXY_BASE_URL`).
    #[error("no UI proxy base URL is configured")]
    NoUiProxy,
    /// A ui-proxy route Alga's runner refuses too (empty, `.`/`..` segments).
    #[error("invalid route: {0}")]
    BadRoute(String),
}

/// One ui-proxy call.
pub struct UiProxyCall<'a> {
    /// The guest's route, e.g. `/items?x=1` or `/api/v1/tickets`.
    pub route: &'a str,
    /// Body (then the call is a `POST`; without one, a `GET`).
    pub body: Option<Vec<u8>>,
    /// Request id.
    pub request_id: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Extension.
    pub extension: &'a str,
    /// Install.
    pub install: &'a str,
    /// Version id.
    pub version: &'a str,
    /// The caller's user id and email, for Alga's activity log.
    pub user: Option<(&'a str, &'a str)>,
    /// The install's `api_key` secret, for Alga's platform APIs.
    pub api_key: Option<&'a str>,
}

/// The client of Alga's internal host API.
pub struct AlgaHost {
    settings: AlgaHostSettings,
    client: reqwest::Client,
}

/// `https://alga:3000/api/` → `https://alga:3000`: Alga's runner forgives a base configured with
/// a trailing `/api` (it would otherwise call `/api/api/internal/...`); so does Kelp.
pub fn normalize_base(raw: &str) -> String {
    let trimmed = raw.trim().trim_end_matches('/');
    match trimmed.strip_suffix("/api") {
        Some(prefix) if !prefix.is_empty() => prefix.to_string(),
        _ => trimmed.to_string(),
    }
}

impl AlgaHost {
    /// A client for the configured Alga.
    pub fn new(mut settings: AlgaHostSettings) -> anyhow::Result<Self> {
        settings.base_url = normalize_base(&settings.base_url);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .build()?;
        Ok(Self { settings, client })
    }

    /// `POST {base}/api/internal/{service}/install/{install}` with `operation` added to the
    /// payload (a JSON object, as every operation's is).
    pub async fn call(
        &self,
        service: AlgaService,
        install: &str,
        operation: &str,
        mut payload: Value,
        time_left: Duration,
    ) -> Result<AlgaAnswer, AlgaCallError> {
        if let Value::Object(fields) = &mut payload {
            fields.insert("operation".into(), Value::String(operation.into()));
        }
        let url = format!(
            "{}/api/internal/{}/install/{}",
            self.settings.base_url,
            service.path(),
            url::form_urlencoded::byte_serialize(install.as_bytes()).collect::<String>()
        );
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-runner-auth", &self.settings.runner_auth)
            .body(serde_json::to_vec(&payload).expect("serialising JSON"));
        let max = match service {
            AlgaService::Storage => STORAGE_MAX_ANSWER_BYTES.max(self.settings.max_response_bytes),
            _ => self.settings.max_response_bytes,
        };
        let (status, bytes) = self.send(request, self.settings.timeout.min(time_left), max).await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !(200..300).contains(&status) => Value::Null,
                Err(_) => return Err(AlgaCallError::NotJson),
            }
        };
        Ok(AlgaAnswer { status, body })
    }

    /// A ui-proxy call: status and raw body.
    pub async fn ui_proxy(&self, call: UiProxyCall<'_>, time_left: Duration) -> Result<(u16, Vec<u8>), AlgaCallError> {
        let base = self.settings.ui_proxy_base.as_ref().ok_or(AlgaCallError::NoUiProxy)?;
        let url = ui_proxy_url(base, call.extension, call.route)?;
        let mut request = match call.body {
            Some(body) => self.client.post(url).header("content-type", "application/json").body(body),
            None => self.client.get(url),
        }
        .header("x-request-id", call.request_id)
        .header("x-alga-tenant", call.tenant)
        .header("x-alga-extension", call.extension)
        .header("x-ext-install-id", call.install)
        .header("x-ext-version-id", call.version);
        if let Some(key) = call.api_key {
            request = request.header("x-api-key", key);
        }
        if let Some((id, email)) = call.user {
            request = request.header("x-user-id", id).header("x-user-email", email);
        }
        self.send(request, self.settings.ui_proxy_timeout.min(time_left), self.settings.max_response_bytes).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        max: usize,
    ) -> Result<(u16, Vec<u8>), AlgaCallError> {
        let exchange = async {
            // Alga's internal URL stays out of what the guest and the debug stream see.
            let response = request.send().await.map_err(|e| AlgaCallError::Unreachable(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let mut bytes = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| AlgaCallError::Unreachable(e.without_url().to_string()))?;
                if bytes.len() + chunk.len() > max {
                    return Err(AlgaCallError::TooLarge(max));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(AlgaCallError::TimedOut(timeout)))
    }
}

/// The URL of a ui-proxy route, as Alga's runner builds it: routes under `/api/` go to Alga's
/// platform APIs as they are, others under the extension's id; `.` and `..` segments are
/// refused, empty ones dropped; the query is kept.
pub fn ui_proxy_url(base: &url::Url, extension: &str, route: &str) -> Result<url::Url, AlgaCallError> {
    let route = route.trim();
    if route.is_empty() {
        return Err(AlgaCallError::BadRoute("empty route".into()));
    }
    let (path, query) = match route.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (route, None),
    };
    let platform_api = path.starts_with("/api/") || path.starts_with("api/");
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| AlgaCallError::BadRoute("the UI proxy base cannot hold a path".into()))?;
        segments.pop_if_empty();
        if !platform_api {
            segments.push(extension);
        }
        for segment in path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()) {
            if matches!(segment, "." | "..") {
                return Err(AlgaCallError::BadRoute(format!("segment {segment:?}")));
            }
            segments.push(segment);
        }
    }
    url.set_query(query.filter(|q| !q.is_empty()));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_with_a_trailing_api_is_the_origin() {
        assert_eq!(normalize_base("https://alga:3000/api/"), "https://alga:3000");
        assert_eq!(normalize_base("https://alga:3000/"), "https://alga:3000");
        assert_eq!(normalize_base("https://alga:3000/psa/api"), "https://alga:3000/psa");
    }

    #[test]
    fn ui_proxy_routes_go_under_the_extension_unless_they_name_a_platform_api() {
        let base = url::Url::parse("https://alga.test/ui-proxy/").unwrap();
        let u = |route| ui_proxy_url(&base, "ext-1", route).map(|u| u.to_string());
        assert_eq!(u("/items/7?x=1").unwrap(), "https://alga.test/ui-proxy/ext-1/items/7?x=1");
        assert_eq!(u("items//7").unwrap(), "https://alga.test/ui-proxy/ext-1/items/7");
        assert_eq!(u("/api/v1/tickets").unwrap(), "https://alga.test/ui-proxy/api/v1/tickets");
        assert!(matches!(u("/a/../b"), Err(AlgaCallError::BadRoute(_))));
        assert!(matches!(u("  "), Err(AlgaCallError::BadRoute(_))));
    }
}
