//! `kelp up`: the whole of Kelp in one local process on the embedded default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Args;
use kelp_runtime::installs::{create_install, set_config, set_secrets, NewInstall};
use kelp_runtime::{devtools, publish, Platform};
use serde_json::json;
use sha2::Digest as _;

/// Permissions of the demo operator token (publish, any tenant, grants, audit).
pub const OPERATOR_PERMS: &[&str] = &["platform:publish", "platform:ops", "extension:manage", "extension:debug"];

/// Permissions of the demo token.
pub const DEMO_PERMS: &[&str] = &["extension:read", "extension:write", "extension:debug", "extension:manage"];

/// Options of `kelp up`.
#[derive(Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory (SQLite, blobs, secrets, artifacts).
    #[arg(long, default_value = ".kelp")]
    data_dir: PathBuf,
    /// Directory of extension projects to build, publish and install for the demo tenant
    /// (default: ./examples when there is one; outside a Kelp checkout there is none, and
    /// `kelp up` starts empty).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Demo tenant.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Skip publishing the examples.
    #[arg(long)]
    no_examples: bool,
    /// Use the AWS backends (DynamoDB, S3, Secrets Manager) as the environment configures
    /// them (AWS_ENDPOINT_URL for moto, KELP_TABLE_*, KELP_BUCKET); missing tables and the
    /// bucket are created. Meant for moto or a development account.
    #[arg(long)]
    aws: bool,
    /// Publish debug events to this Redis (and share rate limits through it).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

/// The local HS256 signing secret: `KELP_JWT_HS256_SECRET`, or one generated once per data
/// directory.
pub fn dev_secret(data_dir: &Path) -> Result<String> {
    if let Ok(s) = std::env::var("KELP_JWT_HS256_SECRET") {
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let path = data_dir.join("dev-jwt-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    std::fs::write(&path, &secret)?;
    Ok(secret)
}

/// The signing secret `kelp up` uses for `data_dir`, for `kelp token`: never a new one (a
/// token signed with a secret no server knows would only fail later, as InvalidSignature).
pub fn existing_dev_secret(data_dir: &Path) -> Result<String> {
    if let Ok(s) = std::env::var("KELP_JWT_HS256_SECRET") {
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let path = data_dir.join("dev-jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(_) => anyhow::bail!(
            "{} holds no signing secret: `kelp up` has not run with --data-dir {} (run kelp token from the folder \
             kelp up runs in, pass its --data-dir, or set KELP_JWT_HS256_SECRET to the server's secret)",
            path.display(),
            data_dir.display()
        ),
    }
}

/// A 24-hour development token.
pub fn mint(secret: &str, tenant: &str, sub: &str, perms: &[String]) -> String {
    let claims = json!({
        "sub": sub,
        "tenant": tenant,
        "email": format!("{sub}@example.com"),
        "name": "Demo User",
        "user_type": "internal",
        "perms": perms,
        "exp": chrono::Utc::now().timestamp() + 24 * 3600,
    });
    kelp_runtime::auth::mint_hs256(secret.as_bytes(), &claims)
}

/// Run `kelp up`.
pub async fn run(args: UpArgs) -> Result<()> {
    let secret = dev_secret(&args.data_dir)?;
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    env.insert("KELP_DATA_DIR".into(), args.data_dir.to_string_lossy().into_owned());
    env.insert("KELP_JWT_HS256_SECRET".into(), secret.clone());
    env.entry("KELP_CORS_ORIGINS".into()).or_insert_with(|| format!("http://{}", args.listen));
    // A browser loads an iframe UI without an Authorization header: locally the
    // content-addressed asset URLs are public (see docs/ui-assets.md).
    env.entry("KELP_UI_PUBLIC".into()).or_insert_with(|| "true".into());
    // The UI links in the banner carry UI tokens: valid for a working day here, not 15 minutes.
    env.entry("KELP_UI_TOKEN_TTL_SECS".into()).or_insert_with(|| "43200".into());
    if args.aws {
        env.insert("KELP_BACKEND".into(), "aws".into());
        env.entry("KELP_BUCKET".into()).or_insert_with(|| "kelp-local".into());
    }
    if let Some(url) = &args.redis {
        env.insert("RUNNER_DEBUG_REDIS_URL".into(), url.clone());
    }
    let settings = kelp_runtime::wiring::settings_reading_secret_arns(env.clone()).await?;
    if args.aws {
        Platform::bootstrap_aws(&settings).await.context("creating the tables and bucket")?;
    }
    let backend = if args.aws { "AWS backends" } else { "embedded default: SQLite, local files" };
    let bus = if settings.redis.is_some() { "Redis debug bus" } else { "in-process debug bus" };
    let platform = Platform::from_settings(&settings).await?;

    let mut installed = Vec::new();
    let examples = match &args.examples {
        Some(dir) => Some(dir.clone()),
        None => Some(PathBuf::from("examples")).filter(|d| d.is_dir()),
    };
    match examples {
        Some(dir) if !args.no_examples => installed = seed_examples(&platform, &args, &dir).await?,
        _ => {}
    }
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let app = kelp_runtime::local::app(platform.clone(), &settings);
    let base = format!("http://{}", listener.local_addr()?);
    let token = mint(&secret, &args.tenant, "demo-user", &DEMO_PERMS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let admin_token =
        mint(&secret, &args.tenant, "demo-operator", &OPERATOR_PERMS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let demo_user = kelp_runtime::auth::Identity {
        sub: "demo-user".into(),
        tenant: args.tenant.clone(),
        perms: DEMO_PERMS.iter().map(|s| s.to_string()).collect(),
        user_type: "internal".into(),
        ..Default::default()
    };
    for ext in &mut installed {
        if let Some(ui) = &ext.ui_path {
            // What a host page does: the iframe gets a token of its own extension only.
            ext.ui_path = Some(format!("{ui}#token={}", platform.ui_tokens.mint(&demo_user, &ext.extension_id)));
        }
    }
    print_banner(&base, &token, &admin_token, &installed, &format!("{backend}, {bus}"));
    // Ctrl-C or SIGTERM: stop accepting, give requests in flight a moment, then exit. Debug
    // sessions last up to 15 minutes, so waiting for every connection would hang the stop.
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = kelp_runtime::local::serve(listener, app).with_graceful_shutdown({
        let stop = stop.clone();
        async move { stop.notified().await }
    });
    tokio::select! {
        served = server => served?,
        signal = shutdown_signal() => {
            println!("\n{signal}: stopping (open connections get {} ms)", SHUTDOWN_GRACE.as_millis());
            stop.notify_one();
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    }
    // Usage counted since the last flush (at most two seconds' worth) is written, not lost.
    if let Some(meter) = &platform.usage {
        if let Err(e) = meter.flush().await {
            eprintln!("usage of the last seconds could not be written: {e}");
        }
    }
    Ok(())
}

/// How long requests in flight (and debug viewers) get after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The first of Ctrl-C (SIGINT) and SIGTERM, by name.
async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

struct Installed {
    name: String,
    extension_id: String,
    sample_paths: Vec<String>,
    /// `/ext-ui/{name}/{hash}/` when the version has a UI (then with `#token=` a UI token).
    ui_path: Option<String>,
}

async fn seed_examples(platform: &Arc<Platform>, args: &UpArgs, examples: &Path) -> Result<Vec<Installed>> {
    let root = devtools::toolchain::root()?;
    // Built examples are kept in the user's cache, per examples directory, so a new data
    // directory (every test, every fresh `kelp up`) does not rebuild unchanged sources.
    let examples_path = std::path::absolute(examples)?;
    let key = &hex::encode(sha2::Sha256::digest(examples_path.to_string_lossy().as_bytes()))[..16];
    let staging = devtools::toolchain::cache_dir()?.join("staging").join(key);
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(examples)
        .with_context(|| format!("reading {}", examples.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let staged = match devtools::stage_example(&root, &dir, &staging) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(example = %dir.display(), error = %format!("{e:#}"), "skipping example that failed to build");
                continue;
            }
        };
        println!("publishing {} (first run compiles it; later runs reuse the artifact)...", dir.display());
        let published = publish::publish_dir(platform, &staged).await?;
        let manifest = &published.version.manifest;
        let existing = platform.installs.find_install(&args.tenant, &published.extension.id).await?;
        let install = match existing {
            Some(i) if i.version_id == published.version.id => i,
            Some(i) => {
                // A newer example build: move the demo install to it.
                let v = published.version.id.clone();
                kelp_runtime::installs::update_install(platform, &args.tenant, &i.install_id, |r| {
                    r.version_id = v;
                    Ok(())
                })
                .await?
            }
            None => {
                let mut granted = manifest.capabilities.clone();
                granted.push("cap:debug.logs".into());
                create_install(
                    platform,
                    NewInstall {
                        tenant_id: args.tenant.clone(),
                        extension_id: published.extension.id.clone(),
                        version_id: published.version.id.clone(),
                        config: BTreeMap::new(),
                        granted,
                        egress: vec!["example.com".into()],
                        enabled: true,
                        limits: Default::default(),
                    },
                )
                .await?
            }
        };
        if install.config.is_empty() {
            let config = BTreeMap::from([("greeting".to_string(), "Hello from kelp up".to_string())]);
            set_config(platform, &args.tenant, &install.install_id, config).await?;
        }
        if install.secrets_ref.is_none() && manifest.capabilities.iter().any(|c| c == "cap:secrets.get") {
            let secrets = BTreeMap::from([("api_key".to_string(), "demo-api-key-123".to_string())]);
            set_secrets(platform, &args.tenant, &install.install_id, &secrets, None).await?;
        }
        let sample_paths = manifest
            .endpoints()
            .iter()
            .filter(|e| e.method == "GET" && !e.path.contains(':'))
            .map(|e| e.path.clone())
            .take(4)
            .collect();
        let ui_path = manifest.ui.as_ref().map(|_| {
            format!("/ext-ui/{}/{}/", manifest.name, published.version.content_hash.trim_start_matches("sha256:"))
        });
        out.push(Installed {
            name: manifest.name.clone(),
            extension_id: published.extension.id.clone(),
            sample_paths,
            ui_path,
        });
    }
    Ok(out)
}

/// How to run this `kelp` again: its name when it was started from `PATH`, else the cargo
/// command for the same (release) build, so printed commands work when pasted.
fn kelp_command() -> String {
    let invoked = std::env::args().next().unwrap_or_default();
    let from_path = !invoked.contains('/');
    if from_path {
        "kelp".into()
    } else if invoked.contains("/release/") {
        "cargo run --release -p kelp-cli --".into()
    } else if invoked.contains("/debug/") {
        "cargo run -p kelp-cli --".into()
    } else {
        invoked
    }
}

fn print_banner(base: &str, token: &str, admin_token: &str, installed: &[Installed], backends: &str) {
    println!("\nKelp is up on {base} ({backends})\n");
    println!("  export KELP_URL={base}");
    println!("  export KELP_TOKEN={token}");
    println!("  export KELP_ADMIN_TOKEN={admin_token}\n");
    if installed.is_empty() {
        let kelp = kelp_command();
        println!("  No extensions yet. In another terminal, with the three exports above:");
        println!("    {kelp} new hello --lang js && {kelp} dev hello");
    }
    for ext in installed {
        println!("  {}:", ext.name);
        for path in &ext.sample_paths {
            println!("    curl -s -H \"Authorization: Bearer $KELP_TOKEN\" {base}/api/ext/{}{path}", ext.name);
        }
        if let Some(ui) = &ext.ui_path {
            println!("    UI: {base}{ui}");
        }
    }
    println!(
        "\n  debug console: {base}/api/ext-debug/console#token={token}&autoconnect=1&extension={}",
        installed.first().map(|e| e.name.as_str()).unwrap_or("")
    );
    println!("  follow logs:   {} tail <extension>   (uses KELP_URL and KELP_TOKEN)", kelp_command());
    println!("\n  admin API: curl -s -H \"Authorization: Bearer $KELP_ADMIN_TOKEN\" {base}/admin/installs");
    println!("  health: curl -s {base}/healthz\n  Ctrl-C stops.\n");
}
