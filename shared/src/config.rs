//! Settings from the environment, and the one resolver that names every backend.
//!
//! Every variable the runtime reads is listed in [`KNOWN_VARS`] (and documented in
//! docs/runtime-reference.md); an unknown `KELP_*` variable is reported at start-up so a
//! typo does not silently fall back to a default.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::egress::EgressSettings;
use crate::engine::EngineSettings;
use crate::executor::ExecLimits;
use crate::redact::Secret;
use crate::storage::KvLimits;

/// Every environment variable Kelp reads.
pub const KNOWN_VARS: &[&str] = &[
    "KELP_DATA_DIR",
    "KELP_ARTIFACT_DIR",
    "KELP_JWT_HS256_SECRET",
    "KELP_ALLOW_HS256",
    "KELP_JWT_RS256_PUBLIC_KEY",
    "KELP_JWT_JWKS",
    "KELP_JWT_ISSUER",
    "KELP_JWT_AUDIENCE",
    "KELP_CORS_ORIGINS",
    "KELP_API_ID",
    "KELP_RUNNER_SERVICE_TOKEN",
    "KELP_RUNNER_SERVICE_TOKEN_ARN",
    "KELP_HOST_API_SECRET_ARN",
    "KELP_ALGA_AUTH_KEY_ARN",
    "KELP_JWT_JWKS_URL",
    "KELP_RUNNER_AUTH",
    "KELP_RUNNER_VPC_ENDPOINT_IDS",
    "KELP_RUNNER_TRUSTED_NETWORKS",
    "KELP_RUNNER_EGRESS_ALLOW",
    "KELP_EGRESS_POLICY",
    "EXT_EGRESS_ALLOWLIST",
    "KELP_EXEC_TIMEOUT_MS",
    "KELP_EXEC_MAX_TIMEOUT_MS",
    "KELP_MAX_MEMORY_MB",
    "KELP_FUEL",
    "KELP_MAX_OUTPUT_BYTES",
    "KELP_MAX_DEBUG_EVENTS",
    "KELP_MAX_BODY_BYTES",
    "KELP_RATE_BURST",
    "KELP_RATE_PER_SEC",
    "KELP_EGRESS_TIMEOUT_MS",
    "KELP_EGRESS_MAX_RESPONSE_BYTES",
    "KELP_EGRESS_MAX_CALLS",
    "KELP_EGRESS_ALLOW_LOOPBACK",
    "KELP_POOLING",
    "KELP_POOL_INSTANCES",
    "KELP_POOL_KEEP_RESIDENT_MB",
    "KELP_CACHE_MAX_ENTRIES",
    "KELP_CACHE_MAX_MB",
    "KELP_ARTIFACT_FETCH_CONCURRENCY",
    "KELP_ARTIFACT_DIR_MAX_MB",
    "KELP_COMPILE_CACHE_DIR",
    "KELP_METRICS_EMF",
    "KELP_SECRETS_TTL_SECS",
    "KELP_SECRETS_FILE",
    "KELP_VAULT_ADDR",
    "KELP_VAULT_TOKEN",
    "KELP_VAULT_TOKEN_FILE",
    "KELP_VAULT_TOKEN_SECRET_ARN",
    "KELP_VAULT_NAMESPACE",
    "KELP_VAULT_TRANSIT_MOUNT",
    "KELP_VAULT_TIMEOUT_MS",
    "KELP_AUDIT_EXECUTIONS",
    "KELP_INSTANCE_REUSE",
    "KELP_LOG_FORMAT",
    "KELP_ADMIN_MAX_BODY_BYTES",
    "KELP_PUBLISH_DEADLINE_MS",
    "KELP_HOST_API_URL",
    "KELP_HOST_API_SECRET",
    "KELP_HOST_API_TIMEOUT_MS",
    "KELP_HOST_API_PROTOCOL",
    "KELP_UI_PROXY_BASE_URL",
    "KELP_UI_PROXY_TIMEOUT_MS",
    "KELP_DEBUG_SESSION_MAX_SECS",
    "KELP_DEBUG_HEARTBEAT_SECS",
    "EXT_DEBUG_SSE_TAIL_COUNT",
    "KELP_UI_PUBLIC",
    "KELP_UI_MAX_FILE_BYTES",
    "KELP_UI_CSP",
    "KELP_UI_FRAME_ANCESTORS",
    "KELP_UI_SANDBOX",
    "KELP_UI_TOKEN_SECRET",
    "KELP_UI_TOKEN_SECRET_ARN",
    "KELP_UI_TOKEN_TTL_SECS",
    "KELP_UI_DOMAIN_ROOT",
    "KELP_ALGA_REGISTRY_URL",
    "KELP_ALGA_AUTH_KEY",
    "KELP_BACKEND",
    "KELP_TABLE_REGISTRY",
    "KELP_TABLE_INSTALLS",
    "KELP_TABLE_STORAGE",
    "KELP_TABLE_AUDIT",
    "KELP_TABLE_USAGE",
    "KELP_USAGE",
    "KELP_USAGE_FLUSH_SECONDS",
    "KELP_BUCKET",
    "KELP_BUCKET_PREFIX",
    "KELP_ALGA_BUNDLE_BUCKET",
    "KELP_ALGA_BUNDLE_PREFIX",
    "KELP_SECRET_PREFIX",
    "KELP_RATE_REDIS",
    "KELP_DEBUG_QUEUE",
    "RUNNER_DEBUG_MAX_EVENT_BYTES",
    "RUNNER_DEBUG_REDIS_MAXLEN",
    "RUNNER_DEBUG_REDIS_STREAM_PREFIX",
    "RUNNER_DEBUG_REDIS_URL",
    "RUNNER_DEBUG_REDIS_PASSWORD",
    "KELP_REDIS_AUTH_SECRET_ARN",
    "DEBUG_STREAM_REDIS_URL",
    "DEBUG_STREAM_REDIS_USERNAME",
    "DEBUG_STREAM_REDIS_PASSWORD",
    "AWS_ENDPOINT_URL",
];

/// Variables the `kelp` CLI reads (it prints them for you to export): not the runtime's, but
/// not typos either, so they are never reported as unknown.
pub const CLI_VARS: &[&str] = &["KELP_URL", "KELP_TOKEN", "KELP_ADMIN_TOKEN"];

/// Which control-plane backends a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite, directories, a secrets file (the local default).
    Embedded,
    /// DynamoDB, S3, Secrets Manager.
    Aws,
}

/// All settings of a Kelp process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Embedded-default data directory (SQLite file, blobs, secrets file).
    pub data_dir: PathBuf,
    /// Local artifact directory (Lambda: under /tmp).
    pub artifact_dir: PathBuf,
    /// HS256 secret for bearer tokens.
    pub jwt_hs256_secret: Option<Secret>,
    /// RS256 public key (PEM).
    pub jwt_rs256_pem: Option<String>,
    /// JWKS document (JSON).
    pub jwt_jwks: Option<String>,
    /// Where the IdP's key set is read from at start (`https://…` or `s3://bucket/key`).
    pub jwt_jwks_url: Option<String>,
    /// Expected `iss`.
    pub jwt_issuer: Option<String>,
    /// Expected `aud`.
    pub jwt_audience: Option<String>,
    /// CORS origins allowed on the gateway.
    pub cors_origins: Vec<String>,
    /// API Gateway HTTP API ids whose JWT authorizer claims are trusted.
    pub trusted_api_ids: Vec<String>,
    /// Token required on `/v1/execute`.
    pub runner_service_token: Option<Secret>,
    /// Whether `/v1/execute` also accepts tokenless calls on a private route.
    pub runner_auth: crate::gateway::RunnerAuth,
    /// The egress rules of `/v1/execute` calls.
    pub runner_egress: crate::gateway::RunnerEgress,
    /// Default per-call limits.
    pub exec: ExecLimits,
    /// Upper bound a `/v1/execute` caller may ask for.
    pub max_timeout: Duration,
    /// Request and response body cap.
    pub max_body_bytes: usize,
    /// Token bucket burst (0 disables rate limiting).
    pub rate_burst: u32,
    /// Token bucket refill per second.
    pub rate_per_sec: f64,
    /// Egress settings.
    pub egress: EgressSettings,
    /// Engine settings.
    pub engine: EngineSettings,
    /// In-memory cache entries.
    pub cache_max_entries: usize,
    /// In-memory cache bytes.
    pub cache_max_bytes: usize,
    /// Most artifact bytes kept in the local artifact dir (0: no limit).
    pub artifact_dir_max_bytes: u64,
    /// Ranged GETs in flight when a sandbox fetches an artifact from the blob store.
    pub artifact_fetch_concurrency: usize,
    /// Secrets cache TTL (≤ 300 s).
    pub secrets_ttl: Duration,
    /// Local secrets file.
    pub secrets_file: PathBuf,
    /// Vault's transit engine for Alga's `vault-transit:v1` envelopes, if configured.
    pub vault: Option<VaultChoice>,
    /// Store an audit row for every execution.
    pub audit_executions: bool,
    /// Write each tenant request's metrics to stdout as a CloudWatch Embedded Metric Format
    /// document (`KELP_METRICS_EMF`; on in Lambda).
    pub metrics_emf: bool,
    /// Honour manifests' `instances.reuse` (false: a fresh instance for every request).
    pub instance_reuse: bool,
    /// Meter usage per install and hour (`KELP_USAGE`; on by default).
    pub usage: bool,
    /// How long counted usage may wait in memory before it is written
    /// (`KELP_USAGE_FLUSH_SECONDS`): 0 writes it before each request's answer (the default in
    /// Lambda, where a sandbox may be frozen or reaped right after); 2 s elsewhere.
    pub usage_flush: Duration,
    /// Debug event message cap.
    pub debug_max_event_bytes: usize,
    /// Debug events one execution may publish (logs, output lines, host warnings).
    pub debug_max_events_per_call: usize,
    /// Events kept per debug stream.
    pub debug_maxlen: usize,
    /// Debug stream key prefix.
    pub debug_stream_prefix: String,
    /// Storage limits.
    pub kv_limits: KvLimits,
    /// Control-plane backends.
    pub backend: BackendKind,
    /// DynamoDB tables (AWS backend).
    pub tables: crate::stores::dynamodb::TableNames,
    /// S3 bucket for bundles and artifacts (AWS backend).
    pub bucket: Option<String>,
    /// Key prefix inside the bucket.
    pub bucket_prefix: String,
    /// Alga's bundle store (S3 or S3-compatible, e.g. MinIO through `AWS_ENDPOINT_URL_S3`):
    /// `/v1/execute` fetches a bundle Kelp does not know from it by content hash.
    pub alga_bundle_bucket: Option<String>,
    /// Key prefix inside Alga's bundle bucket.
    pub alga_bundle_prefix: String,
    /// Secrets Manager name prefix (the IAM policy is limited to it).
    pub secret_prefix: String,
    /// Redis for the debug bus (and shared rate limits), if configured.
    pub redis: Option<crate::debug::redis::RedisSettings>,
    /// Share rate-limit buckets through Redis when it is configured.
    pub rate_redis: bool,
    /// AWS endpoint, region and credential overrides.
    pub aws: crate::aws::AwsSettings,
    /// Largest admin request body (bundles), in bytes.
    pub admin_max_body_bytes: usize,
    /// Longest a publish may take before it answers 504 (`None`: no limit).
    pub publish_deadline: Option<Duration>,
    /// The PSA's host API for business interfaces (and, for Alga's, storage), if configured.
    pub host_api: Option<HostApiChoice>,
    /// Debug relay settings.
    pub relay: crate::relay::RelaySettings,
    /// Extension UI asset settings.
    pub ui: crate::ui::UiSettings,
}

/// Settings that are safe on a developer's machine but not inside Lambda, refused at start:
/// loopback egress would let a guest reach the Lambda Runtime API on 127.0.0.1 (and so other
/// invocations' events), and an HS256 secret in a function's environment is readable by anyone
/// who may read the function's configuration. HS256 stays available for `sam local invoke`
/// and emulators with an explicit `KELP_ALLOW_HS256=true`.
fn check_lambda_safety(env: &HashMap<String, String>) -> Result<()> {
    if !env.contains_key("AWS_LAMBDA_RUNTIME_API") {
        return Ok(());
    }
    if parse(env, "KELP_EGRESS_ALLOW_LOOPBACK", false)? {
        bail!("KELP_EGRESS_ALLOW_LOOPBACK is refused inside Lambda: loopback reaches the Lambda Runtime API");
    }
    if text(env, "KELP_JWT_HS256_SECRET").is_some() {
        if !parse(env, "KELP_ALLOW_HS256", false)? {
            bail!("KELP_JWT_HS256_SECRET is refused inside Lambda (use RS256/JWKS or the API Gateway authorizer); set KELP_ALLOW_HS256=true only for local invokes");
        }
        tracing::warn!(
            "HS256 bearer tokens are accepted inside Lambda because KELP_ALLOW_HS256=true: for local invokes only"
        );
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(env: &HashMap<String, String>, key: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match env.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{key}={v:?}: {e}")),
    }
}

fn list(env: &HashMap<String, String>, key: &str) -> Vec<String> {
    env.get(key)
        .map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
        .unwrap_or_default()
}

fn text(env: &HashMap<String, String>, key: &str) -> Option<String> {
    env.get(key).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Which host API protocol the business interfaces speak (`KELP_HOST_API_PROTOCOL`).
#[derive(Debug, Clone)]
pub enum HostApiChoice {
    /// Kelp's own: `POST {KELP_HOST_API_URL}/v1/{operation}` with an HS256 service token.
    Kelp(crate::business::http::HostApiSettings),
    /// Alga's internal API (`/api/internal/ext-*/install/{id}` with `x-runner-auth`, ui-proxy
    /// through `KELP_UI_PROXY_BASE_URL`); the guests' storage lives in Alga too.
    Alga(crate::alga_host::AlgaHostSettings),
}

/// `KELP_UI_DOMAIN_ROOT` (Alga's `EXT_DOMAIN_ROOT`) with where to ask Alga which install a
/// domain is: `KELP_ALGA_REGISTRY_URL` (Alga's origin; `KELP_HOST_API_URL` when unset) and
/// `KELP_ALGA_AUTH_KEY` (Alga's `ALGA_AUTH_KEY`).
fn alga_ui_domains(env: &HashMap<String, String>) -> Result<Option<crate::ui::AlgaUiDomains>> {
    let Some(root) = text(env, "KELP_UI_DOMAIN_ROOT") else { return Ok(None) };
    let Some(registry_url) = text(env, "KELP_ALGA_REGISTRY_URL").or_else(|| text(env, "KELP_HOST_API_URL")) else {
        bail!("KELP_UI_DOMAIN_ROOT needs KELP_ALGA_REGISTRY_URL (Alga's origin, which answers lookup-by-host)")
    };
    let registry_url = crate::alga_host::normalize_base(&registry_url);
    url::Url::parse(&registry_url).map_err(|e| anyhow::anyhow!("KELP_ALGA_REGISTRY_URL={registry_url:?}: {e}"))?;
    let Some(api_key) = text(env, "KELP_ALGA_AUTH_KEY") else {
        bail!("KELP_UI_DOMAIN_ROOT needs KELP_ALGA_AUTH_KEY or KELP_ALGA_AUTH_KEY_ARN (Alga's ALGA_AUTH_KEY, sent as x-api-key)")
    };
    Ok(Some(crate::ui::AlgaUiDomains { root, registry_url, api_key }))
}

/// Vault as configured: everything but a token kept in Secrets Manager, which the wiring
/// reads at start.
#[derive(Debug, Clone)]
pub struct VaultChoice {
    /// Address, namespace, mount, timeout; the token if given directly or as a file.
    pub base: crate::secrets::vault::VaultSettings,
    /// `KELP_VAULT_TOKEN_SECRET_ARN`: the token's secret (a plain string or `{"password"}`).
    pub token_secret_arn: Option<String>,
}

impl VaultChoice {
    /// The settings with the token read from Secrets Manager, when it came from there.
    pub fn settings(&self, token_from_secret: Option<String>) -> Result<crate::secrets::vault::VaultSettings> {
        let mut s = self.base.clone();
        if let Some(token) = token_from_secret {
            s.token = crate::secrets::vault::VaultToken::Literal(token);
        } else if self.token_secret_arn.is_some() {
            bail!("KELP_VAULT_TOKEN_SECRET_ARN was not read");
        }
        Ok(s)
    }
}

/// `KELP_VAULT_ADDR` (Alga's `VAULT_ADDR` as a fallback) with one token source:
/// `KELP_VAULT_TOKEN_SECRET_ARN` (Secrets Manager, for Lambda), `KELP_VAULT_TOKEN_FILE`
/// (Alga's `ALGA_VAULT_TOKEN_FILE`, followed as an agent renews it) or `KELP_VAULT_TOKEN`
/// (local runs only: inside Lambda a token in the environment is readable by anyone who may
/// read the function's configuration).
fn vault(env: &HashMap<String, String>) -> Result<Option<VaultChoice>> {
    use crate::secrets::vault::{VaultSettings, VaultToken};
    let Some(addr) = text(env, "KELP_VAULT_ADDR").or_else(|| text(env, "VAULT_ADDR")) else { return Ok(None) };
    url::Url::parse(&addr).map_err(|e| anyhow::anyhow!("KELP_VAULT_ADDR={addr:?}: {e}"))?;
    let arn = text(env, "KELP_VAULT_TOKEN_SECRET_ARN");
    let token = match (&arn, text(env, "KELP_VAULT_TOKEN_FILE"), text(env, "KELP_VAULT_TOKEN")) {
        (Some(_), None, None) => VaultToken::Literal(String::new()),
        (None, Some(file), None) => VaultToken::File(PathBuf::from(file)),
        (None, None, Some(_)) if env.contains_key("AWS_LAMBDA_RUNTIME_API") => {
            bail!("KELP_VAULT_TOKEN is refused inside Lambda: keep the token in Secrets Manager (KELP_VAULT_TOKEN_SECRET_ARN)")
        }
        (None, None, Some(token)) => VaultToken::Literal(token),
        (None, None, None) => bail!(
            "KELP_VAULT_ADDR needs a token: KELP_VAULT_TOKEN_SECRET_ARN, KELP_VAULT_TOKEN_FILE or KELP_VAULT_TOKEN"
        ),
        _ => bail!(
            "give the Vault token one way: KELP_VAULT_TOKEN_SECRET_ARN, KELP_VAULT_TOKEN_FILE or KELP_VAULT_TOKEN"
        ),
    };
    Ok(Some(VaultChoice {
        base: VaultSettings {
            addr,
            token,
            namespace: text(env, "KELP_VAULT_NAMESPACE").or_else(|| text(env, "VAULT_NAMESPACE")),
            default_mount: text(env, "KELP_VAULT_TRANSIT_MOUNT").unwrap_or_else(|| "transit".into()),
            timeout: Duration::from_millis(parse(env, "KELP_VAULT_TIMEOUT_MS", 5_000u64)?.max(1)),
        },
        token_secret_arn: arn,
    }))
}

/// `KELP_RUNNER_AUTH`: `token` (default) or `private-network`. Inside Lambda the private mode
/// must name the VPC endpoints of the private API (`KELP_RUNNER_VPC_ENDPOINT_IDS`): a
/// deployment that cannot say which private route it trusts is refused at start.
fn runner_auth(env: &HashMap<String, String>) -> Result<crate::gateway::RunnerAuth> {
    match text(env, "KELP_RUNNER_AUTH").as_deref().unwrap_or("token") {
        "token" => Ok(crate::gateway::RunnerAuth::Token),
        "private-network" => {
            let vpc_endpoints = list(env, "KELP_RUNNER_VPC_ENDPOINT_IDS");
            if env.contains_key("AWS_LAMBDA_RUNTIME_API") && vpc_endpoints.is_empty() {
                bail!("KELP_RUNNER_AUTH=private-network inside Lambda needs KELP_RUNNER_VPC_ENDPOINT_IDS: the VPC endpoints of the private API that may call /v1/execute without a token");
            }
            let networks = text(env, "KELP_RUNNER_TRUSTED_NETWORKS")
                .unwrap_or_else(|| crate::http::exposure::DEFAULT_TRUSTED_NETWORKS.into())
                .split(',')
                .map(|n| {
                    crate::http::exposure::Network::parse(n)
                        .map_err(|e| anyhow::anyhow!("KELP_RUNNER_TRUSTED_NETWORKS: {e}"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(crate::gateway::RunnerAuth::PrivateNetwork(crate::http::exposure::PrivateTrust {
                vpc_endpoints,
                networks,
            }))
        }
        other => bail!("KELP_RUNNER_AUTH={other:?}: expected token or private-network"),
    }
}

/// Alga's runner waits 30 s for its host API (a fixed timeout of its HTTP client); so does
/// Kelp by default. Every call is also bounded by the execution's own deadline.
const DEFAULT_HOST_API_TIMEOUT_MS: u64 = 30_000;

/// `KELP_EGRESS_POLICY`: `kelp` (default) or `alga`, which applies Alga's own
/// `EXT_EGRESS_ALLOWLIST` (read under Alga's name, so an operator copies it over as it is).
fn runner_egress(env: &HashMap<String, String>) -> Result<crate::gateway::RunnerEgress> {
    match text(env, "KELP_EGRESS_POLICY").as_deref().unwrap_or("kelp") {
        "kelp" => Ok(crate::gateway::RunnerEgress::Kelp { default_allow: list(env, "KELP_RUNNER_EGRESS_ALLOW") }),
        "alga" => {
            let allow = crate::egress::EgressAllow::alga(&list(env, "EXT_EGRESS_ALLOWLIST"));
            if allow == crate::egress::EgressAllow::AlgaSuffixes(Vec::new()) {
                tracing::warn!(
                    "KELP_EGRESS_POLICY=alga with an empty EXT_EGRESS_ALLOWLIST: /v1/execute calls may fetch any \
                     public host (private and loopback addresses stay blocked)"
                );
            }
            Ok(crate::gateway::RunnerEgress::Alga(allow))
        }
        other => bail!("KELP_EGRESS_POLICY={other:?}: expected kelp or alga"),
    }
}

fn host_api(env: &HashMap<String, String>) -> Result<Option<HostApiChoice>> {
    let timeout = Duration::from_millis(parse(env, "KELP_HOST_API_TIMEOUT_MS", DEFAULT_HOST_API_TIMEOUT_MS)?);
    let (url, secret) = (text(env, "KELP_HOST_API_URL"), text(env, "KELP_HOST_API_SECRET"));
    match text(env, "KELP_HOST_API_PROTOCOL").as_deref().unwrap_or("kelp") {
        "kelp" => match (url, secret) {
            (Some(base_url), Some(secret)) => Ok(Some(HostApiChoice::Kelp(crate::business::http::HostApiSettings {
                base_url,
                secret,
                timeout,
                max_response_bytes: 1 << 20,
            }))),
            (Some(_), None) => {
                bail!("KELP_HOST_API_URL needs KELP_HOST_API_SECRET or KELP_HOST_API_SECRET_ARN (the key that signs service tokens)")
            }
            _ => Ok(None),
        },
        "alga" => {
            let (Some(base_url), Some(runner_auth)) = (url, secret) else {
                bail!("KELP_HOST_API_PROTOCOL=alga needs KELP_HOST_API_URL (Alga's origin) and KELP_HOST_API_SECRET or KELP_HOST_API_SECRET_ARN (the x-runner-auth token: Alga's RUNNER_STORAGE_API_TOKEN, else its RUNNER_SERVICE_TOKEN)")
            };
            let ui_proxy_base = match text(env, "KELP_UI_PROXY_BASE_URL") {
                Some(u) => Some(url::Url::parse(&u).map_err(|e| anyhow::anyhow!("KELP_UI_PROXY_BASE_URL={u:?}: {e}"))?),
                None => None,
            };
            Ok(Some(HostApiChoice::Alga(crate::alga_host::AlgaHostSettings {
                base_url,
                runner_auth,
                ui_proxy_base,
                timeout,
                ui_proxy_timeout: Duration::from_millis(parse(env, "KELP_UI_PROXY_TIMEOUT_MS", 5_000)?.max(1)),
                max_response_bytes: 1 << 20,
            })))
        }
        other => bail!("KELP_HOST_API_PROTOCOL={other:?}: expected kelp or alga"),
    }
}

/// Cranelift's incremental compilation cache: `KELP_COMPILE_CACHE_DIR`, else
/// `<data dir>/compile-cache` outside Lambda (where `kelp up` compiles every publish), else
/// none (in Lambda only the admin function compiles; the template sets it there). `off`
/// switches it off.
fn compile_cache(
    env: &HashMap<String, String>,
    data_dir: &std::path::Path,
    in_lambda: bool,
) -> Result<Option<std::sync::Arc<crate::compile_cache::CompileCache>>> {
    let dir = match text(env, "KELP_COMPILE_CACHE_DIR") {
        Some(off) if off == "off" => return Ok(None),
        Some(dir) => PathBuf::from(dir),
        None if in_lambda => return Ok(None),
        None => data_dir.join("compile-cache"),
    };
    let cache = crate::compile_cache::CompileCache::open(&dir)
        .map_err(|e| anyhow::anyhow!("KELP_COMPILE_CACHE_DIR={}: {e}", dir.display()))?;
    Ok(Some(std::sync::Arc::new(cache)))
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Settings from a map (tests pass their own).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self> {
        for key in env.keys().filter(|k| k.starts_with("KELP_")) {
            if !KNOWN_VARS.contains(&key.as_str()) && !CLI_VARS.contains(&key.as_str()) {
                tracing::warn!(variable = %key, "unknown KELP_* environment variable (ignored)");
            }
        }
        let in_lambda = env.contains_key("AWS_LAMBDA_FUNCTION_NAME");
        check_lambda_safety(env)?;
        let data_dir = PathBuf::from(text(env, "KELP_DATA_DIR").unwrap_or_else(|| {
            if in_lambda {
                "/tmp/kelp".into()
            } else {
                ".kelp".into()
            }
        }));
        let artifact_dir =
            text(env, "KELP_ARTIFACT_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("artifacts"));
        let lambda_mb: Option<usize> = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse().ok());
        let max_memory_mb: usize = parse(env, "KELP_MAX_MEMORY_MB", 256)?;
        if max_memory_mb == 0 || max_memory_mb > 4096 {
            bail!("KELP_MAX_MEMORY_MB must be 1-4096");
        }
        let fuel: u64 = parse(env, "KELP_FUEL", 0)?;
        let timeout = Duration::from_millis(parse(env, "KELP_EXEC_TIMEOUT_MS", 5_000)?);
        // In Lambda one environment serves one request at a time: a small pool suffices.
        let default_pool = if lambda_mb.is_some() { 8 } else { 64 };
        let pool_instances: u32 = parse(env, "KELP_POOL_INSTANCES", default_pool)?;
        let keep_resident_mb: usize = parse(env, "KELP_POOL_KEEP_RESIDENT_MB", 64)?;
        let egress = EgressSettings {
            timeout: Duration::from_millis(parse(env, "KELP_EGRESS_TIMEOUT_MS", 10_000)?),
            max_response_bytes: parse(env, "KELP_EGRESS_MAX_RESPONSE_BYTES", 4 << 20)?,
            max_request_bytes: 1 << 20,
            max_calls: parse(env, "KELP_EGRESS_MAX_CALLS", 16)?,
            allow_loopback: parse(env, "KELP_EGRESS_ALLOW_LOOPBACK", false)?,
        };
        let compile_cache = compile_cache(env, &data_dir, lambda_mb.is_some())?;
        let settings = Self {
            artifact_dir,
            secrets_file: text(env, "KELP_SECRETS_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("secrets.json")),
            vault: vault(env)?,
            data_dir,
            jwt_hs256_secret: text(env, "KELP_JWT_HS256_SECRET").map(Secret::from),
            jwt_rs256_pem: text(env, "KELP_JWT_RS256_PUBLIC_KEY"),
            jwt_jwks: text(env, "KELP_JWT_JWKS"),
            jwt_jwks_url: text(env, "KELP_JWT_JWKS_URL"),
            jwt_issuer: text(env, "KELP_JWT_ISSUER"),
            jwt_audience: text(env, "KELP_JWT_AUDIENCE"),
            cors_origins: list(env, "KELP_CORS_ORIGINS"),
            trusted_api_ids: list(env, "KELP_API_ID"),
            runner_service_token: text(env, "KELP_RUNNER_SERVICE_TOKEN").map(Secret::from),
            runner_auth: runner_auth(env)?,
            runner_egress: runner_egress(env)?,
            exec: ExecLimits {
                timeout,
                max_memory_bytes: max_memory_mb << 20,
                fuel: (fuel > 0).then_some(fuel),
                max_output_bytes: parse(env, "KELP_MAX_OUTPUT_BYTES", 64 * 1024)?,
            },
            max_timeout: Duration::from_millis(parse(env, "KELP_EXEC_MAX_TIMEOUT_MS", 30_000)?),
            max_body_bytes: parse(env, "KELP_MAX_BODY_BYTES", 6_291_456)?,
            rate_burst: parse(env, "KELP_RATE_BURST", 100)?,
            rate_per_sec: parse(env, "KELP_RATE_PER_SEC", 50.0)?,
            egress,
            engine: EngineSettings {
                pooling: parse(env, "KELP_POOLING", true)?,
                pool_instances,
                max_memory_bytes: max_memory_mb << 20,
                fuel: fuel > 0,
                keep_resident_bytes: keep_resident_mb << 20,
                compile_cache,
            },
            cache_max_entries: parse(env, "KELP_CACHE_MAX_ENTRIES", 64)?,
            cache_max_bytes: parse::<usize>(
                env,
                "KELP_CACHE_MAX_MB",
                lambda_mb
                    .map(|mb| lambda_cache_budget_mb(mb, pool_instances as usize * keep_resident_mb))
                    .unwrap_or(1024),
            )? << 20,
            // In Lambda /tmp is fixed (4 GB in the template): leave room for the UI cache and
            // the artifact being written.
            artifact_dir_max_bytes: parse::<u64>(
                env,
                "KELP_ARTIFACT_DIR_MAX_MB",
                if lambda_mb.is_some() { 3072 } else { 0 },
            )? << 20,
            artifact_fetch_concurrency: parse::<usize>(env, "KELP_ARTIFACT_FETCH_CONCURRENCY", 8)?.clamp(1, 64),
            secrets_ttl: Duration::from_secs(parse(env, "KELP_SECRETS_TTL_SECS", 300u64)?.min(300)),
            audit_executions: parse(env, "KELP_AUDIT_EXECUTIONS", false)?,
            metrics_emf: parse(env, "KELP_METRICS_EMF", lambda_mb.is_some())?,
            instance_reuse: parse(env, "KELP_INSTANCE_REUSE", true)?,
            usage: parse(env, "KELP_USAGE", true)?,
            usage_flush: Duration::try_from_secs_f64(parse(
                env,
                "KELP_USAGE_FLUSH_SECONDS",
                if lambda_mb.is_some() { 0.0 } else { 2.0 },
            )?)
            .map_err(|_| anyhow::anyhow!("KELP_USAGE_FLUSH_SECONDS must be a number of seconds, 0 or more"))?,
            debug_max_event_bytes: parse(env, "RUNNER_DEBUG_MAX_EVENT_BYTES", 8192)?,
            debug_max_events_per_call: parse(env, "KELP_MAX_DEBUG_EVENTS", crate::debug::DEFAULT_MAX_EVENTS_PER_CALL)?,
            debug_maxlen: parse(env, "RUNNER_DEBUG_REDIS_MAXLEN", 2000)?,
            debug_stream_prefix: text(env, "RUNNER_DEBUG_REDIS_STREAM_PREFIX").unwrap_or_else(|| "ext-debug:".into()),
            kv_limits: KvLimits::default(),
            backend: match text(env, "KELP_BACKEND").as_deref() {
                Some("aws") => BackendKind::Aws,
                Some("embedded") => BackendKind::Embedded,
                Some(other) => bail!("KELP_BACKEND={other:?}: expected \"embedded\" or \"aws\""),
                None if env.contains_key("KELP_TABLE_REGISTRY") => BackendKind::Aws,
                None => BackendKind::Embedded,
            },
            tables: crate::stores::dynamodb::TableNames {
                registry: text(env, "KELP_TABLE_REGISTRY").unwrap_or_else(|| "kelp-registry".into()),
                installs: text(env, "KELP_TABLE_INSTALLS").unwrap_or_else(|| "kelp-installs".into()),
                storage: text(env, "KELP_TABLE_STORAGE").unwrap_or_else(|| "kelp-storage".into()),
                audit: text(env, "KELP_TABLE_AUDIT").unwrap_or_else(|| "kelp-audit".into()),
                usage: text(env, "KELP_TABLE_USAGE").unwrap_or_else(|| "kelp-usage".into()),
            },
            bucket: text(env, "KELP_BUCKET"),
            bucket_prefix: text(env, "KELP_BUCKET_PREFIX").unwrap_or_default(),
            alga_bundle_bucket: text(env, "KELP_ALGA_BUNDLE_BUCKET"),
            alga_bundle_prefix: text(env, "KELP_ALGA_BUNDLE_PREFIX").unwrap_or_default(),
            secret_prefix: text(env, "KELP_SECRET_PREFIX").unwrap_or_else(|| "kelp/".into()),
            redis: text(env, "RUNNER_DEBUG_REDIS_URL").or_else(|| text(env, "DEBUG_STREAM_REDIS_URL")).map(|url| {
                crate::debug::redis::RedisSettings {
                    url,
                    username: text(env, "DEBUG_STREAM_REDIS_USERNAME"),
                    password: text(env, "RUNNER_DEBUG_REDIS_PASSWORD")
                        .or_else(|| text(env, "DEBUG_STREAM_REDIS_PASSWORD"))
                        .map(Secret::from),
                    password_secret_arn: text(env, "KELP_REDIS_AUTH_SECRET_ARN"),
                    prefix: text(env, "RUNNER_DEBUG_REDIS_STREAM_PREFIX").unwrap_or_else(|| "ext-debug:".into()),
                    maxlen: env.get("RUNNER_DEBUG_REDIS_MAXLEN").and_then(|v| v.parse().ok()).unwrap_or(2000),
                    queue: env.get("KELP_DEBUG_QUEUE").and_then(|v| v.parse().ok()).unwrap_or(10_000),
                }
            }),
            rate_redis: parse(env, "KELP_RATE_REDIS", true)?,
            aws: crate::aws::AwsSettings::from_map(env),
            admin_max_body_bytes: parse(env, "KELP_ADMIN_MAX_BODY_BYTES", 200 << 20)?,
            publish_deadline: match parse::<u64>(env, "KELP_PUBLISH_DEADLINE_MS", 0)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            host_api: host_api(env)?,
            relay: crate::relay::RelaySettings {
                tail_count: parse::<usize>(env, "EXT_DEBUG_SSE_TAIL_COUNT", 200)?.min(2000),
                max_session: Duration::from_secs(parse(env, "KELP_DEBUG_SESSION_MAX_SECS", 900)?),
                heartbeat: Duration::from_secs(parse(env, "KELP_DEBUG_HEARTBEAT_SECS", 15)?.max(1)),
                block: Duration::from_millis(1000),
            },
            ui: crate::ui::UiSettings {
                public: parse(env, "KELP_UI_PUBLIC", false)?,
                max_file_bytes: parse(env, "KELP_UI_MAX_FILE_BYTES", 10 << 20)?,
                csp: text(env, "KELP_UI_CSP").unwrap_or_else(|| crate::ui::DEFAULT_CSP.into()),
                frame_ancestors: text(env, "KELP_UI_FRAME_ANCESTORS").unwrap_or_else(|| "'self'".into()),
                sandbox: parse(env, "KELP_UI_SANDBOX", true)?,
                token_secret: text(env, "KELP_UI_TOKEN_SECRET"),
                token_secret_arn: text(env, "KELP_UI_TOKEN_SECRET_ARN"),
                token_ttl: Duration::from_secs(parse(env, "KELP_UI_TOKEN_TTL_SECS", 900)?),
                alga_domains: alga_ui_domains(env)?,
            },
        };
        for (name, value) in
            [("KELP_UI_CSP", &settings.ui.csp), ("KELP_UI_FRAME_ANCESTORS", &settings.ui.frame_ancestors)]
        {
            if axum::http::HeaderValue::from_str(value).is_err() {
                bail!("{name} must be a valid header value (visible ASCII)");
            }
        }
        if settings.backend == BackendKind::Aws && settings.bucket.is_none() {
            bail!("KELP_BACKEND=aws needs KELP_BUCKET (bundles and precompiled artifacts live in S3)");
        }
        Ok(settings)
    }

    /// The token verifier these settings describe.
    /// The gateway's settings.
    pub fn gateway(&self) -> crate::gateway::GatewaySettings {
        crate::gateway::GatewaySettings {
            max_body_bytes: self.max_body_bytes,
            exec: self.exec,
            max_timeout: self.max_timeout,
            max_memory_bytes: self.engine.max_memory_bytes,
            runner_service_token: self.runner_service_token.clone(),
            runner_auth: self.runner_auth.clone(),
            runner_egress: self.runner_egress.clone(),
            cors_origins: self.cors_origins.clone(),
            allow_null_origin: self.ui.sandbox,
            audit_executions: self.audit_executions,
            metrics_emf: self.metrics_emf,
            rate_redis: self.redis.clone().filter(|_| self.rate_redis),
        }
    }

    /// The default plan: the limits of a tenant without a plan, and the base every plan's
    /// unset limits come from.
    pub fn plan_defaults(&self) -> crate::call_limits::Limits {
        crate::call_limits::Limits {
            plan: crate::limits::DEFAULT_PLAN.into(),
            exec: self.exec,
            debug_events: self.debug_max_events_per_call,
            install_rate: crate::limits::Rate { burst: self.rate_burst, per_sec: self.rate_per_sec },
            tenant_rate: crate::limits::Rate::UNLIMITED,
            egress_calls: self.egress.max_calls,
            egress_response_bytes: self.egress.max_response_bytes,
            kv: self.kv_limits,
            installs: None,
            warm_reuse: self.instance_reuse,
        }
    }

    /// The admin API's settings.
    pub fn admin(&self) -> crate::admin::AdminSettings {
        crate::admin::AdminSettings {
            max_body_bytes: self.admin_max_body_bytes,
            publish_deadline: self.publish_deadline,
            default_grant_issuer: self.jwt_issuer.clone(),
        }
    }

    /// The token verifier the settings describe.
    pub fn jwt_verifier(&self) -> Result<crate::auth::JwtVerifier> {
        let mut v = crate::auth::JwtVerifier::new(self.jwt_issuer.clone(), self.jwt_audience.clone())
            .with_trusted_api_ids(self.trusted_api_ids.clone());
        if let Some(secret) = &self.jwt_hs256_secret {
            v = v.with_hs256(secret.as_bytes());
        }
        if let Some(pem) = &self.jwt_rs256_pem {
            v = v
                .with_rs256_pem(None, pem.as_bytes())
                .context("KELP_JWT_RS256_PUBLIC_KEY is not an RSA public key PEM")?;
        }
        if let Some(jwks) = &self.jwt_jwks {
            v = v.with_jwks(jwks).context("KELP_JWT_JWKS is not a JWKS document")?;
        }
        Ok(v)
    }
}

/// The memory tier's default budget (artifact MB kept ready) in a Lambda function of
/// `function_mb` whose instance pool may keep `pool_resident_mb` resident: what is left after
/// the process (~64 MB, measured 18 MB before any component) and the pool. kelp-bench's fleet
/// section measured a loaded JS component (36 MB artifact) at ~20 MB resident, almost all of
/// it clean file-backed code pages, and under 1 MB anonymous: counting whole artifacts against
/// what the function has left keeps the hot set's code in page cache with room to spare.
pub fn lambda_cache_budget_mb(function_mb: usize, pool_resident_mb: usize) -> usize {
    function_mb.saturating_sub(64 + pool_resident_mb).max(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lambda_the_caches_are_sized_from_the_function_and_its_tmp() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let local = Settings::from_map(&env(&[])).unwrap();
        assert_eq!((local.cache_max_bytes, local.artifact_dir_max_bytes), (1024 << 20, 0));
        // 2048 MB, 8 pool slots keeping 64 MiB each resident: 2048 - 64 - 512.
        let lambda =
            Settings::from_map(&env(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"), ("KELP_CACHE_MAX_MB", "")]))
                .unwrap();
        assert_eq!((lambda.cache_max_bytes, lambda.artifact_dir_max_bytes), (1472 << 20, 3072 << 20));
        let small = Settings::from_map(&env(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")])).unwrap();
        assert_eq!(small.cache_max_bytes, 128 << 20, "never below 128 MB");
        let set =
            Settings::from_map(&env(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"), ("KELP_CACHE_MAX_MB", "300")]))
                .unwrap();
        assert_eq!(set.cache_max_bytes, 300 << 20, "an explicit value wins");
    }

    #[test]
    fn lambda_refuses_loopback_egress_and_unannounced_hs256() {
        let lambda = |extra: &[(&str, &str)]| {
            let mut env: HashMap<String, String> =
                [("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"), ("AWS_LAMBDA_FUNCTION_NAME", "gateway")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Settings::from_map(&env).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(lambda(&[]).is_ok());
        assert!(lambda(&[("KELP_EGRESS_ALLOW_LOOPBACK", "true")]).unwrap_err().contains("Runtime API"));
        assert!(lambda(&[("KELP_JWT_HS256_SECRET", "s")]).unwrap_err().contains("KELP_ALLOW_HS256"));
        assert!(lambda(&[("KELP_JWT_HS256_SECRET", "s"), ("KELP_ALLOW_HS256", "true")]).is_ok());
        // Outside Lambda both are a developer's choice.
        let local: HashMap<String, String> = [("KELP_EGRESS_ALLOW_LOOPBACK", "true"), ("KELP_JWT_HS256_SECRET", "s")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(Settings::from_map(&local).is_ok());
    }

    /// Every `KELP_*` variable this module reads is in [`KNOWN_VARS`], so none is reported as
    /// unknown (and ignored) at start while it takes effect.
    #[test]
    fn every_variable_read_here_is_a_known_one() {
        let source = include_str!("config.rs");
        let table_end = source.find("];").expect("the KNOWN_VARS table");
        let mut unknown = Vec::new();
        for (at, _) in source.match_indices("env, \"KELP_").filter(|(at, _)| *at > table_end) {
            let name: String = source[at + 6..].chars().take_while(|c| *c != '"').collect();
            if !KNOWN_VARS.contains(&name.as_str()) {
                unknown.push(name);
            }
        }
        assert!(unknown.is_empty(), "read but not in KNOWN_VARS: {unknown:?}");
        assert!(source[table_end..].contains("env, \"KELP_UI_PROXY_TIMEOUT_MS\""), "the scan sees the reads");
    }

    #[test]
    fn settings_debug_never_shows_tokens_passwords_or_keys() {
        let env: HashMap<String, String> = [
            ("KELP_RUNNER_SERVICE_TOKEN", "runner-token-value"),
            ("KELP_JWT_HS256_SECRET", "hs256-secret-value"),
            ("RUNNER_DEBUG_REDIS_URL", "redis://127.0.0.1:6379"),
            ("RUNNER_DEBUG_REDIS_PASSWORD", "redis-password-value"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-value"),
            ("KELP_HOST_API_URL", "http://alga.internal"),
            ("KELP_HOST_API_SECRET", "host-api-secret-value"),
            ("KELP_VAULT_ADDR", "http://vault.internal:8200"),
            ("KELP_VAULT_TOKEN", "vault-token-value"),
            ("KELP_UI_TOKEN_SECRET", "ui-token-key-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shown = format!("{:?}", Settings::from_map(&env).unwrap());
        for secret in env.values().filter(|v| v.ends_with("-value")) {
            assert!(!shown.contains(secret.as_str()), "{secret} in {shown}");
        }
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_map(&HashMap::new()).unwrap();
        assert_eq!(s.max_body_bytes, 6_291_456);
        assert_eq!(s.rate_burst, 100);
        assert_eq!(s.debug_stream_prefix, "ext-debug:");
        let env: HashMap<_, _> = [("KELP_EXEC_TIMEOUT_MS", "250"), ("KELP_SECRETS_TTL_SECS", "9999")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = Settings::from_map(&env).unwrap();
        assert_eq!(s.exec.timeout, Duration::from_millis(250));
        assert_eq!(s.secrets_ttl, Duration::from_secs(300), "TTL is capped at 300 s");
        let bad: HashMap<_, _> = [("KELP_RATE_BURST".to_string(), "lots".to_string())].into_iter().collect();
        assert!(Settings::from_map(&bad).unwrap_err().to_string().contains("KELP_RATE_BURST"));
    }
}
