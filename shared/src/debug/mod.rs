//! Debug events (B1): every log line, stdout and stderr write of a guest becomes an event
//! carrying its full execution context, published to a [`DebugBus`] without ever blocking or
//! failing the request. The relay reads them back per (tenant, extension) stream.

pub mod memory;
pub mod redis;

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
    /// `stdout`, `stderr` or `log`.
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
    /// `sha256:<hex>` content hash.
    pub content_hash: String,
}

/// Publishes events for one execution: stamps the context, cuts long messages.
#[derive(Clone)]
pub struct DebugSink {
    bus: Arc<dyn DebugBus>,
    context: Arc<EventContext>,
    max_event_bytes: usize,
}

impl DebugSink {
    /// A sink for one execution.
    pub fn new(bus: Arc<dyn DebugBus>, context: EventContext, max_event_bytes: usize) -> Self {
        Self { bus, context: Arc::new(context), max_event_bytes }
    }

    /// Publish one event; `truncated` marks output already cut upstream.
    pub fn emit(&self, level: &str, stream: &str, message: impl Into<String>, truncated: bool) {
        let mut message = message.into();
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
            content_hash: c.content_hash.clone(),
            message,
            truncated: truncated || cut,
        });
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

    #[test]
    fn stream_keys_are_lower_case() {
        assert_eq!(stream_key("ext-debug:", "Tenant-A", "EXT"), "ext-debug:tenant-a:ext");
    }
}
