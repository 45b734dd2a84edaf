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
        let (status, body) = up.get(&format!("/api/ext/{name}/hello")).await;
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
            assert_eq!(up.get(&format!("/api/ext/{name}/counter")).await.1, r#"{"hits":1}"#);
        }
        if lang == "js" {
            // Uninstall keeps storage for the next install of the extension in this tenant;
            // --purge deletes it.
            let (ok, out) = run(&["uninstall", &name]);
            assert!(ok && out.contains("its storage is kept: installing it again"), "{out}");
            assert!(run(&["install", &name]).0);
            assert_eq!(up.get(&format!("/api/ext/{name}/counter")).await.1, r#"{"hits":1}"#, "kept storage found");
            let (ok, out) = run(&["uninstall", &name, "--purge"]);
            assert!(ok && out.contains("storage purged (1 entries)"), "{out}");
            assert!(run(&["install", &name]).0);
            assert_eq!(up.get(&format!("/api/ext/{name}/counter")).await.1, r#"{"hits":0}"#, "purged");
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
            let body = up.get(&format!("/api/ext/{name}/hello")).await.1;
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
    // TypeScript: the generated typings and the template pass the type-checker; a type error
    // fails `kelp build` at its place, `--no-check` builds anyway.
    assert!(run(&["new", "typed", "--lang", "ts"]).0);
    let typings = std::fs::read_to_string(cwd.join("typed/src/alga.d.ts")).unwrap();
    for module in ["alga:extension/secrets", "alga:extension/http", "alga:extension/scheduler", "kelp:extension/config"]
    {
        assert!(typings.contains(&format!("declare module '{module}'")), "{module} is typed");
    }
    let (ok, out) = run(&["build", "typed"]);
    assert!(ok && out.contains("type-checking with tsc"), "{out}");
    let ts = cwd.join("typed/src/index.ts");
    let code = std::fs::read_to_string(&ts).unwrap();
    let broken = code.replacen("status,", "status: String(status),", 1);
    assert_ne!(broken, code, "the template sets a status");
    std::fs::write(&ts, &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("status: String(status),")).unwrap() + 1;
    let (ok, out) = run(&["build", "typed"]);
    assert!(!ok && out.contains(&format!("typed/src/index.ts:{line}:")) && out.contains("error TS2322"), "{out}");
    assert!(out.contains("--no-check") && !out.contains("componentize-js"), "refused before building: {out}");
    let (ok, out) = run(&["build", "typed", "--no-check"]);
    assert!(ok && !out.contains("type-checking"), "{out}");

    // Python: a syntax error at its file, line and column, without componentize-py's Rust
    // backtrace.
    assert!(run(&["new", "snake", "--lang", "python"]).0);
    let app = cwd.join("snake/app.py");
    let code = std::fs::read_to_string(&app).unwrap();
    let broken = code.replacen("if path == \"/hello\":", "if path == \"/hello\"", 1);
    assert_ne!(broken, code);
    std::fs::write(&app, &broken).unwrap();
    let line = broken.lines().position(|l| l.trim() == "if path == \"/hello\"").unwrap() + 1;
    let column = broken.lines().nth(line - 1).unwrap().len() + 1;
    let (ok, out) = run(&["build", "snake"]);
    assert!(!ok && out.contains(&format!("snake/app.py:{line}:{column}: SyntaxError: expected ':'")), "{out}");
    assert!(!out.contains("Stack backtrace") && !out.contains("/0/"), "{out}");

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
    let mut dev = Dev::spawn(cwd, &up, "live");
    let mut logs = dev.logs.take().unwrap();
    let mut wait_live = async || dev.live("com.example.live").await;
    let (call, _) = wait_live().await;
    assert!(
        call.contains(&format!(
            "curl -s -H \"Authorization: Bearer $KELP_TOKEN\" {}/api/ext/com.example.live/hello",
            up.base
        )),
        "kelp dev names the URL to call: {call}"
    );
    let (status, body) = up.get("/api/ext/com.example.live/hello").await;
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
    let (status, body) = up.get("/api/ext/com.example.live/hello").await;
    assert_eq!((status, body.as_str()), (200, "howdy from wat: /hello"));

    // A capability added to the manifest is granted by the next round, and said so; one
    // taken out is revoked.
    let manifest = cwd.join("live/manifest.json");
    let declared = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, declared.replace(r#"["log.emit"]"#, r#"["log.emit", "storage.kv"]"#)).unwrap();
    let (_, round) = wait_live().await;
    assert!(round.iter().any(|l| l == "granted (declared by the manifest): cap:storage.kv"), "{round:?}");
    assert_eq!(granted(&up, "com.example.live").await, ["cap:debug.logs", "cap:log.emit", "cap:storage.kv"]);
    std::fs::write(&manifest, declared.replace(r#"["log.emit"]"#, r#"["storage.kv"]"#)).unwrap();
    let (_, round) = wait_live().await;
    assert!(round.iter().any(|l| l == "revoked (no longer declared): cap:log.emit"), "{round:?}");
    assert_eq!(granted(&up, "com.example.live").await, ["cap:debug.logs", "cap:storage.kv"]);
}

/// The capabilities the tenant's install of `name` holds, sorted, read through the admin API.
async fn granted(up: &Up, name: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let admin = |path: String| client.get(format!("{}{path}", up.base)).bearer_auth(&up.admin_token).send();
    let installs: serde_json::Value = admin("/admin/installs".into()).await.unwrap().json().await.unwrap();
    for install in installs["items"].as_array().unwrap() {
        let ext = install["extension_id"].as_str().unwrap();
        let extension: serde_json::Value =
            admin(format!("/admin/extensions/{ext}")).await.unwrap().json().await.unwrap();
        if extension["name"] == name {
            let mut caps: Vec<String> =
                install["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            caps.sort();
            return caps;
        }
    }
    panic!("no install of {name}")
}

/// A running `kelp dev` and its output.
struct Dev {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    logs: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
}

impl Dev {
    fn spawn(cwd: &Path, up: &Up, project: &str) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["dev", project, "--poll-ms", "100"])
            .env("KELP_URL", &up.base)
            .env("KELP_TOKEN", &up.token)
            .env("KELP_ADMIN_TOKEN", &up.admin_token)
            .current_dir(cwd)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let logs = Some(tokio::io::BufReader::new(child.stdout.take().unwrap()).lines());
        Self { _child: child, lines, logs }
    }

    /// Wait for the next round to go live. Each round ends with the `live:` line and then the
    /// command that calls the extension: (that command, the round's lines up to `live:`).
    async fn live(&mut self, name: &str) -> (String, Vec<String>) {
        let mut live = false;
        let mut round = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(180), self.lines.next_line()).await;
            let line = line.expect("kelp dev went quiet").unwrap().expect("kelp dev exited");
            assert!(!line.starts_with("error"), "{line}\n{round:?}");
            if live {
                return (line, round);
            }
            live = line.starts_with(&format!("live: {name}@0.1.0-dev."));
            round.push(line);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelp_dev_runs_javascript_typescript_and_python_edits_without_componentizing_them() {
    let folder = empty_folder();
    let cwd = folder.path();
    let up = kelp_up_in(cwd, &[], &[]).await;
    for (lang, file, greeting) in [
        ("js", "src/index.js", "`Hello, ${ctx.tenantId}!`"),
        ("ts", "src/index.ts", "`Hello, ${ctx.tenantId}!`"),
        ("python", "app.py", "f\"Hello, {ctx.tenant_id}!\""),
    ] {
        let project = format!("fast-{lang}");
        let name = format!("com.example.{project}");
        assert!(tokio::task::block_in_place(|| kelp(cwd, &up, &["new", &project, "--lang", lang])).0);
        let mut dev = Dev::spawn(cwd, &up, &project);
        let (_, first) = dev.live(&name).await;
        let (status, body) = up.get(&format!("/api/ext/{name}/hello")).await;
        assert_eq!(status, 200, "{lang}: {body}");
        assert!(body.contains("Hello, demo!"), "{lang}: {body}");
        // The edit goes live without componentize: the round names its stages, and the
        // staged version carries the source for kelp dev's loader.
        let source = cwd.join(&project).join(file);
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(text.contains(greeting), "{lang}: the template greets");
        std::fs::write(&source, text.replace(greeting, &greeting.replace("Hello", "Howdy"))).unwrap();
        let (_, round) = dev.live(&name).await;
        let live = round.last().unwrap();
        assert!(live.contains("s after the change: build ") && live.contains(", publish "), "{live}");
        assert!(
            !round
                .iter()
                .chain(&first)
                .any(|l| l.contains("with esbuild and componentize") || l.contains("with componentize-py")),
            "{lang}: {first:?} {round:?}"
        );
        let (status, body) = up.get(&format!("/api/ext/{name}/hello")).await;
        assert_eq!(status, 200, "{lang}: {body}");
        assert!(body.contains("Howdy, demo!"), "{lang}: the edited code answers: {body}");
        let staged = std::fs::read_to_string(cwd.join(".kelp/dev").join(&project).join("manifest.json")).unwrap();
        assert!(staged.contains("\"devSource\": \"dev/source."), "{lang}: {staged}");

        // An exception: 500 extension_exception, and the debug stream (which kelp dev prints)
        // names the author's file and line, not the bundle's or the loader's.
        let (raise, place) = match lang {
            "python" => ("raise ValueError(\"no greeting today\")", "app.py"),
            "ts" => ("throw new Error('no greeting today');", "src/index.ts"),
            _ => ("throw new Error('no greeting today');", "src/index.js"),
        };
        let edited = std::fs::read_to_string(&source).unwrap();
        let greeting_line = edited.lines().position(|l| l.contains("Howdy")).unwrap();
        let indent: String =
            edited.lines().nth(greeting_line).unwrap().chars().take_while(|c| c.is_whitespace()).collect();
        let mut lines: Vec<String> = edited.lines().map(str::to_string).collect();
        lines.insert(greeting_line, format!("{indent}{raise}"));
        std::fs::write(&source, lines.join("\n") + "\n").unwrap();
        dev.live(&name).await;
        let (status, body) = up.get(&format!("/api/ext/{name}/hello")).await;
        assert_eq!(status, 500, "{lang}: {body}");
        assert!(body.contains("extension_exception"), "{lang}: {body}");
        let expected = format!("no greeting today (at {place}:{}", greeting_line + 1);
        let mut logs = dev.logs.take().unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = logs.next_line().await {
                let done = line.contains("execution failed: uncaught exception");
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        })
        .await
        .expect("the failure reached kelp dev's terminal");
        let failed = seen.last().unwrap();
        assert!(failed.contains(&expected), "{lang}: expected {expected:?} in {failed}\n{seen:#?}");
        for noise in ["panicked", "kelp_dev_loader", "dev-loader.js", "> Function"] {
            assert!(seen.iter().all(|l| !l.contains(noise)), "{lang}: {noise} shown: {seen:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_after_an_upgrade_drops_what_the_new_version_no_longer_declares() {
    let folder = empty_folder();
    let cwd = folder.path();
    let up = kelp_up_in(cwd, &[], &[]).await;
    let run = |args: &[&str]| tokio::task::block_in_place(|| kelp(cwd, &up, args));
    assert!(run(&["new", "caps", "--lang", "wat"]).0);
    let manifest = cwd.join("caps/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace(r#"["log.emit"]"#, r#"["log.emit", "storage.kv"]"#)).unwrap();
    assert!(run(&["publish", "caps"]).0);
    assert!(run(&["install", "com.example.caps"]).0);
    std::fs::write(
        &manifest,
        text.replace(r#"["log.emit"]"#, r#"["storage.kv", "secrets.get"]"#).replace("\"0.1.0\"", "\"0.2.0\""),
    )
    .unwrap();
    assert!(run(&["publish", "caps"]).0);
    let (ok, out) = run(&["upgrade", "com.example.caps", "--version", "0.2.0"]);
    assert!(ok, "{out}");
    // The upgrade kept cap:log.emit, which 0.2.0 no longer declares: a grant drops it rather
    // than being refused for it.
    let (ok, out) = run(&["grant", "com.example.caps", "secrets.get"]);
    assert!(ok, "{out}");
    assert!(out.contains("dropping grants com.example.caps@0.2.0 no longer declares: cap:log.emit"), "{out}");
    assert!(out.contains("granted cap:secrets.get; it holds cap:secrets.get, cap:storage.kv"), "{out}");
}
