//! Directory blob store (embedded default).

use std::path::PathBuf;

use async_trait::async_trait;

use super::{check_key, BlobError, BlobStore};

/// Blobs as files under a root directory.
pub struct DirBlobStore {
    root: PathBuf,
}

impl DirBlobStore {
    /// A store rooted at `root` (created on demand).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io(e: std::io::Error) -> BlobError {
    BlobError::Internal(e.to_string())
}

#[async_trait]
impl BlobStore for DirBlobStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&path, &bytes))
            .await
            .map_err(|e| BlobError::Internal(e.to_string()))?
            .map_err(io)
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>, BlobError> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut file = match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let total = file.metadata().await.map_err(io)?.len();
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(io)?;
        let mut bytes = Vec::with_capacity(len.min(total.saturating_sub(start)) as usize);
        file.take(len).read_to_end(&mut bytes).await.map_err(io)?;
        Ok(Some((bytes, total)))
    }

    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        tokio::fs::try_exists(self.path(key)?).await.map_err(io)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}
