//! App layer: builds a process's platform from its settings — the one resolver that maps
//! configuration to backend implementations — and the AWS bootstrap for tests and
//! `kelp up --aws`.

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::blobs::dir::DirBlobStore;
use crate::cache::{CacheSettings, ModuleCache};
use crate::config::{BackendKind, HostApiChoice, Settings};
use crate::debug::memory::MemoryBus;
use crate::egress::EgressClient;
use crate::engine::KelpEngine;
use crate::executor::Executor;
use crate::platform::{Backends, Platform, PlatformParts};
use crate::runtime::CallDefaults;
use crate::secrets::file::FileSecrets;
use crate::storage::sqlite::SqliteKv;
use crate::stores::sqlite::{SqliteDb, SqliteStores};

impl Backends {
    /// The backends the settings name: embedded or AWS for the control plane, Redis for the
    /// debug bus when configured. The one place that maps configuration to implementations.
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        let mut backends = match settings.backend {
            BackendKind::Embedded => Self::embedded(settings)?,
            BackendKind::Aws => Self::aws(settings).await?,
        };
        // One set of AWS clients for every secret and bucket read below (each set loads the
        // SDK's configuration and opens its own connections): built only if one is needed.
        let aws = tokio::sync::OnceCell::new();
        let clients = || aws.get_or_init(|| crate::aws::AwsClients::new(&settings.aws));
        if let Some(redis) = &settings.redis {
            let mut redis = redis.clone();
            if let (None, Some(arn)) = (&redis.password, &redis.password_secret_arn) {
                redis.password = Some(secret_value(clients().await, arn, "the Redis AUTH secret").await?.into());
            }
            backends.debug = crate::debug::redis::RedisBus::start(redis).context("configuring the Redis debug bus")?;
        }
        if let Some(bucket) = &settings.alga_bundle_bucket {
            backends.alga_bundles = Some(Arc::new(crate::blobs::s3::S3BlobStore::new(
                clients().await.s3.clone(),
                bucket.clone(),
                settings.alga_bundle_prefix.clone(),
            )));
        }
        if let Some(arn) = &settings.ui.token_secret_arn {
            backends.ui_token_key = Some(secret_value(clients().await, arn, "the UI token key").await?);
        }
        if let Some(arn) = settings.vault.as_ref().and_then(|v| v.token_secret_arn.as_ref()) {
            backends.vault_token = Some(secret_value(clients().await, arn, "the Vault token").await?);
        }
        if let Some(location) = &settings.jwt_jwks_url {
            let s3 = match location.starts_with("s3://") {
                true => Some(clients().await.s3.clone()),
                false => None,
            };
            let source = crate::auth::jwks::JwksSource::parse(location, s3)?;
            backends.remote_jwks = Some(crate::auth::jwks::RemoteJwks::load(source).await);
        }
        Ok(backends)
    }

    /// DynamoDB, S3 and Secrets Manager (endpoints from the environment: `AWS_ENDPOINT_URL`
    /// points them at moto in tests); the in-process debug bus unless Redis is configured.
    pub async fn aws(settings: &Settings) -> Result<Self> {
        let crate::aws::AwsClients { dynamo, s3, secrets: sm } = crate::aws::AwsClients::new(&settings.aws).await;
        let stores = Arc::new(crate::stores::dynamodb::DynamoStores::new(dynamo.clone(), settings.tables.clone()));
        let bucket = settings.bucket.clone().context("KELP_BUCKET is required for the AWS backend")?;
        Ok(Self {
            registry: stores.clone(),
            installs: stores.clone(),
            audit: stores.clone(),
            grants: stores,
            kv: Arc::new(crate::storage::dynamodb::DynamoKv::new(dynamo.clone(), settings.tables.storage.clone())),
            usage: Arc::new(crate::usage::dynamodb::DynamoUsage::new(dynamo, settings.tables.usage.clone())),
            secrets: Arc::new(crate::secrets::aws::SecretsManagerSource::new(sm, settings.secret_prefix.clone())),
            blobs: Arc::new(crate::blobs::s3::S3BlobStore::new(s3, bucket, settings.bucket_prefix.clone())),
            debug: Arc::new(MemoryBus::new(settings.debug_maxlen)),
            guest_kv: None,
            host_api: None,
            ui_token_key: None,
            alga_bundles: None,
            vault_token: None,
            remote_jwks: None,
        })
    }

    /// The embedded default: one SQLite file, a blob directory, a secrets file and the
    /// in-process debug bus, all under `settings.data_dir`.
    pub fn embedded(settings: &Settings) -> Result<Self> {
        let db = SqliteDb::open(&settings.data_dir.join("kelp.db")).context("opening the SQLite database")?;
        let stores = Arc::new(SqliteStores::new(db.clone()));
        Ok(Self {
            registry: stores.clone(),
            installs: stores.clone(),
            audit: stores.clone(),
            grants: stores,
            kv: Arc::new(SqliteKv::new(db.clone())),
            usage: Arc::new(crate::usage::sqlite::SqliteUsage::new(db)),
            secrets: Arc::new(FileSecrets::open(settings.secrets_file.clone())?),
            blobs: Arc::new(DirBlobStore::new(settings.data_dir.join("blobs"))),
            debug: Arc::new(MemoryBus::new(settings.debug_maxlen)),
            guest_kv: None,
            host_api: None,
            ui_token_key: None,
            alga_bundles: None,
            vault_token: None,
            remote_jwks: None,
        })
    }
}

/// Read a secret from Secrets Manager (`{"password": ...}` or the plain string): the Redis AUTH
/// token, the UI token key, the Vault token, the settings given by ARN.
async fn secret_value(clients: &crate::aws::AwsClients, arn: &str, what: &str) -> Result<String> {
    let out = clients
        .secrets
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading {what}: {}", crate::aws::describe(&e)))?;
    let text = out.secret_string().with_context(|| format!("{what} has no string value"))?;
    Ok(serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("password").and_then(|p| p.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.to_string()))
}

/// Settings that may be given as the ARN of a Secrets Manager secret instead of their value
/// (`{NAME}_ARN`), so the value never sits in the function's configuration: read once at
/// start, as `{"password": …}` or the plain string.
pub const SECRET_ARN_SETTINGS: [&str; 3] = ["KELP_HOST_API_SECRET", "KELP_RUNNER_SERVICE_TOKEN", "KELP_ALGA_AUTH_KEY"];

/// The settings of this process's environment, with [`SECRET_ARN_SETTINGS`] given by ARN read
/// from Secrets Manager (the Lambda functions start with this).
pub async fn settings_from_env() -> Result<Settings> {
    settings_reading_secret_arns(std::env::vars().collect()).await
}

/// [`settings_from_env`] over a given map.
pub async fn settings_reading_secret_arns(mut env: std::collections::HashMap<String, String>) -> Result<Settings> {
    let aws_settings = crate::aws::AwsSettings::from_map(&env);
    let aws = tokio::sync::OnceCell::new();
    for name in SECRET_ARN_SETTINGS {
        let arn_var = format!("{name}_ARN");
        let Some(arn) = env.get(&arn_var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else { continue };
        if env.get(name).is_some_and(|v| !v.trim().is_empty()) {
            anyhow::bail!("{name} and {arn_var} are both set: give the value in one place");
        }
        let clients = aws.get_or_init(|| crate::aws::AwsClients::new(&aws_settings)).await;
        let value = secret_value(clients, &arn, &arn_var).await?;
        env.insert(name.to_string(), value);
    }
    Settings::from_map(&env)
}

/// Whether a process runs guests (and so builds an engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// The gateway, the admin API (precompiles at publish), `kelp up`.
    Guests,
    /// The debug relay: no engine, no pool, no epoch ticker.
    NoGuests,
}

impl Platform {
    /// The platform the settings describe, with an execution runtime.
    pub async fn from_settings(settings: &Settings) -> Result<Arc<Self>> {
        let backends = Backends::from_settings(settings).await?;
        Self::assemble(settings, backends, Runs::Guests)
    }

    /// The platform the settings describe, without an execution runtime (the debug relay).
    pub async fn without_runtime(settings: &Settings) -> Result<Arc<Self>> {
        let backends = Backends::from_settings(settings).await?;
        Self::assemble(settings, backends, Runs::NoGuests)
    }

    /// The embedded local default, with an execution runtime.
    pub fn embedded(settings: &Settings) -> Result<Arc<Self>> {
        let backends = Backends::embedded(settings)?;
        Self::assemble(settings, backends, Runs::Guests)
    }

    /// A platform over given backends (the host API is added when configured).
    pub fn assemble(settings: &Settings, mut backends: Backends, runs: Runs) -> Result<Arc<Self>> {
        match (&backends.host_api, &settings.host_api) {
            (Some(_), _) | (None, None) => {}
            (None, Some(HostApiChoice::Kelp(s))) => {
                backends.host_api = Some(Arc::new(crate::business::http::HttpHostApi::new(s.clone())?));
            }
            // Alga keeps the business data and the guests' storage: both go to its internal API.
            (None, Some(HostApiChoice::Alga(s))) => {
                let alga = Arc::new(crate::alga_host::AlgaHost::new(s.clone())?);
                backends.host_api = Some(Arc::new(crate::business::alga::AlgaHostApi::new(alga.clone())));
                backends.guest_kv = Some(Arc::new(crate::storage::alga::AlgaKv::new(alga, s.timeout)));
            }
        }
        let runtime = match runs {
            Runs::NoGuests => None,
            Runs::Guests => {
                let engine = KelpEngine::new(settings.engine.clone())?;
                let linker = crate::host::linker(&engine.engine)?;
                let cache = Arc::new(ModuleCache::new(
                    engine,
                    linker,
                    backends.blobs.clone(),
                    backends.registry.clone(),
                    CacheSettings {
                        artifact_dir: settings.artifact_dir.clone(),
                        max_entries: settings.cache_max_entries,
                        max_bytes: settings.cache_max_bytes,
                        max_local_bytes: settings.artifact_dir_max_bytes,
                        fetch: crate::artifact_fetch::FetchPlan {
                            concurrency: settings.artifact_fetch_concurrency,
                            ..Default::default()
                        },
                    },
                ));
                let defaults = CallDefaults { debug_max_event_bytes: settings.debug_max_event_bytes };
                Some((Executor::new(cache), defaults))
            }
        };
        let ui_tokens = match backends.ui_token_key.as_deref().or(settings.ui.token_secret.as_deref()) {
            Some(key) => crate::auth::UiTokens::new(key.as_bytes(), settings.ui.token_ttl),
            None => crate::auth::UiTokens::random(settings.ui.token_ttl),
        };
        let parts = PlatformParts {
            jwt: match &backends.remote_jwks {
                Some(remote) => settings.jwt_verifier()?.with_remote_jwks(remote.clone()),
                None => settings.jwt_verifier()?,
            },
            ui_tokens,
            ui: crate::ui_assets::UiCache::new(
                settings.artifact_dir.join("ui"),
                backends.blobs.clone(),
                backends.registry.clone(),
            ),
            egress: EgressClient::new(settings.egress.clone())?,
            secrets_ttl: settings.secrets_ttl,
            vault: match &settings.vault {
                Some(v) => Some(crate::secrets::vault::VaultTransit::new(v.settings(backends.vault_token.take())?)?),
                None => None,
            },
            runtime,
            plan_defaults: settings.plan_defaults(),
            engine_max_memory_bytes: settings.engine.max_memory_bytes,
            engine_meters_fuel: settings.engine.fuel,
            usage_flush: settings.usage.then_some(settings.usage_flush),
        };
        Ok(Platform::new(backends, parts))
    }

    /// Create the AWS resources the settings name if they are missing (tables, bucket): for
    /// moto in tests and `kelp up --aws`. In AWS, template.yaml creates them.
    pub async fn bootstrap_aws(settings: &Settings) -> Result<()> {
        let clients = crate::aws::AwsClients::new(&settings.aws).await;
        crate::stores::dynamodb::create_tables(&clients.dynamo, &settings.tables).await?;
        if let Some(bucket) = &settings.bucket {
            crate::blobs::s3::ensure_bucket(&clients.s3, bucket).await?;
        }
        Ok(())
    }
}
