//! Headless Chromium (Debian's chromium, driven by playwright-core) against the real pages:
//! the debug console shows a request's log line live. Screenshots are kept as artifacts in
//! target/kelp-artifacts/.

use std::path::PathBuf;
use std::time::Duration;

use kelp_tests::*;

fn artifacts_dir() -> PathBuf {
    let dir = fixtures_dir().parent().unwrap().join("kelp-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run tools/browser/check.mjs; while the page loads, `during` runs once the page shows
/// `ready_selector`. Returns the JSON the script printed.
pub async fn browse<F, Fut>(
    url: &str,
    ready_selector: &str,
    selector: &str,
    expected: &str,
    screenshot: &str,
    during: F,
) -> serde_json::Value
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let root = repo_root();
    kelp_runtime::devtools::ensure_npm_packages(&root.join("tools/browser")).expect("npm ci in tools/browser");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (apt-get install chromium); .ci/run installs it"
    );
    let ready = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&ready).ok();
    let shot = artifacts_dir().join(screenshot);
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("tools/browser/check.mjs"))
        .args([url, selector, expected, shot.to_str().unwrap(), "30000"])
        .env("READY_FILE", &*ready)
        .env("READY_SELECTOR", ready_selector)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the page never became ready ({ready_selector})");
    during().await;
    let out = tokio::time::timeout(Duration::from_secs(45), async {
        let mut stdout = String::new();
        use tokio::io::AsyncReadExt;
        child.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
        child.wait().await.unwrap();
        stdout
    })
    .await
    .expect("browser check finished");
    let result: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("browser output: {out}"));
    assert!(shot.exists(), "screenshot kept at {}", shot.display());
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_console_shows_a_requests_log_line_live() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let t = token("acme", &["extension:read", "extension:debug"]);
    let url =
        format!("{}/api/ext-debug/console#token={t}&extension=com.kelp.examples.js-notes&autoconnect=1", kelp.base);
    let result = browse(&url, "#status.live", ".line .msg", "wrote 2 lines to stdout", "debug-console.png", || async {
        let r = kelp
            .client
            .get(format!("{}/api/ext/com.kelp.examples.js-notes/log?lines=2", kelp.base))
            .bearer_auth(token("acme", RW))
            .header("x-request-id", "console-demo-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
    assert_eq!(result["ok"], true, "{result}");
    let texts: Vec<&str> = result["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.starts_with("line 0 of 2")), "stdout lines shown: {texts:?}");
}
