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
use crate::bundle::Bundle;
use crate::manifest::Manifest;

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

/// Extract the UI of a bundle at publish: every file under `{prefix}ui/` plus an index, into
/// the blob store. A manifest with `ui` whose entry is not in the bundle is refused.
pub async fn extract_at_publish(
    blobs: &Arc<dyn BlobStore>,
    manifest: &Manifest,
    bundle: &Bundle,
    prefix: &str,
    content_hex: &str,
) -> Result<Option<UiIndex>, ExtractError> {
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
        return Err(ExtractError::MissingEntry(format!("ui.entry {} is not in the bundle", ui.entry)));
    }
    let base = blob_prefix(content_hex);
    for rel in index.files.keys() {
        blobs.put(&format!("{base}/files/{rel}"), &bundle.files[&format!("{root}{rel}")]).await?;
    }
    // The index last: a UI is only visible once every file is stored.
    blobs.put(&format!("{base}/index.json"), &serde_json::to_vec(&index).expect("plain data")).await?;
    Ok(Some(index))
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

/// Local copies of UIs, fetched from the blob store once per content hash.
pub struct UiCache {
    dir: PathBuf,
    blobs: Arc<dyn BlobStore>,
    loading: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    indexes: Mutex<lru::LruCache<String, Arc<UiIndex>>>,
}

impl UiCache {
    /// A cache under `dir` (Lambda: /tmp) over the blob store.
    pub fn new(dir: PathBuf, blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            dir,
            blobs,
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

    /// Path of a local UI file (the caller has checked the name against the index).
    pub fn file(&self, content_hex: &str, rel: &str) -> PathBuf {
        self.local(content_hex).join("files").join(rel)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| BlobError::Internal(e.to_string()))
}
