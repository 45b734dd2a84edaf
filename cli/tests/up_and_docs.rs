//! `kelp up` as users run it (the real binary, with `--redis`), the commands it prints, and
//! every `sh` block of docs/*.md executed against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kelp_tests::*;

mod common;
use common::{kelp_up, Up};

/// Send `signal` to `kelp up` while a debug viewer holds a stream open; how long it took to
/// exit.
async fn stop_with_a_viewer_attached(up: &mut Up, signal: &str) -> Duration {
    let viewer = reqwest::Client::new()
        .get(format!("{}/api/ext-debug/stream?extensionId=com.kelp.examples.js-notes", up.base))
        .bearer_auth(&up.token)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status(), 200, "a viewer is attached");
    let pid = up.child.id().expect("running").to_string();
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let exited = tokio::time::timeout(Duration::from_secs(10), up.child.wait()).await;
    assert!(exited.is_ok(), "kelp up did not stop after {signal} with a viewer attached");
    drop(viewer);
    started.elapsed()
}

fn bash(script: &str, up: &Up) -> std::process::Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kelp")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    std::process::Command::new("bash")
        .args(["-eu", "-c", script])
        .env("KELP_URL", &up.base)
        .env("KELP_TOKEN", &up.token)
        .env("KELP_ADMIN_TOKEN", &up.admin_token)
        .env("PATH", path)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

/// The fenced blocks of `lang` in a markdown file.
fn blocks(path: &Path, lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```") && fence.trim_start_matches('`').trim() == lang => {
                current = Some(String::new())
            }
            Some(body) if fence.starts_with("```") => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line.strip_prefix("   ").filter(|_| line.starts_with("   ")).unwrap_or(line));
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_up_serves_the_examples_and_every_documented_command_works() {
    let redis = kelp_tests::services::shared_redis();
    let up = kelp_up(&["--redis", &redis], &[]).await;
    // The commands kelp up prints work as printed.
    let curls: Vec<&String> = up.printed.iter().filter(|l| l.starts_with("curl ")).collect();
    assert!(curls.len() >= 5, "{:?}", up.printed);
    for line in curls {
        let out = bash(&format!("{line} -f -o /dev/null -w '%{{http_code}}'"), &up);
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && code.starts_with('2'),
            "{line} → {code} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ui = up.printed.iter().find_map(|l| l.strip_prefix("UI: ")).expect("a UI URL is printed");
    let page = reqwest::get(ui.split('#').next().unwrap()).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<h1>Notes</h1>"));

    // Every `sh` block of the docs.
    let docs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        v.sort();
        v
    };
    let mut ran = 0;
    for doc in &docs {
        for block in blocks(doc, "sh") {
            let out = bash(&block, &up);
            assert!(
                out.status.success(),
                "{}: this block failed:\n{block}\nstdout:\n{}\nstderr:\n{}",
                doc.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 15, "only {ran} documented blocks ran: were the fences renamed?");

    // SIGTERM stops it within a second, even with a debug session open (they last 15 min).
    let mut up = up;
    let took = stop_with_a_viewer_attached(&mut up, "-TERM").await;
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_up_runs_on_the_aws_backends_against_moto() {
    let env: Vec<(String, String)> = kelp_tests::aws::aws_env(&kelp_tests::aws::moto_url())
        .into_iter()
        .filter(|(k, _)| k != "KELP_BACKEND")
        .collect();
    let mut up = kelp_up(&["--aws"], &env).await;
    let out = bash(
        &format!(
            "curl -s -H \"Authorization: Bearer $KELP_TOKEN\" {}/api/ext/com.kelp.examples.js-notes/hello",
            up.base
        ),
        &up,
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("Hello from kelp up, demo!"), "{body}");
    // The install, its config and its secret envelope live in DynamoDB and Secrets Manager.
    let settings = kelp_runtime::Settings::from_map(&env.iter().cloned().collect()).unwrap();
    let backends = kelp_runtime::platform::Backends::aws(&settings).await.unwrap();
    let installs = backends.installs.list_installs(Some("demo"), &Default::default()).await.unwrap();
    assert_eq!(installs.items.len(), 3, "the three examples are installed in DynamoDB");
    let js = installs.items.iter().find(|i| i.secrets_ref.is_some()).expect("the JS example has secrets");
    assert!(
        backends.secrets.fetch(js.secrets_ref.as_ref().unwrap()).await.is_ok(),
        "its envelope is in Secrets Manager"
    );
    // Ctrl-C (SIGINT) too.
    let took = stop_with_a_viewer_attached(&mut up, "-INT").await;
    assert!(took < Duration::from_secs(2), "Ctrl-C took {took:?}");
}
