//! The fleet section: what a fresh Lambda sandbox pays for an extension whose artifact is only
//! in S3, how many JS extensions one sandbox keeps hot, and what both mean for a fleet.
//!
//! Cold path: the JS example is published to moto (S3 + DynamoDB on loopback); each sample is a
//! fresh process with an empty artifact dir that reaches moto through a TCP proxy pacing every
//! connection's download at a fixed rate (Lambda sees roughly 50–90 MB/s per S3 connection),
//! and times its first request. "Before" serves the artifact as earlier publishes stored it
//! (one uncompressed object, one GET); "after" as publishes store it now (zstd, ranged GETs
//! in parallel, streamed through decompression and verification).
//!
//! Density: a fresh process loads and instantiates N copies of the JS artifact under distinct
//! hashes and reports its resident memory after each.
//!
//! Fleet model: sandboxes that start and end, tenants' requests over extension versions of
//! Zipf popularity, each sandbox with a memory tier of the measured capacity and a `/tmp`
//! tier; every request costs the measured time of the tier that answers it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kelp_runtime::{Platform, Settings};
use kelp_tests::{staged_example, token, RW, TEST_SECRET};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{install, ms, percentile, request, verdict};

/// What the pool may keep resident in Lambda: 8 slots × 64 MiB (the defaults there).
const POOL_RESERVE_MB: usize = 8 * 64;
const JS_PATH: &str = "/api/ext/com.kelp.examples.js-notes/hello";

/// Child mode `cold-s3`: a fresh process, settings from its environment, one request of the
/// JS example; prints the request's nanoseconds, then blob hits and compiles.
pub async fn cold_child() -> Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = Settings::from_map(&env)?;
    let platform = Platform::from_settings(&settings).await?;
    let app = kelp_runtime::local::lambda_gateway_app(platform.clone(), &settings);
    let elapsed = request(&app, JS_PATH, &token("bench", RW)).await?;
    let stats = &platform.cache().stats;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
    println!("{} {} {}", elapsed.as_nanos(), load(&stats.blob_hits), load(&stats.compiles));
    Ok(())
}

/// Child mode `density <data> <artifact> <version id> <n>`: load and instantiate `n` copies
/// of the artifact of the JS version published in `data`; prints one line per copy with the
/// process's VmRSS, RssAnon, RssFile and RssShmem in KiB (the first line is before any).
pub async fn density_child(data: &Path, artifact: &Path, version_id: &str, n: usize) -> Result<()> {
    let copies = tempfile::tempdir()?;
    let settings = crate::settings(data, copies.path())?;
    let platform = Platform::embedded(&settings)?;
    let version = platform.version(version_id).await?.context("the JS version")?;
    let cache = platform.cache();
    let sum = std::fs::read(artifact.with_extension("cwasm.xxh3"))?;
    println!("{}", rss_line()?);
    for i in 0..n {
        let hash = format!("{:064x}", i + 1);
        let path = cache.local_artifact_path(&hash);
        std::fs::copy(artifact, &path)?;
        std::fs::write(path.with_extension("cwasm.xxh3"), &sum)?;
        let mut v = (*version).clone();
        v.component_hash = hash;
        let plan = crate::bench_plan(std::sync::Arc::new(v));
        let (call, v, limits, _) = platform.runtime().call_state(plan);
        platform.runtime().executor.time_instantiation(&v.component_hash, &v.component_key, call, limits).await?;
        println!("{}", rss_line()?);
    }
    Ok(())
}

fn rss_line() -> Result<String> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(format!("{} {} {} {}", field("VmRSS:"), field("RssAnon:"), field("RssFile:"), field("RssShmem:")))
}

/// A loopback TCP proxy to `upstream` that paces every connection's download (upstream to
/// client) at `bytes_per_sec`; uploads pass unpaced. Runs on its own thread and runtime, so
/// it keeps pacing while this process waits for a child.
fn paced_proxy(upstream: u16, bytes_per_sec: u64) -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client_read, client_write) = client.into_split();
                    let (server_read, mut server_write) = server.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let down = paced_copy(server_read, client_write, bytes_per_sec);
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
    });
    Ok(port)
}

/// Copy at most `bytes_per_sec`: each piece is due when the bytes before it would have taken
/// that long. The schedule is kept across pieces (a sleep that overshoots, by the timer's
/// millisecond granularity, is made up by the next pieces going at once), but idle time earns
/// no credit: after a pause the schedule restarts, so a keep-alive connection does not burst.
async fn paced_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes_per_sec: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut due = Instant::now();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if now > due + Duration::from_millis(20) {
            due = now;
        }
        tokio::time::sleep_until(due.into()).await;
        to.write_all(&buf[..n]).await?;
        due += Duration::from_secs_f64(n as f64 / bytes_per_sec as f64);
    }
}

/// The fleet section (see the module doc).
pub async fn fleet_section(work: &Path, js: &JsMeasured) -> Result<()> {
    let (warm_js, disk_js) = (js.warm, js.disk);
    println!("\n== Fleet: cold sandboxes (artifact only in S3), density, and a fleet model");
    let moto = kelp_tests::services::start_moto();
    let mut env = kelp_tests::aws::aws_env(&format!("http://127.0.0.1:{}", moto.port));
    env.insert("KELP_DATA_DIR".into(), work.join("fleet-data").to_string_lossy().into_owned());
    env.insert("KELP_ARTIFACT_DIR".into(), work.join("fleet-publisher").to_string_lossy().into_owned());
    env.insert("KELP_JWT_HS256_SECRET".into(), TEST_SECRET.into());
    env.insert("KELP_RATE_BURST".into(), "0".into());
    let settings = Settings::from_map(&env)?;
    Platform::bootstrap_aws(&settings).await?;
    let platform = Platform::from_settings(&settings).await?;
    let published = kelp_runtime::publish::publish_dir(&platform, &staged_example("js-notes")).await?;
    install(&platform, &published).await?;
    let compat = platform.cache().engine().compat_hash.clone();
    let hash = published.version.component_hash.clone();
    let compressed_key = kelp_runtime::blobs::artifact_key(&compat, &hash);
    let compressed = platform.blobs.get(&compressed_key).await?.context("the compressed artifact")?;
    let artifact = std::fs::read(platform.cache().local_artifact_path(&hash))?;
    println!(
        "  JS artifact {:.1} MB, zstd {:.1} MB ({:.1}x)",
        artifact.len() as f64 / 1e6,
        compressed.len() as f64 / 1e6,
        artifact.len() as f64 / compressed.len() as f64
    );
    let legacy_key = kelp_runtime::blobs::legacy_artifact_key(&compat, &hash);

    let exe = std::env::current_exe()?;
    let cold = |port: u16, runs: usize| -> Result<Vec<Duration>> {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir()?;
            let mut child_env = env.clone();
            child_env.insert("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{port}"));
            child_env.insert("KELP_ARTIFACT_DIR".into(), dir.path().to_string_lossy().into_owned());
            let out = std::process::Command::new(&exe).arg("cold-s3").env_clear().envs(&child_env).output()?;
            anyhow::ensure!(out.status.success(), "cold child failed: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let fields: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
            anyhow::ensure!(fields.len() == 3 && fields[1] == 1 && fields[2] == 0, "not a blob-tier load: {text}");
            samples.push(Duration::from_nanos(fields[0]));
        }
        Ok(samples)
    };
    let rates: [(u64, &str, Duration); 3] = [
        (75_000_000, "75 MB/s", Duration::from_millis(150)),
        (25_000_000, "25 MB/s", Duration::from_millis(400)),
        (0, "loopback, unpaced", Duration::MAX),
    ];
    let mut cold_at_75 = (Duration::ZERO, Duration::ZERO);
    for (rate, label, target) in rates {
        let port = if rate == 0 { moto.port } else { paced_proxy(moto.port, rate)? };
        // Before: the uncompressed object alone, as earlier publishes stored it.
        platform.blobs.put(&legacy_key, &artifact).await?;
        platform.blobs.delete(&compressed_key).await?;
        let mut before = cold(port, 5)?;
        platform.blobs.put(&compressed_key, &compressed).await?;
        platform.blobs.delete(&legacy_key).await?;
        let mut after = cold(port, 5)?;
        let (b, a) = (percentile(&mut before, 0.5), percentile(&mut after, 0.5));
        let target_text = if target == Duration::MAX {
            String::new()
        } else {
            format!("   (target ≤ {}: {})", ms(target), verdict(a, target))
        };
        println!(
            "  first request, {label:<18} before {:>11}   after {:>11}   {:.1}x{target_text}",
            ms(b),
            ms(a),
            b.as_secs_f64() / a.as_secs_f64()
        );
        if rate == 75_000_000 {
            cold_at_75 = (b, a);
        }
    }
    println!("    (p50 of 5 fresh processes each; the request includes DynamoDB reads through the same proxy)");

    // Density.
    let n = 6;
    let out = std::process::Command::new(&exe)
        .arg("density")
        .arg(&js.data)
        .arg(&js.artifact)
        .arg(&js.version_id)
        .arg(n.to_string())
        .output()?;
    anyhow::ensure!(out.status.success(), "density child failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<u64>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect())
        .collect();
    anyhow::ensure!(lines.len() == n + 1, "density output");
    let per = |col: usize| (lines[n][col] as f64 - lines[0][col] as f64) / n as f64 / 1024.0;
    let (rss, anon, file, shmem) = (per(0), per(1), per(2), per(3));
    let base_mb = lines[0][0] as f64 / 1024.0;
    println!(
        "  resident memory per loaded JS component: {rss:.1} MB (anonymous {anon:.1}, file-backed {file:.1}, shared {shmem:.1}); process before any: {base_mb:.0} MB"
    );
    // Only anonymous and shared memory must fit the function's memory; clean file-backed
    // code pages are page cache the kernel reclaims under pressure.
    let pinned = (anon + shmem).max(1.0);
    for function_mb in [1024.0, 2048.0] {
        let budget = kelp_runtime::config::lambda_cache_budget_mb(function_mb as usize, POOL_RESERVE_MB) as f64;
        println!(
            "  a {function_mb:.0} MB sandbox: memory tier budget {budget:.0} MB of artifacts (KELP_CACHE_MAX_MB default) keeps {} JS extensions hot; by pinned memory alone {:.0} would fit",
            (budget / (artifact.len() as f64 / 1e6 / 1.048576)).floor(),
            ((function_mb - base_mb - 128.0) / pinned).floor()
        );
    }

    // Fleet model.
    let model = FleetModel::default();
    let hot = (kelp_runtime::config::lambda_cache_budget_mb(1024, POOL_RESERVE_MB) as f64
        / (artifact.len() as f64 / 1048576.0)) as usize;
    // KELP_ARTIFACT_DIR_MAX_MB in the template.
    let tmp_slots = (3072.0 / (artifact.len() as f64 / 1048576.0)) as usize;
    let (mut before, mut after) = (
        model.run(hot, tmp_slots, warm_js, disk_js, cold_at_75.0),
        model.run(hot, tmp_slots, warm_js, disk_js, cold_at_75.1),
    );
    println!(
        "  fleet model ({} requests, {} extension versions of Zipf({}) popularity, {} sandboxes living {}–{} min, {} hot and {} in /tmp per sandbox, S3 at 75 MB/s):",
        model.requests, model.versions, model.zipf_s, model.sandboxes, model.min_life_min, model.max_life_min, hot, tmp_slots
    );
    let cold_share = before.iter().filter(|d| **d >= cold_at_75.1).count() as f64 / before.len() as f64;
    println!(
        "    before: p50 {:>10}  p99 {:>10}   after: p50 {:>10}  p99 {:>10}   ({:.2} % of requests load from S3)",
        ms(percentile(&mut before, 0.5)),
        ms(percentile(&mut before, 0.99)),
        ms(percentile(&mut after, 0.5)),
        ms(percentile(&mut after, 0.99)),
        cold_share * 100.0
    );
    Ok(())
}

/// The JS example as the rest of the benchmark measured it.
pub struct JsMeasured {
    /// Embedded data dir it is published in.
    pub data: std::path::PathBuf,
    /// Its local artifact.
    pub artifact: std::path::PathBuf,
    /// Its version id.
    pub version_id: String,
    /// Warm request p50 (memory tier, fresh instance).
    pub warm: Duration,
    /// A request that loads it from the local artifact dir (fresh process p50).
    pub disk: Duration,
}

/// A fleet of sandboxes serving tenants' requests.
struct FleetModel {
    requests: usize,
    versions: usize,
    zipf_s: f64,
    sandboxes: usize,
    /// Requests per second across the fleet.
    rate: f64,
    min_life_min: f64,
    max_life_min: f64,
}

impl Default for FleetModel {
    fn default() -> Self {
        Self {
            requests: 400_000,
            versions: 300,
            zipf_s: 1.1,
            sandboxes: 40,
            rate: 100.0,
            min_life_min: 5.0,
            max_life_min: 60.0,
        }
    }
}

struct Sandbox {
    ends_at: f64,
    hot: VecDeque<usize>,
    tmp: VecDeque<usize>,
}

impl FleetModel {
    /// Each request's time: the measured first request of the tier that had its component.
    fn run(&self, hot: usize, tmp: usize, warm: Duration, disk: Duration, cold: Duration) -> Vec<Duration> {
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        let weights: Vec<f64> = (1..=self.versions).map(|k| 1.0 / (k as f64).powf(self.zipf_s)).collect();
        let total: f64 = weights.iter().sum();
        let cdf: Vec<f64> = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        let life =
            |rng: &mut XorShift| (self.min_life_min + rng.unit() * (self.max_life_min - self.min_life_min)) * 60.0;
        let mut fleet: Vec<Sandbox> = (0..self.sandboxes)
            .map(|_| Sandbox { ends_at: life(&mut rng) * rng.unit(), hot: VecDeque::new(), tmp: VecDeque::new() })
            .collect();
        let mut out = Vec::with_capacity(self.requests);
        for i in 0..self.requests {
            let now = i as f64 / self.rate;
            let version = cdf.partition_point(|c| *c < rng.unit()).min(self.versions - 1);
            let sandbox = &mut fleet[(rng.next() % self.sandboxes as u64) as usize];
            if now >= sandbox.ends_at {
                *sandbox = Sandbox { ends_at: now + life(&mut rng), hot: VecDeque::new(), tmp: VecDeque::new() };
            }
            out.push(if touch(&mut sandbox.hot, version, hot) {
                warm
            } else if touch(&mut sandbox.tmp, version, tmp) {
                disk
            } else {
                cold
            });
        }
        out
    }
}

/// LRU of `capacity`: whether `item` was there (it is now, most recent).
fn touch(lru: &mut VecDeque<usize>, item: usize, capacity: usize) -> bool {
    let found = lru.iter().position(|v| *v == item).map(|at| lru.remove(at)).is_some();
    lru.push_front(item);
    lru.truncate(capacity.max(1));
    found
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
