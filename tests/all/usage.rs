//! Usage metering: counted exactly under concurrent requests, written once by a retried
//! flush, on both stores (SQLite and DynamoDB on moto); read back through `/admin/usage`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use kelp_runtime::stores::{StoreError, StoreResult};
use kelp_runtime::usage::{Batch, Counters, UsageMeter, UsageQuery, UsageRow, UsageStore};
use kelp_tests::aws::{aws_backends, embedded_backends};
use kelp_tests::*;
use serde_json::{json, Value};

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The hour range around now.
fn this_hour() -> (String, String) {
    let now = chrono::Utc::now();
    (
        (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H").to_string(),
        (now + chrono::Duration::hours(2)).format("%Y-%m-%dT%H").to_string(),
    )
}

fn one_request(peak: u64) -> Counters {
    let mut c = Counters { requests: 1, wall_us: 10, storage_ops: 2, peak_memory_bytes: peak, ..Default::default() };
    c.errors.insert("extension_timeout".into(), 1);
    c
}

/// A store whose writes fail while `failing` is set — after writing, like a timeout that
/// hides a write that landed.
struct Flaky {
    inner: Arc<dyn UsageStore>,
    failing: AtomicBool,
    writes: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl UsageStore for Flaky {
    async fn apply(&self, batch: &Batch) -> StoreResult<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(batch).await?;
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("timed out after the write".into()));
        }
        Ok(())
    }

    async fn query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        self.inner.query(query).await
    }
}

async fn counted_exactly(store: Arc<dyn UsageStore>) {
    let (tenant, install, extension) = (format!("t-{}", uid()), uid(), uid());
    let (from, to) = this_hour();
    // Eight processes (writers) count 50 requests each at once and flush as they go.
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let meter = UsageMeter::new(store.clone(), Duration::from_secs(3600));
            let (tenant, install, extension) = (tenant.clone(), install.clone(), extension.clone());
            tokio::spawn(async move {
                for i in 0..50u64 {
                    meter.record(&tenant, &install, &extension, SystemTime::now(), &one_request(w * 1000 + i));
                    if i % 7 == 0 {
                        meter.flush().await.unwrap();
                    }
                }
                meter.flush().await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let query = UsageQuery { tenant: Some(tenant.clone()), from: from.clone(), to: to.clone(), ..Default::default() };
    let rows = store.query(&query).await.unwrap();
    let total = kelp_runtime::usage::totals(&rows);
    assert_eq!(total.requests, 400, "{rows:?}");
    assert_eq!(total.errors["extension_timeout"], 400);
    assert_eq!((total.wall_us, total.storage_ops), (4000, 800));
    assert_eq!(total.peak_memory_bytes, 7049, "the largest, not a sum");
    assert!(rows.iter().all(|r| r.install_id == install && r.extension_id == extension));

    // A flush whose write landed but answered an error is retried as it was: counted once.
    let flaky = Arc::new(Flaky { inner: store.clone(), failing: AtomicBool::new(true), writes: Default::default() });
    let meter = UsageMeter::new(flaky.clone(), Duration::from_secs(3600));
    for _ in 0..5 {
        meter.record(&tenant, &install, &extension, SystemTime::now(), &one_request(1));
    }
    assert!(meter.flush().await.is_err());
    meter.record(&tenant, &install, &extension, SystemTime::now(), &one_request(1));
    assert!(meter.flush().await.is_err(), "the kept batch fails again; the new counts wait behind it");
    flaky.failing.store(false, Ordering::SeqCst);
    meter.flush().await.unwrap();
    let total = kelp_runtime::usage::totals(&store.query(&query).await.unwrap());
    assert_eq!(total.requests, 406, "5 + 1 more, each once, though the first batch was written three times");

    // Per-request flushing (Lambda) leaves a failing store alone for a while: the next
    // requests do not each pay its timeouts, and their counts wait, none lost.
    flaky.failing.store(true, Ordering::SeqCst);
    let lambda = UsageMeter::new(flaky.clone(), Duration::ZERO);
    let writes = flaky.writes.load(Ordering::SeqCst);
    for _ in 0..3 {
        lambda.record(&tenant, &install, &extension, SystemTime::now(), &one_request(1));
        lambda.flush_after_request().await;
    }
    assert_eq!(flaky.writes.load(Ordering::SeqCst), writes + 1, "one write tried, then a pause");
    flaky.failing.store(false, Ordering::SeqCst);
    lambda.flush().await.unwrap();
    let total = kelp_runtime::usage::totals(&store.query(&query).await.unwrap());
    assert_eq!(total.requests, 409, "the three requests counted once each");

    // Filters: another install of the tenant, another tenant, the time range.
    let other_install = uid();
    let meter = UsageMeter::new(store.clone(), Duration::from_secs(3600));
    meter.record(&tenant, &other_install, &extension, SystemTime::now(), &one_request(1));
    let other_tenant = format!("t-{}", uid());
    meter.record(&other_tenant, &uid(), &uid(), SystemTime::now(), &one_request(1));
    meter.flush().await.unwrap();
    let by_install = UsageQuery { install: Some(other_install.clone()), ..query.clone() };
    assert_eq!(kelp_runtime::usage::totals(&store.query(&by_install).await.unwrap()).requests, 1);
    assert_eq!(kelp_runtime::usage::totals(&store.query(&query).await.unwrap()).requests, 410);
    let everyone = UsageQuery { tenant: None, ..query.clone() };
    let tenants: std::collections::BTreeSet<String> =
        store.query(&everyone).await.unwrap().into_iter().map(|r| r.tenant_id).collect();
    assert!(tenants.contains(&tenant) && tenants.contains(&other_tenant), "an operator sees every tenant");
    let past = UsageQuery { from: "2020-01-01T00".into(), to: "2020-01-02T00".into(), ..query };
    assert!(store.query(&past).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_exactly_in_sqlite() {
    counted_exactly(embedded_backends().usage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_exactly_in_dynamodb() {
    counted_exactly(aws_backends().await.usage).await;
}

/// Through the real gateway: every request of a known install is counted (answers, refusals
/// and failures by code, storage and egress), and `/admin/usage` reads it back — every tenant
/// for an operator, its own for a tenant's admin — as JSON or CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_meters_each_install_and_the_admin_api_reports_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/data", axum::routing::get(|| async { "upstream says hi" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kelp = TestKelp::start_with(&[("KELP_EGRESS_ALLOW_LOOPBACK", "true"), ("KELP_USAGE_FLUSH_SECONDS", "0")]).await;
    let hello = kelp.publish(&staged_wat("test.usage-hello", "")).await;
    let trap = kelp.publish(&staged_wat("test.usage-trap", "unreachable")).await;
    let notes = kelp.publish(&staged_example("js-notes")).await;
    let hello_install = kelp.install(&hello, "acme", &[]).await;
    kelp.install(&trap, "acme", &[]).await;
    let notes_install = kelp.install(&notes, "acme", &[&format!("http://localhost:{port}")]).await;
    kelp.install(&hello, "globex", &[]).await;

    let acme = token("acme", RW);
    let calls = (0..20).map(|_| kelp.get("/api/ext/test.usage-hello/run", &acme));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(kelp.get("/api/ext/test.usage-hello/nope", &token("acme", RW)).await.status(), 404);
    }
    assert_eq!(kelp.get("/api/ext/test.usage-trap/run", &token("acme", RW)).await.status(), 500);
    assert_eq!(kelp.get("/api/ext/test.usage-hello/run", &token("globex", RW)).await.status(), 200);
    let put = kelp
        .client
        .put(format!("{}/api/ext/com.kelp.examples.js-notes/notes/n1", kelp.base))
        .bearer_auth(token("acme", RW))
        .body(json!({"text": "hi"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let fetched = kelp
        .client
        .get(format!("{}/api/ext/com.kelp.examples.js-notes/fetch", kelp.base))
        .query(&[("url", format!("http://localhost:{port}/data"))])
        .bearer_auth(token("acme", RW))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(fetched).await["body"], "upstream says hi");

    let usage = |tenant: &'static str, perms: &'static [&'static str], query: String| {
        let kelp = &kelp;
        async move {
            let r = kelp
                .client
                .get(format!("{}/admin/usage?{query}", kelp.base))
                .bearer_auth(token(tenant, perms))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, text) = usage("acme", &["extension:manage"], String::new()).await;
    assert_eq!(status, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<UsageRow> = serde_json::from_value(report["rows"].clone()).unwrap();
    assert!(rows.iter().all(|r| r.tenant_id == "acme"), "a tenant's admin sees its own usage");
    // An install's hours summed (a test may straddle an hour).
    let row_of = |install: &str| {
        let mine: Vec<UsageRow> = rows.iter().filter(|r| r.install_id == install).cloned().collect();
        serde_json::to_value(kelp_runtime::usage::totals(&mine)).unwrap()
    };
    let hello_usage = row_of(&hello_install.install_id);
    assert_eq!(hello_usage["requests"], 23, "{hello_usage}");
    assert_eq!(hello_usage["refusals"]["endpoint_not_found"], 3, "{hello_usage}");
    assert!(hello_usage["wall_us"].as_u64().unwrap() > 0 && hello_usage["peak_memory_bytes"].as_u64().unwrap() > 0);
    let notes_usage = row_of(&notes_install.install_id);
    assert_eq!(notes_usage["requests"], 2, "{notes_usage}");
    assert!(notes_usage["storage_ops"].as_u64().unwrap() >= 1, "{notes_usage}");
    assert_eq!((notes_usage["egress_calls"].as_u64(), notes_usage["egress_bytes"].as_u64()), (Some(1), Some(16)));
    assert!(notes_usage["debug_events"].as_u64().unwrap() >= 1, "{notes_usage}");
    assert_eq!(report["totals"]["requests"], 26);
    assert_eq!(report["totals"]["errors"]["extension_error"], 1);

    let (status, _) = usage("acme", &["extension:manage"], "tenant=globex".into()).await;
    assert_eq!(status, 403, "another tenant's usage is not a tenant admin's");
    let (status, text) = usage("ops", &["platform:ops"], String::new()).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"globex\"") && text.contains("\"acme\""), "an operator sees every tenant");
    let (status, csv) = usage("ops", &["platform:ops"], "tenant=acme&format=csv".into()).await;
    assert_eq!(status, 200);
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("tenant_id,install_id,extension_id,hour,requests,"), "{header}");
    assert!(header.contains("refusals.endpoint_not_found") && header.contains("errors.extension_error"), "{header}");
    assert_eq!(csv.lines().count(), rows.len() + 1, "a header and one line per install and hour: {csv}");
    let (status, text) = usage("ops", &["platform:ops"], "from=yesterday".into()).await;
    assert_eq!(status, 400, "{text}");
}
