//! Debug events (B1): every log line, stdout and stderr write of a guest becomes an event
//! carrying its full execution context, published to a [`DebugBus`] without ever blocking or
//! failing the request. The relay reads them back per (tenant, extension) stream.

mod logging;
pub mod memory;
pub mod output;
pub mod redis;
pub mod source_map;

pub use logging::LoggingCtx;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One debug event, serialised in the camelCase shape the Alga debug console reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugEvent {
    /// RFC 3339 timestamp with milliseconds.
    pub ts: String,
    /// `info`, `warn`, `error` or `debug`.
    pub level: String,
    /// `stdout`, `stderr`, `log`, or `request` (the gateway's line per request).
    pub stream: String,
    /// Tenant that owns the install.
    pub tenant_id: String,
    /// Registry id of the extension.
    pub extension_id: String,
    /// Install id (A1).
    pub install_id: String,
    /// Request id of the execution.
    pub request_id: String,
    /// Version id of the executed version.
    pub version_id: String,
    /// Its semver (`1.2.0`), for people reading the stream; absent from events of older Kelps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `sha256:<hex>` of the executed bundle.
    pub content_hash: String,
    /// The line, cut to the configured maximum on a UTF-8 boundary.
    pub message: String,
    /// Whether `message` was cut (or output past the per-call cap was dropped).
    pub truncated: bool,
}

/// An event as read back from a bus, with its stream id (`<ms>-<seq>`, as Redis assigns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Stream id; SSE clients resume after it with `Last-Event-ID`.
    pub id: String,
    /// The event.
    pub event: DebugEvent,
}

/// Counters a bus keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BusStats {
    /// Events accepted by `publish`.
    pub published: u64,
    /// Events dropped (queue full, backend down past the flush bound, ring overflow).
    pub dropped: u64,
    /// Events kept only in this instance's ring because the shared backend was down.
    pub fallback: u64,
}

/// The debug bus: in-process ring locally, Redis Streams in AWS.
#[async_trait]
pub trait DebugBus: Send + Sync {
    /// Hand an event to the bus. Never blocks and never fails: a full queue drops (counted).
    fn publish(&self, event: DebugEvent);
    /// Wait at most `bound` for events already published to reach the backend (Lambda
    /// freezes the environment as soon as an invocation returns).
    async fn flush(&self, bound: Duration);
    /// The last `count` events of a stream, oldest first.
    async fn backlog(&self, tenant: &str, extension: &str, count: usize) -> anyhow::Result<Vec<StoredEvent>>;
    /// Events after `after_id`, waiting up to `block` for the first one.
    async fn read_after(
        &self,
        tenant: &str,
        extension: &str,
        after_id: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<StoredEvent>>;
    /// Publish/drop counters.
    fn stats(&self) -> BusStats;
    /// The per-instance bus events go to while the shared backend is down (Redis), if any.
    fn fallback_bus(&self) -> Option<Arc<dyn DebugBus>> {
        None
    }
}

/// The stream key of a (tenant, extension): `{prefix}{tenant}:{extension}`, lower-cased, the
/// same key Alga's runner writes so both can share one Redis.
pub fn stream_key(prefix: &str, tenant: &str, extension: &str) -> String {
    format!("{prefix}{}:{}", tenant.to_lowercase(), extension.to_lowercase())
}

/// Cut `message` to at most `max` bytes on a UTF-8 boundary; returns whether it was cut.
pub fn truncate_utf8(message: &mut String, max: usize) -> bool {
    if message.len() <= max {
        return false;
    }
    let mut cut = max;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    true
}

/// The context stamped on every event of one execution.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// Tenant id.
    pub tenant_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Install id.
    pub install_id: String,
    /// Request id.
    pub request_id: String,
    /// Version id.
    pub version_id: String,
    /// Semver of the version.
    pub version: String,
    /// `sha256:<hex>` content hash.
    pub content_hash: String,
}

/// Debug events one execution may publish by default (`KELP_MAX_DEBUG_EVENTS`).
pub const DEFAULT_MAX_EVENTS_PER_CALL: usize = 1000;

/// Publishes events for one execution: stamps the context, cuts long messages, and stops
/// after the call's event budget (guest logs, stdout/stderr lines and host warnings alike), so
/// one request cannot flood the shared bus and push other tenants' events out.
#[derive(Clone)]
pub struct DebugSink {
    bus: Arc<dyn DebugBus>,
    context: Arc<EventContext>,
    max_event_bytes: usize,
    budget: Arc<EventBudget>,
}

/// Events left for one execution; shared by every clone of its sink.
struct EventBudget {
    limit: usize,
    used: AtomicUsize,
    /// The first capability the call was refused (interface, capability), for a clear error
    /// if the guest then fails.
    first_denial: parking_lot::Mutex<Option<(String, String)>>,
}

impl DebugSink {
    /// A sink for one execution, with the default event budget.
    pub fn new(bus: Arc<dyn DebugBus>, context: EventContext, max_event_bytes: usize) -> Self {
        let budget = Arc::new(EventBudget {
            limit: DEFAULT_MAX_EVENTS_PER_CALL,
            used: AtomicUsize::new(0),
            first_denial: Default::default(),
        });
        Self { bus, context: Arc::new(context), max_event_bytes, budget }
    }

    /// The same sink with a budget of `max_events` events for the execution.
    pub fn with_event_budget(mut self, max_events: usize) -> Self {
        self.budget =
            Arc::new(EventBudget { limit: max_events, used: AtomicUsize::new(0), first_denial: Default::default() });
        self
    }

    /// Publish one event; `truncated` marks output already cut upstream. Past the event
    /// budget the event is dropped; the first one dropped is replaced by one marker.
    pub fn emit(&self, level: &str, stream: &str, message: impl Into<String>, truncated: bool) {
        let used = self.budget.used.fetch_add(1, Ordering::Relaxed);
        if used < self.budget.limit {
            self.publish(level, stream, message.into(), truncated);
        } else if used == self.budget.limit {
            self.publish(
                "warn",
                "log",
                format!("[debug events truncated: more than {} events in one call]", self.budget.limit),
                true,
            );
        }
    }

    /// Publish one event outside the budget: for the one event that closes a failed call.
    pub fn emit_final(&self, level: &str, stream: &str, message: impl Into<String>) {
        self.publish(level, stream, message.into(), false);
    }

    /// Events the call published (within its budget, plus the truncation marker).
    pub fn published(&self) -> usize {
        self.budget.used.load(Ordering::Relaxed).min(self.budget.limit + 1)
    }

    /// Whether the call's event budget ran out.
    pub fn exhausted(&self) -> bool {
        self.budget.used.load(Ordering::Relaxed) > self.budget.limit
    }

    fn publish(&self, level: &str, stream: &str, mut message: String, truncated: bool) {
        let cut = truncate_utf8(&mut message, self.max_event_bytes);
        let c = &self.context;
        self.bus.publish(DebugEvent {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            level: level.to_string(),
            stream: stream.to_string(),
            tenant_id: c.tenant_id.clone(),
            extension_id: c.extension_id.clone(),
            install_id: c.install_id.clone(),
            request_id: c.request_id.clone(),
            version_id: c.version_id.clone(),
            version: c.version.clone(),
            content_hash: c.content_hash.clone(),
            message,
            truncated: truncated || cut,
        });
    }

    /// The guest called `interface` without `capability` granted: a warning naming both, and
    /// the first such refusal is remembered ([`DebugSink::first_denial`]).
    pub fn capability_denied(&self, interface: &str, capability: &str) {
        self.budget.first_denial.lock().get_or_insert_with(|| (interface.to_string(), capability.to_string()));
        self.host_warning(format!(
            "{interface}: denied, {capability} is not granted to this install \
             (`kelp grant {} {capability}` grants it when the manifest declares it)",
            self.context.install_id
        ));
    }

    /// The first capability refusal of the call, as (interface, capability).
    pub fn first_denial(&self) -> Option<(String, String)> {
        self.budget.first_denial.lock().clone()
    }

    /// A host-side warning about this execution (limits hit, headers dropped, ...).
    pub fn host_warning(&self, message: impl Into<String>) {
        self.emit("warn", "log", message, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_char_boundary() {
        let mut s = "aé€".to_string(); // 1 + 2 + 3 bytes
        assert!(truncate_utf8(&mut s, 4));
        assert_eq!(s, "aé");
        let mut t = "short".to_string();
        assert!(!truncate_utf8(&mut t, 10));
        assert_eq!(t, "short");
    }

    #[tokio::test]
    async fn a_call_publishes_at_most_its_event_budget_and_one_marker() {
        let bus = Arc::new(memory::MemoryBus::new(1000));
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        let sink = DebugSink::new(bus.clone(), ctx, 100).with_event_budget(5);
        let clone = sink.clone();
        for i in 0..10_000 {
            if i % 2 == 0 {
                sink.emit("info", "log", "x", false)
            } else {
                clone.host_warning("y")
            }
        }
        sink.emit_final("error", "log", "execution failed");
        let events = bus.backlog("t", "e", 100).await.unwrap();
        assert_eq!(events.len(), 5 + 1 + 1, "budget, one marker, the final event");
        assert!(events[5].event.truncated && events[5].event.message.contains("more than 5 events"));
        assert_eq!(events[6].event.message, "execution failed");
        assert!(sink.exhausted());
    }

    #[test]
    fn stream_keys_are_lower_case() {
        assert_eq!(stream_key("ext-debug:", "Tenant-A", "EXT"), "ext-debug:tenant-a:ext");
    }
}
