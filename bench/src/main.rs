//! `cargo run --release -p kelp-bench`: measures the module cache tiers and the warm request
//! path, side by side in one run, and prints them against the targets.
//!
//! Build it with the gateway (`cargo build --release -p kelp-bench -p kelp-gateway`) for the
//! Lambda section. `kelp-bench peer` runs only the peer section (Kelp against `wasmtime serve`, see peer.rs);
//! `kelp-bench author` only the author loop (author.rs); `kelp-bench metering` only usage
//! metering and plan resolution on and off (metering.rs).
//!
//! Child modes: `kelp-bench first-request <data> <artifacts>` is a fresh process that serves
//! one request of an already published, precompiled component and prints its time;
//! `kelp-bench serve <data> <artifacts> <port>` serves Kelp on loopback for the peer section.

mod author;
mod fleet;
mod lambda;
mod metering;
mod peer;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::body::Body;
use http::Request;
use kelp_runtime::bindings::types::{ContextData, ExecuteRequest, HttpHeader, HttpRequest};
use kelp_runtime::gateway::{router, Gateway};
use kelp_runtime::ids::ExecIds;
use kelp_runtime::installs::{create_install, NewInstall};
use kelp_runtime::publish::Published;
use kelp_runtime::runtime::Plan;
use kelp_runtime::secrets::SecretsState;
use kelp_runtime::{Platform, Settings};
use kelp_tests::{staged_example, token, RW, TEST_SECRET};
use tower::ServiceExt;

fn settings(data: &Path, artifacts: &Path) -> Result<Settings> {
    // Compiles here are measured from scratch; the author-loop section measures the
    // incremental compilation cache on its own.
    settings_with(data, artifacts, "off")
}

/// The bench's settings, with `compile_cache` as `KELP_COMPILE_CACHE_DIR`.
fn settings_with(data: &Path, artifacts: &Path, compile_cache: &str) -> Result<Settings> {
    settings_extra(data, artifacts, &[("KELP_COMPILE_CACHE_DIR", compile_cache)])
}

/// The bench's settings plus `extra` variables.
fn settings_extra(data: &Path, artifacts: &Path, extra: &[(&str, &str)]) -> Result<Settings> {
    let mut env: HashMap<String, String> = [
        ("KELP_DATA_DIR", data.to_string_lossy().into_owned()),
        ("KELP_ARTIFACT_DIR", artifacts.to_string_lossy().into_owned()),
        ("KELP_JWT_HS256_SECRET", TEST_SECRET.to_string()),
        ("KELP_RATE_BURST", "0".to_string()),
        ("KELP_POOL_INSTANCES", "16".to_string()),
        ("KELP_COMPILE_CACHE_DIR", "off".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_map(&env)
}

async fn request(app: &axum::Router, path: &str, token: &str) -> Result<Duration> {
    request_answering(app, path, token, 200).await
}

/// One GET through the router, which must answer `status`: its time.
async fn request_answering(app: &axum::Router, path: &str, token: &str, status: u16) -> Result<Duration> {
    let req = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty())?;
    let started = Instant::now();
    let response = app.clone().oneshot(req).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(response.status() == status, "{path}: status {}", response.status());
    Ok(elapsed)
}

/// One GET through the router that must answer 200: its body.
async fn request_body(app: &axum::Router, path: &str, token: &str) -> Result<String> {
    let req = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty())?;
    let response = app.clone().oneshot(req).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    anyhow::ensure!(status == 200, "{path}: status {status}: {body}");
    Ok(body)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn verdict(value: Duration, target: Duration) -> &'static str {
    if value <= target {
        "meets target"
    } else {
        "MISSES target"
    }
}

/// Child mode: a fresh process, one request of a published, precompiled extension. Prints
/// the request's time and the module cache's stages of it (checksum, deserialize, link), in
/// nanoseconds.
async fn first_request_child(data: &Path, artifacts: &Path) -> Result<()> {
    let settings = settings(data, artifacts)?;
    let platform = Platform::embedded(&settings)?;
    let app = router(Gateway::new(platform.clone(), settings.gateway()));
    let t = token("bench", RW);
    let elapsed = request(&app, "/api/ext/com.kelp.examples.js-notes/hello", &t).await?;
    let load = &platform.cache().stats.last_disk_load;
    let stage = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed) * 1000;
    println!(
        "{} {} {} {}",
        elapsed.as_nanos(),
        stage(&load.checksum_us),
        stage(&load.deserialize_us),
        stage(&load.link_us)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return peer::serve_child(Path::new(&args[2]), Path::new(&args[3]), &args[4]).await;
    }
    if args.get(1).map(String::as_str) == Some("first-request") {
        return first_request_child(Path::new(&args[2]), Path::new(&args[3])).await;
    }
    if args.get(1).map(String::as_str) == Some("cold-s3") {
        return fleet::cold_child().await;
    }
    if args.get(1).map(String::as_str) == Some("density") {
        return fleet::density_child(Path::new(&args[2]), Path::new(&args[3]), &args[4], args[5].parse()?).await;
    }
    if args.get(1).map(String::as_str) == Some("fleet") {
        return fleet_only().await;
    }
    if args.get(1).map(String::as_str) == Some("author") {
        let work = tempfile::tempdir()?;
        return author::author_section(work.path()).await;
    }
    if args.get(1).map(String::as_str) == Some("metering") {
        let work = tempfile::tempdir()?;
        return metering::metering_section(work.path()).await;
    }
    if args.get(1).map(String::as_str) == Some("peer") {
        let work = tempfile::tempdir()?;
        return peer::peer_section(work.path()).await;
    }
    println!(
        "Kelp benchmark (release build, {} cores)\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let artifacts = work.path().join("artifacts");
    let bench_settings = settings(&data, &artifacts)?;
    let platform = Platform::embedded(&bench_settings)?;
    println!("allocator: {:?}", platform.cache().engine().allocator);
    let js = kelp_runtime::publish::publish_dir(&platform, &staged_example("js-notes")).await?;
    let wat = kelp_runtime::publish::publish_dir(&platform, &staged_example("wat-hello")).await?;
    for p in [&js, &wat] {
        install(&platform, p).await?;
    }
    let app = router(Gateway::new(platform.clone(), bench_settings.gateway()));
    let t = token("bench", RW);
    let cache = platform.cache();
    let js_path = "/api/ext/com.kelp.examples.js-notes/hello";
    let wat_path = "/api/ext/com.kelp.examples.wat-hello/hello";

    // JS example: the three tiers of the first request.
    println!(
        "\n== JS example (componentize-js, {} MB component): first request by cache tier",
        js_component_mb(&platform, &js).await
    );
    let compiled = first_request_compiling(work.path(), &platform, &js).await?;
    // Fresh processes: the request, and its checksum / deserialize / link stages.
    let mut stages: [Vec<Duration>; 4] = Default::default();
    let exe = std::env::current_exe()?;
    for _ in 0..7 {
        let out = std::process::Command::new(&exe).arg("first-request").arg(&data).arg(&artifacts).output()?;
        anyhow::ensure!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let nanos: Vec<u64> =
            text.split_whitespace().map(str::parse).collect::<Result<_, _>>().context("child output")?;
        anyhow::ensure!(nanos.len() == 4, "child output: {text}");
        for (samples, n) in stages.iter_mut().zip(nanos) {
            samples.push(Duration::from_nanos(n));
        }
    }
    let [fresh, checksum, deserialize, link] = &mut stages;
    let fresh_runs = fresh.len();
    let fresh_p50 = percentile(fresh, 0.5);
    let fresh_p50_disk = fresh_p50;
    let (checksum, deserialize, link) =
        (percentile(checksum, 0.5), percentile(deserialize, 0.5), percentile(link, 0.5));
    cache.clear_memory();
    let disk = request(&app, js_path, &t).await?;
    let mut warm = Vec::new();
    for _ in 0..200 {
        warm.push(request(&app, js_path, &t).await?);
    }
    let warm_js = percentile(&mut warm, 0.5);
    println!("  compile (no artifact)              {:>12}", ms(compiled));
    println!(
        "  .cwasm on disk, fresh process p50  {:>12}   ({} runs; target ≤ 5 ms: {})",
        ms(fresh_p50),
        fresh_runs,
        verdict(fresh_p50, Duration::from_millis(5))
    );
    println!(
        "    module cache stages (p50s): checksum {} in parallel with deserialize {}, then link {}; the rest is the gateway, the first instantiation and the handler",
        ms(checksum),
        ms(deserialize),
        ms(link)
    );
    println!("  .cwasm on disk, warm process       {:>12}", ms(disk));
    println!("  warm InstancePre (memory) p50      {:>12}", ms(warm_js));
    println!(
        "  ratios: compile / disk = {:.0}x, disk / memory = {:.1}x",
        compiled.as_secs_f64() / disk.as_secs_f64(),
        disk.as_secs_f64() / warm_js.as_secs_f64()
    );

    // The same request with warm instance reuse (manifest `instances.reuse`), in alternating
    // blocks so both see the same machine state. Blocks, not single requests: reuse pays off
    // for an install with steady traffic, and a reused call right after a fresh one would run
    // in caches that the fresh instance's memory image (and its slot reset) just evicted.
    let reusing = publish_reusing(&platform, "js-notes").await?;
    install(&platform, &reusing).await?;
    let reusing_path = format!("/api/ext/{}/hello", reusing.version.manifest.name);
    for _ in 0..20 {
        request(&app, &reusing_path, &t).await?;
    }
    let mut alone = CallAlone::new(&platform, &reusing, "/hello", 200).await?;
    let (mut fresh_calls, mut reused_calls, mut alone_calls) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        for _ in 0..30 {
            fresh_calls.push(request(&app, js_path, &t).await?);
        }
        for _ in 0..30 {
            reused_calls.push(request(&app, &reusing_path, &t).await?);
        }
        for _ in 0..30 {
            alone_calls.push(alone.call(&platform).await?);
        }
    }
    let (fresh_p50, reused_p50) = (percentile(&mut fresh_calls, 0.5), percentile(&mut reused_calls, 0.5));
    let alone_p50 = percentile(&mut alone_calls, 0.5);
    println!(
        "  warm request p50, fresh instance   {:>12}   reused instance {:>10}   ratio {:.1}x   (target reused ≤ 0.2 ms: {})",
        ms(fresh_p50),
        ms(reused_p50),
        fresh_p50.as_secs_f64() / reused_p50.as_secs_f64(),
        verdict(reused_p50, Duration::from_micros(200))
    );
    println!(
        "    reused: the handler call alone (executor, guest and its host calls, no gateway) p50 {}; the gateway adds {}",
        ms(alone_p50),
        ms(reused_p50.saturating_sub(alone_p50))
    );

    keep_resident_section(work.path(), &artifacts).await?;

    // WAT hello: warm latency through the router and instantiation alone.
    println!("\n== WAT hello: warm request through the router (in-process, no TCP)");
    for _ in 0..200 {
        request(&app, wat_path, &t).await?;
    }
    let mut samples = Vec::new();
    for _ in 0..5000 {
        samples.push(request(&app, wat_path, &t).await?);
    }
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    println!(
        "  p50 {:>10}   p99 {:>10}   ({} requests; target p50 ≤ 300 µs: {})",
        us(p50),
        us(p99),
        samples.len(),
        verdict(p50, Duration::from_micros(300))
    );
    let inst = instantiation(&platform, &wat).await?;
    println!("  instantiation p50 {:>10}   (target ≤ 50 µs: {})", us(inst), verdict(inst, Duration::from_micros(50)));
    let js_inst = instantiation(&platform, &js).await?;
    println!("  JS component instantiation p50 {:>10}", us(js_inst));

    let measured = fleet::JsMeasured {
        data: data.clone(),
        artifact: cache.local_artifact_path(&js.version.component_hash),
        version_id: js.version.id.clone(),
        warm: warm_js,
        disk: fresh_p50_disk,
    };
    metering::metering_section(work.path()).await?;
    fleet::fleet_section(work.path(), &measured).await?;
    author::author_section(work.path()).await?;
    aws_section(work.path(), p50).await?;
    relay_section(work.path()).await?;
    lambda::lambda_section().await?;
    peer::peer_section(work.path()).await?;
    Ok(())
}

/// `kelp-bench fleet`: the fleet section alone, with the JS example's warm and fresh-process
/// first request measured for its model.
async fn fleet_only() -> Result<()> {
    let work = tempfile::tempdir()?;
    let (data, artifacts) = (work.path().join("data"), work.path().join("artifacts"));
    let bench_settings = settings(&data, &artifacts)?;
    let platform = Platform::embedded(&bench_settings)?;
    let js = kelp_runtime::publish::publish_dir(&platform, &staged_example("js-notes")).await?;
    install(&platform, &js).await?;
    let app = router(Gateway::new(platform.clone(), bench_settings.gateway()));
    let t = token("bench", RW);
    let js_path = "/api/ext/com.kelp.examples.js-notes/hello";
    let mut fresh = Vec::new();
    let exe = std::env::current_exe()?;
    for _ in 0..5 {
        let out = std::process::Command::new(&exe).arg("first-request").arg(&data).arg(&artifacts).output()?;
        anyhow::ensure!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        fresh.push(Duration::from_nanos(text.split_whitespace().next().context("child output")?.parse()?));
    }
    let mut warm = Vec::new();
    for _ in 0..200 {
        warm.push(request(&app, js_path, &t).await?);
    }
    let measured = fleet::JsMeasured {
        data: data.clone(),
        artifact: platform.cache().local_artifact_path(&js.version.component_hash),
        version_id: js.version.id.clone(),
        warm: percentile(&mut warm, 0.5),
        disk: percentile(&mut fresh, 0.5),
    };
    println!(
        "JS example: warm request p50 {}, first request in a fresh process (.cwasm on disk) p50 {}",
        ms(measured.warm),
        ms(measured.disk)
    );
    fleet::fleet_section(work.path(), &measured).await
}

/// Debug events from the host's log call to an SSE client, through the relay over TCP:
/// latency p50/p99, and sustained events/s for one viewer; in-process bus and Redis.
async fn relay_section(work: &Path) -> Result<()> {
    println!("\n== Debug relay: host log call → SSE client (loopback TCP)");
    let redis = kelp_tests::services::shared_redis();
    for (label, redis_url) in [("in-process bus", None), ("Redis Streams", Some(redis.clone()))] {
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("KELP_DATA_DIR".into(), work.join(format!("relay-{}", label.len())).to_string_lossy().into_owned());
        env.insert("KELP_JWT_HS256_SECRET".into(), TEST_SECRET.into());
        env.insert("RUNNER_DEBUG_REDIS_MAXLEN".into(), "200000".into());
        // The burst below is larger than the default publish queue (10,000): size it so the
        // measurement is the viewer's rate, not queue overflow.
        env.insert("KELP_DEBUG_QUEUE".into(), "100000".into());
        // The relay sections stream tens of thousands of events through one sink: lift the
        // per-call event budget that protects tenants from one flooding call.
        env.insert("KELP_MAX_DEBUG_EVENTS".into(), "100000000".into());
        env.insert("KELP_RATE_BURST".into(), "0".into());
        if let Some(url) = &redis_url {
            env.insert("RUNNER_DEBUG_REDIS_URL".into(), url.clone());
            env.insert("RUNNER_DEBUG_REDIS_STREAM_PREFIX".into(), format!("bench-{}:", std::process::id()));
        }
        let relay_settings = Settings::from_map(&env)?;
        let platform = Platform::from_settings(&relay_settings).await?;
        let wat = kelp_runtime::publish::publish_dir(&platform, &staged_example("wat-hello")).await?;
        let mut granted = wat.version.manifest.capabilities.clone();
        granted.push("cap:debug.logs".into());
        let install = install_granting(&platform, &wat, granted).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = kelp_runtime::local::app(platform.clone(), &relay_settings);
        let gateway = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let viewer = token("bench", &["extension:debug"]);
        let response = reqwest_client()
            .get(format!("{base}/api/ext-debug/stream?extensionId={}", wat.extension.id))
            .bearer_auth(&viewer)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "stream refused: {}", response.status());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut parser = kelp_runtime::relay::client::SseParser::default();
            let mut body = response.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                let at = Instant::now();
                for f in parser.push(&chunk) {
                    if !f.data.is_empty() {
                        let _ = tx.send((f.data, at));
                    }
                }
            }
        });
        let ids = kelp_runtime::ids::ExecIds {
            tenant_id: "bench".into(),
            extension_id: wat.extension.id.clone(),
            install_id: install.install_id.clone(),
            ..Default::default()
        };
        let sink = platform.runtime().sink(&ids, kelp_runtime::debug::DEFAULT_MAX_EVENTS_PER_CALL);
        let origin = Instant::now();
        // Latency: one event at a time.
        let mut latencies = Vec::new();
        for i in 0..300 {
            let sent = origin.elapsed().as_nanos();
            sink.emit("info", "log", format!("lat:{sent}:{i}"), false);
            loop {
                let (data, at) =
                    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?.context("stream closed")?;
                if data.contains(&format!("lat:{sent}:{i}")) {
                    latencies.push(at.duration_since(origin) - Duration::from_nanos(sent as u64));
                    break;
                }
            }
        }
        let p50 = percentile(&mut latencies, 0.5);
        let p99 = percentile(&mut latencies, 0.99);
        // Throughput: a burst, then wait until the viewer has all of it.
        let n = 50_000;
        let started = Instant::now();
        for i in 0..n {
            sink.emit("info", "stdout", format!("burst {i}"), false);
            if i % 1000 == 999 {
                tokio::task::yield_now().await;
            }
        }
        let mut got = 0;
        while got < n {
            let (data, _) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?.context("stream closed")?;
            if data.contains("burst ") {
                got += 1;
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "  {label:<15} latency p50 {:>10}  p99 {:>10}   sustained {:>8.0} events/s per viewer ({} events)",
            us(p50),
            us(p99),
            rate,
            n
        );
        let (without, with) =
            stalled_viewer_effect(&gateway, &base, &wat.extension.id, &viewer, &sink, &mut rx).await?;
        println!(
            "  {label:<15} tenant request p50 without a stalled viewer {:>10}, with one {:>10}   ratio {:.2}x",
            us(without),
            us(with),
            with.as_secs_f64() / without.as_secs_f64()
        );
    }
    Ok(())
}

/// Tenant request p50 (the WAT example, which logs, through the router) while a viewer is
/// connected but never reads (its socket buffers are filled first, so the relay's writes to it
/// block), and after it has gone. Publishing is off the request path, so the two should match.
async fn stalled_viewer_effect(
    gateway: &axum::Router,
    base: &str,
    extension_id: &str,
    viewer: &str,
    sink: &kelp_runtime::debug::DebugSink,
    live: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) -> Result<(Duration, Duration)> {
    use tokio::io::AsyncWriteExt;
    let path = format!("/api/ext/{extension_id}/hello");
    let t = token("bench", RW);
    // With the stalled viewer first, then without it: both runs see the same ring/stream.
    let addr = base.trim_start_matches("http://");
    let mut stalled = tokio::net::TcpStream::connect(addr).await?;
    stalled
        .write_all(format!("GET /api/ext-debug/stream?extensionId={extension_id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {viewer}\r\n\r\n").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..50_000 {
        sink.emit("info", "stdout", format!("filling the stalled viewer's buffers {i}"), false);
        if i % 1000 == 999 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while live.try_recv().is_ok() {}
    let with = request_p50(gateway, &path, &t, live).await?;
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let without = request_p50(gateway, &path, &t, live).await?;
    Ok((without, with))
}

/// p50 of 2000 requests, draining the live viewer's events as they arrive.
async fn request_p50(
    gateway: &axum::Router,
    path: &str,
    t: &str,
    live: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..2000 {
        samples.push(request(gateway, path, t).await?);
        while live.try_recv().is_ok() {}
    }
    Ok(percentile(&mut samples, 0.5))
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// AWS backends (moto on loopback, the local redis-server) against the embedded default, and
/// debug publishing batched vs one XADD per event.
async fn aws_section(work: &Path, embedded_p50: Duration) -> Result<()> {
    println!("\n== AWS backends (moto server on loopback + local Redis) vs embedded, WAT hello warm");
    let moto = kelp_tests::services::start_moto();
    let redis = kelp_tests::services::shared_redis();
    let mut env = kelp_tests::aws::aws_env(&format!("http://127.0.0.1:{}", moto.port));
    env.insert("KELP_DATA_DIR".into(), work.join("aws-data").to_string_lossy().into_owned());
    env.insert("KELP_ARTIFACT_DIR".into(), work.join("artifacts").to_string_lossy().into_owned());
    env.insert("KELP_JWT_HS256_SECRET".into(), TEST_SECRET.into());
    env.insert("KELP_RATE_BURST".into(), "0".into());
    env.insert("RUNNER_DEBUG_REDIS_URL".into(), redis.clone());
    env.insert("RUNNER_DEBUG_REDIS_STREAM_PREFIX".into(), "bench:".into());
    let settings = Settings::from_map(&env)?;
    Platform::bootstrap_aws(&settings).await?;
    let platform = Platform::from_settings(&settings).await?;
    let wat = kelp_runtime::publish::publish_dir(&platform, &staged_example("wat-hello")).await?;
    install(&platform, &wat).await?;
    let app = kelp_runtime::local::lambda_gateway_app(platform.clone(), &settings);
    let t = token("bench", RW);
    let path = "/api/ext/com.kelp.examples.wat-hello/hello";
    for _ in 0..50 {
        request(&app, path, &t).await?;
    }
    let mut samples = Vec::new();
    for _ in 0..500 {
        samples.push(request(&app, path, &t).await?);
    }
    let aws_p50 = percentile(&mut samples, 0.5);
    let aws_p99 = percentile(&mut samples, 0.99);
    println!(
        "  embedded p50 {:>10}   AWS p50 {:>10}   AWS p99 {:>10}   ratio {:.1}x",
        us(embedded_p50),
        us(aws_p50),
        us(aws_p99),
        aws_p50.as_secs_f64() / embedded_p50.as_secs_f64()
    );
    println!("  (per request on AWS: one DynamoDB GetItem for the install, over HTTP to moto; the request's debug events flushed to Redis before the response; rate limiting off in both)");

    println!("\n== Debug publishing to Redis: batched pipeline vs one XADD per event");
    let n = 20_000usize;
    let bus = kelp_runtime::debug::redis::RedisBus::start(kelp_tests::aws::redis_settings(&redis))?;
    let event = bench_event();
    let started = Instant::now();
    for _ in 0..n {
        kelp_runtime::debug::DebugBus::publish(&*bus, event.clone());
    }
    kelp_runtime::debug::DebugBus::flush(&*bus, Duration::from_secs(60)).await;
    let batched = n as f64 / started.elapsed().as_secs_f64();
    let client = redis::Client::open(redis.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = format!("bench-single:{}", std::process::id());
    let started = Instant::now();
    for _ in 0..n {
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(2000)
            .arg("*")
            .arg("message")
            .arg(&event.message)
            .arg("tenant")
            .arg(&event.tenant_id)
            .query_async(&mut conn)
            .await?;
    }
    let single = n as f64 / started.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    println!(
        "  batched {:>10.0} events/s   one XADD per event {:>10.0} events/s   ratio {:.1}x   ({} events)",
        batched,
        single,
        batched / single,
        n
    );
    Ok(())
}

fn bench_event() -> kelp_runtime::debug::DebugEvent {
    kelp_runtime::debug::DebugEvent {
        ts: "2026-11-25T00:00:00.000Z".into(),
        level: "info".into(),
        stream: "stdout".into(),
        tenant_id: "bench".into(),
        extension_id: "bench-ext".into(),
        install_id: "i".into(),
        request_id: "r".into(),
        version_id: "v".into(),
        version: "1.0.0".into(),
        content_hash: "sha256:0".into(),
        message: "a typical log line of about eighty bytes, written by a guest to its stdout".into(),
        truncated: false,
    }
}

async fn js_component_mb(platform: &Platform, p: &Published) -> String {
    let bytes = platform.blobs.get(&p.version.component_key).await.ok().flatten().map(|b| b.len()).unwrap_or(0);
    format!("{:.1}", bytes as f64 / 1e6)
}

/// Fresh-instance JS requests with pool slots reset by `madvise` (the default) and with
/// `KELP_POOL_KEEP_RESIDENT_MB` (dirty pages restored in place), alternating between two
/// platforms in one process.
async fn keep_resident_section(work: &Path, artifacts: &Path) -> Result<()> {
    let mut apps = Vec::new();
    for keep_mb in ["0", "64"] {
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("KELP_DATA_DIR".into(), work.join(format!("resident-{keep_mb}")).to_string_lossy().into_owned());
        env.insert("KELP_ARTIFACT_DIR".into(), artifacts.to_string_lossy().into_owned());
        env.insert("KELP_JWT_HS256_SECRET".into(), TEST_SECRET.into());
        env.insert("KELP_RATE_BURST".into(), "0".into());
        env.insert("KELP_POOL_INSTANCES".into(), "16".into());
        env.insert("KELP_POOL_KEEP_RESIDENT_MB".into(), keep_mb.into());
        let settings = Settings::from_map(&env)?;
        let platform = Platform::embedded(&settings)?;
        let js = kelp_runtime::publish::publish_dir(&platform, &staged_example("js-notes")).await?;
        install(&platform, &js).await?;
        apps.push((keep_mb, router(Gateway::new(platform, settings.gateway()))));
    }
    let t = token("bench", RW);
    let path = "/api/ext/com.kelp.examples.js-notes/hello";
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..600 {
        for (i, (_, app)) in apps.iter().enumerate() {
            let elapsed = request(app, path, &t).await?;
            if round >= 50 {
                samples[i].push(elapsed);
            }
        }
    }
    let p50: Vec<Duration> = samples.iter_mut().map(|s| percentile(s, 0.5)).collect();
    println!(
        "  fresh-instance request p50, slot reset by madvise {:>10}   keeping 64 MiB resident {:>10}   ratio {:.2}x",
        ms(p50[0]),
        ms(p50[1]),
        p50[0].as_secs_f64() / p50[1].as_secs_f64()
    );
    Ok(())
}

/// `p`'s handler called on a reused instance without the gateway: what the executor does for a
/// call (the store handed to the call, the guest's handler and the host calls it makes), and no
/// identity, install lookup, RBAC, routing or response. What no gateway work can go below.
struct CallAlone {
    version: std::sync::Arc<kelp_runtime::stores::VersionRecord>,
    ids: ExecIds,
    reuse: kelp_runtime::executor::Reuse,
    limits: kelp_runtime::call_limits::Limits,
    url: String,
    status: u16,
    calls: u32,
}

impl CallAlone {
    async fn new(platform: &Platform, p: &Published, url: &str, status: u16) -> Result<Self> {
        let scope = format!("bench-call-alone-{}", p.version.id);
        let mut alone = Self {
            version: platform.version(&p.version.id).await?.context("version")?,
            ids: ExecIds { tenant_id: "bench".into(), extension_id: p.extension.id.clone(), ..Default::default() },
            reuse: kelp_runtime::executor::Reuse {
                scope: scope.clone(),
                key: scope,
                max_requests: u32::MAX,
                max_age: Duration::from_secs(3600),
            },
            limits: Settings::from_map(&Default::default())?.plan_defaults(),
            url: url.into(),
            status,
            calls: 0,
        };
        // The first call makes the instance; the next ones warm it.
        for _ in 0..20 {
            alone.call(platform).await?;
        }
        Ok(alone)
    }

    /// One call, on the instance of the calls before it.
    async fn call(&mut self, platform: &Platform) -> Result<Duration> {
        self.calls += 1;
        let plan = Plan {
            ids: self.ids.clone(),
            version: self.version.clone(),
            config: Default::default(),
            config_version: "1".into(),
            capabilities: kelp_runtime::manifest::DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            user: None,
            secrets: SecretsState::None,
            egress_allow: kelp_runtime::egress::EgressAllow::List(Vec::new()),
            limits: self.limits.clone(),
            tally: Default::default(),
            reuse: Some(self.reuse.clone()),
        };
        let request_id = format!("bench-{}", self.calls);
        let header = |name: &str, value: &str| HttpHeader { name: name.into(), value: value.into() };
        let request = ExecuteRequest {
            context: ContextData {
                request_id: Some(request_id.clone()),
                tenant_id: self.ids.tenant_id.clone(),
                extension_id: self.ids.extension_id.clone(),
                install_id: None,
                version_id: Some(self.version.id.clone()),
            },
            // The headers the gateway adds to every request, so the guest does the same work.
            http: HttpRequest {
                method: "GET".into(),
                url: self.url.clone(),
                headers: vec![
                    header("x-request-id", &request_id),
                    header("x-alga-tenant", &self.ids.tenant_id),
                    header("x-alga-extension", &self.ids.extension_id),
                ],
                body: None,
            },
        };
        let started = Instant::now();
        let outcome = platform.runtime().execute(plan, request).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(outcome.response.status == self.status, "{}: status {}", self.url, outcome.response.status);
        anyhow::ensure!(self.calls == 1 || outcome.reused, "{}: the call did not reuse its instance", self.url);
        Ok(elapsed)
    }
}

/// The example republished under another name with `instances.reuse` on (same component).
async fn publish_reusing(platform: &std::sync::Arc<Platform>, example: &str) -> Result<Published> {
    let dir = kelp_tests::restaged(&staged_example(example), &format!("{example}-reused"), |manifest| {
        let name = format!("{}-reused", manifest["name"].as_str().unwrap_or(example));
        manifest["name"] = serde_json::json!(name);
        manifest["instances"] = serde_json::json!({"reuse": true});
    });
    kelp_runtime::publish::publish_dir(platform, &dir).await
}

/// First request on a platform that has the component bytes but no artifact anywhere: the
/// request itself compiles.
async fn first_request_compiling(work: &Path, from: &Platform, p: &Published) -> Result<Duration> {
    let compile_settings = settings(&work.join("compile-data"), &work.join("compile-artifacts"))?;
    let platform = Platform::embedded(&compile_settings)?;
    let bytes = from.blobs.get(&p.version.component_key).await?.context("component bytes")?;
    platform.blobs.put(&p.version.component_key, &bytes).await?;
    platform.registry.ensure_extension(&p.extension).await?;
    platform.registry.put_version(&p.version).await?;
    install(&platform, p).await?;
    let app = router(Gateway::new(platform.clone(), compile_settings.gateway()));
    let elapsed = request(&app, "/api/ext/com.kelp.examples.js-notes/hello", &token("bench", RW)).await?;
    anyhow::ensure!(
        platform.cache().stats.compiles.load(std::sync::atomic::Ordering::Relaxed) == 1,
        "expected a compile"
    );
    Ok(elapsed)
}

async fn install(platform: &Platform, p: &Published) -> Result<()> {
    let mut granted = p.version.manifest.capabilities.clone();
    granted.retain(|c| c != "cap:secrets.get");
    install_granting(platform, p, granted).await?;
    Ok(())
}

/// Install `p` for the bench tenant with exactly the `granted` capabilities.
async fn install_granting(
    platform: &Platform,
    p: &Published,
    granted: Vec<String>,
) -> Result<kelp_runtime::stores::InstallRecord> {
    Ok(create_install(
        platform,
        NewInstall {
            tenant_id: "bench".into(),
            extension_id: p.extension.id.clone(),
            version_id: p.version.id.clone(),
            granted,
            enabled: true,
            ..Default::default()
        },
    )
    .await?)
}

/// A plan for calling `version` as the bench tenant with the default limits.
fn bench_plan(version: std::sync::Arc<kelp_runtime::stores::VersionRecord>) -> Plan {
    Plan {
        ids: ExecIds { tenant_id: "bench".into(), ..Default::default() },
        version,
        config: Default::default(),
        config_version: "1".into(),
        capabilities: Default::default(),
        user: None,
        secrets: SecretsState::None,
        egress_allow: kelp_runtime::egress::EgressAllow::List(Vec::new()),
        limits: Settings::from_map(&Default::default()).expect("default settings").plan_defaults(),
        tally: Default::default(),
        reuse: None,
    }
}

/// Median time of `InstancePre::instantiate_async` alone.
async fn instantiation(platform: &Platform, p: &Published) -> Result<Duration> {
    let version = platform.version(&p.version.id).await?.context("version")?;
    let mut samples = Vec::new();
    for _ in 0..500 {
        let plan = bench_plan(version.clone());
        let (call, v, limits, _) = platform.runtime().call_state(plan);
        samples.push(
            platform.runtime().executor.time_instantiation(&v.component_hash, &v.component_key, call, limits).await?,
        );
    }
    Ok(percentile(&mut samples, 0.5))
}
