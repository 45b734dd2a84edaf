//! Header allow-lists between the client and the guest (docs/api-routing.md, "Header allow-lists").

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

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

/// Response headers a guest may send per response; the rest are dropped.
pub const MAX_RESPONSE_HEADERS: usize = 64;
/// Bytes of response header names and values a guest may send per response.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 16 * 1024;

/// Sent on every guest response: a guest's body is never sniffed into another type, and an
/// HTML body opened directly runs sandboxed (a unique origin, no scripts), so a guest cannot
/// act as the gateway origin that also serves other extensions and holds users' tokens.
pub const GUEST_RESPONSE_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// The per-response caps on a guest's headers ([`MAX_RESPONSE_HEADERS`] headers,
/// [`MAX_RESPONSE_HEADER_BYTES`] bytes of names and values), kept by both answers a guest's
/// headers go into: the gateway's HTTP response and the runner's JSON answer.
#[derive(Default)]
struct HeaderBudget {
    headers: usize,
    bytes: usize,
}

impl HeaderBudget {
    /// Whether `h` fits; `adds_header` is false when it only extends a header already kept.
    fn fits(&self, h: &HttpHeader, adds_header: bool) -> bool {
        !(adds_header && self.headers >= MAX_RESPONSE_HEADERS)
            && self.bytes + h.name.len() + h.value.len() <= MAX_RESPONSE_HEADER_BYTES
    }

    fn take(&mut self, h: &HttpHeader, adds_header: bool) {
        self.headers += usize::from(adds_header);
        self.bytes += h.name.len() + h.value.len();
    }
}

/// The guest's response headers that may reach the client. Disallowed, invalid and excess
/// headers (past [`MAX_RESPONSE_HEADERS`] or [`MAX_RESPONSE_HEADER_BYTES`]) are dropped and
/// reported in one debug warning per response, however many there were (never a panic).
pub fn client_response_headers(guest: &[HttpHeader], debug: &DebugSink) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut budget = HeaderBudget::default();
    let mut dropped = Dropped::default();
    for h in guest {
        if !budget.fits(h, true) {
            dropped.over_limit += 1;
            continue;
        }
        let lower = h.name.to_ascii_lowercase();
        if !(RESPONSE_ALLOW.contains(&lower.as_str()) || lower.starts_with("x-ext-")) {
            dropped.note_disallowed(&h.name);
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(lower.as_bytes()), HeaderValue::from_str(&h.value)) else {
            dropped.invalid += 1;
            continue;
        };
        if out.try_append(name, value).is_err() {
            dropped.over_limit += 1;
            continue;
        }
        budget.take(h, true);
    }
    if let Some(summary) = dropped.summary() {
        debug.host_warning(summary);
    }
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(GUEST_RESPONSE_CSP));
    out
}

/// The guest's response headers for the runner's answer (`/v1/execute`): Alga's runner answers
/// a map, so names are lower-cased and repeated headers joined with `, ` as HTTP allows; the
/// caller (Alga) applies its own allow-list. The same caps as [`client_response_headers`],
/// with one debug warning for whatever they cut.
pub fn runner_response_headers(guest: &[HttpHeader], debug: &DebugSink) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut budget = HeaderBudget::default();
    let mut dropped = Dropped::default();
    for h in guest {
        let name = h.name.to_ascii_lowercase();
        let adds_header = !out.contains_key(&name);
        if !budget.fits(h, adds_header) {
            dropped.over_limit += 1;
            continue;
        }
        budget.take(h, adds_header);
        out.entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&h.value);
            })
            .or_insert_with(|| h.value.clone());
    }
    if let Some(summary) = dropped.summary() {
        debug.host_warning(summary);
    }
    out
}

/// What [`client_response_headers`] left out, for the one warning it emits.
#[derive(Default)]
struct Dropped {
    disallowed: usize,
    /// The first few disallowed names, enough for an author to see the mistake.
    examples: Vec<String>,
    invalid: usize,
    over_limit: usize,
}

impl Dropped {
    fn note_disallowed(&mut self, name: &str) {
        self.disallowed += 1;
        if self.examples.len() < 3 {
            self.examples.push(format!("{:?}", name.chars().take(64).collect::<String>()));
        }
    }

    fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.disallowed > 0 {
            parts.push(format!("{} not allowed (e.g. {})", self.disallowed, self.examples.join(", ")));
        }
        if self.invalid > 0 {
            parts.push(format!("{} with an invalid name or value", self.invalid));
        }
        if self.over_limit > 0 {
            parts.push(format!(
                "{} past the limit of {MAX_RESPONSE_HEADERS} headers / {MAX_RESPONSE_HEADER_BYTES} bytes",
                self.over_limit
            ));
        }
        (!parts.is_empty()).then(|| format!("response headers dropped: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::memory::MemoryBus;
    use crate::debug::{DebugBus, EventContext};
    use std::sync::Arc;

    fn sink(bus: &Arc<MemoryBus>) -> DebugSink {
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        DebugSink::new(bus.clone(), ctx, 8192)
    }

    fn header(name: String, value: &str) -> HttpHeader {
        HttpHeader { name, value: value.to_string() }
    }

    #[tokio::test]
    async fn a_flood_of_distinct_headers_is_capped_with_one_warning() {
        let bus = Arc::new(MemoryBus::new(1000));
        let guest: Vec<_> = (0..30_000).map(|i| header(format!("x-ext-h{i}"), "v")).collect();
        let out = client_response_headers(&guest, &sink(&bus));
        assert_eq!(out.len(), MAX_RESPONSE_HEADERS + 2, "capped, plus nosniff and the CSP");
        let events = bus.backlog("t", "e", 100).await.unwrap();
        assert_eq!(events.len(), 1, "one summary warning");
        assert!(events[0].event.message.contains("29936 past the limit"), "{}", events[0].event.message);
    }

    #[tokio::test]
    async fn a_flood_of_disallowed_headers_makes_one_warning() {
        let bus = Arc::new(MemoryBus::new(1000));
        let mut guest: Vec<_> = (0..100_000).map(|i| header(format!("set-cookie{i}"), "v")).collect();
        guest.push(header("Content-Type".into(), "application/json"));
        guest.push(header("x-ext-bad".into(), "line\nbreak"));
        let out = client_response_headers(&guest, &sink(&bus));
        assert_eq!(out.get("content-type").unwrap(), "application/json");
        assert_eq!(out.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(out.get("content-security-policy").unwrap(), GUEST_RESPONSE_CSP);
        let events = bus.backlog("t", "e", 100).await.unwrap();
        assert_eq!(events.len(), 1);
        let message = &events[0].event.message;
        assert!(message.contains("100000 not allowed") && message.contains("set-cookie0"), "{message}");
        assert!(message.contains("1 with an invalid name or value"), "{message}");
    }

    #[tokio::test]
    async fn header_bytes_are_capped() {
        let bus = Arc::new(MemoryBus::new(1000));
        let big = "v".repeat(MAX_RESPONSE_HEADER_BYTES / 2);
        let guest: Vec<_> = (0..4).map(|i| header(format!("x-ext-{i}"), &big)).collect();
        let out = client_response_headers(&guest, &sink(&bus));
        assert_eq!(out.len(), 1 + 2, "only the first fits the byte budget");
    }

    #[tokio::test]
    async fn the_runners_answer_joins_repeats_and_keeps_the_same_caps() {
        let bus = Arc::new(MemoryBus::new(1000));
        let mut guest = vec![header("Set-Cookie".into(), "a=1"), header("set-cookie".into(), "b=2")];
        guest.extend((0..30_000).map(|i| header(format!("x-h{i}"), "v")));
        let out = runner_response_headers(&guest, &sink(&bus));
        assert_eq!(out["set-cookie"], "a=1, b=2", "one map entry, as Alga's runner answers");
        assert_eq!(out.len(), MAX_RESPONSE_HEADERS);
        let events = bus.backlog("t", "e", 100).await.unwrap();
        assert_eq!(events.len(), 1, "one summary warning");
        assert!(events[0].event.message.contains("past the limit"), "{}", events[0].event.message);
        // Many values of one name count against the byte cap, not the header count.
        let big = "v".repeat(MAX_RESPONSE_HEADER_BYTES / 3 - 10);
        let repeats: Vec<_> = (0..5).map(|_| header("x-big".into(), &big)).collect();
        let out = runner_response_headers(&repeats, &sink(&bus));
        assert_eq!(out["x-big"].matches('v').count(), 3 * big.len(), "the bytes budget cut the fourth");
    }

    #[test]
    fn guests_cannot_set_security_headers_or_cookies() {
        let bus = Arc::new(MemoryBus::new(10));
        let guest = vec![
            header("set-cookie".into(), "a=b"),
            header("content-security-policy".into(), "default-src *"),
            header("x-content-type-options".into(), "sniff"),
        ];
        let out = client_response_headers(&guest, &sink(&bus));
        assert!(out.get("set-cookie").is_none());
        assert_eq!(out.get("content-security-policy").unwrap(), GUEST_RESPONSE_CSP);
        assert_eq!(out.get("x-content-type-options").unwrap(), "nosniff");
    }
}
