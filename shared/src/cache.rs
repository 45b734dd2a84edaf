//! The module cache: the performance core.
//!
//! Key = sha256 of the component bytes + the engine's precompile compatibility hash. Tiers,
//! each filling the ones above it on a hit:
//! 1. memory: LRU of ready [`RunnerPre`]s, bounded by count and bytes;
//! 2. local artifact dir (Lambda `/tmp`): `.cwasm` files, checksummed, memory-mapped with
//!    `Component::deserialize_file`;
//! 3. blob store (S3): `.cwasm.zst` written at publish, fetched with parallel ranged GETs and
//!    streamed to the local dir (see [`crate::artifact_fetch`]), trusted only when it matches
//!    the sha256 the registry recorded at publish (never a digest stored beside it in the
//!    bucket). A fetch that fails or is too slow is a 503, never a compile on the request path;
//! 4. compile with Cranelift from the component bytes (checked against their sha256, the
//!    cache key), then write back to 2 only: the request path never writes shared artifacts.
//!
//! A corrupt, truncated or incompatible artifact at any tier is a miss: logged, removed and
//! rebuilt, never a crash. Concurrent misses for one key compile once.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};

use crate::artifact_fetch::{fetch_artifact, FetchError, FetchPlan};
use crate::bindings::RunnerPre;
use crate::blobs::{artifact_key, legacy_artifact_key, BlobStore};
use crate::engine::KelpEngine;
use crate::host::HostState;
use crate::stores::Registry;

/// A component ready to instantiate.
pub struct LoadedComponent {
    /// Pre-instantiated bindings (imports resolved, types checked).
    pub pre: RunnerPre<HostState>,
    /// Artifact size in bytes, for the memory bound.
    pub size: usize,
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// In-memory LRU.
    Memory,
    /// Local `.cwasm`.
    Disk,
    /// Blob store `.cwasm`.
    Blob,
    /// Compiled now.
    Compiled,
}

impl Tier {
    /// `memory`, `disk`, `blob` or `compiled` (as serialized).
    pub fn label(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Blob => "blob",
            Tier::Compiled => "compiled",
        }
    }
}

/// Counters, exposed for tests, benchmarks and `/healthz`.
#[derive(Debug, Default, Serialize)]
pub struct CacheStats {
    /// Memory hits.
    pub memory_hits: AtomicU64,
    /// Local artifact hits.
    pub disk_hits: AtomicU64,
    /// Blob artifact hits.
    pub blob_hits: AtomicU64,
    /// Cranelift compilations.
    pub compiles: AtomicU64,
    /// Artifacts found corrupt, truncated or incompatible (and replaced).
    pub corrupt_artifacts: AtomicU64,
    /// Local artifacts removed to keep the artifact dir within its budget.
    pub evicted_artifacts: AtomicU64,
    /// Where the last load from the local artifact dir spent its time.
    pub last_disk_load: DiskLoadTimes,
}

/// The stages of a load from the local artifact dir, in microseconds: the module cache's
/// share of a cold start (each load also logs them).
#[derive(Debug, Default, Serialize)]
pub struct DiskLoadTimes {
    /// Verifying the artifact against its checksum.
    pub checksum_us: AtomicU64,
    /// `Component::deserialize_file` (mapping the artifact, reading its metadata).
    pub deserialize_us: AtomicU64,
    /// Linking: resolving the imports into an `InstancePre`.
    pub link_us: AtomicU64,
}

/// A local artifact that passed its checksum and deserialized, linked (or why it could not
/// be), with the time each stage took.
struct LocalArtifact {
    linked: Result<RunnerPre<HostState>, String>,
    /// Artifact size in bytes (the checksum pass read the whole file).
    size: usize,
    checksum: Duration,
    deserialize: Duration,
    link: Duration,
}

impl LocalArtifact {
    /// The ready component, or why it does not link.
    fn ready(self) -> Result<Arc<LoadedComponent>, CacheError> {
        let pre = self.linked.map_err(CacheError::Invalid)?;
        Ok(Arc::new(LoadedComponent { pre, size: self.size }))
    }
}

/// Cache bounds.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Local artifact directory.
    pub artifact_dir: PathBuf,
    /// Most components kept ready in memory.
    pub max_entries: usize,
    /// Most artifact bytes kept ready in memory.
    pub max_bytes: usize,
    /// How blob-store artifacts are fetched.
    pub fetch: FetchPlan,
    /// Most bytes of artifacts kept in the local dir (0: no limit). Lambda's `/tmp` is a
    /// fixed size: past it every new artifact would fail to be written.
    pub max_local_bytes: u64,
}

/// Cache failures (all map to a 5xx).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The component bytes are not in the blob store.
    #[error("component {0} is not in the blob store")]
    MissingComponent(String),
    /// Blob store unreachable and nothing cached.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// Component bytes don't match their recorded hash.
    #[error("component bytes do not match their hash {0}")]
    HashMismatch(String),
    /// Compilation or linking failed.
    #[error("cannot load component: {0}")]
    Invalid(String),
}

struct Memory {
    lru: LruCache<String, Arc<LoadedComponent>>,
    bytes: usize,
}

/// The module cache.
pub struct ModuleCache {
    engine: KelpEngine,
    linker: Arc<Linker<HostState>>,
    blobs: Arc<dyn BlobStore>,
    registry: Arc<dyn Registry>,
    settings: CacheSettings,
    memory: Mutex<Memory>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Sources of `kelp dev` versions by bundle digest (a few kB each; versions are
    /// immutable, so never stale).
    dev_sources: Mutex<LruCache<String, Arc<str>>>,
    /// Counters.
    pub stats: CacheStats,
}

/// `kelp dev` versions whose sources are kept in memory: the ones an author is working on.
const DEV_SOURCES_KEPT: usize = 16;

fn werr(e: wasmtime::Error) -> String {
    format!("{e:#}")
}

impl ModuleCache {
    /// A cache over an engine, its linker, a blob store and the registry that records the
    /// digests of precompiled artifacts.
    pub fn new(
        engine: KelpEngine,
        linker: Linker<HostState>,
        blobs: Arc<dyn BlobStore>,
        registry: Arc<dyn Registry>,
        settings: CacheSettings,
    ) -> Self {
        Self {
            engine,
            linker: Arc::new(linker),
            blobs,
            registry,
            memory: Mutex::new(Memory {
                lru: LruCache::new(NonZeroUsize::new(settings.max_entries.max(1)).expect("non-zero")),
                bytes: 0,
            }),
            settings,
            inflight: Mutex::new(HashMap::new()),
            dev_sources: Mutex::new(LruCache::new(NonZeroUsize::new(DEV_SOURCES_KEPT).expect("non-zero"))),
            stats: CacheStats::default(),
        }
    }

    /// The source a `kelp dev` version carries (extracted at publish), by its bundle's
    /// `sha256:<hex>` content hash.
    pub async fn dev_source(&self, content_hash: &str) -> Result<Arc<str>, CacheError> {
        if let Some(hit) = self.dev_sources.lock().get(content_hash).cloned() {
            return Ok(hit);
        }
        let key = crate::blobs::dev_source_key(content_hash.trim_start_matches("sha256:"));
        let bytes = self
            .blobs
            .get(&key)
            .await
            .map_err(|e| CacheError::Unavailable(e.to_string()))?
            .ok_or_else(|| CacheError::MissingComponent(key.clone()))?;
        let source: Arc<str> =
            String::from_utf8(bytes).map_err(|_| CacheError::Invalid(format!("{key} is not UTF-8")))?.into();
        self.dev_sources.lock().put(content_hash.to_string(), source.clone());
        Ok(source)
    }

    /// The engine.
    pub fn engine(&self) -> &KelpEngine {
        &self.engine
    }

    fn local_path(&self, component_hash: &str) -> PathBuf {
        let compat = &self.engine.compat_hash[..16];
        self.settings.artifact_dir.join(format!("{compat}-{component_hash}.cwasm"))
    }

    /// The ready component for `component_hash`, from the fastest tier that has it;
    /// `component_key` is where the component bytes live if it must be compiled.
    pub async fn get(
        &self,
        component_hash: &str,
        component_key: &str,
    ) -> Result<(Arc<LoadedComponent>, Tier), CacheError> {
        if let Some(hit) = self.memory.lock().lru.get(component_hash).cloned() {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((hit, Tier::Memory));
        }
        // One loader per key: the others wait and then find it in memory.
        let gate = self.inflight.lock().entry(component_hash.to_string()).or_default().clone();
        let _guard = gate.lock().await;
        if let Some(hit) = self.memory.lock().lru.get(component_hash).cloned() {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((hit, Tier::Memory));
        }
        let result = self.load_cold(component_hash, component_key).await;
        self.inflight.lock().remove(component_hash);
        let (loaded, tier) = result?;
        self.remember(component_hash, loaded.clone());
        Ok((loaded, tier))
    }

    async fn load_cold(&self, hash: &str, component_key: &str) -> Result<(Arc<LoadedComponent>, Tier), CacheError> {
        let path = self.local_path(hash);
        if let Some(local) = self.load_local(&path).await {
            self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
            mark_used(&path);
            let (checksum, deserialize, link) = (local.checksum, local.deserialize, local.link);
            let loaded = local.ready()?;
            let times = &self.stats.last_disk_load;
            times.checksum_us.store(checksum.as_micros() as u64, Ordering::Relaxed);
            times.deserialize_us.store(deserialize.as_micros() as u64, Ordering::Relaxed);
            times.link_us.store(link.as_micros() as u64, Ordering::Relaxed);
            tracing::info!(
                component = hash,
                checksum_ms = checksum.as_secs_f64() * 1e3,
                deserialize_ms = deserialize.as_secs_f64() * 1e3,
                link_ms = link.as_secs_f64() * 1e3,
                "component loaded from the local artifact dir"
            );
            return Ok((loaded, Tier::Disk));
        }
        if self.fetch_blob_artifact(hash, &path).await? {
            self.trim_local(&path).await;
            if let Some(local) = self.load_local(&path).await {
                self.stats.blob_hits.fetch_add(1, Ordering::Relaxed);
                return Ok((local.ready()?, Tier::Blob));
            }
        }
        let bytes = self
            .blobs
            .get(component_key)
            .await
            .map_err(|e| CacheError::Unavailable(e.to_string()))?
            .ok_or_else(|| CacheError::MissingComponent(hash.to_string()))?;
        if hex::encode(Sha256::digest(&bytes)) != hash {
            return Err(CacheError::HashMismatch(hash.to_string()));
        }
        tracing::info!(component = hash, "compiling component (no trusted precompiled artifact)");
        let artifact = self.compile(bytes).await?;
        self.stats.compiles.fetch_add(1, Ordering::Relaxed);
        // Not written back to the blob store: only publish (the control plane) writes shared
        // artifacts and records their digests, so a request path never vouches for native code.
        write_local(&path, artifact).await?;
        self.trim_local(&path).await;
        let local = self
            .load_local(&path)
            .await
            .ok_or_else(|| CacheError::Invalid("freshly compiled artifact failed to load".into()))?;
        Ok((local.ready()?, Tier::Compiled))
    }

    /// Compile component bytes to a serialized artifact (on the blocking pool).
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Vec<u8>, CacheError> {
        let engine = self.engine.engine.clone();
        tokio::task::spawn_blocking(move || {
            engine.precompile_component(&bytes).map_err(|e| CacheError::Invalid(werr(e)))
        })
        .await
        .map_err(|e| CacheError::Invalid(format!("compile task: {e}")))?
    }

    /// Precompile at publish: compile once, prove the component links against this host,
    /// then write the artifact to the blob store and the local dir and record its sha256 in
    /// the registry, so no gateway request ever compiles this component.
    pub async fn validate_and_precompile(&self, component_hash: &str, bytes: Vec<u8>) -> Result<(), CacheError> {
        let path = self.local_path(component_hash);
        // Republishing (or `kelp up` restarting) reuses a good local artifact of the same
        // component bytes instead of compiling again; it still gets linked and uploaded.
        let (artifact, compiled) = match self.load_local(&path).await {
            Some(local) => {
                local.linked.map_err(CacheError::Invalid)?;
                (tokio::fs::read(&path).await.map_err(|e| CacheError::Invalid(e.to_string()))?, false)
            }
            None => {
                let artifact = self.compile(bytes).await?;
                self.stats.compiles.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the artifact was produced a moment ago by this very engine.
                let component = unsafe { Component::deserialize(&self.engine.engine, &artifact) }
                    .map_err(|e| CacheError::Invalid(werr(e)))?;
                link(&self.linker, &component).map_err(CacheError::Invalid)?;
                (artifact, true)
            }
        };
        self.store_blob_artifact(component_hash, &artifact).await?;
        if compiled {
            write_local(&path, artifact).await?;
            self.trim_local(&path).await;
        }
        Ok(())
    }

    /// Whether the blob store holds an artifact for this engine.
    pub async fn has_blob_artifact(&self, component_hash: &str) -> bool {
        let compat = &self.engine.compat_hash;
        self.blobs.exists(&artifact_key(compat, component_hash)).await.unwrap_or(false)
            || self.blobs.exists(&legacy_artifact_key(compat, component_hash)).await.unwrap_or(false)
    }

    async fn store_blob_artifact(&self, hash: &str, artifact: &[u8]) -> Result<(), CacheError> {
        let compat = &self.engine.compat_hash;
        let digest = hex::encode(Sha256::digest(artifact));
        let raw = artifact.to_vec();
        let compressed = tokio::task::spawn_blocking(move || crate::artifact_fetch::compress(&raw))
            .await
            .map_err(|e| CacheError::Invalid(format!("compress task: {e}")))?
            .map_err(|e| CacheError::Invalid(format!("compressing the artifact: {e}")))?;
        self.blobs
            .put(&artifact_key(compat, hash), &compressed)
            .await
            .map_err(|e| CacheError::Unavailable(e.to_string()))?;
        // Recorded last: an artifact whose digest is not in the registry is never trusted.
        self.registry
            .put_artifact_digest(hash, compat, &digest)
            .await
            .map_err(|e| CacheError::Unavailable(e.to_string()))
    }

    /// Fetch the blob-store artifact into the local dir at `path`, if the registry records
    /// its digest for this engine and the bytes match it: whether it is there now. A digest
    /// stored beside the artifact proves nothing (whoever can write one can write both), so
    /// none is read. Bytes that do not match are a miss (compiled from the verified component
    /// instead); a blob store that fails or is too slow is an error, since compiling a JS
    /// component in the request path takes longer than any retry.
    async fn fetch_blob_artifact(&self, hash: &str, path: &Path) -> Result<bool, CacheError> {
        let compat = &self.engine.compat_hash;
        let expected = match self.registry.artifact_digest(hash, compat).await {
            Ok(Some(digest)) => digest,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!(component = hash, error = %e, "registry unavailable for artifact digests");
                return Ok(false);
            }
        };
        let key = artifact_key(compat, hash);
        let fetched =
            fetch_artifact(self.blobs.clone(), &key, &expected, path, &checksum_path(path), &self.settings.fetch).await;
        match fetched {
            Ok(Some(f)) => {
                tracing::info!(
                    component = hash,
                    compressed_bytes = f.compressed_bytes,
                    artifact_bytes = f.artifact_bytes,
                    requests = f.requests,
                    fetch_ms = f.elapsed.as_secs_f64() * 1e3,
                    "artifact fetched from the blob store"
                );
                Ok(true)
            }
            Ok(None) => self.fetch_legacy_artifact(hash, &expected, path).await,
            Err(FetchError::Corrupt(reason)) => {
                self.stats.corrupt_artifacts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(component = hash, %reason, "blob artifact rejected; compiling from the component bytes");
                Ok(false)
            }
            Err(FetchError::Unavailable(reason)) => {
                tracing::warn!(component = hash, %reason, "blob store did not deliver the artifact");
                Err(CacheError::Unavailable(format!("fetching the precompiled artifact: {reason}")))
            }
        }
    }

    /// An uncompressed artifact of an earlier publish, checked like a compressed one.
    async fn fetch_legacy_artifact(&self, hash: &str, expected: &str, path: &Path) -> Result<bool, CacheError> {
        match self.blobs.get(&legacy_artifact_key(&self.engine.compat_hash, hash)).await {
            Ok(Some(artifact)) if hex::encode(Sha256::digest(&artifact)) == expected.trim() => {
                write_local(path, artifact).await?;
                Ok(true)
            }
            Ok(Some(_)) => {
                self.stats.corrupt_artifacts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    component = hash,
                    "blob artifact does not match the sha256 recorded at publish; recompiling"
                );
                Ok(false)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(CacheError::Unavailable(format!("fetching the precompiled artifact: {e}"))),
        }
    }

    /// Load a local artifact; any failure (missing, checksum, truncated, incompatible) is a
    /// miss, and a bad file is removed so it is rebuilt. A component that deserializes but does
    /// not link is not a bad file: its link error is returned with it.
    async fn load_local(&self, path: &Path) -> Option<LocalArtifact> {
        let engine = self.engine.engine.clone();
        let linker = self.linker.clone();
        let file = path.to_path_buf();
        let outcome = tokio::task::spawn_blocking(move || -> Result<Option<LocalArtifact>, String> {
            if !file.exists() {
                return Ok(None);
            }
            // The checksum (a pass over the whole mapped file) runs on its own thread while
            // this one deserializes, links and faults in code pages: a cold start pays the
            // longer of the two, not their sum. Nothing of the artifact runs before the
            // checksum has passed: linking only reads the component's type metadata, and the
            // component is returned (to be instantiated) only after the join below.
            let checked = AtomicBool::new(false);
            let (verified, loaded) = std::thread::scope(|scope| {
                let checking = scope.spawn(|| {
                    let started = Instant::now();
                    let verified = verify_checksum(&file).map(|size| (size, started.elapsed()));
                    checked.store(true, Ordering::Release);
                    verified
                });
                let started = Instant::now();
                // SAFETY: the artifact dir is written only by Kelp (temp file + rename), and
                // blob artifacts were checked against the sha256 the registry recorded at
                // publish before being written here; wasmtime itself rejects artifacts of
                // another engine configuration. A file that fails its checksum is dropped
                // below without any of its code having run.
                let loaded = unsafe { Component::deserialize_file(&engine, &file) }.map(|component| {
                    let deserialize = started.elapsed();
                    let started = Instant::now();
                    let linked = link(&linker, &component);
                    let link = started.elapsed();
                    fault_in_until(component.text(), &checked);
                    (linked, deserialize, link)
                });
                let verified = checking.join().unwrap_or_else(|_| Err("checksum thread panicked".into()));
                (verified, loaded)
            });
            let (size, checksum) = verified?;
            let (linked, deserialize, link) = loaded.map_err(werr)?;
            Ok(Some(LocalArtifact { linked, size, checksum, deserialize, link }))
        })
        .await;
        match outcome {
            Ok(Ok(c)) => c,
            Ok(Err(reason)) => {
                self.stats.corrupt_artifacts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), %reason, "discarding unusable artifact");
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(checksum_path(path));
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "artifact load task failed");
                None
            }
        }
    }

    fn remember(&self, hash: &str, loaded: Arc<LoadedComponent>) {
        let mut m = self.memory.lock();
        m.bytes += loaded.size;
        if let Some((_, old)) = m.lru.push(hash.to_string(), loaded) {
            m.bytes -= old.size;
        }
        while m.bytes > self.settings.max_bytes && m.lru.len() > 1 {
            if let Some((_, old)) = m.lru.pop_lru() {
                m.bytes -= old.size;
            }
        }
    }

    /// Remove the least recently used local artifacts (other than `keep`, just written) until
    /// the dir is within its budget.
    async fn trim_local(&self, keep: &Path) {
        let max = self.settings.max_local_bytes;
        if max == 0 {
            return;
        }
        let (dir, keep) = (self.settings.artifact_dir.clone(), keep.to_path_buf());
        if let Ok((removed, bytes)) = tokio::task::spawn_blocking(move || trim_dir(&dir, max, &keep)).await {
            if removed > 0 {
                self.stats.evicted_artifacts.fetch_add(removed as u64, Ordering::Relaxed);
                tracing::info!(removed, bytes, "local artifacts evicted to stay within KELP_ARTIFACT_DIR_MAX_MB");
            }
        }
    }

    /// Drop every in-memory entry (benchmarks measure the lower tiers with it).
    pub fn clear_memory(&self) {
        let mut m = self.memory.lock();
        m.lru.clear();
        m.bytes = 0;
    }

    /// Path of the local artifact of a component (tests corrupt it on purpose).
    pub fn local_artifact_path(&self, component_hash: &str) -> PathBuf {
        self.local_path(component_hash)
    }
}

/// Resolve a component's imports against the linker: its `InstancePre`.
fn link(linker: &Linker<HostState>, component: &Component) -> Result<RunnerPre<HostState>, String> {
    let pre = linker.instantiate_pre(component).map_err(werr)?;
    RunnerPre::new(pre).map_err(werr)
}

/// Read one byte of every 64 KiB of `code` (the kernel maps the 16 pages around each fault at
/// once) until `done` is set: the first call then finds its code mapped instead of faulting
/// it in page by page. Run while the checksum thread works, so it costs the cold start
/// nothing; reading code executes none of it.
fn fault_in_until(code: &[u8], done: &AtomicBool) {
    for chunk in code.chunks(64 << 10) {
        if done.load(Ordering::Acquire) {
            return;
        }
        std::hint::black_box(chunk[0]);
    }
}

/// Record a load in the artifact's mtime: the dir's eviction order.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Remove `.cwasm` files of `dir` (with their checksums), least recently used first, until
/// they total at most `max` bytes; `keep` stays. A removed file that a loaded component still
/// maps stays readable to it (the mapping outlives the name). Returns what was removed.
fn trim_dir(dir: &Path, max: u64, keep: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    let (mut removed, mut freed) = (0, 0);
    for (_, len, path) in files {
        if total <= max {
            break;
        }
        if path == keep {
            continue;
        }
        let _ = std::fs::remove_file(checksum_path(&path));
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed += 1;
            freed += len;
        }
    }
    (removed, freed)
}

fn checksum_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.xxh3")
}

/// xxh3 of the file against the checksum written beside it; the file's length. The file is
/// memory-mapped, not read: no 37 MB allocation and copy on the cold path (a few ms for a JS
/// component).
fn verify_checksum(path: &Path) -> Result<usize, String> {
    let expected = std::fs::read_to_string(checksum_path(path)).map_err(|e| format!("no checksum: {e}"))?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: artifact files are never modified in place (writers rename a new file over
    // them), so the mapping cannot change under us. Populated: the whole file is read, and
    // mapping it in one call is cheaper than a page fault per 64 KiB.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|e| e.to_string())?;
    let actual = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&map));
    if actual == expected.trim() {
        Ok(map.len())
    } else {
        Err("checksum mismatch (corrupt or truncated)".into())
    }
}

/// Write artifact + checksum atomically. The checksum goes last: a crash in between leaves
/// an artifact without a valid checksum, which is a miss.
async fn write_local(path: &Path, artifact: Vec<u8>) -> Result<(), CacheError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&artifact));
        let _ = std::fs::remove_file(checksum_path(&path));
        crate::fsutil::write_atomic(&path, &artifact)?;
        crate::fsutil::write_atomic(&checksum_path(&path), sum.as_bytes())
    })
    .await
    .map_err(|e| CacheError::Invalid(format!("artifact write task: {e}")))?
    .map_err(|e| CacheError::Invalid(format!("writing the local artifact: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_dir_keeps_the_most_recently_used_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: u32| dir.path().join(format!("c-{n}.cwasm"));
        let base = std::time::SystemTime::now() - Duration::from_secs(100);
        for n in 0..5u32 {
            std::fs::write(path(n), vec![0u8; 1000]).unwrap();
            std::fs::write(checksum_path(&path(n)), "sum").unwrap();
            let file = std::fs::File::options().write(true).open(path(n)).unwrap();
            file.set_modified(base + Duration::from_secs(n as u64)).unwrap();
        }
        std::fs::create_dir(dir.path().join("ui")).unwrap();
        mark_used(&path(0)); // loaded just now: the most recent
                             // 5000 bytes, budget 2500: the three oldest go, but never the one just written (1).
        let (removed, freed) = trim_dir(dir.path(), 2500, &path(1));
        assert_eq!((removed, freed), (3, 3000));
        let left: Vec<bool> = (0..5).map(|n| path(n).exists()).collect();
        assert_eq!(left, [true, true, false, false, false]);
        assert!(!checksum_path(&path(2)).exists() && checksum_path(&path(0)).exists());
        assert!(dir.path().join("ui").is_dir(), "only artifacts are evicted");
    }
}
