//! The platform: the backends and process-wide caches one Kelp process shares, built once at
//! start-up and handed to the routers. It holds no settings — each router takes its own —
//! and the app layer (`wiring`) builds it from the environment.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;

use crate::auth::{JwtVerifier, UiTokens};
use crate::blobs::BlobStore;
use crate::business::HostApi;
use crate::cache::ModuleCache;
use crate::debug::DebugBus;
use crate::egress::EgressClient;
use crate::executor::Executor;
use crate::runtime::{CallDefaults, Runtime};
use crate::secrets::{SecretSource, SecretsResolver};
use crate::storage::KvStore;
use crate::stores::{AuditLog, Grants, Installs, Registry, StoreResult, VersionRecord};
use crate::ui_assets::UiCache;

/// The backends of a platform, chosen by the resolver (`wiring`).
pub struct Backends {
    /// Registry.
    pub registry: Arc<dyn Registry>,
    /// Installs.
    pub installs: Arc<dyn Installs>,
    /// Audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Debug grants.
    pub grants: Arc<dyn Grants>,
    /// Storage KV (Kelp's own data: idempotency records, plans, and the guests' storage
    /// unless `guest_kv` is set).
    pub kv: Arc<dyn KvStore>,
    /// Usage counters per install and hour.
    pub usage: Arc<dyn crate::usage::UsageStore>,
    /// The guests' storage when another system keeps it (Alga's storage API).
    pub guest_kv: Option<Arc<dyn KvStore>>,
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
    /// Alga's bundle store, if configured (bundles by content hash, Alga's key layout).
    pub alga_bundles: Option<Arc<dyn BlobStore>>,
    /// The Vault token read from Secrets Manager (`KELP_VAULT_TOKEN_SECRET_ARN`), if any.
    pub vault_token: Option<String>,
    /// The IdP's key set, read from `KELP_JWT_JWKS_URL` at start.
    pub remote_jwks: Option<crate::auth::jwks::RemoteJwks>,
}

/// What a platform is built from besides its backends.
pub struct PlatformParts {
    /// Bearer token verifier.
    pub jwt: JwtVerifier,
    /// UI token minting and verification.
    pub ui_tokens: UiTokens,
    /// Local copies of extension UIs.
    pub ui: UiCache,
    /// Egress client.
    pub egress: Arc<EgressClient>,
    /// Secrets cache TTL.
    pub secrets_ttl: Duration,
    /// Vault's transit engine, for `vault-transit:v1` envelopes, when configured.
    pub vault: Option<crate::secrets::vault::VaultTransit>,
    /// The executor and per-call defaults, for functions that run guests.
    pub runtime: Option<(Executor, CallDefaults)>,
    /// The default plan (the deployment's limits).
    pub plan_defaults: crate::call_limits::Limits,
    /// The engine's memory bound per execution (no plan goes past it).
    pub engine_max_memory_bytes: usize,
    /// Whether the engine meters fuel (a plan's `fuel` applies only then).
    pub engine_meters_fuel: bool,
    /// How often usage is written (zero: before each answer); `None`: not metered.
    pub usage_flush: Option<Duration>,
}

/// Everything a router needs.
pub struct Platform {
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
    /// Alga's bundle store, if configured.
    pub alga_bundles: Option<Arc<dyn BlobStore>>,
    /// Debug bus.
    pub debug: Arc<dyn DebugBus>,
    /// PSA host API.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Egress client (process-wide).
    pub egress: Arc<EgressClient>,
    /// Bearer token verifier.
    pub jwt: JwtVerifier,
    /// Mints and verifies extension-scoped UI tokens.
    pub ui_tokens: crate::auth::UiTokens,
    /// Local copies of extension UIs.
    pub ui: crate::ui_assets::UiCache,
    /// Operator metrics of tenant requests (`/metrics` in `kelp up`).
    pub metrics: crate::metrics::Metrics,
    /// The default plan: the limits of tenants without a plan, under every plan's unset ones.
    pub plan_defaults: crate::call_limits::Limits,
    /// The engine's memory bound per execution.
    pub engine_max_memory_bytes: usize,
    /// Whether the engine meters fuel.
    pub engine_meters_fuel: bool,
    /// Usage counters and their store (always there for queries).
    pub usage_store: Arc<dyn crate::usage::UsageStore>,
    /// The usage meter of tenant requests; `None` when metering is off (`KELP_USAGE=false`).
    pub usage: Option<Arc<crate::usage::UsageMeter>>,
    // The execution runtime; `None` in functions that never run a guest (the debug relay).
    runtime: Option<Arc<Runtime>>,
    // Versions are immutable, so they can be cached without invalidation.
    versions: Mutex<LruCache<String, Arc<VersionRecord>>>,
    // Extension names never change their id.
    names: Mutex<LruCache<String, String>>,
    // Nor ids their name.
    names_by_id: Mutex<LruCache<String, String>>,
}

impl Platform {
    /// A platform over its backends and parts.
    pub fn new(backends: Backends, parts: PlatformParts) -> Arc<Self> {
        let runtime = parts.runtime.map(|(executor, defaults)| {
            Arc::new(Runtime {
                executor,
                kv: backends.guest_kv.clone().unwrap_or_else(|| backends.kv.clone()),
                egress: parts.egress.clone(),
                host_api: backends.host_api.clone(),
                debug: backends.debug.clone(),
                defaults,
            })
        });
        let cap = NonZeroUsize::new(1024).expect("non-zero");
        let usage = parts.usage_flush.map(|every| {
            let meter = crate::usage::UsageMeter::new(backends.usage.clone(), every);
            meter.spawn_flusher();
            meter
        });
        Arc::new(Self {
            plan_defaults: parts.plan_defaults,
            engine_max_memory_bytes: parts.engine_max_memory_bytes,
            engine_meters_fuel: parts.engine_meters_fuel,
            usage_store: backends.usage.clone(),
            usage,
            jwt: parts.jwt,
            ui_tokens: parts.ui_tokens,
            ui: parts.ui,
            egress: parts.egress,
            secrets: Arc::new(match parts.vault {
                Some(vault) => SecretsResolver::new(backends.secrets, parts.secrets_ttl).with_vault(vault),
                None => SecretsResolver::new(backends.secrets, parts.secrets_ttl),
            }),
            registry: backends.registry,
            installs: backends.installs,
            audit: backends.audit,
            grants: backends.grants,
            kv: backends.kv,
            blobs: backends.blobs,
            debug: backends.debug,
            host_api: backends.host_api,
            alga_bundles: backends.alga_bundles,
            runtime,
            metrics: Default::default(),
            versions: Mutex::new(LruCache::new(cap)),
            names: Mutex::new(LruCache::new(cap)),
            names_by_id: Mutex::new(LruCache::new(cap)),
        })
    }

    /// The execution runtime. Only functions built with one (the gateway, the admin API,
    /// `kelp up`) route to code that executes or precompiles; the relay never does.
    pub fn runtime(&self) -> &Arc<Runtime> {
        self.runtime.as_ref().expect("this platform was built without an execution runtime (debug relay)")
    }

    /// Whether the platform has an execution runtime.
    pub fn has_runtime(&self) -> bool {
        self.runtime.is_some()
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

    /// An extension's registry name by id, cached.
    pub async fn extension_name(&self, id: &str) -> StoreResult<Option<String>> {
        if let Some(name) = self.names_by_id.lock().get(id).cloned() {
            return Ok(Some(name));
        }
        let Some(ext) = self.registry.get_extension(id).await? else { return Ok(None) };
        self.names_by_id.lock().put(id.to_string(), ext.name.clone());
        Ok(Some(ext.name))
    }

    /// Check limits a plan or an install sets against what this deployment's engine can do.
    pub fn check_limits(&self, set: &crate::limits::LimitSet) -> Result<(), String> {
        set.validate(self.engine_max_memory_bytes, self.engine_meters_fuel)
    }

    /// The module cache of the runtime.
    pub fn cache(&self) -> &Arc<ModuleCache> {
        self.runtime().cache()
    }
}
