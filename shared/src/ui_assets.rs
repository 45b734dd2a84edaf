//! Extension UI assets: each version's iframe UI (`ui/` in the bundle), extracted once per
//! content hash at publish into the blob store and copied into the local artifact dir on
//! first use. The `ui` router serves them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::blobs::{BlobError, BlobStore};
use crate::bundle::{Bundle, BundleLimits};
use crate::manifest::Manifest;
use crate::stores::Registry;

/// The files of one version's UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiIndex {
    /// Entry file, relative to the UI root (e.g. `index.html`).
    pub entry: String,
    /// Files by path relative to the UI root.
    pub files: BTreeMap<String, UiFile>,
}

/// One UI file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiFile {
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 (the strong ETag).
    pub sha256: String,
}

/// Blob key prefix of a version's UI files.
fn blob_prefix(content_hex: &str) -> String {
    format!("ui/{content_hex}")
}

/// The UI root inside a bundle and the entry relative to it (`ui/index.html` → `index.html`).
fn entry_parts(entry: &str) -> String {
    entry.strip_prefix("ui/").unwrap_or(entry).to_string()
}

/// Refuse (before anything is compiled or stored) a manifest whose `ui.entry` is not in the
/// bundle.
pub fn check_entry(manifest: &Manifest, bundle: &Bundle, prefix: &str) -> Result<(), String> {
    match &manifest.ui {
        Some(ui) if !bundle.files.contains_key(&format!("{prefix}ui/{}", entry_parts(&ui.entry))) => {
            Err(format!("ui.entry {} is not in the bundle (UI files live under ui/)", ui.entry))
        }
        _ => Ok(()),
    }
}

/// The index of a bundle's UI (every file under `{prefix}ui/`), `None` without a `ui`; an
/// error when the entry is not among the files.
fn index_of(manifest: &Manifest, bundle: &Bundle, prefix: &str) -> Result<Option<UiIndex>, String> {
    let Some(ui) = &manifest.ui else { return Ok(None) };
    let root = format!("{prefix}ui/");
    let entry = entry_parts(&ui.entry);
    let mut index = UiIndex { entry: entry.clone(), files: BTreeMap::new() };
    for (path, bytes) in bundle.files.range(root.clone()..).take_while(|(p, _)| p.starts_with(&root)) {
        let rel = &path[root.len()..];
        index
            .files
            .insert(rel.to_string(), UiFile { size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(bytes)) });
    }
    if !index.files.contains_key(&entry) {
        return Err(format!("ui.entry {} is not in the bundle", ui.entry));
    }
    Ok(Some(index))
}

/// Extract the UI of a bundle at publish: every file under `{prefix}ui/` plus an index, into
/// the blob store. A manifest with `ui` whose entry is not in the bundle is refused. Returns
/// the sha256 (hex) of the stored index, for the registry ([`record_index_digest`]).
pub async fn extract_at_publish(
    blobs: &Arc<dyn BlobStore>,
    manifest: &Manifest,
    bundle: &Bundle,
    prefix: &str,
    content_hex: &str,
) -> Result<Option<String>, ExtractError> {
    let Some(index) = index_of(manifest, bundle, prefix).map_err(ExtractError::MissingEntry)? else {
        return Ok(None);
    };
    let root = format!("{prefix}ui/");
    let base = blob_prefix(content_hex);
    for rel in index.files.keys() {
        blobs.put(&format!("{base}/files/{rel}"), &bundle.files[&format!("{root}{rel}")]).await?;
    }
    // The index last: a UI is only visible once every file is stored.
    let raw = serde_json::to_vec(&index).expect("plain data");
    blobs.put(&format!("{base}/index.json"), &raw).await?;
    Ok(Some(hex::encode(Sha256::digest(&raw))))
}

/// Where the registry keeps a UI index's digest: the artifact-digest record of a
/// pseudo-component `ui/{content hex}`, under the engine key [`UI_INDEX_RECORD`].
fn index_record_key(content_hex: &str) -> String {
    format!("ui/{content_hex}")
}

/// The "engine" half of a UI index's digest record.
const UI_INDEX_RECORD: &str = "ui-index";

/// Record a UI index's digest at publish (the control plane's write).
pub async fn record_index_digest(
    registry: &dyn Registry,
    content_hex: &str,
    digest: &str,
) -> Result<(), crate::stores::StoreError> {
    registry.put_artifact_digest(&index_record_key(content_hex), UI_INDEX_RECORD, digest).await
}

/// Why a UI could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The manifest's entry is not in the bundle.
    #[error("{0}")]
    MissingEntry(String),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// Local copies of UIs, fetched from the blob store once per content hash and checked there:
/// the index against the digest the registry recorded at publish (or, for versions published
/// before digests were recorded, against the bundle, itself checked against its content
/// hash), every file against the index.
pub struct UiCache {
    dir: PathBuf,
    blobs: Arc<dyn BlobStore>,
    registry: Arc<dyn Registry>,
    loading: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    indexes: Mutex<lru::LruCache<String, Arc<UiIndex>>>,
}

impl UiCache {
    /// A cache under `dir` (Lambda: /tmp) over the blob store and the registry's records.
    pub fn new(dir: PathBuf, blobs: Arc<dyn BlobStore>, registry: Arc<dyn Registry>) -> Self {
        Self {
            dir,
            blobs,
            registry,
            loading: Mutex::new(Default::default()),
            indexes: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(256).expect("non-zero"))),
        }
    }

    fn local(&self, content_hex: &str) -> PathBuf {
        self.dir.join(content_hex)
    }

    /// The index of a version's UI, copying the files locally on first use; `None` when the
    /// version has no UI.
    pub async fn index(&self, content_hex: &str) -> Result<Option<Arc<UiIndex>>, BlobError> {
        if let Some(i) = self.indexes.lock().get(content_hex).cloned() {
            return Ok(Some(i));
        }
        let gate = self.loading.lock().entry(content_hex.to_string()).or_default().clone();
        let _guard = gate.lock().await;
        let local = self.local(content_hex);
        let index_path = local.join("index.json");
        let index: UiIndex = match std::fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(i) => i,
            None => {
                let base = blob_prefix(content_hex);
                let Some(raw) = self.blobs.get(&format!("{base}/index.json")).await? else { return Ok(None) };
                let index: UiIndex =
                    serde_json::from_slice(&raw).map_err(|e| BlobError::Internal(format!("corrupt UI index: {e}")))?;
                self.check_index(content_hex, &raw, &index).await?;
                for (rel, meta) in &index.files {
                    let bytes = self
                        .blobs
                        .get(&format!("{base}/files/{rel}"))
                        .await?
                        .ok_or_else(|| BlobError::Internal(format!("UI file {rel} missing")))?;
                    if hex::encode(Sha256::digest(&bytes)) != meta.sha256 {
                        return Err(BlobError::Internal(format!("UI file {rel} does not match its hash")));
                    }
                    write(&local.join("files").join(rel), &bytes)?;
                }
                write(&index_path, &raw)?;
                index
            }
        };
        let index = Arc::new(index);
        self.indexes.lock().put(content_hex.to_string(), index.clone());
        Ok(Some(index))
    }

    /// Whether an index read from the blob store is the one published: its sha256 against the
    /// registry's record, or — without a record — against the index rebuilt from the bundle,
    /// whose own sha256 is the version's content hash.
    async fn check_index(&self, content_hex: &str, raw: &[u8], index: &UiIndex) -> Result<(), BlobError> {
        let recorded = self
            .registry
            .artifact_digest(&index_record_key(content_hex), UI_INDEX_RECORD)
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        let tampered = || BlobError::Internal("the UI index does not match what was published".into());
        if let Some(digest) = recorded {
            return if hex::encode(Sha256::digest(raw)) == digest { Ok(()) } else { Err(tampered()) };
        }
        let bundle_bytes = self
            .blobs
            .get(&crate::blobs::bundle_key(content_hex))
            .await?
            .ok_or_else(|| BlobError::Internal("the bundle of a UI without a recorded digest is missing".into()))?;
        if hex::encode(Sha256::digest(&bundle_bytes)) != content_hex {
            return Err(tampered());
        }
        let bundle = crate::bundle::unpack(&bundle_bytes, &BundleLimits::default()).map_err(|_| tampered())?;
        let (prefix, manifest) = bundle.manifest().map_err(|_| tampered())?;
        let manifest = Manifest::parse(manifest).map_err(|_| tampered())?;
        match index_of(&manifest, &bundle, &prefix) {
            Ok(Some(published)) if published == *index => Ok(()),
            _ => Err(tampered()),
        }
    }

    /// Path of a local UI file (the caller has checked the name against the index).
    pub fn file(&self, content_hex: &str, rel: &str) -> PathBuf {
        self.local(content_hex).join("files").join(rel)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| BlobError::Internal(e.to_string()))
}
