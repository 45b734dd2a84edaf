//! The CLI traps an author met with only the installed `kelp` (issue 27), and the guest
//! contract at hand, through the real binary: each failure ends with a message that names the
//! fix, never a panic.

use kelp_tests::services::free_port;

mod common;
use common::kelp_up;

fn kelp(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"));
    command.args(args).envs(env.iter().copied());
    for var in remove {
        command.env_remove(var);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_their_fix_and_a_closed_pipe_is_not_a_panic() {
    let up = kelp_up(&[], &[]).await;
    let env = [("KELP_URL", up.base.as_str()), ("KELP_ADMIN_TOKEN", up.admin_token.as_str())];

    // `kelp installs list | true`: the reader is gone before kelp writes.
    let dir = tempfile::tempdir().unwrap();
    let stderr_file = dir.path().join("stderr");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("\"$KELP\" installs list 2>{} | true", stderr_file.display()))
        .env("KELP", env!("CARGO_BIN_EXE_kelp"))
        .envs(env.iter().copied())
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(!stderr.contains("panicked"), "a closed pipe made kelp panic:\n{stderr}");
    let (code, stdout, _) = kelp(&["installs", "list"], &env, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("com.kelp.examples.wat-hello"), "{stdout}");

    // kelp up's log names the extension a request ran, not only its registry id.
    assert_eq!(up.get("/api/ext/com.kelp.examples.wat-hello/hello").await.0, 200);
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&up.log).unwrap();
        if log.contains("execution") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = log.lines().find(|l| l.contains("execution")).unwrap_or_else(|| panic!("no execution line:\n{log}"));
    assert!(line.contains("name=com.kelp.examples.wat-hello") && line.contains("semver="), "{line}");

    // The same request, and a refused one, in kelp up's /metrics (Prometheus text).
    assert_eq!(up.get("/api/ext/com.kelp.examples.wat-hello/nope").await.0, 404);
    let metrics = reqwest::get(format!("{}/metrics", up.base)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = metrics.text().await.unwrap();
    for line in [
        "kelp_requests_total{extension=\"com.kelp.examples.wat-hello\",outcome=\"ok\"} ",
        "kelp_requests_total{extension=\"com.kelp.examples.wat-hello\",outcome=\"policy_denied\"} 1",
        "kelp_refusals_total{code=\"endpoint_not_found\"} 1",
        "kelp_request_duration_milliseconds_count{extension=\"com.kelp.examples.wat-hello\"} ",
        "kelp_module_cache_loads_total{tier=\"",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line:?} missing from /metrics:\n{text}");
    }

    // No token: say which variable to set, not clap's `--token`.
    let (code, _, stderr) = kelp(&["installs", "list"], &[("KELP_URL", up.base.as_str())], &["KELP_ADMIN_TOKEN"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("KELP_ADMIN_TOKEN") && stderr.contains("kelp up prints it"), "{stderr}");

    // Nothing listening: ask whether kelp up runs there.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, _, stderr) =
        kelp(&["installs", "list"], &[("KELP_URL", nowhere.as_str()), ("KELP_ADMIN_TOKEN", "t")], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&nowhere) && stderr.contains("is `kelp up` running there?"), "{stderr}");

    // Installing what the tenant has: the 409, then the command that does what was meant.
    let (code, _, stderr) = kelp(&["install", "com.kelp.examples.wat-hello"], &env, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("409"), "{stderr}");
    assert!(stderr.contains("`kelp upgrade com.kelp.examples.wat-hello --version"), "{stderr}");

    // Following a stream that is off: the command that switches it on, then it follows.
    let wat = "com.kelp.examples.wat-hello";
    assert_eq!(kelp(&["debug", "off", wat], &env, &[]).0, 0);
    let viewer = [("KELP_URL", up.base.as_str()), ("KELP_TOKEN", up.token.as_str())];
    let (code, _, stderr) = kelp(&["tail", wat], &viewer, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("debug stream is off") && stderr.contains(&format!("`kelp debug on {wat}`")), "{stderr}");

    // Grants: revoke and grant back what the manifest declares; an undeclared one is refused
    // with the way to get it.
    let (code, stdout, stderr) = kelp(&["revoke", wat, "log.emit"], &env, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("revoked cap:log.emit; it holds nothing"), "{stdout}");
    let (code, stdout, _) = kelp(&["revoke", wat, "log.emit"], &env, &[]);
    assert!(code == 0 && stdout.contains("nothing revoked (already so)"), "{stdout}");
    let (code, stdout, stderr) = kelp(&["grant", wat, "log.emit"], &env, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("granted cap:log.emit; it holds cap:log.emit"), "{stdout}");
    let (code, _, stderr) = kelp(&["grant", wat, "secrets.get"], &env, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("400")
            && stderr.contains("cap:secrets.get is not declared")
            && stderr.contains("add it to manifest.json"),
        "{stderr}"
    );
    let (code, _, stderr) = kelp(&["grant", wat, "secret.get"], &env, &[]);
    assert!(code == 1 && stderr.contains("unknown capability \"secret.get\""), "{stderr}");
}

#[test]
fn the_guest_contract_is_printed_and_written_by_the_installed_binary() {
    let (code, stdout, _) = kelp(&["wit"], &[], &[]);
    assert_eq!(code, 0);
    for needle in ["package alga:extension", "interface secrets", "interface http", "world runner", "interface config"]
    {
        assert!(stdout.contains(needle), "kelp wit lacks {needle}");
    }
    let (code, stdout, _) = kelp(&["wit", "--ts"], &[], &[]);
    assert_eq!(code, 0);
    for needle in [
        "declare module 'alga:extension/secrets'",
        "export function fetch(request: HttpRequest): HttpResponse;",
        "declare module 'kelp:extension/config'",
        "export function getUser(): UserDataV2;",
    ] {
        assert!(stdout.contains(needle), "kelp wit --ts lacks {needle}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wit");
    let (code, stdout, stderr) = kelp(&["wit", "--out", out.to_str().unwrap()], &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("deps/alga/extension.wit"), "{stdout}");
    let root = kelp_tests::repo_root();
    for file in ["kelp.wit", "deps/alga/extension.wit"] {
        assert_eq!(
            std::fs::read_to_string(out.join(file)).unwrap(),
            std::fs::read_to_string(root.join("wit").join(file)).unwrap(),
            "{file} as the repository has it"
        );
    }
}
