//! `http.fetch`: capability, allow-list, call count, SSRF guard, timeouts and body caps.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::{is_allowed_destination, is_blocked, literal_ip, EgressAllow, EgressClient};
use crate::bindings::alga::extension::http;
use crate::bindings::types::{HttpError, HttpHeader, HttpRequest, HttpResponse};
use crate::debug::DebugSink;

/// The per-call state of the egress capability.
pub struct EgressCtx {
    /// Whether the call may fetch (`cap:http.fetch`), decided when it was planned.
    pub granted: bool,
    /// What this call may fetch.
    pub allow: EgressAllow,
    /// The process-wide client (its resolver refuses non-public addresses).
    pub client: Arc<EgressClient>,
    /// Calls made so far in this call.
    pub calls: u32,
    /// Calls this call may make (its plan's `egress_calls`).
    pub max_calls: u32,
    /// Largest response body this call may receive (its plan's `egress_response_bytes`).
    pub max_response_bytes: usize,
    /// Wall-clock deadline of the call: a fetch gets only the time left.
    pub deadline: Instant,
    /// What the call used (usage metering).
    pub tally: Arc<crate::usage::CallTally>,
    /// Host warnings of this call.
    pub debug: DebugSink,
}

/// Request headers a guest may not set: the client computes them.
const FORBIDDEN_REQUEST_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "proxy-authorization"];

impl EgressCtx {
    fn deny_fetch(&self, reason: String) -> HttpError {
        self.debug.host_warning(format!("http.fetch refused: {reason}"));
        HttpError::NotAllowed
    }

    fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl http::Host for EgressCtx {
    async fn fetch(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !self.granted {
            self.debug.capability_denied("http.fetch", crate::manifest::CAP_HTTP_FETCH);
            return Err(HttpError::NotAllowed);
        }
        let url = url::Url::parse(&request.url).map_err(|_| HttpError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(HttpError::InvalidUrl);
        }
        let host = url.host_str().unwrap_or_default().to_string();
        if !self.allow.allows(&url) {
            return Err(self.deny_fetch(format!(
                "{}://{host}:{} is not on {}",
                url.scheme(),
                url.port_or_known_default().unwrap_or(0),
                self.allow.source()
            )));
        }
        let settings = self.client.settings.clone();
        if let Some(ip) = literal_ip(&url) {
            if !is_allowed_destination(ip, settings.allow_loopback) {
                return Err(self.deny_fetch(format!("{ip} is not a public address")));
            }
        }
        if self.calls >= self.max_calls {
            let reason = format!("more than {} calls in one request (the plan's egress_calls)", self.max_calls);
            return Err(self.deny_fetch(reason));
        }
        self.calls += 1;
        crate::usage::CallTally::bump(&self.tally.egress_calls, 1);
        let max_response_bytes = self.max_response_bytes;
        let method =
            reqwest::Method::from_bytes(request.method.to_uppercase().as_bytes()).map_err(|_| HttpError::InvalidUrl)?;
        let body = request.body.unwrap_or_default();
        if body.len() > settings.max_request_bytes {
            return Err(self.deny_fetch(format!("request body over {} bytes", settings.max_request_bytes)));
        }
        let timeout = settings.timeout.min(self.remaining());
        let mut builder = self.client.client.request(method, url).timeout(timeout);
        for h in &request.headers {
            let name = h.name.to_ascii_lowercase();
            if FORBIDDEN_REQUEST_HEADERS.contains(&name.as_str()) {
                continue;
            }
            builder = builder.header(&h.name, &h.value);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) if is_blocked(&e) => return Err(self.deny_fetch(format!("{host} resolves to a non-public address"))),
            Err(e) if e.is_builder() => return Err(HttpError::InvalidUrl),
            Err(e) => {
                // The URL may carry credentials (userinfo, query keys): never in events.
                self.debug.host_warning(format!("http.fetch {host}: transport error: {}", e.without_url()));
                return Err(HttpError::Transport);
            }
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some(HttpHeader { name: n.as_str().to_string(), value: v.to_str().ok()?.to_string() }))
            .collect();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let read = tokio::time::timeout(self.remaining(), async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| HttpError::Transport)?;
                if body.len() + chunk.len() > max_response_bytes {
                    return Err(HttpError::Internal);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        })
        .await;
        crate::usage::CallTally::bump(&self.tally.egress_bytes, body.len() as u64);
        match read {
            Ok(Ok(())) => Ok(HttpResponse { status, headers, body: Some(body) }),
            Ok(Err(HttpError::Internal)) => {
                self.debug.host_warning(format!(
                    "http.fetch {host}: response body over {max_response_bytes} bytes (the plan's egress_response_bytes)"
                ));
                Err(HttpError::Transport)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.debug.host_warning(format!("http.fetch {host}: timed out reading the body"));
                Err(HttpError::Transport)
            }
        }
    }
}
