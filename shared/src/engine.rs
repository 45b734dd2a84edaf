//! The process-wide wasmtime [`Engine`]: component model, async calls, epoch interruption
//! driven by one ticker thread per process, and the pooling allocator when the environment
//! allows its address-space reservation.

use std::hash::Hasher;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticker advances every registered engine. Guest code yields to the
/// executor (and has its wall-clock deadline checked) once per tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine settings, read from the environment by [`crate::config`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Try the pooling allocator first (falls back to on-demand when refused).
    pub pooling: bool,
    /// Concurrent component instances the pool holds.
    pub pool_instances: u32,
    /// Largest linear memory a guest may grow to, in bytes (also the per-call memory limit's
    /// upper bound).
    pub max_memory_bytes: usize,
    /// Enable fuel metering (each call then gets `fuel` units, if set).
    pub fuel: bool,
    /// Bytes of each pooled linear memory kept resident when its slot is reset: the pages an
    /// instance dirtied are restored in place (found with Linux's PAGEMAP_SCAN where the
    /// kernel has it) instead of being unmapped and faulted in again by the next instance.
    /// 0 resets every slot with `madvise`. kelp-bench measured 64 MiB at 1.4x the request rate
    /// of `madvise` for fresh JS instances.
    pub keep_resident_bytes: usize,
    /// Cranelift's incremental compilation cache (`KELP_COMPILE_CACHE_DIR`): where compiles
    /// happen (publish, `kelp up`), a new version reuses the machine code of every function
    /// an earlier compile produced.
    pub compile_cache: Option<std::sync::Arc<crate::compile_cache::CompileCache>>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            pooling: true,
            pool_instances: 32,
            max_memory_bytes: 256 << 20,
            fuel: false,
            keep_resident_bytes: 64 << 20,
            compile_cache: None,
        }
    }
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Pre-reserved slots: instantiation in microseconds.
    Pooling,
    /// mmap per instance: slower, but needs no large reservation.
    OnDemand,
}

/// An engine plus the facts about it the rest of Kelp needs.
#[derive(Clone)]
pub struct KelpEngine {
    /// The wasmtime engine (cheap to clone).
    pub engine: Engine,
    /// Allocator in use (logged at start-up).
    pub allocator: AllocatorKind,
    /// Hex digest of `Engine::precompile_compatibility_hash`: artifacts are only valid for
    /// engines with the same value.
    pub compat_hash: String,
    /// Settings the engine was built from.
    pub settings: EngineSettings,
}

impl KelpEngine {
    /// Build the engine. The pooling allocator reserves large virtual address ranges; where
    /// that reservation is refused we fall back to the on-demand allocator with a warning.
    pub fn new(settings: EngineSettings) -> Result<Self> {
        let (engine, allocator) = if settings.pooling {
            match Engine::new(&base_config(&settings, Some(pooling_config(&settings)))) {
                Ok(engine) => (engine, AllocatorKind::Pooling),
                Err(err) => {
                    tracing::warn!(error = %err, "pooling allocator refused; using on-demand allocation");
                    (build_on_demand(&settings)?, AllocatorKind::OnDemand)
                }
            }
        } else {
            (build_on_demand(&settings)?, AllocatorKind::OnDemand)
        };
        tracing::info!(allocator = ?allocator, "wasmtime engine ready");
        ticker().register(engine.clone());
        let compat_hash = compatibility_hash(&engine);
        Ok(Self { engine, allocator, compat_hash, settings })
    }
}

fn build_on_demand(settings: &EngineSettings) -> Result<Engine> {
    Engine::new(&base_config(settings, None)).map_err(|e| anyhow::anyhow!("{e:#}")).context("creating wasmtime engine")
}

fn base_config(settings: &EngineSettings, pool: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(settings.fuel);
    config.memory_init_cow(true);
    // No .eh_frame for guest code: wasmtime captures wasm backtraces without it, and leaving it
    // out makes each artifact smaller (less to checksum and map at a cold start) and skips
    // registering unwind tables at every load. Native profilers still walk wasm frames by
    // their frame pointers.
    config.native_unwind_info(false);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    if let Some(cache) = &settings.compile_cache {
        // Only sets the store: wasmtime 48 never fails here. The cache is not part of the
        // compatibility hash, so artifacts stay interchangeable with engines without one.
        let _ = config.enable_incremental_compilation(cache.clone());
    }
    config
}

/// Core instances one call may create. A componentize-js component is several core
/// instances (StarlingMonkey, adapters, glue); the same numbers size the pool's slots and the
/// per-call [`crate::host::CallLimiter`], so both allocators enforce the same limits.
pub const MAX_CORE_INSTANCES_PER_CALL: u32 = 32;
/// Linear memories one call may create (their total size is capped separately).
pub const MAX_MEMORIES_PER_CALL: u32 = 4;
/// Tables one call may create.
pub const MAX_TABLES_PER_CALL: u32 = 8;
/// Table elements one call may hold, across all its tables.
pub const MAX_TABLE_ELEMENTS_PER_CALL: usize = 1_000_000;
/// Elements one pooled table slot holds.
const POOL_TABLE_ELEMENTS: usize = 200_000;

fn pooling_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let n = settings.pool_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * MAX_CORE_INSTANCES_PER_CALL)
        .total_memories(n * MAX_MEMORIES_PER_CALL)
        .total_tables(n * MAX_TABLES_PER_CALL)
        .total_stacks(n)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_CALL)
        .max_memories_per_component(MAX_MEMORIES_PER_CALL)
        .max_tables_per_component(MAX_TABLES_PER_CALL)
        // One memory may use the whole budget; the per-call limiter caps the sum.
        .max_memory_size(settings.max_memory_bytes)
        .table_elements(POOL_TABLE_ELEMENTS)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .max_unused_warm_slots(n.min(16));
    if settings.keep_resident_bytes > 0 {
        pool.linear_memory_keep_resident(settings.keep_resident_bytes)
            .table_keep_resident(settings.keep_resident_bytes.min(POOL_TABLE_ELEMENTS * 8))
            .pagemap_scan(wasmtime::Enabled::Auto);
    }
    pool
}

/// Digest `Engine::precompile_compatibility_hash` with SHA-256 so the value is stable across
/// processes and binaries built by the same toolchain (std's hasher makes no such promise).
fn compatibility_hash(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(hasher.0.finalize())
}

/// The process's single epoch ticker thread. It lives outside the async executor so a busy
/// runtime cannot starve it, and it advances every engine created in this process.
struct EpochTicker {
    engines: Mutex<Vec<Engine>>,
}

fn ticker() -> &'static EpochTicker {
    static TICKER: OnceLock<&'static EpochTicker> = OnceLock::new();
    TICKER.get_or_init(|| {
        let ticker: &'static EpochTicker = Box::leak(Box::new(EpochTicker { engines: Mutex::new(Vec::new()) }));
        std::thread::Builder::new()
            .name("kelp-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                for engine in ticker.engines.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        ticker
    })
}

impl EpochTicker {
    fn register(&self, engine: Engine) {
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).push(engine);
    }
}
