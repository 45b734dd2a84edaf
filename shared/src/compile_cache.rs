//! Cranelift's incremental compilation cache, kept in a directory: compiled machine code per
//! function, keyed by a digest of the function's IR and the compiler's settings. A new version
//! of an extension is mostly the code of the last one (a componentize-js component is the same
//! 12 MB JavaScript engine with a new snapshot of the author's code in its data), so its
//! compile reuses every unchanged function and only compiles what changed.
//!
//! The key covers everything that decides the machine code (wasmtime hashes the function's
//! CLIF and the ISA flags into it), so a stale or foreign entry cannot be picked up. Each file
//! starts with the xxh3 of its value: one torn by a crash (entries are renamed into place but
//! not fsynced: a compile writes thousands) is a miss, never wrong code. Entries read or
//! written by this process are also kept in memory, so the next compile of a `kelp up` or a
//! warm admin function reads no files.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Counters of the cache since the process started (`/healthz`, kelp-bench).
#[derive(Debug, Default)]
pub struct CompileCacheStats {
    /// Functions whose compiled code was found.
    pub hits: AtomicU64,
    /// Functions compiled and stored.
    pub stored: AtomicU64,
    /// Entries that could not be written (a full disk, or past [`DISK_BUDGET`]): the compile
    /// goes on without them.
    pub write_failures: AtomicU64,
}

/// The directory-backed [`wasmtime::CacheStore`].
pub struct CompileCache {
    dir: PathBuf,
    /// Entries by the sha256 of their key, up to `memory_budget` bytes of values.
    memory: Mutex<HashMap<[u8; 32], Arc<[u8]>>>,
    memory_bytes: AtomicU64,
    memory_budget: u64,
    /// Bytes this process wrote to the directory.
    disk_bytes: AtomicU64,
    /// Counters (shared with whoever reports them).
    pub stats: CompileCacheStats,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Bytes of entries kept in memory: the machine code of a JavaScript engine and a few
/// versions' worth of changed functions.
const MEMORY_BUDGET: u64 = 256 << 20;

/// Bytes one process writes to the directory at most. Every JavaScript extension shares the
/// engine's functions (~19,000 entries), and an edit adds ~6 % of them, so this holds the
/// engines and hundreds of versions; past it nothing new is stored, which bounds what an admin
/// function's `/tmp` (shared with the artifacts) can lose to the cache.
pub const DISK_BUDGET: u64 = 1 << 30;

impl CompileCache {
    /// A cache in `dir` (created when missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            memory: Mutex::new(HashMap::new()),
            memory_bytes: AtomicU64::new(0),
            memory_budget: MEMORY_BUDGET,
            disk_bytes: AtomicU64::new(0),
            stats: CompileCacheStats::default(),
        })
    }

    fn remember(&self, digest: [u8; 32], value: Arc<[u8]>) {
        let size = value.len() as u64;
        if self.memory_bytes.load(Ordering::Relaxed) + size > self.memory_budget {
            return;
        }
        if self.memory.lock().insert(digest, value).is_none() {
            self.memory_bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// The directory it keeps its entries in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<2 hex>/<62 hex>`: keys are long (a serialized CLIF digest plus settings); their
    /// sha256 names the file, fanned out so no directory holds every function of an engine.
    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        let name = hex::encode(digest);
        self.dir.join(&name[..2]).join(&name[2..])
    }

    fn read(&self, digest: &[u8; 32]) -> Option<Arc<[u8]>> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        let (sum, value) = bytes.split_first_chunk::<8>()?;
        (u64::from_le_bytes(*sum) == xxhash_rust::xxh3::xxh3_64(value)).then(|| Arc::from(value))
    }

    fn write(&self, digest: &[u8; 32], value: &[u8]) -> std::io::Result<()> {
        let size = value.len() as u64 + 8;
        if self.disk_bytes.fetch_add(size, Ordering::Relaxed) + size > DISK_BUDGET {
            self.disk_bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(std::io::Error::other("the compile cache's disk budget is spent"));
        }
        let path = self.path(digest);
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&xxhash_rust::xxh3::xxh3_64(value).to_le_bytes())?;
        tmp.write_all(value)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

impl wasmtime::CacheStore for CompileCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let found = self.memory.lock().get(&digest).cloned();
        let value = match found {
            Some(value) => value,
            None => {
                let value = self.read(&digest)?;
                self.remember(digest, value.clone());
                value
            }
        };
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(Cow::Owned(value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let written = self.write(&digest, &value);
        self.remember(digest, Arc::from(value));
        match written {
            Ok(()) => {
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore as _;

    #[test]
    fn entries_survive_a_new_process_and_a_torn_file_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"machine code".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"machine code"[..]));
        let reopened = CompileCache::open(dir.path()).unwrap();
        assert_eq!(reopened.get(b"key").as_deref(), Some(&b"machine code"[..]), "read back from its file");
        let digest: [u8; 32] = Sha256::digest(b"key").into();
        let path = reopened.path(&digest);
        let mut torn = std::fs::read(&path).unwrap();
        torn.truncate(torn.len() - 3);
        std::fs::write(&path, torn).unwrap();
        assert!(CompileCache::open(dir.path()).unwrap().get(b"key").is_none(), "a torn entry is a miss");
    }
}
