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

/// Find `manifest.json` at the root or one directory deep; returns (prefix, manifest bytes).
fn find_manifest(bundle: &Bundle) -> Result<(String, &[u8]), BundleError> {
    if let Some(m) = bundle.files.get("manifest.json") {
        return Ok((String::new(), m));
    }
    let nested: Vec<_> =
        bundle.files.iter().filter(|(p, _)| p.matches('/').count() == 1 && p.ends_with("/manifest.json")).collect();
    match nested.as_slice() {
        [(path, bytes)] => Ok((path.trim_end_matches("manifest.json").to_string(), bytes.as_slice())),
        [] => Err(BundleError::Invalid("manifest.json not found at the root or one directory deep".into())),
        _ => Err(BundleError::Invalid("several manifest.json files one directory deep".into())),
    }
}

/// Publish a bundle (`.tar.zst` or `.tar` bytes).
pub async fn publish(
    platform: &Arc<Platform>,
    bundle_bytes: Vec<u8>,
    limits: &BundleLimits,
) -> Result<Published, PublishError> {
    let hash = content_hash(&bundle_bytes);
    let bundle = unpack(&bundle_bytes, limits)?;
    let (prefix, manifest_bytes) = find_manifest(&bundle)?;
    let manifest = Manifest::parse(manifest_bytes)?;
    let warnings = serde_json::from_slice(manifest_bytes).map(|v| Manifest::warnings(&v)).unwrap_or_default();
    for w in &warnings {
        tracing::warn!(extension = %manifest.name, version = %manifest.version, "manifest: {w}");
    }
    crate::ui_assets::check_entry(&manifest, &bundle, &prefix).map_err(|m| PublishError::Manifest(ManifestError(m)))?;
    let component_path = format!("{prefix}{}", manifest.component_path());
    let component = bundle
        .files
        .get(&component_path)
        .ok_or_else(|| PublishError::Component(format!("{component_path} is not in the bundle")))?
        .clone();

    // Versions are immutable: same name@version with other content is a conflict.
    if let Some(existing) = platform.registry.find_extension_by_name(&manifest.name).await? {
        if let Some(v) = platform.registry.find_version(&existing.id, &manifest.version).await? {
            return same_or_conflict(existing, v, &hash).map(|p| Published { warnings, ..p });
        }
    }

    // Compile (and link-check) before anything is recorded: a bad component leaves no trace.
    let component_hash = hex::encode(Sha256::digest(&component));
    platform
        .cache()
        .validate_and_precompile(&component_hash, component.clone())
        .await
        .map_err(|e| PublishError::Component(e.to_string()))?;
    let blobs = &platform.blobs;
    let blob = |e: crate::blobs::BlobError| PublishError::Blob(e.to_string());
    blobs.put(&component_key(&component_hash), &component).await.map_err(blob)?;
    let content_hex = hash.trim_start_matches("sha256:");
    blobs.put(&bundle_key(content_hex), &bundle_bytes).await.map_err(blob)?;
    crate::ui_assets::extract_at_publish(blobs, &manifest, &bundle, &prefix, content_hex).await.map_err(
        |e| match e {
            crate::ui_assets::ExtractError::MissingEntry(m) => PublishError::Manifest(ManifestError(m)),
            crate::ui_assets::ExtractError::Blob(b) => PublishError::Blob(b.to_string()),
        },
    )?;

    let extension = platform
        .registry
        .ensure_extension(&ExtensionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: manifest.name.clone(),
            publisher: manifest.publisher.clone(),
            created_at: now_rfc3339(),
        })
        .await?;
    let version = VersionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        extension_id: extension.id.clone(),
        version: manifest.version.clone(),
        manifest,
        content_hash: hash.clone(),
        component_hash: component_hash.clone(),
        component_key: component_key(&component_hash),
        bundle_key: bundle_key(content_hex),
        published_at: now_rfc3339(),
    };
    match platform.registry.put_version(&version).await? {
        PutVersion::Created => Ok(Published { extension, version, created: true, warnings }),
        // Lost a race with a concurrent publish of the same name@version.
        PutVersion::Existing(existing) => same_or_conflict(extension, *existing, &hash),
    }
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
