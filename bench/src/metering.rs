//! Usage metering and plan resolution, on and off, side by side: two platforms in this
//! process serve the same components, one with metering on (flushed in the background, as in
//! `kelp up`) and its tenant on a plan that sets every per-request limit, the other with
//! metering off and the default plan. Requests alternate between them in blocks, so both see
//! the same machine state (issue 29: ≤ 3 % on the warm WAT p50, nothing measurable on JS).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use kelp_runtime::gateway::{router, Gateway};
use kelp_runtime::limits::LimitSet;
use kelp_runtime::publish::Published;
use kelp_runtime::Platform;
use kelp_tests::{staged_example, token, RW};

use super::{install, percentile, request, settings_extra, us};

/// A platform serving the WAT and JS examples for the bench tenant.
async fn serving(work: &Path, name: &str, extra: &[(&str, &str)]) -> Result<(Arc<Platform>, axum::Router)> {
    let settings = settings_extra(&work.join(name), &work.join("metering-artifacts"), extra)?;
    let platform = Platform::embedded(&settings)?;
    let wat: Published = kelp_runtime::publish::publish_dir(&platform, &staged_example("wat-hello")).await?;
    let js: Published = kelp_runtime::publish::publish_dir(&platform, &staged_example("js-notes")).await?;
    for p in [&wat, &js] {
        install(&platform, p).await?;
    }
    let app = router(Gateway::new(platform.clone(), settings.gateway()));
    Ok((platform, app))
}

/// p50 of `path` on each app, in `rounds` alternating blocks of `block` requests.
async fn paired(apps: [&axum::Router; 2], path: &str, rounds: usize, block: usize) -> Result<[Duration; 2]> {
    let t = token("bench", RW);
    let mut samples: [Vec<Duration>; 2] = Default::default();
    for app in apps {
        for _ in 0..block {
            request(app, path, &t).await?;
        }
    }
    for round in 0..rounds {
        // Which goes first alternates too, so neither always runs right after the other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            for _ in 0..block {
                samples[i].push(request(apps[i], path, &t).await?);
            }
        }
    }
    Ok([percentile(&mut samples[0], 0.5), percentile(&mut samples[1], 0.5)])
}

/// `kelp-bench metering`.
pub async fn metering_section(work: &Path) -> Result<()> {
    println!(
        "\n== Usage metering and plan resolution: warm requests with them on and off (same run, alternating blocks)"
    );
    let (on, on_app) =
        serving(work, "metering-on", &[("KELP_USAGE", "true"), ("KELP_USAGE_FLUSH_SECONDS", "1")]).await?;
    let (_off, off_app) = serving(work, "metering-off", &[("KELP_USAGE", "false")]).await?;
    // Every per-request limit set (rates excepted: the off side has none either, and a
    // rate check is the rate limiter's cost, not metering's or resolution's).
    let plan = LimitSet {
        timeout_ms: Some(5000),
        memory_mb: Some(128),
        output_bytes: Some(65536),
        debug_events: Some(500),
        egress_calls: Some(8),
        egress_response_bytes: Some(1 << 20),
        storage_namespaces: Some(16),
        storage_keys_per_namespace: Some(10_000),
        storage_value_bytes: Some(65536),
        installs: Some(100),
        warm_reuse: Some(true),
        ..Default::default()
    };
    kelp_runtime::plans::put_plan(&on, "bench-plan", plan).await?;
    let applied = kelp_runtime::plans::assign(&on, "bench", Some("bench-plan")).await?;
    anyhow::ensure!(applied == 2, "the plan reached {applied} installs, not 2");

    let wat = "/api/ext/com.kelp.examples.wat-hello/hello";
    let js = "/api/ext/com.kelp.examples.js-notes/hello";
    let [wat_on, wat_off] = paired([&on_app, &off_app], wat, 20, 250).await?;
    let [js_on, js_off] = paired([&on_app, &off_app], js, 10, 40).await?;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let wat_ratio = ratio(wat_on, wat_off);
    println!(
        "  WAT warm p50: on {:>9}   off {:>9}   on/off {:.3}   (target ≤ 1.03: {})",
        us(wat_on),
        us(wat_off),
        wat_ratio,
        if wat_ratio <= 1.03 { "meets target" } else { "MISSES target" }
    );
    println!(
        "  JS warm p50:  on {:>9}   off {:>9}   on/off {:.3}   (difference {:+.1} µs)",
        us(js_on),
        us(js_off),
        ratio(js_on, js_off),
        (js_on.as_secs_f64() - js_off.as_secs_f64()) * 1e6
    );

    // What the two add, alone: resolving an install's limits, and recording a request.
    let install = on
        .installs
        .list_installs(Some("bench"), &Default::default())
        .await?
        .items
        .into_iter()
        .next()
        .context("an install")?;
    let n = 200_000u32;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(on.plan_defaults.for_install(std::hint::black_box(&install.limits)));
    }
    let resolve = started.elapsed() / n;
    let meter = on.usage.clone().context("metering is on")?;
    let counters = kelp_runtime::usage::Counters { requests: 1, wall_us: 30, ..Default::default() };
    let started = Instant::now();
    for _ in 0..n {
        meter.record("bench", &install.install_id, &install.extension_id, SystemTime::now(), &counters);
    }
    let record = started.elapsed() / n;
    println!(
        "  per request: plan resolution {:.0} ns, usage record {:.0} ns (the flush runs every second off the request path)",
        resolve.as_nanos(),
        record.as_nanos()
    );
    meter.flush().await?;
    Ok(())
}
