//! The author's loop with the installed `kelp` only, from an empty folder outside any Kelp
//! checkout: `kelp new` → `kelp build` → `kelp publish` → `kelp install` → a request through
//! a running `kelp up`, and `kelp dev` making a source edit live.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

mod common;
use common::{kelp_up_in, Up};

/// Run the real `kelp` in `cwd` against `up`; (success, stdout + stderr).
fn kelp(cwd: &Path, up: &Up, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(args)
        .env("KELP_URL", &up.base)
        .env("KELP_TOKEN", &up.token)
        .env("KELP_ADMIN_TOKEN", &up.admin_token)
        .current_dir(cwd)
        .output()
        .expect("running kelp");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

async fn get(up: &Up, path: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(format!("{}{path}", up.base)).bearer_auth(&up.token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The files under `dir`, relative and sorted.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// An empty folder that is not inside the repository (so nothing can be found by walking up).
fn empty_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    assert!(kelp_runtime::devtools::repo_root(dir.path()).is_none(), "the folder must be outside a checkout");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_an_empty_folder_new_build_publish_install_and_call_each_language() {
    let folder = empty_folder();
    let cwd = folder.path();
    let up = kelp_up_in(cwd, &[], &[]).await;
    assert!(
        !up.printed.iter().any(|l| l.starts_with("curl ")),
        "outside a checkout kelp up starts with no extensions: {:?}",
        up.printed
    );
    for (lang, greeting) in
        [("js", "Hello, demo!"), ("ts", "Hello, demo!"), ("python", "Hello, demo!"), ("wat", "hello from wat: /hello")]
    {
        let dir = format!("hello-{lang}");
        let name = format!("com.example.hello-{lang}");
        let run = |args: &[&str]| tokio::task::block_in_place(|| kelp(cwd, &up, args));
        let (ok, out) = run(&["new", &dir, "--lang", lang]);
        assert!(ok && out.contains(&name), "{out}");
        let created = files_under(&cwd.join(&dir));
        let (ok, out) = run(&["build", &dir]);
        assert!(ok, "kelp build {dir}: {out}");
        assert_eq!(files_under(&cwd.join(&dir)), created, "building leaves the project folder as it was");
        assert!(out.contains(&format!("built {name}@0.1.0 in")), "{out}");
        let (ok, out) = run(&["publish", &dir]);
        assert!(ok && out.contains(&format!("published {name}@0.1.0")), "{out}");
        let (ok, out) = run(&["install", &name]);
        assert!(ok && out.contains("installed: install id"), "{out}");
        let (status, body) = get(&up, &format!("/api/ext/{name}/hello")).await;
        assert_eq!(status, 200, "{lang}: {body}");
        assert!(body.contains(greeting), "{lang}: {body}");
        if lang != "wat" {
            // The template's storage endpoint works as generated (capabilities and CAS).
            let post = reqwest::Client::new()
                .post(format!("{}/api/ext/{name}/counter", up.base))
                .bearer_auth(&up.token)
                .send()
                .await
                .unwrap();
            assert_eq!(post.status(), 200, "{lang}: {}", post.text().await.unwrap());
            assert_eq!(get(&up, &format!("/api/ext/{name}/counter")).await.1, r#"{"hits":1}"#);
        }
        // Publishing the same version again says so without building.
        let (ok, out) = run(&["publish", &dir]);
        assert!(ok && out.contains("already published") && !out.contains("building"), "{out}");
        assert_eq!(files_under(&cwd.join(&dir)), created, "publishing leaves the project folder as it was");
        if lang == "wat" {
            // Edited code under a published version: an error that says nothing went live.
            let wat = cwd.join(&dir).join("hello.wat");
            let text = std::fs::read_to_string(&wat).unwrap();
            std::fs::write(&wat, text.replace("\"hello from wat: \"", "\"howdy from wat: \"")).unwrap();
            let (ok, out) = run(&["publish", &dir]);
            assert!(!ok, "publishing a changed source under a published version must fail: {out}");
            assert!(out.contains("requests still run the published code") && out.contains("Bump \"version\""), "{out}");
            let body = get(&up, &format!("/api/ext/{name}/hello")).await.1;
            assert!(body.contains(greeting), "the old code still answers: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_refuses_manifest_typos_before_building_and_reports_source_errors_with_their_place() {
    let folder = empty_folder();
    let cwd = folder.path();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kelp")).args(args).current_dir(cwd).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    assert!(run(&["new", "typo", "--lang", "js"]).0);
    let manifest = cwd.join("typo/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"endpoints\"", "\"endpionts\"")).unwrap();
    let (ok, out) = run(&["build", "typo"]);
    assert!(!ok && out.contains("did you mean \"endpoints\"") && !out.contains("building"), "{out}");
    std::fs::write(&manifest, text).unwrap();
    // A syntax error: file, line, column and esbuild's reason.
    let source = cwd.join("typo/src/index.js");
    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, code.replace("const encoder = new TextEncoder();", "const encoder = new TextEncoder(;"))
        .unwrap();
    let (ok, out) = run(&["build", "typo"]);
    let line = code.lines().position(|l| l.starts_with("const encoder")).unwrap() + 1;
    assert!(!ok && out.contains(&format!("src/index.js:{line}:")) && out.contains("Unexpected \";\""), "{out}");
    // An import of an interface that does not exist: where, and which ones do.
    std::fs::write(&source, code.replace("'alga:extension/logging'", "'alga:extension/loggin'")).unwrap();
    let (ok, out) = run(&["build", "typo"]);
    let line = code.lines().position(|l| l.contains("'alga:extension/logging'")).unwrap() + 1;
    assert!(
        !ok && out.contains(&format!("src/index.js:{line}:"))
            && out.contains("\"alga:extension/loggin\" is not an interface Kelp provides")
            && out.contains("alga:extension/logging, "),
        "{out}"
    );
    assert!(run(&["new", "wat-typo", "--lang", "wat"]).0);
    let wat = cwd.join("wat-typo/hello.wat");
    let text = std::fs::read_to_string(&wat).unwrap();
    std::fs::write(&wat, text.replace("\"alga:extension/logging\"", "\"alga:extension/loggin\"")).unwrap();
    let (ok, out) = run(&["build", "wat-typo"]);
    assert!(!ok && out.contains("alga:extension/loggin") && out.contains("are: alga:extension/clients, "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_dev_makes_a_source_edit_live_within_one_rebuild() {
    let folder = empty_folder();
    let cwd = folder.path();
    let up = kelp_up_in(cwd, &[], &[]).await;
    assert!(tokio::task::block_in_place(|| kelp(cwd, &up, &["new", "live", "--lang", "wat"])).0);
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["dev", "live", "--poll-ms", "100"])
        .env("KELP_URL", &up.base)
        .env("KELP_TOKEN", &up.token)
        .env("KELP_ADMIN_TOKEN", &up.admin_token)
        .current_dir(cwd)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(dev.stderr.take().unwrap()).lines();
    let mut logs = tokio::io::BufReader::new(dev.stdout.take().unwrap()).lines();
    // Each round ends with the `live:` line and then the command that calls the extension.
    let mut wait_live = async || {
        let mut live = false;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
            let line = line.expect("kelp dev went quiet").unwrap().expect("kelp dev exited");
            assert!(!line.starts_with("error"), "{line}");
            if live {
                return line;
            }
            live = line.starts_with("live: com.example.live@0.1.0-dev.");
        }
    };
    let call = wait_live().await;
    assert!(
        call.contains(&format!(
            "curl -s -H \"Authorization: Bearer $KELP_TOKEN\" {}/api/ext/com.example.live/hello",
            up.base
        )),
        "kelp dev names the URL to call: {call}"
    );
    let (status, body) = get(&up, "/api/ext/com.example.live/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello from wat: /hello"));
    // The guest's log line reaches the terminal through the debug stream.
    let logged = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = logs.next_line().await {
            if line.contains("wat hello handled a request") {
                return;
            }
        }
        panic!("kelp dev's output ended");
    })
    .await;
    assert!(logged.is_ok(), "the guest's log line was not streamed");
    // Edit the source (same length: the module's data offsets stay valid).
    let wat = cwd.join("live/hello.wat");
    let text = std::fs::read_to_string(&wat).unwrap();
    std::fs::write(&wat, text.replace("\"hello from wat: \"", "\"howdy from wat: \"")).unwrap();
    wait_live().await;
    let (status, body) = get(&up, "/api/ext/com.example.live/hello").await;
    assert_eq!((status, body.as_str()), (200, "howdy from wat: /hello"));
}
