//! Bundles from Alga's bundle store (`KELP_ALGA_BUNDLE_BUCKET`), in Alga's key layout
//! `tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst`, where `extension` is
//! Alga's registry id: what `/v1/execute` runs and `/ext-ui/{registry id}/…` serves when
//! the bundle was never published to Kelp.
//!
//! A fetched bundle is checked against its sha256 and published (manifest validated,
//! component precompiled) into a registry entry of its own per (tenant, Alga extension),
//! named `alga/{tenant}/{extension}`: the bytes are one tenant's upload, so they must not
//! take, block or reveal a name@version that another tenant (or the operator, through the
//! admin API) publishes. A call finds such a version only through its own tenant's scope.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::http::error::ApiError;
use crate::platform::Platform;
use crate::stores::VersionRecord;

/// Prefix of the registry names of fetched bundles' scopes.
const SCOPE_PREFIX: &str = "alga/";

/// The registry name of the scope of `tenant`'s bundles of Alga extension `extension`.
pub fn scope_name(tenant: &str, extension: &str) -> String {
    format!("{SCOPE_PREFIX}{tenant}/{}", extension.to_lowercase())
}

/// Whether a registry name is a fetched bundle's scope (never a manifest name: those have no `/`).
pub fn is_scope_name(name: &str) -> bool {
    name.starts_with(SCOPE_PREFIX)
}

/// The Alga extension id of a scope name (`alga/{tenant}/{extension}`).
pub fn scope_extension(name: &str) -> Option<&str> {
    name.strip_prefix(SCOPE_PREFIX)?.split_once('/').map(|(_, ext)| ext)
}

/// Why no version could be had, in the words of Alga's runner (`status`, `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status Alga's runner answers.
    pub status: u16,
    /// Its `error` text.
    pub error: String,
}

impl Refusal {
    fn new(status: u16, error: impl Into<String>) -> Self {
        Self { status, error: error.into() }
    }
}

/// Fetches, one per bundle at a time, and what was found, by (tenant, extension, hash).
pub struct AlgaBundles {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    found: Mutex<LruCache<String, String>>,
}

impl Default for AlgaBundles {
    fn default() -> Self {
        Self { gates: Mutex::default(), found: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))) }
    }
}

/// Whether a tenant or extension id can name a place in Alga's store and a scope: 1–128 of
/// ASCII letters, digits, `.`, `_` and `-` (Alga's ids are UUIDs), and not `.` or `..`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && id != "."
        && id != ".."
}

/// `sha256:<hex>` or `<hex>` → lower-case hex, if it is 64 hex digits.
pub fn content_hex(content_hash: &str) -> Option<String> {
    let hex = content_hash.trim().trim_start_matches("sha256:").to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The key of a (tenant, Alga extension, content) in the fetch gates and the found cache.
fn found_key(tenant: &str, extension: &str, hex: &str) -> String {
    format!("{tenant}/{}/{hex}", extension.to_lowercase())
}

impl AlgaBundles {
    /// The version `tenant` has of Alga extension `extension` with this content, if this
    /// process has found or fetched it before (no registry call: the warm path).
    pub async fn cached(
        &self,
        platform: &Platform,
        tenant: &str,
        extension: &str,
        hex: &str,
    ) -> Result<Option<Arc<VersionRecord>>, ApiError> {
        let key = found_key(tenant, extension, hex);
        let known = self.found.lock().get(&key).cloned();
        match known {
            Some(id) => Ok(platform.version(&id).await?),
            None => Ok(None),
        }
    }

    /// The version `tenant` has of Alga extension `extension` with this content, if it was
    /// fetched before (no store call).
    pub async fn find(
        &self,
        platform: &Platform,
        tenant: &str,
        extension: &str,
        hex: &str,
    ) -> Result<Option<Arc<VersionRecord>>, ApiError> {
        if let Some(v) = self.cached(platform, tenant, extension, hex).await? {
            return Ok(Some(v));
        }
        let key = found_key(tenant, extension, hex);
        let Some(scope) = platform.registry.find_extension_by_name(&scope_name(tenant, extension)).await? else {
            return Ok(None);
        };
        match crate::publish::version_with_content(platform, &scope.id, &format!("sha256:{hex}")).await? {
            Some(v) => {
                self.found.lock().put(key, v.id.clone());
                Ok(platform.version(&v.id).await?)
            }
            None => Ok(None),
        }
    }

    /// The version of this bundle in `tenant`'s scope: found, or fetched from Alga's store,
    /// checked and published once however many calls ask at the same time.
    pub async fn fetch(
        &self,
        platform: &Arc<Platform>,
        tenant: &str,
        extension: &str,
        content_hash: &str,
    ) -> Result<Result<Arc<VersionRecord>, Refusal>, ApiError> {
        let Some(store) = &platform.alga_bundles else { return Ok(Err(Refusal::new(404, "bundle_not_found"))) };
        let Some(hex) = content_hex(content_hash) else {
            return Ok(Err(Refusal::new(400, "bundle_fetch_failed: content_hash is not sha256:<hex>")));
        };
        if !is_valid_id(tenant) || !is_valid_id(extension) {
            return Ok(Err(Refusal::new(400, "bundle_fetch_failed: the tenant or extension id is not a valid id")));
        }
        let gate_key = found_key(tenant, extension, &hex);
        let gate = self.gates.lock().entry(gate_key.clone()).or_default().clone();
        let result = async {
            let _one_at_a_time = gate.lock().await;
            // Known already, or published by the caller this one waited for.
            if let Some(v) = self.find(platform, tenant, extension, &hex).await? {
                return Ok(Ok(v));
            }
            self.fetch_now(platform, store.as_ref(), tenant, extension, &hex).await
        }
        .await;
        // The gate map only holds fetches in flight: the last one out removes its entry.
        let mut gates = self.gates.lock();
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(&gate_key);
        }
        result
    }

    async fn fetch_now(
        &self,
        platform: &Arc<Platform>,
        store: &dyn crate::blobs::BlobStore,
        tenant: &str,
        extension: &str,
        hex: &str,
    ) -> Result<Result<Arc<VersionRecord>, Refusal>, ApiError> {
        let key = format!("tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst");
        let bytes = match store.get(&key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(Err(Refusal::new(404, "bundle_not_found"))),
            Err(e) => {
                tracing::warn!(%key, error = %e, "Alga bundle store unavailable");
                return Ok(Err(Refusal::new(502, "bundle_fetch_failed: the bundle store is unavailable")));
            }
        };
        let canonical = format!("sha256:{hex}");
        if crate::publish::content_hash(&bytes) != canonical {
            tracing::warn!(%key, "bundle from Alga's store does not match its content hash");
            return Ok(Err(Refusal::new(502, "bundle_fetch_failed: the bundle does not match its sha256")));
        }
        let scope = scope_name(tenant, extension);
        let limits = crate::publish::BundleLimits::default();
        match crate::publish::publish_as(platform, bytes, &limits, Some(&scope)).await {
            Ok(published) => {
                tracing::info!(%key, version = %published.version.id, "bundle fetched from Alga's store and published");
                self.found.lock().put(found_key(tenant, extension, hex), published.version.id.clone());
                Ok(Ok(Arc::new(published.version)))
            }
            Err(e) => {
                let reason = ApiError::from(e);
                let status = if reason.status.is_client_error() { 400 } else { 502 };
                Ok(Err(Refusal::new(status, format!("bundle_fetch_failed: {} ({})", reason.message, reason.code))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_cannot_be_manifest_names_and_name_their_extension() {
        let name = scope_name("acme", "1F0E8C4A-0000-4000-8000-000000000001");
        assert_eq!(name, "alga/acme/1f0e8c4a-0000-4000-8000-000000000001");
        assert!(is_scope_name(&name) && !is_scope_name("com.acme.payroll"));
        assert_eq!(scope_extension(&name), Some("1f0e8c4a-0000-4000-8000-000000000001"));
        assert!(crate::manifest::Manifest::from_value(
            serde_json::json!({"name": name, "version": "1.0.0", "runtime": "wasm-js@1"})
        )
        .is_err());
    }

    #[test]
    fn ids_that_could_escape_a_key_or_a_scope_are_not_valid() {
        assert!(is_valid_id("acme") && is_valid_id("1f0e8c4a-0000-4000-8000-000000000001") && is_valid_id("t_1.x"));
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a caller names as tenant and extension: either refused, or a store key with
        /// no way out of `tenants/{tenant}/extensions/{extension}/` and a scope that names
        /// exactly that extension.
        #[test]
        fn ids_either_refused_or_confined(tenant in "\\PC{0,20}", extension in "\\PC{0,20}") {
            if is_valid_id(&tenant) && is_valid_id(&extension) {
                let key = format!("tenants/{tenant}/extensions/{extension}/sha256/x/bundle.tar.zst");
                proptest::prop_assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
                proptest::prop_assert_eq!(key.split('/').count(), 7);
                let scope = scope_name(&tenant, &extension);
                proptest::prop_assert!(is_scope_name(&scope));
                let lowered = extension.to_lowercase();
                proptest::prop_assert_eq!(scope_extension(&scope), Some(lowered.as_str()));
            }
        }

        #[test]
        fn content_hashes_are_64_hex_or_refused(raw in "(sha256:)?[0-9a-fA-Fxz]{0,70}") {
            if let Some(hex) = content_hex(&raw) {
                proptest::prop_assert_eq!(hex.len(), 64);
                proptest::prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }

    /// A platform over embedded backends in `dir`, with a directory as Alga's bundle store.
    fn platform(dir: &std::path::Path) -> Arc<Platform> {
        use crate::blobs::BlobStore;
        let blobs: Arc<dyn BlobStore> = Arc::new(crate::blobs::dir::DirBlobStore::new(dir.join("blobs")));
        let db = crate::stores::sqlite::SqliteDb::open(&dir.join("kelp.db")).unwrap();
        let stores = Arc::new(crate::stores::sqlite::SqliteStores::new(db.clone()));
        let backends = crate::platform::Backends {
            registry: stores.clone(),
            installs: stores.clone(),
            audit: stores.clone(),
            grants: stores.clone(),
            kv: Arc::new(crate::storage::sqlite::SqliteKv::new(db.clone())),
            usage: Arc::new(crate::usage::sqlite::SqliteUsage::new(db)),
            guest_kv: None,
            secrets: Arc::new(crate::secrets::file::FileSecrets::in_memory()),
            blobs: blobs.clone(),
            debug: Arc::new(crate::debug::memory::MemoryBus::new(16)),
            host_api: None,
            ui_token_key: None,
            alga_bundles: Some(Arc::new(crate::blobs::dir::DirBlobStore::new(dir.join("alga")))),
            vault_token: None,
            remote_jwks: None,
        };
        let parts = crate::platform::PlatformParts {
            jwt: crate::auth::JwtVerifier::new(None, None),
            ui_tokens: crate::auth::UiTokens::random(std::time::Duration::from_secs(60)),
            ui: crate::ui_assets::UiCache::new(dir.join("ui"), blobs, stores),
            egress: crate::egress::EgressClient::new(Default::default()).unwrap(),
            secrets_ttl: std::time::Duration::from_secs(1),
            vault: None,
            runtime: None,
            plan_defaults: crate::call_limits::Limits::for_tests(),
            engine_max_memory_bytes: 256 << 20,
            engine_meters_fuel: false,
            usage_flush: None,
        };
        Platform::new(backends, parts)
    }

    /// The gate map only holds fetches in flight: after many fetches (here of bundles the store
    /// does not have) it is empty again, however many hashes were asked for.
    #[tokio::test]
    async fn the_gate_map_only_holds_fetches_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let platform = platform(dir.path());
        let bundles = AlgaBundles::default();
        let asked = futures::future::join_all((0..50u32).map(|i| {
            let (bundles, platform) = (&bundles, &platform);
            async move { bundles.fetch(platform, "acme", "ext", &format!("{:064x}", i % 7)).await.unwrap() }
        }))
        .await;
        assert!(asked.iter().all(|a| a == &Err(Refusal::new(404, "bundle_not_found"))));
        assert!(bundles.gates.lock().is_empty(), "{} gates left", bundles.gates.lock().len());
    }

    #[test]
    fn content_hashes_are_sha256_hex() {
        let hex = "AB".repeat(32);
        assert_eq!(content_hex(&format!("sha256:{hex}")), Some(hex.to_lowercase()));
        assert_eq!(content_hex(&hex), Some(hex.to_lowercase()));
        assert_eq!(content_hex("sha256:xyz"), None);
    }
}
