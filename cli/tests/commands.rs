//! The real `kelp` binary's admin and tail commands against a running Kelp (embedded
//! default).

use tokio::io::AsyncBufReadExt;

use kelp_tests::*;

fn kelp_cmd(kelp: &TestKelp, token: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .env("KELP_URL", &kelp.base)
        .env("KELP_ADMIN_TOKEN", token)
        .current_dir(repo_root())
        .output()
        .expect("running kelp");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_install_config_and_secrets_from_the_command_line() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", &["platform:publish", "platform:ops", "extension:manage"]);
    let staged = staged_example("js-notes");
    let staged = staged.to_string_lossy().into_owned();
    let k = &kelp;
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["publish", &staged]));
    assert!(ok, "{out}");
    assert!(out.contains("published com.kelp.examples.js-notes@1.0.0"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["publish", &staged]));
    assert!(ok && out.contains("already published"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        kelp_cmd(
            k,
            &ops,
            &[
                "install",
                "com.kelp.examples.js-notes",
                "--version",
                "1.0.0",
                "--config",
                "greeting=Hej",
                "--debug-logs",
            ],
        )
    });
    assert!(ok, "{out}");
    let install_id = out
        .split("install id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("install id printed")
        .to_string();
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["config", "set", &install_id, "greeting=Moi"]));
    assert!(ok && out.contains("config_version is now 2"), "{out}");
    let (ok, out) =
        tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["secrets", "set", &install_id, "api_key=1234567"]));
    assert!(ok && out.contains("secrets_version is now 1"), "{out}");
    assert!(!out.contains("1234567"), "the CLI never echoes secret values");
    let hello = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await).await;
    assert_eq!(hello["message"], "Moi, acme!");
    let secret = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/secret", &token("acme", RW)).await).await;
    assert_eq!(secret["length"], 7);
    // By extension name, merging by default: the other keys stay.
    let name = "com.kelp.examples.js-notes";
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["secrets", "set", name, "region=eu"]));
    assert!(ok && out.contains(r#"(keys: ["api_key","region"])"#), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["secrets", "unset", name, "region"]));
    assert!(ok && out.contains(r#"(keys: ["api_key"])"#), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["config", "set", name, "extra=1"]));
    assert!(ok && out.contains("config_version is now 3"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["config", "unset", name, "extra"]));
    assert!(ok && out.contains("config_version is now 4"), "{out}");
    let hello = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await).await;
    assert_eq!(hello["message"], "Moi, acme!", "greeting survived the merges");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["config", "set", name, "other=1", "--replace"]));
    assert!(ok && out.contains("config_version is now 5"), "{out}");
    let hello = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await).await;
    assert_eq!(hello["message"], "Hello, acme!", "--replace dropped the greeting");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, "not-a-token", &["config", "set", &install_id, "a=b"]));
    assert!(!ok && out.contains("401"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follows_the_stream_and_resumes_after_a_disconnect_without_duplicates() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let proxy = kelp_tests::services::FaultProxy::start(kelp.addr.port()).await;
    let hit = |rid: &'static str| {
        kelp.client
            .get(format!("{}/api/ext/com.kelp.examples.js-notes/hello", kelp.base))
            .bearer_auth(token("acme", RW))
            .header("x-request-id", rid)
            .send()
    };
    hit("tail-1").await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["tail", "com.kelp.examples.js-notes", "--stream", "log", "--url", &proxy.url()])
        .env("KELP_TOKEN", token("acme", &["extension:debug"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen: Vec<String> = Vec::new();
    assert!(read_until(&mut lines, &mut seen, "[tail-1]").await, "backlog shown");
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    hit("tail-2").await.unwrap(); // published while the tail is disconnected
    proxy.restore();
    hit("tail-3").await.unwrap();
    assert!(read_until(&mut lines, &mut seen, "[tail-3]").await, "resumed after the disconnect: {seen:?}");
    for rid in ["[tail-1]", "[tail-2]", "[tail-3]"] {
        assert_eq!(
            seen.iter().filter(|l| l.contains(rid) && l.contains("GET /hello")).count(),
            1,
            "{rid} exactly once: {seen:?}"
        );
    }
    assert!(seen.iter().all(|l| l.contains(" log ")), "--stream log filters: {seen:?}");
}

async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    want: &str,
) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        seen.push(line.clone());
        if line.contains(want) {
            return true;
        }
    }
    false
}

#[test]
fn kelp_token_refuses_a_data_dir_kelp_up_never_used() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["token", "--data-dir", empty.path().to_str().unwrap()])
        .env_remove("KELP_JWT_HS256_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success(), "no token signed with a secret no server knows");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kelp up") && err.contains("--data-dir"), "{err}");
    assert!(!empty.path().join("dev-jwt-secret").exists(), "no new secret was made");
    // With the secret kelp up wrote there, it mints.
    std::fs::write(empty.path().join("dev-jwt-secret"), "s3cret").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["token", "--data-dir", empty.path().to_str().unwrap(), "--tenant", "acme"])
        .env_remove("KELP_JWT_HS256_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
}

#[tokio::test(flavor = "multi_thread")]
async fn install_takes_the_latest_version_and_installs_are_managed_by_name_or_id() {
    let kelp = TestKelp::start().await;
    let ops = token("acme", &["platform:publish", "platform:ops", "extension:manage"]);
    let staged = staged_example("wat-hello").to_string_lossy().into_owned();
    let k = &kelp;
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["publish", &staged]));
    assert!(ok, "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["install", "com.kelp.examples.wat-hello"]));
    assert!(ok, "{out}");
    assert!(out.contains("installing com.kelp.examples.wat-hello@1.0.0 (the highest published release)"), "{out}");
    assert!(out.contains("installed: install id"), "{out}");
    assert_eq!(kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &token("acme", RW)).await.status(), 200);
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["install", "com.kelp.examples.nothing"]));
    assert!(!ok && out.contains("404"), "an unknown extension says so: {out}");

    // Managing it by name or by install id.
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["installs", "list"]));
    assert!(ok && out.contains("com.kelp.examples.wat-hello@1.0.0  acme  enabled  debug stream off"), "{out}");
    let install_id = out.split("install id ").nth(1).unwrap().trim_end_matches([')', '\n']).trim().to_string();
    let user = token("acme", RW);
    let hello = || kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &user);
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["disable", "com.kelp.examples.wat-hello"]));
    assert!(ok && out.contains("disabled"), "{out}");
    assert_eq!(hello().await.status(), 404, "a disabled install answers 404");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["enable", &install_id]));
    assert!(ok && out.contains("enabled"), "{out}");
    assert_eq!(hello().await.status(), 200);
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["debug", "on", "com.kelp.examples.wat-hello"]));
    assert!(ok && out.contains("debug stream on"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["installs", "list"]));
    assert!(ok && out.contains("debug stream on"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        kelp_cmd(k, &ops, &["upgrade", "com.kelp.examples.wat-hello", "--version", "1.0.0"])
    });
    assert!(ok && out.contains("1.0.0 → 1.0.0"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        kelp_cmd(k, &ops, &["upgrade", "com.kelp.examples.wat-hello", "--version", "9.9.9"])
    });
    assert!(!ok && out.contains("404"), "an unknown version says so: {out}");
    // "Latest" is the highest release by semver: not the last published, never a `kelp dev`
    // prerelease unless asked for.
    for version in ["1.10.0", "1.11.0-dev.1796212800000", "1.2.0"] {
        let dir = restaged(std::path::Path::new(&staged), &format!("wat-hello-{version}"), |m| {
            m["version"] = serde_json::json!(version)
        });
        kelp.publish(&dir).await;
    }
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["upgrade", "com.kelp.examples.wat-hello"]));
    assert!(ok && out.contains("1.0.0 → 1.10.0"), "{out}");
    let (ok, out) =
        tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["upgrade", "com.kelp.examples.wat-hello", "--prerelease"]));
    assert!(ok && out.contains("1.10.0 → 1.11.0-dev.1796212800000"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["uninstall", "com.kelp.examples.wat-hello"]));
    assert!(ok && out.contains("uninstalled"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["installs", "list"]));
    assert!(ok && out.contains("no installs"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["disable", "com.kelp.examples.wat-hello"]));
    assert!(!ok && out.contains("no install of"), "{out}");
}

#[test]
fn every_command_s_help_shows_an_example_and_the_top_level_help_lists_variables_and_exit_codes() {
    let kelp = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_kelp")).args(args).output().unwrap();
    let top = kelp(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout).to_string();
    assert!(text.contains("Exit codes:") && text.contains("KELP_ADMIN_TOKEN") && text.contains("XDG_CACHE_HOME"));
    let commands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 16, "{commands:?}");
    for command in commands {
        let help = kelp(&[&command, "--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains(&format!("Example:\n  kelp {command}")), "kelp {command} --help:\n{text}");
    }
    assert_eq!(kelp(&["publish"]).status.code(), Some(2), "a usage error exits 2");
}
