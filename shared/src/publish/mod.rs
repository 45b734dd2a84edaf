//! Publishing a version: validate the bundle and manifest, compile the component once (which
//! also proves it links against Kelp's host), store bundle, component and precompiled
//! artifact, then record the version. Nothing is recorded unless everything before it
//! succeeded; blobs are content-addressed, so a failed publish leaves no visible state.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use axum::http::StatusCode;

use crate::blobs::{bundle_key, component_key};
pub use crate::bundle::{pack_dir, unpack, Bundle, BundleError, BundleLimits};
use crate::http::error::ApiError;
use crate::manifest::{Manifest, ManifestError};
use crate::platform::Platform;
use crate::stores::{now_rfc3339, ExtensionRecord, PutVersion, StoreError, VersionRecord};

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Bundle malformed or unsafe (400) or over a cap (413).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Manifest invalid (400).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component is missing, not a component, or imports what Kelp does not provide (400).
    #[error("invalid component: {0}")]
    Component(String),
    /// name@version exists with other content (409).
    #[error("{0}")]
    Conflict(String),
    /// A backend failed (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store failed (503).
    #[error("blob store: {0}")]
    Blob(String),
}

/// A published version.
#[derive(Debug, Clone)]
pub struct Published {
    /// The extension.
    pub extension: ExtensionRecord,
    /// The version.
    pub version: VersionRecord,
    /// False when the same content was already published (idempotent).
    pub created: bool,
    /// What the manifest says that Kelp ignored (unknown keys, with suggestions).
    pub warnings: Vec<String>,
}

/// `sha256:<hex>`.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Publish a bundle (`.tar.zst` or `.tar` bytes) under its manifest's name.
pub async fn publish(
    platform: &Arc<Platform>,
    bundle_bytes: Vec<u8>,
    limits: &BundleLimits,
) -> Result<Published, PublishError> {
    publish_as(platform, bundle_bytes, limits, None).await
}

/// Publish a bundle under `registry_name` instead of its manifest's name: bundles fetched
/// from Alga's store are kept in a registry entry of their own per (tenant, Alga extension),
/// so no tenant's upload can take, block or reveal a name@version of another's
/// ([`crate::alga_bundles`]). Such names contain `/`, which no manifest name may.
pub async fn publish_as(
    platform: &Arc<Platform>,
    bundle_bytes: Vec<u8>,
    limits: &BundleLimits,
    registry_name: Option<&str>,
) -> Result<Published, PublishError> {
    let hash = content_hash(&bundle_bytes);
    let bundle = unpack(&bundle_bytes, limits)?;
    let (prefix, manifest_bytes) = bundle.manifest()?;
    let manifest = Manifest::parse(manifest_bytes)?;
    let warnings = serde_json::from_slice(manifest_bytes).map(|v| Manifest::warnings(&v)).unwrap_or_default();
    for w in &warnings {
        tracing::warn!(extension = %manifest.name, version = %manifest.version, "manifest: {w}");
    }
    crate::ui_assets::check_entry(&manifest, &bundle, &prefix).map_err(|m| PublishError::Manifest(ManifestError(m)))?;
    let component = component_of(&manifest, &bundle, &prefix)?;
    let name = registry_name.map(str::to_string).unwrap_or_else(|| manifest.name.clone());
    let existing = platform.registry.find_extension_by_name(&name).await?;
    // Versions are immutable: the same name@version with other content is a conflict; the
    // same content again is the version already published, whatever its version says.
    if let Some(existing) = &existing {
        let found = match manifest.wildcard_prefix() {
            Some(_) => version_with_content(platform, &existing.id, &hash).await?,
            None => platform.registry.find_version(&existing.id, &manifest.version).await?,
        };
        if let Some(v) = found {
            return same_or_conflict(existing.clone(), v, &hash).map(|p| Published { warnings, ..p });
        }
    }

    // Compile (and link-check) before anything is recorded: a bad component leaves no trace.
    // A UI-only version has nothing to compile.
    let component_hash = component.as_ref().map(|c| hex::encode(Sha256::digest(c))).unwrap_or_default();
    let blobs = &platform.blobs;
    let blob = |e: crate::blobs::BlobError| PublishError::Blob(e.to_string());
    if let Some(component) = &component {
        platform
            .cache()
            .validate_and_precompile(&component_hash, component.clone())
            .await
            .map_err(|e| PublishError::Component(e.to_string()))?;
        blobs.put(&component_key(&component_hash), component).await.map_err(blob)?;
    }
    let content_hex = hash.trim_start_matches("sha256:");
    if let Some(path) = &manifest.dev_source {
        let source = bundle
            .files
            .get(&format!("{prefix}{path}"))
            .ok_or_else(|| PublishError::Manifest(ManifestError(format!("devSource {path} is not in the bundle"))))?;
        std::str::from_utf8(source)
            .map_err(|_| PublishError::Manifest(ManifestError(format!("devSource {path} is not UTF-8 text"))))?;
        blobs.put(&crate::blobs::dev_source_key(content_hex), source).await.map_err(blob)?;
    }
    blobs.put(&bundle_key(content_hex), &bundle_bytes).await.map_err(blob)?;
    let ui_index_digest = crate::ui_assets::extract_at_publish(blobs, &manifest, &bundle, &prefix, content_hex)
        .await
        .map_err(|e| match e {
        crate::ui_assets::ExtractError::MissingEntry(m) => PublishError::Manifest(ManifestError(m)),
        crate::ui_assets::ExtractError::Blob(b) => PublishError::Blob(b.to_string()),
    })?;
    // The UI's index is trusted when it matches this record, never by what sits beside it in
    // the bucket (as artifacts are checked); recorded before the version becomes visible.
    if let Some(digest) = ui_index_digest {
        crate::ui_assets::record_index_digest(platform.registry.as_ref(), content_hex, &digest).await?;
    }

    let extension = platform
        .registry
        .ensure_extension(&ExtensionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            publisher: manifest.publisher.clone(),
            created_at: now_rfc3339(),
        })
        .await?;
    let mut version = VersionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        extension_id: extension.id.clone(),
        version: manifest.version.clone(),
        manifest,
        content_hash: hash.clone(),
        component_key: if component.is_some() { component_key(&component_hash) } else { String::new() },
        component_hash,
        bundle_key: bundle_key(content_hex),
        published_at: now_rfc3339(),
    };
    // Alga's `X.Y.*` becomes the next patch of X.Y, as Alga's registry resolves it; a
    // concurrent publish that took that number first makes this one try the next.
    // The stored manifest says the version it was published as.
    let wildcard = version.manifest.wildcard_prefix().map(str::to_string);
    let attempts = if wildcard.is_some() { WILDCARD_ATTEMPTS } else { 1 };
    for _ in 0..attempts {
        if let Some(prefix) = &wildcard {
            version.version = next_patch(platform, &extension.id, prefix).await?;
            version.manifest.version = version.version.clone();
        }
        match platform.registry.put_version(&version).await? {
            PutVersion::Created => return Ok(Published { extension, version, created: true, warnings }),
            PutVersion::Existing(existing) if existing.content_hash == hash || attempts == 1 => {
                // Lost a race with a concurrent publish of the same name@version.
                return same_or_conflict(extension, *existing, &hash);
            }
            PutVersion::Existing(_) => continue,
        }
    }
    Err(PublishError::Conflict(format!(
        "{}@{}: concurrent publishes kept taking the next patch version; retry",
        extension.name,
        wildcard.map(|p| format!("{p}.*")).unwrap_or(version.version)
    )))
}

/// How many patch numbers a wildcard publish tries when concurrent publishes take them.
const WILDCARD_ATTEMPTS: usize = 5;

/// The component of a bundle, or `None` for a UI-only version: Alga's bundles need no
/// component when the manifest has a UI (its SDK's `basic` and `ui-gallery` templates ship
/// none). A manifest that names its `entry` must ship it.
fn component_of(manifest: &Manifest, bundle: &Bundle, prefix: &str) -> Result<Option<Vec<u8>>, PublishError> {
    let path = format!("{prefix}{}", manifest.component_path());
    match bundle.files.get(&path) {
        Some(bytes) => Ok(Some(bytes.clone())),
        None if manifest.entry.is_none() && manifest.ui.is_some() => Ok(None),
        None => Err(PublishError::Component(format!(
            "{path} is not in the bundle (a bundle without a component must have a ui)"
        ))),
    }
}

/// The version of `extension` published from exactly these bytes (`sha256:<hex>`), if any.
/// Its own versions are searched: the registry's index by content hash answers one version
/// of any extension, and the same bytes may sit in another (a tenant's fetched copy).
pub async fn version_with_content(
    platform: &Platform,
    extension: &str,
    hash: &str,
) -> Result<Option<VersionRecord>, StoreError> {
    let mut page = crate::stores::PageRequest { limit: 1000, cursor: None };
    loop {
        let versions = platform.registry.list_versions(extension, &page).await?;
        if let Some(v) = versions.items.into_iter().find(|v| v.content_hash == hash) {
            return Ok(Some(v));
        }
        match versions.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(None),
        }
    }
}

/// `X.Y.(highest patch + 1)` over the extension's releases `X.Y.N` (prereleases and build
/// metadata are not counted, as Alga counts them), or `X.Y.0`.
async fn next_patch(platform: &Platform, extension: &str, prefix: &str) -> Result<String, PublishError> {
    let mut page = crate::stores::PageRequest { limit: 1000, cursor: None };
    let mut highest: Option<u64> = None;
    loop {
        let versions = platform.registry.list_versions(extension, &page).await?;
        for v in &versions.items {
            let patch = v.version.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.'));
            if let Some(n) = patch.filter(|p| p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse().ok()) {
                highest = highest.max(Some(n));
            }
        }
        match versions.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    Ok(format!("{prefix}.{}", highest.map_or(0, |n| n + 1)))
}

fn same_or_conflict(
    extension: ExtensionRecord,
    existing: VersionRecord,
    hash: &str,
) -> Result<Published, PublishError> {
    if existing.content_hash == hash {
        Ok(Published { extension, version: existing, created: false, warnings: Vec::new() })
    } else {
        Err(PublishError::Conflict(format!(
            "{}@{} is already published with other content ({}); versions are immutable",
            extension.name, existing.version, existing.content_hash
        )))
    }
}

/// Publish a directory (packed deterministically first).
pub async fn publish_dir(platform: &Arc<Platform>, dir: &std::path::Path) -> anyhow::Result<Published> {
    let bytes = pack_dir(dir)?;
    Ok(publish(platform, bytes, &BundleLimits::default()).await?)
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Bundle(BundleError::TooLarge(m)) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
            }
            PublishError::Bundle(BundleError::Invalid(m)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_bundle", m)
            }
            PublishError::Manifest(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", m.0),
            PublishError::Component(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_component", m),
            PublishError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "version_conflict", m),
            PublishError::Store(s) => s.into(),
            PublishError::Blob(m) => {
                tracing::warn!(error = %m, "blob store unavailable during publish");
                ApiError::unavailable("the blob store is unavailable; retry shortly")
            }
        }
    }
}
