//! The in-process debug bus: one bounded ring per (tenant, extension) stream, with Redis-like
//! ids so SSE resume works the same on both backends. Per-instance, best effort.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{BusStats, DebugBus, DebugEvent, StoredEvent};

#[derive(Default)]
struct Ring {
    entries: VecDeque<(StreamId, DebugEvent)>,
    last: StreamId,
    notify: Arc<Notify>,
}

/// A Redis-style stream id: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Unix milliseconds.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parse `<ms>-<seq>` (or `<ms>`, `0`, `$`-less forms Redis accepts).
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// In-process bounded ring bus.
pub struct MemoryBus {
    streams: Mutex<HashMap<String, Ring>>,
    capacity: usize,
    published: AtomicU64,
    dropped: AtomicU64,
}

impl MemoryBus {
    /// A bus keeping at most `capacity` events per stream (older ones are dropped).
    pub fn new(capacity: usize) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn key(tenant: &str, extension: &str) -> String {
        format!("{}:{}", tenant.to_lowercase(), extension.to_lowercase())
    }

    fn collect_after(&self, key: &str, after: StreamId, max: usize) -> (Vec<StoredEvent>, Arc<Notify>) {
        let mut streams = self.streams.lock();
        let ring = streams.entry(key.to_string()).or_default();
        // Ids only grow along the ring, so the first newer event is found by binary search:
        // a reader holds the lock publishers need for O(log n + max), not for a scan of the
        // whole ring (up to RUNNER_DEBUG_REDIS_MAXLEN events).
        let first_newer = ring.entries.partition_point(|(id, _)| *id <= after);
        let events = ring
            .entries
            .range(first_newer..)
            .take(max)
            .map(|(id, event)| StoredEvent { id: id.to_string(), event: event.clone() })
            .collect();
        (events, ring.notify.clone())
    }
}

#[async_trait]
impl DebugBus for MemoryBus {
    fn publish(&self, event: DebugEvent) {
        let key = Self::key(&event.tenant_id, &event.extension_id);
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let mut streams = self.streams.lock();
        let ring = streams.entry(key).or_default();
        let id = if now_ms > ring.last.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            StreamId { ms: ring.last.ms, seq: ring.last.seq + 1 }
        };
        ring.last = id;
        ring.entries.push_back((id, event));
        if ring.entries.len() > self.capacity {
            ring.entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ring.notify.notify_waiters();
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    async fn flush(&self, _bound: Duration) {
        // Publishing is synchronous into the ring: nothing is ever pending.
    }

    async fn backlog(&self, tenant: &str, extension: &str, count: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let streams = self.streams.lock();
        let Some(ring) = streams.get(&Self::key(tenant, extension)) else { return Ok(Vec::new()) };
        let skip = ring.entries.len().saturating_sub(count);
        Ok(ring
            .entries
            .iter()
            .skip(skip)
            .map(|(id, event)| StoredEvent { id: id.to_string(), event: event.clone() })
            .collect())
    }

    async fn read_after(
        &self,
        tenant: &str,
        extension: &str,
        after_id: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let after = StreamId::parse(after_id).ok_or_else(|| anyhow::anyhow!("invalid stream id {after_id:?}"))?;
        let key = Self::key(tenant, extension);
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let (events, notify) = self.collect_after(&key, after, max);
            if !events.is_empty() {
                return Ok(events);
            }
            let notified = notify.notified();
            // Re-check after registering interest so a publish in between is not missed.
            let (events, _) = self.collect_after(&key, after, max);
            if !events.is_empty() {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn stats(&self) -> BusStats {
        BusStats {
            published: self.published.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            fallback: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, msg: &str) -> DebugEvent {
        DebugEvent {
            ts: String::new(),
            level: "info".into(),
            stream: "log".into(),
            tenant_id: tenant.into(),
            extension_id: "ext".into(),
            install_id: "i".into(),
            request_id: "r".into(),
            version_id: "v".into(),
            version: "1.0.0".into(),
            content_hash: "sha256:0".into(),
            message: msg.into(),
            truncated: false,
        }
    }

    #[tokio::test]
    async fn ring_keeps_the_newest_and_ids_grow() {
        let bus = MemoryBus::new(3);
        for i in 0..5 {
            bus.publish(event("t", &i.to_string()));
        }
        let backlog = bus.backlog("t", "ext", 10).await.unwrap();
        let msgs: Vec<_> = backlog.iter().map(|e| e.event.message.as_str()).collect();
        assert_eq!(msgs, ["2", "3", "4"]);
        let ids: Vec<_> = backlog.iter().map(|e| StreamId::parse(&e.id).unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bus.stats(), BusStats { published: 5, dropped: 2, fallback: 0 });
        assert!(bus.backlog("other", "ext", 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn read_after_returns_exactly_the_newer_events_in_order() {
        let bus = MemoryBus::new(100);
        for i in 0..50 {
            bus.publish(event("t", &i.to_string()));
        }
        let all = bus.backlog("t", "ext", 100).await.unwrap();
        let after = &all[19].id;
        let newer = bus.read_after("t", "ext", after, 5, Duration::ZERO).await.unwrap();
        let msgs: Vec<_> = newer.iter().map(|e| e.event.message.as_str()).collect();
        assert_eq!(msgs, ["20", "21", "22", "23", "24"]);
        assert!(bus.read_after("t", "ext", &all[49].id, 5, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(bus.read_after("t", "ext", "0-0", 100, Duration::ZERO).await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn read_after_wakes_on_publish() {
        let bus = Arc::new(MemoryBus::new(10));
        bus.publish(event("t", "old"));
        let last = bus.backlog("t", "ext", 1).await.unwrap()[0].id.clone();
        let reader = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.read_after("t", "ext", &last, 10, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        bus.publish(event("t", "new"));
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.message, "new");
    }
}
