//! A running `kelp up` (the real binary), shared by the CLI test files.

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use kelp_tests::*;
use tokio::io::AsyncBufReadExt;

/// A `kelp up` process and what its banner printed.
pub struct Up {
    pub base: String,
    pub token: String,
    pub admin_token: String,
    pub printed: Vec<String>,
    /// Where its stderr (its log) goes.
    pub log: std::path::PathBuf,
    pub child: tokio::process::Child,
    _data: tempfile::TempDir,
}

impl Up {
    /// GET `path` with the demo tenant's token: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r =
            reqwest::Client::new().get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Start `kelp up` in the repository root (it serves the examples).
pub async fn kelp_up(extra_args: &[&str], env: &[(String, String)]) -> Up {
    kelp_up_in(&repo_root(), extra_args, env).await
}

/// Start the real `kelp up` with `cwd` as its working directory and wait for its banner.
pub async fn kelp_up_in(cwd: &Path, extra_args: &[&str], env: &[(String, String)]) -> Up {
    let data = tempfile::tempdir().unwrap();
    let port = kelp_tests::services::free_port();
    let log = data.path().join("kelp-up.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.path().to_str().unwrap()])
        .args(extra_args)
        .envs(env.iter().cloned())
        .env("KELP_ARTIFACT_DIR", fixtures_dir().join("artifacts"))
        .env("KELP_COMPILE_CACHE_DIR", fixtures_dir().join("compile-cache"))
        .env("RUNNER_DEBUG_REDIS_STREAM_PREFIX", format!("docs-{}:", uuid::Uuid::new_v4().simple()))
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut admin_token, mut printed) = (String::new(), String::new(), String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        if let Some(rest) = line.trim().strip_prefix("Kelp is up on ") {
            base = rest.split_whitespace().next().unwrap().to_string();
        } else if let Some(t) = line.trim().strip_prefix("export KELP_TOKEN=") {
            token = t.to_string();
        } else if let Some(t) = line.trim().strip_prefix("export KELP_ADMIN_TOKEN=") {
            admin_token = t.to_string();
        } else if line.trim().starts_with("curl ")
            || line.trim().starts_with("UI: ")
            || line.trim().starts_with("debug console: ")
        {
            printed.push(line.trim().to_string());
        } else if line.contains("Ctrl-C stops") {
            break;
        }
    }
    assert!(!base.is_empty() && !token.is_empty() && !admin_token.is_empty(), "kelp up printed its banner");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Up { base, token, admin_token, printed, log, child, _data: data }
}
