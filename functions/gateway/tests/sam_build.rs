//! The gateway as `sam build` makes it: the real `sam build GatewayFunction` over
//! template.yaml, which runs `cargo lambda build --release --bin gateway` in the workspace and
//! packages its `bootstrap`. Built with `FunctionArchitecture=x86_64` so it runs here; the
//! template's default, arm64, is the same build cross-compiled by Zig. The package must stay
//! well under Lambda's 250 MB, and the binary must start under the Runtime API emulator and
//! serve events/ fixtures.
//!
//! Its own test binary, so the release build runs while no other test does, with its own
//! target directory: `cargo test` holds the workspace's, and cargo-lambda's flags
//! (`target-cpu`, the target triple's directory) would share nothing with the test build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kelp_tests::lambda::{fixture, spawn_function, Emulator};
use kelp_tests::*;

/// The target for a function binary; Lambda's own limit is 250 MB unzipped.
const MAX_BINARY_BYTES: u64 = 60_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_build_makes_a_lambda_sized_gateway_that_serves_events() {
    let build = tempfile::tempdir().unwrap();
    let bootstrap = sam_build("GatewayFunction", build.path());
    let size = std::fs::metadata(&bootstrap).unwrap().len();
    eprintln!("sam-built gateway: {:.1} MB ({})", size as f64 / 1e6, bootstrap.display());
    assert!(size < MAX_BINARY_BYTES, "the sam-built gateway is {size} bytes, over {MAX_BINARY_BYTES}");

    let kelp = TestKelp::start().await;
    let js = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&js, "demo", &[]).await;
    let emulator = Emulator::start().await;
    let spawned = Instant::now();
    let _gateway = spawn_function(&bootstrap, &emulator, "kelp-gateway", &kelp.function_env(&[]));
    eprintln!("sam-built gateway init: {:?}", emulator.wait_ready(spawned).await);
    let answer = emulator.call(fixture("gateway/js-notes-hello.json")).await.json();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert!(answer["body"].as_str().unwrap_or_default().contains("Hello, demo!"), "{answer}");
    let health = emulator.call(fixture("gateway/health.json")).await.json();
    assert_eq!(health["statusCode"], 200, "{health}");
}

/// cargo-lambda overrides the release profile's `lto`, `codegen-units`, `panic` and `strip`
/// wherever the workspace's `[profile.release]` leaves one out, so each must be named there
/// (above all `panic = "unwind"`: with "abort", a panic ends the Lambda sandbox instead of
/// failing one invocation).
#[test]
fn the_release_profile_names_every_setting_cargo_lambda_would_override() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let release = manifest.split("[profile.release]").nth(1).expect("a [profile.release] section");
    let release = release.split("\n[").next().unwrap();
    let keys: Vec<&str> = release
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(key, _)| key.trim()))
        .collect();
    for key in ["lto", "codegen-units", "panic", "strip"] {
        assert!(keys.contains(&key), "[profile.release] does not name `{key}`: cargo-lambda would pick it");
    }
    assert!(release.contains("panic = \"unwind\""), "a panicking invocation must not end the sandbox");
}

/// `sam build <function>` over template.yaml for x86_64 into `build_dir`, with the shared SAM
/// venv's cargo-lambda; returns the `bootstrap` SAM would upload.
fn sam_build(function: &str, build_dir: &Path) -> PathBuf {
    let venv = services::sam_venv();
    // The venv's bin first: SAM finds `cargo lambda` there, and cargo-lambda finds Zig through
    // the venv's python3.
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let started = Instant::now();
    let output = Command::new(venv.join("bin/sam"))
        .args(["build", function, "--template", "template.yaml"])
        .args(["--parameter-overrides", "FunctionArchitecture=x86_64"])
        .arg("--build-dir")
        .arg(build_dir.join("build"))
        .arg("--cache-dir")
        .arg(build_dir.join("cache"))
        .current_dir(repo_root())
        .env("PATH", path)
        .env("SAM_CLI_TELEMETRY", "0")
        .env("CARGO_TARGET_DIR", fixtures_dir().join("sam-build-target"))
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && log.contains("Build Succeeded"), "sam build {function}:\n{log}");
    assert!(log.contains("architecture: x86_64"), "sam build {function}: not the x86_64 build:\n{log}");
    eprintln!("sam build {function}: {:?}", started.elapsed());
    let bootstrap = build_dir.join("build").join(function).join("bootstrap");
    assert!(bootstrap.is_file(), "sam build {function} left no {}", bootstrap.display());
    bootstrap
}
