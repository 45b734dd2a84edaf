//! The Lambda section: the release gateway binary (as deployed: stripped) started under the
//! Runtime API emulator the function tests use, over a published, precompiled JS example:
//! its size, its init (spawn to first poll for an event) and its first JS request (the
//! events/ fixture), over several cold starts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use kelp_tests::lambda::{fixture, spawn_function, Emulator};
use kelp_tests::{staged_example, TestKelp};

const COLD_STARTS: usize = 5;

pub async fn lambda_section() -> Result<()> {
    println!("\n== Lambda: the release gateway binary under the Runtime API emulator");
    let Some(binary) = release_gateway() else {
        println!("  skipped: no release gateway binary (cargo build --release -p kelp-gateway)");
        return Ok(());
    };
    let size = std::fs::metadata(&binary)?.len();
    let kelp = TestKelp::start().await;
    let js = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&js, "demo", &[]).await;
    let (mut inits, mut firsts) = (Vec::new(), Vec::new());
    for _ in 0..COLD_STARTS {
        let emulator = Emulator::start().await;
        let spawned = Instant::now();
        let _gateway = spawn_function(&binary, &emulator, "kelp-gateway", &kelp.function_env(&[("RUST_LOG", "error")]));
        inits.push(emulator.wait_ready(spawned).await);
        let started = Instant::now();
        let answer = emulator.call(fixture("gateway/js-notes-hello.json")).await.json();
        firsts.push(started.elapsed());
        anyhow::ensure!(answer["statusCode"] == 200, "first request: {answer}");
    }
    let init = crate::percentile(&mut inits, 0.5);
    let first = crate::percentile(&mut firsts, 0.5);
    println!(
        "  binary {:.1} MB   init p50 {:>10}   first JS request p50 {:>10}   ({COLD_STARTS} cold starts, .cwasm on disk)",
        size as f64 / 1e6,
        crate::ms(init),
        crate::ms(first)
    );
    Ok(())
}

/// `gateway` next to this benchmark's own binary (both built by `cargo build --release`).
fn release_gateway() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let binary = exe.parent()?.join("gateway");
    binary.is_file().then_some(binary)
}
