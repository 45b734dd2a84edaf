//! One SSE session: backlog (or resume after `Last-Event-ID`), then live events through
//! bounded blocking reads, heartbeats, the Redis-down fallback (B4), the maximum duration
//! (B3) and the audit rows at open and close.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::access::{authorize, Target};
use super::{poll_body, Relay, StreamQuery, Viewer};
use crate::debug::memory::StreamId;
use crate::debug::{DebugBus, StoredEvent};
use crate::http::body::LimitedBytes;
use crate::http::error::ApiError;
use crate::stores::now_rfc3339;

/// Audit action of a finished session.
pub const SESSION_ACTION: &str = "debug.session";
/// Reconnect delay suggested to SSE clients.
pub const SSE_RETRY_MS: u64 = 2000;
/// Most events per read.
const BATCH: usize = 500;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The configured maximum duration passed (B3).
    MaxDuration,
    /// The client went away.
    ClientDisconnected,
    /// The operator grant it relied on expired or was revoked.
    GrantEnded,
}

impl SessionEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::MaxDuration => "max_duration",
            Self::ClientDisconnected => "client_disconnected",
            Self::GrantEnded => "grant_ended",
        }
    }
}

/// Whether an event goes to this viewer: it must belong to the target's tenant and extension
/// exactly (stream keys are lower-cased for Alga compatibility, so `Acme` and `acme` share a
/// key; their events never mix), then match the viewer's filters (an `installId` asked for
/// filters too).
fn keep(q: &StreamQuery, target: &Target, e: &StoredEvent) -> bool {
    e.event.tenant_id == target.tenant
        && e.event.extension_id == target.install.extension_id
        && q.install_id.as_ref().is_none_or(|id| *id == e.event.install_id)
        && q.level.as_ref().is_none_or(|l| l.eq_ignore_ascii_case(&e.event.level))
        && q.stream.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(&e.event.stream))
        && q.request_id.as_ref().is_none_or(|r| r == &e.event.request_id)
}

fn frame(e: &StoredEvent) -> Bytes {
    Bytes::from(format!("id: {}\ndata: {}\n\n", e.id, serde_json::to_string(&e.event).expect("plain data")))
}

fn named(event: &str, data: serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `GET /api/ext-debug/stream`.
pub async fn stream(
    State(relay): State<Arc<Relay>>,
    viewer: Viewer,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let target = match authorize(&relay, &viewer.identity, &q).await {
        Ok(t) => t,
        Err(e) => return e.with_request_id(&viewer.request_id).into_response(),
    };
    let resume =
        headers.get("last-event-id").map(|v| v.to_str().unwrap_or("\u{fffd}").to_string()).filter(|s| !s.is_empty());
    if let Err(e) = check_event_id(resume.as_deref(), "Last-Event-ID") {
        return e.with_request_id(&viewer.request_id).into_response();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(run(relay, viewer, target, q, resume, tx));
    let body = Body::from_stream(tokio_stream_of(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A resume id must be a stream id (`<ms>-<seq>`) as this relay sent it; anything else is
/// refused at open, before a session that could only fail on every read.
pub(crate) fn check_event_id(id: Option<&str>, what: &str) -> Result<(), ApiError> {
    match id {
        Some(id) if StreamId::parse(id).is_none() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
            format!(
                "{what} must be an event id as sent by this stream (<ms>-<seq>), got {:?}",
                id.chars().take(64).collect::<String>()
            ),
        )),
        _ => Ok(()),
    }
}

/// Wait before retrying after the `failures`-th failed read in a row: 200 ms doubling to 3.2 s,
/// so an outage costs a viewer a few reads a second, not a busy loop.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200u64 << failures.clamp(1, 5).saturating_sub(1))
}

fn tokio_stream_of(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Where the session reads: the shared bus, or this instance's fallback while it is down.
struct Source {
    shared: Arc<dyn DebugBus>,
    fallback: Option<Arc<dyn DebugBus>>,
    on_fallback: bool,
    shared_cursor: String,
    fallback_cursor: String,
    last_probe: Instant,
    /// Failed reads in a row (0 while reads succeed).
    failures: u32,
}

async fn run(
    relay: Arc<Relay>,
    viewer: Viewer,
    target: Target,
    q: StreamQuery,
    resume: Option<String>,
    tx: mpsc::Sender<Bytes>,
) {
    let platform = relay.platform.clone();
    let settings = relay.settings.clone();
    let (tenant, ext, install_id) =
        (target.tenant.clone(), target.install.extension_id.clone(), target.install.install_id.clone());
    let started_at = now_rfc3339();
    let started = Instant::now();
    crate::audit_log::record(
        platform.audit.as_ref(),
        &viewer.identity.sub,
        Some(&tenant),
        "debug.session.open",
        Some(&install_id),
        "ok",
        json!({"extension": ext, "install": install_id, "via_grant": target.via_grant, "resume": resume}),
    )
    .await;
    let mut sent: u64 = 0;
    let end = async {
        if tx.send(Bytes::from(format!("retry: {SSE_RETRY_MS}\n\n"))).await.is_err() {
            return SessionEnd::ClientDisconnected;
        }
        let mut source = Source {
            shared: platform.debug.clone(),
            fallback: platform.debug.fallback_bus(),
            on_fallback: false,
            shared_cursor: "0-0".into(),
            fallback_cursor: "0-0".into(),
            last_probe: Instant::now(),
            failures: 0,
        };
        match resume {
            Some(id) => source.shared_cursor = id,
            None => match source.shared.backlog(&tenant, &ext, settings.tail_count).await {
                Ok(backlog) => {
                    if let Some(last) = backlog.last() {
                        source.shared_cursor = last.id.clone();
                    }
                    for e in backlog.iter().filter(|e| keep(&q, &target, e)) {
                        if tx.send(frame(e)).await.is_err() {
                            return SessionEnd::ClientDisconnected;
                        }
                        sent += 1;
                    }
                }
                Err(e) => {
                    if !switch_to_fallback(&mut source, &tx, &e.to_string()).await {
                        return SessionEnd::ClientDisconnected;
                    }
                }
            },
        }
        let deadline = started + settings.max_session;
        let mut next_heartbeat = Instant::now() + settings.heartbeat;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return SessionEnd::MaxDuration;
            }
            if now >= next_heartbeat {
                if tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                    return SessionEnd::ClientDisconnected;
                }
                // Fail closed: a grant that cannot be re-checked no longer opens the stream.
                if target.via_grant
                    && !platform
                        .grants
                        .has_active_grant(&tenant, &install_id, &(&viewer.identity).into())
                        .await
                        .unwrap_or(false)
                {
                    return SessionEnd::GrantEnded;
                }
                next_heartbeat = now + settings.heartbeat;
            }
            if tx.is_closed() {
                return SessionEnd::ClientDisconnected;
            }
            let block = settings
                .block
                .min(deadline - now)
                .min(next_heartbeat.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            if source.on_fallback && source.last_probe.elapsed() >= Duration::from_secs(2) {
                source.last_probe = Instant::now();
                if source.shared.backlog(&tenant, &ext, 1).await.is_ok() {
                    source.on_fallback = false;
                    let msg =
                        json!({"message": "Redis is reachable again; back on the shared debug stream", "redis": "up"});
                    if tx.send(named("recovered", msg)).await.is_err() {
                        return SessionEnd::ClientDisconnected;
                    }
                }
            }
            let (bus, cursor) = if source.on_fallback {
                (source.fallback.clone().expect("fallback mode needs a fallback bus"), source.fallback_cursor.clone())
            } else {
                (source.shared.clone(), source.shared_cursor.clone())
            };
            match bus.read_after(&tenant, &ext, &cursor, BATCH, block).await {
                Ok(events) => {
                    source.failures = 0;
                    if let Some(last) = events.last() {
                        if source.on_fallback {
                            source.fallback_cursor = last.id.clone();
                        } else {
                            source.shared_cursor = last.id.clone();
                        }
                    }
                    for e in events.iter().filter(|e| keep(&q, &target, e)) {
                        if tx.send(frame(e)).await.is_err() {
                            return SessionEnd::ClientDisconnected;
                        }
                        sent += 1;
                    }
                }
                Err(e) if !source.on_fallback => {
                    // One warning per outage, not per failed read.
                    if source.failures == 0 && !switch_to_fallback(&mut source, &tx, &e.to_string()).await {
                        return SessionEnd::ClientDisconnected;
                    }
                    if !source.on_fallback {
                        // No fallback bus: wait before reading the shared one again.
                        source.failures += 1;
                        tokio::time::sleep(
                            backoff(source.failures).min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    source.failures += 1;
                    if source.failures == 1 {
                        tracing::warn!(error = %e, "debug relay: fallback read failed");
                    }
                    tokio::time::sleep(
                        backoff(source.failures).min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
            }
        }
    }
    .await;
    let _ = tx.send(named("end", json!({"reason": end.as_str(), "eventsSent": sent}))).await;
    let details = json!({
        "viewer": viewer.identity.sub, "tenant": tenant, "extension": ext, "install": install_id,
        "started": started_at, "ended": now_rfc3339(), "events_sent": sent, "reason": end.as_str(), "via_grant": target.via_grant,
    });
    crate::audit_log::record(
        platform.audit.as_ref(),
        &viewer.identity.sub,
        Some(&tenant),
        SESSION_ACTION,
        Some(&install_id),
        "ok",
        details,
    )
    .await;
}

/// Redis failed: tell the viewer and continue from this instance's in-process bus.
async fn switch_to_fallback(source: &mut Source, tx: &mpsc::Sender<Bytes>, error: &str) -> bool {
    tracing::warn!(%error, "debug relay: shared bus unreachable");
    let message = if source.fallback.is_some() {
        source.on_fallback = true;
        source.last_probe = Instant::now();
        // Include what this instance published just before the failure was noticed.
        source.fallback_cursor = format!("{}-0", (chrono::Utc::now().timestamp_millis() - 2_000).max(0));
        "Redis is unreachable: showing this relay instance's own events only (best effort) until it returns"
    } else {
        "the debug bus is unreachable; retrying"
    };
    tx.send(named("warning", json!({"message": message, "redis": "down"}))).await.is_ok()
}

/// A polled event as Alga's debug API returns it: the flat `DebugEvent`, plus its stream `id`
/// (which Alga's omits; a client can resume from any event with it).
fn flat_event(e: &StoredEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(&e.event).expect("plain data");
    v["id"] = json!(e.id);
    v
}

/// `POST /api/ext-debug/stream` with `{lastId?}` → `{events, lastId}` for polling clients.
pub async fn poll(
    State(relay): State<Arc<Relay>>,
    viewer: Viewer,
    Query(q): Query<StreamQuery>,
    LimitedBytes(body): LimitedBytes,
) -> Response {
    let answer = async {
        let platform = &relay.platform;
        let last = poll_body(&body)?;
        check_event_id(last.as_deref(), "lastId")?;
        let target = authorize(&relay, &viewer.identity, &q).await?;
        let (tenant, ext) = (&target.tenant, &target.install.extension_id);
        if last.is_none() {
            crate::audit_log::record(
                platform.audit.as_ref(),
                &viewer.identity.sub,
                Some(tenant),
                "debug.poll",
                Some(&target.install.install_id),
                "ok",
                json!({"extension": ext}),
            )
            .await;
        }
        let tail = relay.settings.tail_count;
        let shared = match &last {
            None => platform.debug.backlog(tenant, ext, tail).await,
            Some(id) => platform.debug.read_after(tenant, ext, id, BATCH, Duration::ZERO).await,
        };
        let (events, warning) = match shared {
            Ok(events) => (events, None),
            Err(e) => match platform.debug.fallback_bus() {
                Some(fallback) => {
                    tracing::warn!(error = %e, "debug relay poll: Redis unreachable, using the in-process bus");
                    (
                        fallback.backlog(tenant, ext, tail).await.unwrap_or_default(),
                        Some("Redis is unreachable: events of this relay instance only (best effort)"),
                    )
                }
                None => return Err(ApiError::unavailable("the debug bus is unavailable")),
            },
        };
        let new_last = events.last().map(|e| e.id.clone()).or(last);
        let kept: Vec<_> = events.iter().filter(|e| keep(&q, &target, e)).map(flat_event).collect();
        Ok(Json(json!({"events": kept, "lastId": new_last, "warning": warning})).into_response())
    }
    .await;
    answer.unwrap_or_else(|e: ApiError| e.with_request_id(&viewer.request_id).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_must_be_stream_ids() {
        for bad in ["x", "$", "-1", "1-", "1-2-3", "\u{fffd}", "18446744073709551616-0"] {
            let err = check_event_id(Some(bad), "Last-Event-ID").expect_err(bad);
            assert_eq!(err.code, "invalid_last_event_id", "{bad}");
        }
        for good in ["0-0", "1700000000000-3", "18446744073709551615-18446744073709551615", "42"] {
            check_event_id(Some(good), "Last-Event-ID").unwrap_or_else(|e| panic!("{good}: {e:?}"));
        }
        check_event_id(None, "Last-Event-ID").unwrap();
    }

    #[test]
    fn backoff_grows_to_a_bound() {
        let waits: Vec<_> = (1..=8).map(backoff).collect();
        assert_eq!(waits[0], Duration::from_millis(200));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), Duration::from_millis(3200));
    }
}
