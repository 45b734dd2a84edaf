//! Header allow-lists between the client and the guest (architecture.md, step 7).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::bindings::types::HttpHeader;
use crate::debug::DebugSink;

/// Request headers a guest sees (plus `x-alga-tenant`/`x-alga-extension` set by the gateway).
/// `authorization` and `cookie` never pass.
pub const REQUEST_ALLOW: &[&str] =
    &["x-request-id", "accept", "content-type", "accept-encoding", "user-agent", "x-idempotency-key"];

/// Response headers a guest may set (plus any `x-ext-*`); never `set-cookie`.
pub const RESPONSE_ALLOW: &[&str] =
    &["content-type", "cache-control", "etag", "last-modified", "location", "content-disposition"];

/// The guest's view of the request headers.
pub fn guest_request_headers(headers: &HeaderMap, request_id: &str, tenant: &str, extension: &str) -> Vec<HttpHeader> {
    let mut out: Vec<HttpHeader> = headers
        .iter()
        .filter(|(n, _)| REQUEST_ALLOW.contains(&n.as_str()) && n.as_str() != "x-request-id")
        .filter_map(|(n, v)| Some(HttpHeader { name: n.as_str().to_string(), value: v.to_str().ok()?.to_string() }))
        .collect();
    out.push(HttpHeader { name: "x-request-id".into(), value: request_id.to_string() });
    out.push(HttpHeader { name: "x-alga-tenant".into(), value: tenant.to_string() });
    out.push(HttpHeader { name: "x-alga-extension".into(), value: extension.to_string() });
    out
}

/// The guest's response headers that may reach the client; others, and invalid ones, are
/// dropped with a debug warning (never a panic).
pub fn client_response_headers(guest: &[HttpHeader], debug: &DebugSink) -> HeaderMap {
    let mut out = HeaderMap::new();
    for h in guest {
        let lower = h.name.to_ascii_lowercase();
        if !(RESPONSE_ALLOW.contains(&lower.as_str()) || lower.starts_with("x-ext-")) {
            debug.host_warning(format!("response header {:?} is not allowed and was dropped", h.name));
            continue;
        }
        match (HeaderName::from_bytes(lower.as_bytes()), HeaderValue::from_str(&h.value)) {
            (Ok(name), Ok(value)) => {
                out.append(name, value);
            }
            _ => debug.host_warning(format!("response header {:?} has an invalid name or value and was dropped", h.name)),
        }
    }
    out
}
