//! The platform: every backend and process-wide cache one Kelp process uses, built once at
//! start-up and shared by the routers. [`Platform::embedded`] builds the local default
//! (SQLite, directories, a secrets file, the in-process debug bus).

use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use lru::LruCache;
use parking_lot::Mutex;

use crate::auth::JwtVerifier;
use crate::blobs::{dir::DirBlobStore, BlobStore};
use crate::business::HostApi;
use crate::cache::{CacheSettings, ModuleCache};
use crate::config::{BackendKind, Settings};
use crate::debug::{memory::MemoryBus, DebugBus};
use crate::egress::EgressClient;
use crate::engine::KelpEngine;
use crate::executor::Executor;
use crate::secrets::{file::FileSecrets, SecretSource, SecretsResolver};
use crate::storage::{sqlite::SqliteKv, KvStore};
use crate::stores::sqlite::{SqliteDb, SqliteStores};
use crate::stores::{AuditLog, Grants, Installs, Registry, StoreResult, VersionRecord};

/// The backends of a platform, chosen by the resolver.
pub struct Backends {
    /// Registry.
    pub registry: Arc<dyn Registry>,
    /// Installs.
    pub installs: Arc<dyn Installs>,
    /// Audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Debug grants.
    pub grants: Arc<dyn Grants>,
    /// Storage KV.
    pub kv: Arc<dyn KvStore>,
    /// Secret envelopes.
    pub secrets: Arc<dyn SecretSource>,
    /// Blobs.
    pub blobs: Arc<dyn BlobStore>,
    /// Debug bus.
    pub debug: Arc<dyn DebugBus>,
    /// PSA host API.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Key of UI tokens read from Secrets Manager (`KELP_UI_TOKEN_SECRET_ARN`), if any.
    pub ui_token_key: Option<String>,
}

impl Backends {
    /// The backends the settings name: embedded or AWS for the control plane, Redis for the
    /// debug bus when configured. The one place that maps configuration to implementations.
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        let mut backends = match settings.backend {
            BackendKind::Embedded => Self::embedded(settings)?,
            BackendKind::Aws => Self::aws(settings).await?,
        };
        if let Some(redis) = &settings.redis {
            let mut redis = redis.clone();
            if let (None, Some(arn)) = (&redis.password, &redis.password_secret_arn) {
                redis.password = Some(secret_password(settings, arn, "the Redis AUTH secret").await?);
            }
            backends.debug = crate::debug::redis::RedisBus::start(redis).context("configuring the Redis debug bus")?;
        }
        if let Some(arn) = &settings.ui.token_secret_arn {
            backends.ui_token_key = Some(secret_password(settings, arn, "the UI token key").await?);
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
            kv: Arc::new(crate::storage::dynamodb::DynamoKv::new(dynamo, settings.tables.storage.clone())),
            secrets: Arc::new(crate::secrets::aws::SecretsManagerSource::new(sm, settings.secret_prefix.clone())),
            blobs: Arc::new(crate::blobs::s3::S3BlobStore::new(s3, bucket, settings.bucket_prefix.clone())),
            debug: Arc::new(MemoryBus::new(settings.debug_maxlen)),
            host_api: None,
            ui_token_key: None,
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
            kv: Arc::new(SqliteKv::new(db)),
            secrets: Arc::new(FileSecrets::open(settings.secrets_file.clone())?),
            blobs: Arc::new(DirBlobStore::new(settings.data_dir.join("blobs"))),
            debug: Arc::new(MemoryBus::new(settings.debug_maxlen)),
            host_api: None,
            ui_token_key: None,
        })
    }
}

/// Read a generated password from Secrets Manager (`{"password": ...}` or the plain string):
/// the Redis AUTH token, the UI token key.
async fn secret_password(settings: &Settings, arn: &str, what: &str) -> Result<String> {
    let clients = crate::aws::AwsClients::new(&settings.aws).await;
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

/// Everything a router needs.
pub struct Platform {
    /// Settings.
    pub settings: Settings,
    /// Registry.
    pub registry: Arc<dyn Registry>,
    /// Installs.
    pub installs: Arc<dyn Installs>,
    /// Audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Debug grants.
    pub grants: Arc<dyn Grants>,
    /// Storage KV.
    pub kv: Arc<dyn KvStore>,
    /// Secrets resolver (with its cache).
    pub secrets: Arc<SecretsResolver>,
    /// Blobs.
    pub blobs: Arc<dyn BlobStore>,
    /// Debug bus.
    pub debug: Arc<dyn DebugBus>,
    /// PSA host API.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Executor (and the module cache).
    pub executor: Executor,
    /// Egress client.
    pub egress: Arc<EgressClient>,
    /// Bearer token verifier.
    pub jwt: JwtVerifier,
    /// Mints and verifies extension-scoped UI tokens.
    pub ui_tokens: crate::auth::UiTokens,
    /// Local copies of extension UIs.
    pub ui: crate::ui::UiCache,
    // Versions are immutable, so they can be cached without invalidation.
    versions: Mutex<LruCache<String, Arc<VersionRecord>>>,
    // Extension names never change their id.
    names: Mutex<LruCache<String, String>>,
}

impl Platform {
    /// Build a platform over the given backends (the host API is added when configured).
    pub fn new(settings: Settings, mut backends: Backends) -> Result<Arc<Self>> {
        if let (None, Some(host_api)) = (&backends.host_api, &settings.host_api) {
            backends.host_api = Some(Arc::new(crate::business::http::HttpHostApi::new(host_api.clone())?));
        }
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
            },
        ));
        let cap = NonZeroUsize::new(1024).expect("non-zero");
        Ok(Arc::new(Self {
            jwt: settings.jwt_verifier()?,
            ui_tokens: match backends.ui_token_key.as_deref().or(settings.ui.token_secret.as_deref()) {
                Some(key) => crate::auth::UiTokens::new(key.as_bytes(), settings.ui.token_ttl),
                None => crate::auth::UiTokens::random(settings.ui.token_ttl),
            },
            ui: crate::ui::UiCache::new(settings.artifact_dir.join("ui"), backends.blobs.clone()),
            egress: EgressClient::new(settings.egress.clone())?,
            secrets: Arc::new(SecretsResolver::new(backends.secrets, settings.secrets_ttl)),
            executor: Executor::new(cache),
            registry: backends.registry,
            installs: backends.installs,
            audit: backends.audit,
            grants: backends.grants,
            kv: backends.kv,
            blobs: backends.blobs,
            debug: backends.debug,
            host_api: backends.host_api,
            versions: Mutex::new(LruCache::new(cap)),
            names: Mutex::new(LruCache::new(cap)),
            settings,
        }))
    }

    /// The embedded local default.
    pub fn embedded(settings: Settings) -> Result<Arc<Self>> {
        let backends = Backends::embedded(&settings)?;
        Self::new(settings, backends)
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

    /// The platform the settings describe (what the function binaries run).
    pub async fn from_settings(settings: Settings) -> Result<Arc<Self>> {
        let backends = Backends::from_settings(&settings).await?;
        Self::new(settings, backends)
    }

    /// A version by id, cached (versions are immutable).
    pub async fn version(&self, id: &str) -> StoreResult<Option<Arc<VersionRecord>>> {
        if let Some(v) = self.versions.lock().get(id).cloned() {
            return Ok(Some(v));
        }
        let Some(v) = self.registry.get_version(id).await? else { return Ok(None) };
        let v = Arc::new(v);
        self.versions.lock().put(id.to_string(), v.clone());
        Ok(Some(v))
    }

    /// An extension's registry id by manifest name, cached.
    pub async fn extension_id_by_name(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_lowercase();
        if let Some(id) = self.names.lock().get(&name).cloned() {
            return Ok(Some(id));
        }
        let Some(ext) = self.registry.find_extension_by_name(&name).await? else { return Ok(None) };
        self.names.lock().put(name, ext.id.clone());
        Ok(Some(ext.id))
    }

    /// The module cache.
    pub fn cache(&self) -> &Arc<ModuleCache> {
        self.executor.cache()
    }
}
