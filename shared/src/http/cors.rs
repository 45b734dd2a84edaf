//! CORS for the tenant routes: preflight answered by the gateway before identity, and only
//! origins on the configured allow-list get CORS headers (an arbitrary Origin is never
//! echoed). With sandboxed extension UIs, `Origin: null` (the opaque origin of a sandboxed
//! document) is allowed too, without credentials: those calls carry a bearer UI token, and
//! Kelp sets no cookies, so CORS adds no authority of its own.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Methods a preflight may ask for.
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a preflight may ask for (the gateway forwards only these anyway).
const ALLOW_HEADERS: &str = "authorization, content-type, accept, x-request-id, x-idempotency-key, x-alga-tenant";

/// The request's Origin, if it is on the allow-list (or `null` when `allow_null`).
pub fn allowed_origin(headers: &HeaderMap, allow_list: &[String], allow_null: bool) -> Option<HeaderValue> {
    let origin = headers.get("origin")?;
    let text = origin.to_str().ok()?;
    (allow_list.iter().any(|o| o == text) || (allow_null && text == "null")).then(|| origin.clone())
}

/// Add CORS headers for an allowed origin to an actual response.
pub fn decorate(response: &mut Response, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        let h = response.headers_mut();
        if origin != "null" {
            h.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
        }
        h.insert("access-control-allow-origin", origin);
        h.insert("access-control-expose-headers", HeaderValue::from_static("x-request-id, retry-after, allow"));
        h.append("vary", HeaderValue::from_static("Origin"));
    }
}

/// 204 preflight answer.
pub fn preflight(origin: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if origin.is_some() {
        let h = response.headers_mut();
        h.insert("access-control-allow-methods", HeaderValue::from_static(ALLOW_METHODS));
        h.insert("access-control-allow-headers", HeaderValue::from_static(ALLOW_HEADERS));
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    decorate(&mut response, origin);
    response
}
