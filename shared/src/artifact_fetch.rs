//! Precompiled artifacts from the blob store at network speed: the cold-sandbox path.
//!
//! Publish stores each artifact zstd-compressed (a JS component's 36 MB `.cwasm` is ~10 MB).
//! A sandbox without the artifact in its local dir fetches it with parallel ranged GETs (one
//! S3 connection gives a Lambda roughly 50–90 MB/s; several give several times that), and
//! streams the ranges, in order, through decompression and then through sha256, xxh3 and the
//! file write at once, on two threads. The artifact is written to a temp file and renamed into
//! the local dir only when its sha256 equals the digest the registry recorded at publish:
//! nothing of it runs, or is even visible to the loader, before that.
//!
//! Each range has a timeout sized by its length (a slow network is an error the caller turns
//! into a 503, never a compile on the request path) and one retry.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sha2::{Digest, Sha256};

use crate::blobs::{BlobError, BlobStore};

/// How an artifact is fetched.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// The first range: small, so the object's length (which sizes the others) arrives fast.
    pub first_bytes: u64,
    /// Every later range.
    pub chunk_bytes: u64,
    /// Ranges in flight at once (one connection each).
    pub concurrency: usize,
    /// Every range may take this long, plus its length at `min_bytes_per_sec`.
    pub base_timeout: Duration,
    /// The slowest transfer rate a range is allowed before it is retried.
    pub min_bytes_per_sec: u64,
}

impl Default for FetchPlan {
    fn default() -> Self {
        Self {
            first_bytes: 256 << 10,
            chunk_bytes: 2 << 20,
            concurrency: 8,
            base_timeout: Duration::from_secs(2),
            min_bytes_per_sec: 5 << 20,
        }
    }
}

impl FetchPlan {
    fn timeout(&self, len: u64) -> Duration {
        self.base_timeout + Duration::from_secs_f64(len as f64 / self.min_bytes_per_sec.max(1) as f64)
    }
}

/// Why a fetch produced no artifact.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The blob store did not deliver (unreachable, too slow, short reads): try again later.
    #[error("artifact fetch failed: {0}")]
    Unavailable(String),
    /// The bytes arrived but are not the artifact the registry vouches for (bad zstd, wrong
    /// digest): never trusted.
    #[error("artifact rejected: {0}")]
    Corrupt(String),
}

/// What a fetch did.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// Bytes downloaded.
    pub compressed_bytes: u64,
    /// Bytes of the artifact written.
    pub artifact_bytes: u64,
    /// Ranged GETs made (retries included).
    pub requests: u32,
    /// From the first request to the artifact in place.
    pub elapsed: Duration,
}

/// Compress an artifact for the blob store.
pub fn compress(artifact: &[u8]) -> std::io::Result<Vec<u8>> {
    // Level 3: ~3x smaller for wasmtime artifacts, and it decompresses at over 1 GB/s.
    zstd::bulk::compress(artifact, 3)
}

/// Fetch the compressed artifact at `key`, decompress it, and write it to `dest` (with its
/// xxh3 checksum beside it, at `checksum_dest`) only if its sha256 is `expected_sha256`.
/// `Ok(None)` when the blob store has no such object.
pub async fn fetch_artifact(
    blobs: Arc<dyn BlobStore>,
    key: &str,
    expected_sha256: &str,
    dest: &Path,
    checksum_dest: &Path,
    plan: &FetchPlan,
) -> Result<Option<Fetched>, FetchError> {
    let started = Instant::now();
    let mut requests = 0u32;
    let Some((head, total)) = get_range_retrying(&blobs, key, 0, plan.first_bytes, plan, &mut requests).await? else {
        return Ok(None);
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(plan.concurrency.max(2));
    let (dest_owned, checksum_owned, expected) =
        (dest.to_path_buf(), checksum_dest.to_path_buf(), expected_sha256.trim().to_string());
    let writer =
        tokio::task::spawn_blocking(move || decompress_verify_write(rx, &dest_owned, &checksum_owned, &expected));
    let mut compressed = head.len() as u64;
    let mut downloaded = Ok(());
    if tx.send(head).await.is_ok() {
        let ranges: Vec<(u64, u64)> = (compressed..total)
            .step_by(plan.chunk_bytes.max(1) as usize)
            .map(|start| (start, plan.chunk_bytes.min(total - start)))
            .collect();
        let counter = std::sync::atomic::AtomicU32::new(0);
        // `buffered` keeps `concurrency` ranges in flight and yields them in order, so the
        // decoder consumes range n while ranges n+1.. are still downloading.
        let mut chunks = futures::stream::iter(ranges)
            .map(|(start, len)| {
                let (blobs, counter) = (&blobs, &counter);
                async move {
                    let mut made = 0;
                    let got = get_range_retrying(blobs, key, start, len, plan, &mut made).await;
                    counter.fetch_add(made, std::sync::atomic::Ordering::Relaxed);
                    match got? {
                        Some((bytes, _)) if bytes.len() as u64 == len => Ok(bytes),
                        Some((bytes, _)) => Err(FetchError::Unavailable(format!(
                            "range at {start} returned {} of {len} bytes",
                            bytes.len()
                        ))),
                        None => Err(FetchError::Unavailable("the artifact disappeared during the fetch".into())),
                    }
                }
            })
            .buffered(plan.concurrency.max(1));
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    compressed += bytes.len() as u64;
                    if tx.send(bytes).await.is_err() {
                        break; // the writer stopped: its error is the one to report
                    }
                }
                Err(e) => {
                    downloaded = Err(e);
                    break;
                }
            }
        }
        requests += counter.load(std::sync::atomic::Ordering::Relaxed);
    }
    drop(tx);
    let written = writer.await.map_err(|e| FetchError::Unavailable(format!("artifact writer task: {e}")))?;
    // A download error explains a short stream better than the decoder's complaint about it.
    downloaded?;
    let artifact_bytes = written?;
    Ok(Some(Fetched { compressed_bytes: compressed, artifact_bytes, requests, elapsed: started.elapsed() }))
}

async fn get_range_retrying(
    blobs: &Arc<dyn BlobStore>,
    key: &str,
    start: u64,
    len: u64,
    plan: &FetchPlan,
    requests: &mut u32,
) -> Result<Option<(Vec<u8>, u64)>, FetchError> {
    let mut last = String::new();
    for _attempt in 0..2 {
        *requests += 1;
        match tokio::time::timeout(plan.timeout(len), blobs.get_range(key, start, len)).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(BlobError::InvalidKey(k))) => return Err(FetchError::Unavailable(format!("invalid key {k}"))),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("range of {len} bytes at {start} took over {:?}", plan.timeout(len)),
        }
    }
    Err(FetchError::Unavailable(last))
}

/// Reads the compressed ranges, in order, as one stream.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(next) => (self.current, self.at) = (next, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Decompress on this thread; hash and write on a second one, so a cold start pays the
/// slower of the two, not their sum. The temp file becomes `dest` only if the digest matches.
fn decompress_verify_write(
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    dest: &Path,
    checksum_dest: &Path,
    expected: &str,
) -> Result<u64, FetchError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let io = |what: &str, e: std::io::Error| FetchError::Unavailable(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the artifact dir", e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("creating a temp file", e))?;
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let mut file = tmp.as_file().try_clone().map_err(|e| io("opening the temp file", e))?;
    let (decoded, written) = std::thread::scope(|scope| {
        let hashing = scope.spawn(move || -> std::io::Result<(String, u64, u64)> {
            let (mut sha, mut xxh, mut len) = (Sha256::new(), xxhash_rust::xxh3::Xxh3::new(), 0u64);
            for block in out_rx {
                sha.update(&block);
                xxh.update(&block);
                file.write_all(&block)?;
                len += block.len() as u64;
            }
            Ok((hex::encode(sha.finalize()), xxh.digest(), len))
        });
        let decoded = (|| -> Result<(), FetchError> {
            let reader = ChannelReader { rx, current: Vec::new(), at: 0 };
            let mut decoder =
                zstd::stream::read::Decoder::new(reader).map_err(|e| FetchError::Corrupt(format!("zstd: {e}")))?;
            loop {
                let mut block = vec![0u8; 1 << 20];
                let mut filled = 0;
                // Fill whole blocks: fewer, larger writes and hash updates.
                while filled < block.len() {
                    match decoder.read(&mut block[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => return Err(FetchError::Corrupt(format!("zstd: {e}"))),
                    }
                }
                if filled == 0 {
                    return Ok(());
                }
                block.truncate(filled);
                if out_tx.send(block).is_err() {
                    return Ok(()); // the writer failed; its error is reported
                }
            }
        })();
        drop(out_tx);
        let written = hashing.join().unwrap_or_else(|_| Err(std::io::Error::other("hashing thread panicked")));
        (decoded, written)
    });
    let (sha256, xxh3, len) = written.map_err(|e| io("writing the artifact", e))?;
    decoded?;
    if sha256 != expected {
        return Err(FetchError::Corrupt("its sha256 is not the one recorded at publish".into()));
    }
    // No fsync: this is a cache. The checksum written after the rename guards the file, so a
    // crash that tears it leaves a miss, not a bad load.
    let _ = std::fs::remove_file(checksum_dest);
    tmp.persist(dest).map_err(|e| io("placing the artifact", e.error))?;
    crate::fsutil::write_atomic(checksum_dest, format!("{xxh3:016x}").as_bytes())
        .map_err(|e| io("writing the artifact checksum", e))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::dir::DirBlobStore;

    fn artifact(len: usize) -> Vec<u8> {
        // Compressible but not trivial, like machine code.
        (0..len).map(|i| ((i * 2654435761) >> 13) as u8 & 0x3f).collect()
    }

    async fn store_with(bytes: &[u8]) -> (tempfile::TempDir, Arc<dyn BlobStore>) {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn BlobStore> = Arc::new(DirBlobStore::new(dir.path().join("blobs")));
        blobs.put("a/x.cwasm.zst", &compress(bytes).unwrap()).await.unwrap();
        (dir, blobs)
    }

    fn small_plan() -> FetchPlan {
        FetchPlan { first_bytes: 1000, chunk_bytes: 4096, concurrency: 3, ..FetchPlan::default() }
    }

    #[tokio::test]
    async fn a_fetch_writes_the_artifact_and_its_checksum_when_the_digest_matches() {
        let bytes = artifact(300_000);
        let (dir, blobs) = store_with(&bytes).await;
        let (dest, sum) = (dir.path().join("out/x.cwasm"), dir.path().join("out/x.cwasm.xxh3"));
        let digest = hex::encode(Sha256::digest(&bytes));
        let fetched = fetch_artifact(blobs, "a/x.cwasm.zst", &digest, &dest, &sum, &small_plan())
            .await
            .unwrap()
            .expect("present");
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert_eq!(std::fs::read_to_string(&sum).unwrap(), format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)));
        assert_eq!(fetched.artifact_bytes, bytes.len() as u64);
        assert!(fetched.requests > 2, "fetched in several ranges: {fetched:?}");
    }

    #[tokio::test]
    async fn a_wrong_digest_or_bad_zstd_leaves_nothing_behind() {
        let bytes = artifact(100_000);
        let (dir, blobs) = store_with(&bytes).await;
        let out = dir.path().join("out");
        let (dest, sum) = (out.join("x.cwasm"), out.join("x.cwasm.xxh3"));
        let wrong = hex::encode(Sha256::digest(b"another artifact"));
        let err = fetch_artifact(blobs.clone(), "a/x.cwasm.zst", &wrong, &dest, &sum, &small_plan()).await;
        assert!(matches!(err, Err(FetchError::Corrupt(_))), "{err:?}");
        blobs.put("a/bad.cwasm.zst", b"not zstd at all, just text").await.unwrap();
        let err = fetch_artifact(blobs.clone(), "a/bad.cwasm.zst", &wrong, &dest, &sum, &small_plan()).await;
        assert!(matches!(err, Err(FetchError::Corrupt(_))), "{err:?}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "no artifact, checksum or temp file: {left:?}");
        let absent = fetch_artifact(blobs, "a/none.cwasm.zst", &wrong, &dest, &sum, &small_plan()).await;
        assert!(matches!(absent, Ok(None)));
    }

    /// A blob store that answers the first range and then never answers again.
    struct Stalling(Arc<dyn BlobStore>, std::sync::atomic::AtomicU32);

    #[async_trait::async_trait]
    impl BlobStore for Stalling {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
            self.0.get(key).await
        }
        async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>, BlobError> {
            if self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                std::future::pending::<()>().await;
            }
            self.0.get_range(key, start, len).await
        }
        async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
            self.0.put(key, bytes).await
        }
        async fn exists(&self, key: &str) -> Result<bool, BlobError> {
            self.0.exists(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), BlobError> {
            self.0.delete(key).await
        }
    }

    #[tokio::test]
    async fn a_stalled_range_is_retried_once_then_fails_within_its_size_sized_timeout() {
        let bytes = artifact(50_000);
        let (dir, inner) = store_with(&bytes).await;
        let blobs: Arc<dyn BlobStore> = Arc::new(Stalling(inner, Default::default()));
        let out = dir.path().join("out");
        let (dest, sum) = (out.join("x.cwasm"), out.join("x.cwasm.xxh3"));
        let plan = FetchPlan {
            base_timeout: Duration::from_millis(100),
            min_bytes_per_sec: 1 << 30,
            concurrency: 1,
            ..small_plan()
        };
        let started = Instant::now();
        let digest = hex::encode(Sha256::digest(&bytes));
        let err = fetch_artifact(blobs, "a/x.cwasm.zst", &digest, &dest, &sum, &plan).await;
        assert!(matches!(err, Err(FetchError::Unavailable(_))), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "gave up after two timeouts: {:?}", started.elapsed());
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "nothing placed: {left:?}");
    }
}
