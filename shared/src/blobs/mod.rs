//! Blob storage: bundles, component bytes, precompiled artifacts and extracted UI files.
//! A directory locally, S3 in AWS. Keys are `/`-separated relative paths.

pub mod dir;
pub mod s3;

use async_trait::async_trait;

/// Blob store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlobError {
    /// The key is not a clean relative path.
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    /// Backend unreachable.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("blob store error: {0}")]
    Internal(String),
}

/// A blob store.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The object, or `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// Write (replace) an object atomically: readers see the old or the new bytes, never a mix.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError>;
    /// Up to `len` bytes of the object from byte `start` (fewer at its end) and the object's
    /// whole length; `None` when absent. `start` must be inside the object.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>, BlobError>;
    /// Whether the object exists.
    async fn exists(&self, key: &str) -> Result<bool, BlobError>;
    /// Delete (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// Keys are clean relative paths: no empty, `.` or `..` segments, no backslash or NUL.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(BlobError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}

/// Key of a component's bytes.
pub fn component_key(component_hash: &str) -> String {
    format!("components/{component_hash}.wasm")
}

/// Key of a precompiled artifact for an engine, zstd-compressed (see [`crate::artifact_fetch`]).
pub fn artifact_key(compat_hash: &str, component_hash: &str) -> String {
    format!("{}.zst", legacy_artifact_key(compat_hash, component_hash))
}

/// Key of an uncompressed artifact, as publishes before compressed artifacts stored them:
/// still read, so an upgrade does not send their first requests to the compiler.
pub fn legacy_artifact_key(compat_hash: &str, component_hash: &str) -> String {
    format!("artifacts/{}/{component_hash}.cwasm", &compat_hash[..compat_hash.len().min(32)])
}

/// Key of the source a `kelp dev` version carries (its manifest's `devSource`), extracted at
/// publish so a call reads a few kilobytes, not the bundle.
pub fn dev_source_key(content_hex: &str) -> String {
    format!("dev-sources/{content_hex}.js")
}

/// Key of a published bundle.
pub fn bundle_key(content_hex: &str) -> String {
    format!("bundles/{content_hex}.tar.zst")
}
