//! The real `kelp` binary's admin commands against a running Kelp (embedded default).

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
        kelp_cmd(k, &ops, &["install", "com.kelp.examples.js-notes", "--version", "1.0.0", "--config", "greeting=Hej", "--debug-logs"])
    });
    assert!(ok, "{out}");
    let install_id = out.split("install id ").nth(1).and_then(|s| s.split_whitespace().next()).expect("install id printed").to_string();
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["config", "set", &install_id, "greeting=Moi"]));
    assert!(ok && out.contains("config_version is now 2"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, &ops, &["secrets", "set", &install_id, "api_key=1234567"]));
    assert!(ok && out.contains("secrets_version is now 1"), "{out}");
    assert!(!out.contains("1234567"), "the CLI never echoes secret values");
    let hello = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await).await;
    assert_eq!(hello["message"], "Moi, acme!");
    let secret = json_body(kelp.get("/api/ext/com.kelp.examples.js-notes/secret", &token("acme", RW)).await).await;
    assert_eq!(secret["length"], 7);
    let (ok, out) = tokio::task::block_in_place(|| kelp_cmd(k, "not-a-token", &["config", "set", &install_id, "a=b"]));
    assert!(!ok && out.contains("401"), "{out}");
}
