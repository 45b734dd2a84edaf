//! Test support: real components built from source (cached across test processes), a real
//! Kelp gateway on a loopback port, tokens, helpers to publish and install, and the real
//! services (moto, redis-server) the AWS backends are tested against.

pub mod alga;
pub mod aws;
pub mod lambda;
pub mod services;
pub mod sse;
pub mod vault;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kelp_runtime::installs::{create_install, NewInstall};
use kelp_runtime::publish::{publish_dir, Published};
use kelp_runtime::stores::InstallRecord;
use kelp_runtime::{devtools, Platform, Settings};
use serde_json::{json, Value};

/// The development secret the bearer tokens in events/ are signed with.
pub const EVENTS_SECRET: &str = "kelp-events-dev-secret";

/// HS256 secret of every test gateway.
pub const TEST_SECRET: &str = "kelp-test-secret";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Shared fixture directory: built components and compiled artifacts survive across test
/// processes (compiling the JS component takes seconds; tests reuse it).
pub fn fixtures_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let dir = if target.is_absolute() { target } else { repo_root().join(target) }.join("kelp-fixtures");
    std::fs::create_dir_all(&dir).expect("creating the fixture dir");
    dir
}

/// Stage an example (manifest + freshly built component) under the fixture dir.
pub fn staged_example(name: &str) -> PathBuf {
    let root = repo_root();
    devtools::stage_example(&root, &root.join("examples").join(name), &fixtures_dir().join("staged"))
        .unwrap_or_else(|e| panic!("building example {name}: {e:#}"))
}

/// Stage a WAT guest: the hello example's module with `prelude` run first in `handler`,
/// under a manifest with the given name and endpoints `GET /run`.
pub fn staged_wat(name: &str, prelude: &str) -> PathBuf {
    staged_wat_with(name, "", prelude)
}

/// [`staged_wat`] with extra module-level declarations (memories, tables, ...) after the
/// module's exported memory.
pub fn staged_wat_with(name: &str, declarations: &str, prelude: &str) -> PathBuf {
    staged_wat_full(name, "", declarations, prelude)
}

/// [`staged_wat_with`] plus extra imports, placed before the module's own import (the text
/// format wants imports first).
pub fn staged_wat_full(name: &str, imports: &str, declarations: &str, prelude: &str) -> PathBuf {
    let hello = std::fs::read_to_string(repo_root().join("examples/wat-hello/hello.wat")).expect("hello.wat");
    let first_import = "(import \"alga:extension/logging\"";
    assert!(hello.contains(first_import), "hello.wat changed; update the test template");
    let hello = hello.replacen(first_import, &format!("{imports}\n  {first_import}"), 1);
    let anchor = "(call $log_info (i32.const 4240) (i32.const 27))";
    let memory = "(memory (export \"memory\") 1)";
    assert!(hello.contains(anchor) && hello.contains(memory), "hello.wat changed; update the test template");
    let wat =
        hello.replace(anchor, &format!("{anchor}\n{prelude}")).replace(memory, &format!("{memory}\n{declarations}"));
    let manifest = json!({
        "name": name, "publisher": "tests", "version": "1.0.0", "runtime": "wasm-wat@1",
        "capabilities": ["log.emit"],
        "api": {"endpoints": [{"method": "GET", "path": "/run", "handler": "handler"}]}
    });
    // Generated sources live outside the staged tree; staging copies them in.
    let sources = fixtures_dir().join("wat-sources").join(name);
    std::fs::create_dir_all(&sources).unwrap();
    write_atomic(&sources.join("guest.wat"), wat.as_bytes());
    write_atomic(&sources.join("manifest.json"), &serde_json::to_vec_pretty(&manifest).unwrap());
    let guest = devtools::GuestSources {
        manifest: &sources.join("manifest.json"),
        code: &sources.join("guest.wat"),
        world: "alga:extension/runner",
        ui: None,
    };
    devtools::stage_guest(&repo_root(), name, &guest, &fixtures_dir().join("staged-wat"))
        .unwrap_or_else(|e| panic!("staging WAT guest {name}: {e:#}"))
}

/// Write a file atomically (parallel tests stage the same fixtures).
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A staged guest copied to `restaged/<as_name>` with `edit` applied to its manifest: the same
/// component under another name, version or policy, so it compiles once.
pub fn restaged(staged: &Path, as_name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = fixtures_dir().join("restaged").join(as_name);
    devtools::copy_tree(staged, &dir).unwrap_or_else(|e| panic!("copying {}: {e:#}", staged.display()));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    edit(&mut manifest);
    write_atomic(&dir.join("manifest.json"), &serde_json::to_vec_pretty(&manifest).unwrap());
    dir
}

/// Stage a test guest from `tests/fixtures/<name>` (index.js built for the plain Alga world
/// plus its manifest and optional ui/).
pub fn staged_fixture(name: &str) -> PathBuf {
    let src = repo_root().join("tests/fixtures").join(name);
    let ui = src.join("ui");
    let guest = devtools::GuestSources {
        manifest: &src.join("manifest.json"),
        code: &src.join("index.js"),
        world: "alga:extension/runner",
        ui: ui.is_dir().then_some(ui.as_path()),
    };
    devtools::stage_guest(&repo_root(), name, &guest, &fixtures_dir().join("staged-fixtures"))
        .unwrap_or_else(|e| panic!("building fixture {name}: {e:#}"))
}

/// A Kelp gateway serving on a loopback port over a fresh embedded default.
pub struct TestKelp {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Address.
    pub addr: SocketAddr,
    /// The platform behind it.
    pub platform: Arc<Platform>,
    /// The settings it was started with.
    pub settings: Settings,
    /// HTTP client.
    pub client: reqwest::Client,
    _data: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestKelp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestKelp {
    /// Start with default test settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Start with extra environment settings.
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_env(HashMap::new(), extra).await
    }

    /// Start over the AWS backends (moto on loopback), with extra settings.
    pub async fn start_aws(extra: &[(&str, &str)]) -> Self {
        Self::start_env(aws::aws_env(&aws::moto_url()), extra).await
    }

    /// Start with a base settings map plus extra entries; AWS backends are bootstrapped
    /// (tables, bucket) when the map selects them.
    pub async fn start_env(mut env: HashMap<String, String>, extra: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        env.insert("KELP_DATA_DIR".into(), data.path().to_string_lossy().into_owned());
        env.insert("KELP_ARTIFACT_DIR".into(), fixtures_dir().join("artifacts").to_string_lossy().into_owned());
        // One incremental compilation cache for every test process: the JavaScript fixtures
        // share the engine's machine code, so each compiles mostly from the cache.
        env.insert(
            "KELP_COMPILE_CACHE_DIR".into(),
            fixtures_dir().join("compile-cache").to_string_lossy().into_owned(),
        );
        env.insert("KELP_JWT_HS256_SECRET".into(), TEST_SECRET.into());
        env.insert("KELP_POOL_INSTANCES".into(), "4".into());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::from_map(&env).expect("test settings");
        if settings.backend == kelp_runtime::config::BackendKind::Aws {
            Platform::bootstrap_aws(&settings).await.expect("bootstrapping tables and bucket");
        }
        let platform = Platform::from_settings(&settings).await.expect("platform");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let app = kelp_runtime::local::app(platform.clone(), &settings);
        let server = tokio::spawn(async move {
            kelp_runtime::local::serve(listener, app).await.expect("serve");
        });
        Self {
            base: format!("http://{addr}"),
            addr,
            platform,
            settings,
            client: reqwest::Client::new(),
            _data: data,
            server,
        }
    }

    /// The data directory (SQLite, blobs, secrets): a function binary pointed at it sees the
    /// same extensions and installs.
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// Environment for a function binary sharing this instance's state.
    pub fn function_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("KELP_DATA_DIR".to_string(), self.data_dir().to_string_lossy().into_owned()),
            ("KELP_ARTIFACT_DIR".to_string(), fixtures_dir().join("artifacts").to_string_lossy().into_owned()),
            ("KELP_JWT_HS256_SECRET".to_string(), EVENTS_SECRET.to_string()),
            // The emulator is a local invoke: HS256 is opted into as with `sam local invoke`.
            ("KELP_ALLOW_HS256".to_string(), "true".to_string()),
            // The API the events/ fixtures come from (`requestContext.apiId`).
            ("KELP_API_ID".to_string(), "abc123".to_string()),
            ("KELP_POOL_INSTANCES".to_string(), "4".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// Publish a staged directory.
    pub async fn publish(&self, dir: &Path) -> Published {
        publish_dir(&self.platform, dir).await.unwrap_or_else(|e| panic!("publishing {}: {e:#}", dir.display()))
    }

    /// Install a published version for a tenant, granting everything its manifest declares
    /// plus debug logs.
    pub async fn install(&self, published: &Published, tenant: &str, egress: &[&str]) -> InstallRecord {
        let mut granted = published.version.manifest.capabilities.clone();
        granted.push("cap:debug.logs".into());
        self.install_granting(published, tenant, granted, egress).await
    }

    /// Install a published version for a tenant with exactly the `granted` capabilities.
    pub async fn install_granting(
        &self,
        published: &Published,
        tenant: &str,
        granted: Vec<String>,
        egress: &[&str],
    ) -> InstallRecord {
        create_install(
            &self.platform,
            NewInstall {
                tenant_id: tenant.into(),
                extension_id: published.extension.id.clone(),
                version_id: published.version.id.clone(),
                config: BTreeMap::new(),
                granted,
                egress: egress.iter().map(|s| s.to_string()).collect(),
                enabled: true,
                limits: Default::default(),
            },
        )
        .await
        .expect("install")
    }

    /// `POST /v1/execute` as Alga's callers send it: the service token, and the routing
    /// headers taken from the body's context.
    pub async fn execute(&self, service_token: &str, body: &Value) -> reqwest::Response {
        let context = |field: &str| body["context"][field].as_str().unwrap_or_default().to_string();
        self.client
            .post(format!("{}/v1/execute", self.base))
            .header("x-runner-service-token", service_token)
            .header("x-alga-tenant", context("tenant_id"))
            .header("x-alga-extension", context("extension_id"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.expect("request")
    }
}

/// A token for `tenant` with `perms`, valid for an hour.
pub fn token(tenant: &str, perms: &[&str]) -> String {
    token_with(json!({"sub": "user-1", "tenant": tenant, "perms": perms}))
}

/// A token with the given claims (an `exp` an hour ahead and `user_type: internal` are added
/// unless present).
pub fn token_with(mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    }
    if claims.get("user_type").is_none() {
        claims["user_type"] = json!("internal");
    }
    kelp_runtime::auth::mint_hs256(TEST_SECRET.as_bytes(), &claims)
}

/// Read/write permissions.
pub const RW: &[&str] = &["extension:read", "extension:write"];

/// Body of a response as JSON.
pub async fn json_body(r: reqwest::Response) -> Value {
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The extension written against Alga's published SDK (`tests/fixtures/alga-sdk`): its npm
/// packages (`@alga-psa/extension-runtime`, `@alga-psa/ui-kit`, React, esbuild) installed with
/// `npm ci` into a copy under the fixture dir, its ui-kit UI bundled with esbuild, its
/// TypeScript handler built into a component; the staged directory, ready to publish.
pub fn staged_alga_sdk_extension() -> PathBuf {
    let src = repo_root().join("tests/fixtures/alga-sdk");
    let work = fixtures_dir().join("alga-sdk-src");
    devtools::copy_tree(&src, &work).expect("copying the SDK fixture");
    devtools::ensure_npm_packages(&work).expect("npm ci of Alga's SDK packages");
    let ui = work.join("ui-built");
    std::fs::create_dir_all(&ui).unwrap();
    // esbuild's own launcher: a native binary once its install step ran, else a Node script.
    let status = std::process::Command::new(work.join("node_modules/.bin/esbuild"))
        .arg(work.join("ui-src/main.tsx"))
        .args(["--bundle", "--format=iife", "--platform=browser", "--target=es2020", "--minify", "--jsx=automatic"])
        .arg(format!("--outfile={}", ui.join("main.js").display()))
        .arg("--log-level=warning")
        .status()
        .expect("running esbuild");
    assert!(status.success(), "bundling the ui-kit UI");
    std::fs::copy(work.join("ui-src/index.html"), ui.join("index.html")).unwrap();
    let guest = devtools::GuestSources {
        manifest: &work.join("manifest.json"),
        code: &work.join("src/index.ts"),
        world: "alga:extension/runner",
        ui: Some(&ui),
    };
    devtools::stage_guest(&repo_root(), "alga-sdk", &guest, &fixtures_dir().join("staged-fixtures"))
        .unwrap_or_else(|e| panic!("building the Alga SDK extension: {e:#}"))
}
