//! The Redis Streams debug bus (ElastiCache in AWS): `XADD {prefix}{tenant}:{extension}
//! MAXLEN ~ N *` with the same fields as Alga's runner, so both can share one Redis.
//!
//! Publishing never blocks a request: events go into a bounded queue drained by one
//! background task that pipelines them in batches. While Redis is unreachable, events go to
//! the in-process ring instead (per instance, best effort; counted), and the task reconnects
//! with exponential backoff. `flush` waits (bounded) for the queue to drain: Lambda freezes
//! the environment as soon as an invocation returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, Notify};

use super::memory::MemoryBus;
use super::{stream_key, BusStats, DebugBus, DebugEvent, StoredEvent};

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Username (Redis 6 ACL), if not in the URL.
    pub username: Option<String>,
    /// Password, if not in the URL.
    pub password: Option<crate::redact::Secret>,
    /// Secrets Manager secret holding the AUTH token (`{"password": ...}` or the plain
    /// token), read once at start-up so the token never sits in the function's environment.
    pub password_secret_arn: Option<String>,
    /// Stream key prefix (default `ext-debug:`).
    pub prefix: String,
    /// Approximate stream length cap (default 2000).
    pub maxlen: usize,
    /// Publish queue capacity.
    pub queue: usize,
}

impl RedisSettings {
    /// The client for these settings.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        use redis::IntoConnectionInfo;
        let mut info = self.url.as_str().into_connection_info()?;
        if let Some(u) = &self.username {
            let settings = info.redis_settings().clone().set_username(u.clone());
            info = info.set_redis_settings(settings);
        }
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p.to_string());
            info = info.set_redis_settings(settings);
        }
        Ok(redis::Client::open(info)?)
    }
}

/// Connection config with short timeouts: an outage must be noticed in well under a second.
pub fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(1_000)))
}

struct Shared {
    pending: AtomicU64,
    drained: Notify,
    healthy: AtomicBool,
    published: AtomicU64,
    dropped: AtomicU64,
    fallback: AtomicU64,
}

/// Debug bus on Redis Streams with an in-process fallback.
pub struct RedisBus {
    settings: RedisSettings,
    client: redis::Client,
    queue: mpsc::Sender<DebugEvent>,
    shared: Arc<Shared>,
    fallback: Arc<MemoryBus>,
}

/// Most events per pipelined batch.
const BATCH: usize = 256;

impl RedisBus {
    /// Start the bus (spawns the publisher task on the current runtime).
    pub fn start(settings: RedisSettings) -> anyhow::Result<Arc<Self>> {
        let client = settings.client()?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let shared = Arc::new(Shared {
            pending: AtomicU64::new(0),
            drained: Notify::new(),
            healthy: AtomicBool::new(true),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            fallback: AtomicU64::new(0),
        });
        let fallback = Arc::new(MemoryBus::new(settings.maxlen));
        let bus = Arc::new(Self {
            settings: settings.clone(),
            client: client.clone(),
            queue: tx,
            shared: shared.clone(),
            fallback: fallback.clone(),
        });
        tokio::spawn(publisher(client, settings, rx, shared, fallback));
        Ok(bus)
    }

    /// Whether the last attempt to reach Redis succeeded.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Events that went to the in-process fallback because Redis was down.
    pub fn fallback_count(&self) -> u64 {
        self.shared.fallback.load(Ordering::Relaxed)
    }

    /// The in-process fallback ring (the relay reads it while Redis is down).
    pub fn fallback(&self) -> &Arc<MemoryBus> {
        &self.fallback
    }

    /// A fresh connection for reads whose replies may take up to `wait` (blocking reads
    /// need their own connection and a response timeout past the block).
    pub async fn connection(&self, wait: Duration) -> redis::RedisResult<MultiplexedConnection> {
        let config = connection_config().set_response_timeout(Some(wait + Duration::from_millis(500)));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }

    fn key(&self, tenant: &str, extension: &str) -> String {
        stream_key(&self.settings.prefix, tenant, extension)
    }
}

fn xadd_fields(e: &DebugEvent) -> [(&'static str, String); 12] {
    [
        ("ts", e.ts.clone()),
        ("level", e.level.clone()),
        ("stream", e.stream.clone()),
        ("tenant", e.tenant_id.clone()),
        ("extension", e.extension_id.clone()),
        ("install", e.install_id.clone()),
        ("request", e.request_id.clone()),
        ("version", e.version_id.clone()),
        ("semver", e.version.clone()),
        ("content_hash", e.content_hash.clone()),
        ("message", e.message.clone()),
        ("truncated", if e.truncated { "1" } else { "0" }.to_string()),
    ]
}

/// Parse the fields of a stream entry back into an event.
pub fn event_from_fields(map: &std::collections::HashMap<String, Value>) -> DebugEvent {
    let get = |k: &str| match map.get(k) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    DebugEvent {
        ts: get("ts"),
        level: get("level"),
        stream: get("stream"),
        tenant_id: get("tenant"),
        extension_id: get("extension"),
        install_id: get("install"),
        request_id: get("request"),
        version_id: get("version"),
        version: get("semver"),
        content_hash: get("content_hash"),
        message: get("message"),
        truncated: get("truncated") == "1",
    }
}

async fn publisher(
    client: redis::Client,
    settings: RedisSettings,
    mut rx: mpsc::Receiver<DebugEvent>,
    shared: Arc<Shared>,
    fallback: Arc<MemoryBus>,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(100);
    let mut retry_at = tokio::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if conn.is_none() && tokio::time::Instant::now() >= retry_at {
            match client.get_multiplexed_async_connection_with_config(&connection_config()).await {
                Ok(c) => {
                    if !shared.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("debug bus: Redis is reachable again");
                    }
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if shared.healthy.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "debug bus: Redis unreachable; events go to the in-process bus");
                    }
                    retry_at = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut delivered = false;
        if let Some(c) = conn.as_mut() {
            let mut pipe = redis::pipe();
            for e in &batch {
                let cmd = pipe
                    .cmd("XADD")
                    .arg(stream_key(&settings.prefix, &e.tenant_id, &e.extension_id))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(settings.maxlen)
                    .arg("*");
                for (k, v) in xadd_fields(e) {
                    cmd.arg(k).arg(v);
                }
                cmd.ignore();
            }
            match pipe.query_async::<()>(c).await {
                Ok(()) => delivered = true,
                Err(e) => {
                    tracing::warn!(error = %e, "debug bus: XADD failed; events go to the in-process bus");
                    shared.healthy.store(false, Ordering::Relaxed);
                    conn = None;
                    retry_at = tokio::time::Instant::now() + backoff;
                }
            }
        }
        if !delivered {
            shared.fallback.fetch_add(n, Ordering::Relaxed);
            for e in batch.drain(..) {
                fallback.publish(e);
            }
        }
        batch.clear();
        if shared.pending.fetch_sub(n, Ordering::AcqRel) == n {
            shared.drained.notify_waiters();
        }
    }
}

#[async_trait]
impl DebugBus for RedisBus {
    fn publish(&self, event: DebugEvent) {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(event) {
            Ok(()) => {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(event)) | Err(mpsc::error::TrySendError::Closed(event)) => {
                // Queue full: this instance's ring keeps it; Redis never sees it.
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.fallback.publish(event);
                if self.shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.shared.drained.notify_waiters();
                }
            }
        }
    }

    async fn flush(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let drained = self.shared.drained.notified();
            if self.shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(pending = self.shared.pending.load(Ordering::Relaxed), "debug bus flush bound reached");
                return;
            }
        }
    }

    async fn backlog(&self, tenant: &str, extension: &str, count: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let mut conn = self.connection(Duration::ZERO).await?;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.key(tenant, extension))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let mut events: Vec<StoredEvent> =
            reply.ids.into_iter().map(|id| StoredEvent { event: event_from_fields(&id.map), id: id.id }).collect();
        events.reverse();
        Ok(events)
    }

    async fn read_after(
        &self,
        tenant: &str,
        extension: &str,
        after_id: &str,
        max: usize,
        block: Duration,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let mut conn = self.connection(block).await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(max);
        // BLOCK 0 would wait forever; a zero bound means "don't block".
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        let reply: Option<redis::streams::StreamReadReply> =
            cmd.arg("STREAMS").arg(self.key(tenant, extension)).arg(after_id).query_async(&mut conn).await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(|id| StoredEvent { event: event_from_fields(&id.map), id: id.id })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn fallback_bus(&self) -> Option<Arc<dyn DebugBus>> {
        Some(self.fallback.clone())
    }

    fn stats(&self) -> BusStats {
        BusStats {
            published: self.shared.published.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            fallback: self.shared.fallback.load(Ordering::Relaxed),
        }
    }
}
