//! Usage metering: what each install used, per UTC hour — requests, errors and refusals by
//! code, wall time, guest CPU, peak memory, egress, storage operations, debug events, warm
//! hits — for billing and for "which tenant is using the fleet?".
//!
//! Counting is off the request's critical path: each request adds its figures to an
//! in-memory batch ([`UsageMeter::record`], one lock, no I/O), and batches are written by
//! [`UsageMeter::flush`] — in Lambda before the invocation's answer (the sandbox may be frozen
//! or reaped right after), elsewhere every few seconds. A store applies a batch with atomic
//! increments, and remembers per item the last batch (writer, sequence) it applied, so a
//! flush retried after a failure or a timeout cannot count twice.

pub mod dynamodb;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::stores::StoreResult;

/// What an install used in one hour (or, summed, over a range).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests that reached the install (answered by the extension or refused by Kelp).
    pub requests: u64,
    /// Kelp's 5xx answers, by error code (`extension_timeout`, `extension_error`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
    /// Kelp's 4xx refusals, by error code (`rate_limited`, `endpoint_not_found`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refusals: BTreeMap<String, u64>,
    /// Wall time from request to answer, in microseconds.
    pub wall_us: u64,
    /// Guest CPU time in milliseconds, counted in the engine's epoch ticks (5 ms each).
    pub cpu_ms: u64,
    /// Fuel consumed, where the engine meters fuel (`KELP_FUEL`).
    pub fuel: u64,
    /// The largest linear memory one execution committed, in bytes.
    pub peak_memory_bytes: u64,
    /// `http.fetch` calls made.
    pub egress_calls: u64,
    /// Bytes of `http.fetch` responses received.
    pub egress_bytes: u64,
    /// `storage.*` operations.
    pub storage_ops: u64,
    /// Debug events published.
    pub debug_events: u64,
    /// Requests a warm instance served.
    pub warm_hits: u64,
}

impl Counters {
    /// Add `other` (peak memory: the larger).
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &other.refusals {
            *self.refusals.entry(code.clone()).or_default() += n;
        }
        self.wall_us += other.wall_us;
        self.cpu_ms += other.cpu_ms;
        self.fuel += other.fuel;
        self.peak_memory_bytes = self.peak_memory_bytes.max(other.peak_memory_bytes);
        self.egress_calls += other.egress_calls;
        self.egress_bytes += other.egress_bytes;
        self.storage_ops += other.storage_ops;
        self.debug_events += other.debug_events;
        self.warm_hits += other.warm_hits;
    }

    /// Every counter but the by-code ones, by name, in the order of the billing export.
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("requests", self.requests),
            ("wall_us", self.wall_us),
            ("cpu_ms", self.cpu_ms),
            ("fuel", self.fuel),
            ("peak_memory_bytes", self.peak_memory_bytes),
            ("egress_calls", self.egress_calls),
            ("egress_bytes", self.egress_bytes),
            ("storage_ops", self.storage_ops),
            ("debug_events", self.debug_events),
            ("warm_hits", self.warm_hits),
        ]
    }

    /// The additive counters by name, as stores keep them (codes are `err_<code>` and
    /// `ref_<code>`; peak memory is not additive and is kept apart).
    pub fn additive(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .fields()
            .into_iter()
            .filter(|(name, _)| *name != "peak_memory_bytes")
            .map(|(name, n)| (name.to_string(), n))
            .collect();
        v.extend(self.errors.iter().map(|(c, n)| (format!("err_{c}"), *n)));
        v.extend(self.refusals.iter().map(|(c, n)| (format!("ref_{c}"), *n)));
        v.retain(|(_, n)| *n > 0);
        v
    }

    /// Set one counter by its [`Counters::additive`] name (unknown names are ignored: a
    /// newer writer's counter an older reader does not know).
    pub fn set(&mut self, name: &str, value: u64) {
        match name {
            "requests" => self.requests = value,
            "wall_us" => self.wall_us = value,
            "cpu_ms" => self.cpu_ms = value,
            "fuel" => self.fuel = value,
            "egress_calls" => self.egress_calls = value,
            "egress_bytes" => self.egress_bytes = value,
            "storage_ops" => self.storage_ops = value,
            "debug_events" => self.debug_events = value,
            "warm_hits" => self.warm_hits = value,
            "peak_memory_bytes" => self.peak_memory_bytes = value,
            other => {
                if let Some(code) = other.strip_prefix("err_") {
                    self.errors.insert(code.to_string(), value);
                } else if let Some(code) = other.strip_prefix("ref_") {
                    self.refusals.insert(code.to_string(), value);
                }
            }
        }
    }
}

/// One install's usage in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// Tenant.
    pub tenant_id: String,
    /// Install.
    pub install_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// UTC hour, `YYYY-MM-DDTHH`.
    pub hour: String,
    /// What was used.
    pub counters: Counters,
}

/// One flush: rows and the (writer, sequence) that makes applying it twice harmless.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The process that counted it (random per process).
    pub writer: String,
    /// Increases by one per batch of the writer; a batch is retried until applied before
    /// the next one is made, so a store applies a writer's batches in order.
    pub seq: u64,
    /// The rows.
    pub rows: Vec<UsageRow>,
}

/// A usage query: hours in `[from, to)` (`YYYY-MM-DDTHH`), optionally one tenant, install or
/// extension.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this install.
    pub install: Option<String>,
    /// Only this extension.
    pub extension: Option<String>,
    /// First hour.
    pub from: String,
    /// Hour after the last.
    pub to: String,
}

impl UsageQuery {
    /// Whether a row matches the query's filters (stores filter what their keys do not).
    pub fn matches(&self, row: &UsageRow) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == row.tenant_id)
            && self.install.as_ref().is_none_or(|i| *i == row.install_id)
            && self.extension.as_ref().is_none_or(|e| *e == row.extension_id)
            && row.hour >= self.from
            && row.hour < self.to
    }
}

/// Where usage is kept: SQLite for `kelp up`, DynamoDB in AWS.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Add a batch's rows; a batch already applied (same writer and sequence) adds nothing.
    async fn apply(&self, batch: &Batch) -> StoreResult<()>;
    /// Rows matching the query, by tenant, hour and install.
    async fn query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;
}

/// The UTC hour (`YYYY-MM-DDTHH`) of hour number `hour` since the epoch.
pub fn hour_label(hour: u64) -> String {
    chrono::DateTime::from_timestamp((hour * 3600) as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H").to_string())
        .unwrap_or_default()
}

/// What one execution used, counted by the host while it runs: shared by the gateway (which
/// records it) and the call's host contexts and executor (which count).
#[derive(Debug, Default)]
pub struct CallTally {
    /// Epoch ticks the guest ran through.
    pub epoch_ticks: AtomicU64,
    /// Fuel consumed (fuel-metering engines).
    pub fuel: AtomicU64,
    /// Largest linear memory committed.
    pub peak_memory_bytes: AtomicU64,
    /// `http.fetch` calls.
    pub egress_calls: AtomicU64,
    /// `http.fetch` response bytes.
    pub egress_bytes: AtomicU64,
    /// `storage.*` operations.
    pub storage_ops: AtomicU64,
    /// Debug events published.
    pub debug_events: AtomicU64,
    /// The first plan limit the call ran into (a storage quota), for the refusal.
    quota: Mutex<Option<String>>,
}

impl CallTally {
    /// Count one more.
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Remember the first plan limit the call ran into.
    pub fn quota_hit(&self, what: impl Into<String>) {
        self.quota.lock().get_or_insert_with(|| what.into());
    }

    /// The first plan limit the call ran into.
    pub fn first_quota(&self) -> Option<String> {
        self.quota.lock().clone()
    }

    /// The tally as counters (one request), CPU time in epoch ticks of `tick`.
    pub fn counters(&self, tick: std::time::Duration) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            requests: 1,
            cpu_ms: get(&self.epoch_ticks) * tick.as_millis() as u64,
            fuel: get(&self.fuel),
            peak_memory_bytes: get(&self.peak_memory_bytes),
            egress_calls: get(&self.egress_calls),
            egress_bytes: get(&self.egress_bytes),
            storage_ops: get(&self.storage_ops),
            debug_events: get(&self.debug_events),
            ..Default::default()
        }
    }
}

/// One install's open counters, by hour number.
struct OpenInstall {
    tenant: String,
    extension: String,
    hours: Vec<(u64, Counters)>,
}

/// Counts usage in memory and writes it in batches.
pub struct UsageMeter {
    store: Arc<dyn UsageStore>,
    writer: String,
    seq: AtomicU64,
    /// By install id (ids are unique across tenants): a known install's request allocates
    /// nothing.
    open: Mutex<HashMap<String, OpenInstall>>,
    /// A batch whose write failed: written again, unchanged, before any newer one.
    pending: tokio::sync::Mutex<Option<Batch>>,
    flush_every: Duration,
    /// After a failed write, requests do not write again before this: a store that is down
    /// must not cost every answer its timeouts (the counts wait in memory meanwhile).
    quiet_until: Mutex<Option<std::time::Instant>>,
}

/// How long requests leave the store alone after a failed write.
const RETRY_PAUSE: Duration = Duration::from_secs(10);

impl UsageMeter {
    /// A meter over `store`; `flush_every` zero: the caller flushes after every request.
    pub fn new(store: Arc<dyn UsageStore>, flush_every: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            seq: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            pending: tokio::sync::Mutex::new(None),
            flush_every,
            quiet_until: Mutex::new(None),
        })
    }

    /// The store (for queries).
    pub fn store(&self) -> &Arc<dyn UsageStore> {
        &self.store
    }

    /// Whether each request flushes before it is answered (Lambda).
    pub fn flushes_each_request(&self) -> bool {
        self.flush_every.is_zero()
    }

    /// Write batches every `flush_every` on a task of the current runtime (not in Lambda,
    /// where a frozen sandbox runs no task: there each request flushes).
    pub fn spawn_flusher(self: &Arc<Self>) {
        if self.flushes_each_request() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let meter = Arc::downgrade(self);
        let every = self.flush_every;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(meter) = meter.upgrade() else { return };
                if let Err(e) = meter.flush().await {
                    tracing::warn!(error = %e, "usage flush failed; kept for the next one");
                }
            }
        });
    }

    /// Add one request's figures to its install's current hour.
    pub fn record(&self, tenant: &str, install: &str, extension: &str, at: SystemTime, counters: &Counters) {
        let hour = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() / 3600;
        let mut open = self.open.lock();
        if !open.contains_key(install) {
            open.insert(
                install.to_string(),
                OpenInstall { tenant: tenant.to_string(), extension: extension.to_string(), hours: Vec::new() },
            );
        }
        let entry = open.get_mut(install).expect("inserted above");
        match entry.hours.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, c)) => c.add(counters),
            None => entry.hours.push((hour, counters.clone())),
        }
    }

    /// [`UsageMeter::flush`] after a request, unless a write failed in the last
    /// [`RETRY_PAUSE`]: then the counts wait for a later request (a degraded store costs the
    /// requests no time; a sandbox reaped meanwhile loses what it held).
    pub async fn flush_after_request(&self) {
        if self.quiet_until.lock().is_some_and(|t| std::time::Instant::now() < t) {
            return;
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "usage flush failed; kept, and retried in {} s", RETRY_PAUSE.as_secs());
            *self.quiet_until.lock() = Some(std::time::Instant::now() + RETRY_PAUSE);
        }
    }

    /// Write what was counted: first a batch whose earlier write failed (as it was), then
    /// everything counted since. On failure the batch is kept for the next flush.
    pub async fn flush(&self) -> StoreResult<()> {
        let mut pending = self.pending.lock().await;
        if let Some(batch) = pending.as_ref() {
            self.store.apply(batch).await?;
            *pending = None;
        }
        let rows: Vec<UsageRow> = {
            let mut open = self.open.lock();
            open.drain()
                .flat_map(|(install, o)| {
                    o.hours.into_iter().map(move |(hour, counters)| UsageRow {
                        tenant_id: o.tenant.clone(),
                        install_id: install.clone(),
                        extension_id: o.extension.clone(),
                        hour: hour_label(hour),
                        counters,
                    })
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        let batch = Batch { writer: self.writer.clone(), seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1, rows };
        let result = self.store.apply(&batch).await;
        if result.is_err() {
            *pending = Some(batch);
        }
        result
    }
}

/// Sum rows per install over their hours (the `totals` of `/admin/usage`).
pub fn totals(rows: &[UsageRow]) -> Counters {
    let mut total = Counters::default();
    for row in rows {
        total.add(&row.counters);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_their_stored_names() {
        let mut c = Counters { requests: 3, wall_us: 10, egress_bytes: 7, ..Default::default() };
        c.errors.insert("extension_timeout".into(), 1);
        c.refusals.insert("rate_limited".into(), 2);
        let mut back = Counters::default();
        for (name, value) in c.additive() {
            back.set(&name, value);
        }
        assert_eq!(back, c);
    }

    #[test]
    fn hours_are_labelled_in_utc() {
        assert_eq!(hour_label(0), "1970-01-01T00");
        assert_eq!(hour_label(24 * 365 + 13), "1971-01-01T13");
    }
}
