//! Runs one call of a component's `handler`: fresh store, limits, epoch deadline, memory
//! limiter, optional fuel, then classifies failures (trap, timeout, memory) for the routers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::types::{ExecuteRequest, ExecuteResponse};
use crate::cache::{CacheError, ModuleCache, Tier};
use crate::engine::AllocatorKind;
use crate::host::{CallState, HostState};

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// Wall-clock budget of the call (guest code and host calls).
    pub timeout: Duration,
    /// Linear memory cap, in bytes.
    pub max_memory_bytes: usize,
    /// Fuel units, when the engine meters fuel.
    pub fuel: Option<u64>,
    /// stdout + stderr bytes accepted per call.
    pub max_output_bytes: usize,
}

/// What a successful call produced.
#[derive(Debug)]
pub struct ExecOutcome {
    /// The guest's response.
    pub response: ExecuteResponse,
    /// Which cache tier provided the component.
    pub tier: Tier,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The component could not be loaded.
    #[error(transparent)]
    Load(#[from] CacheError),
    /// The guest trapped (or failed to instantiate).
    #[error("extension trapped: {0}")]
    Trap(String),
    /// The wall-clock budget (or the fuel) ran out.
    #[error("extension exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The guest tried to grow memory past its limit.
    #[error("extension exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    /// The guest failed after calling an interface whose capability the install lacks: the
    /// likely cause, named instead of a bare trap.
    #[error("extension failed after {interface} was denied: {capability} is not granted to this install")]
    CapabilityDenied {
        /// The interface called, e.g. `storage`.
        interface: String,
        /// The capability it needs, e.g. `cap:storage.kv`.
        capability: String,
    },
    /// The guest's runtime reported an uncaught exception (on stderr) and aborted.
    #[error("uncaught exception: {message}{}", at.as_ref().map(|a| format!(" (at {a})")).unwrap_or_default())]
    GuestException {
        /// The exception's message.
        message: String,
        /// Where it was thrown (`file:line:column`), when the runtime said.
        at: Option<String>,
    },
    /// Every instance slot stayed busy for the whole time budget.
    #[error("all {0} instance slots are busy")]
    Busy(usize),
}

/// Runs components from the cache.
pub struct Executor {
    cache: Arc<ModuleCache>,
    // One permit per pool slot: a request waits for a free slot instead of failing to
    // instantiate when the pool is exhausted.
    slots: Arc<Semaphore>,
    slot_count: usize,
}

/// Host calls are not interrupted by epochs; past the deadline they get this much grace
/// before the whole call is abandoned.
const HOST_CALL_GRACE: Duration = Duration::from_millis(250);

impl Executor {
    /// An executor over the cache.
    pub fn new(cache: Arc<ModuleCache>) -> Self {
        let engine = cache.engine();
        let slot_count = match engine.allocator {
            AllocatorKind::Pooling => engine.settings.pool_instances.max(1) as usize,
            // On-demand allocation has no slots; bound concurrency to protect memory.
            AllocatorKind::OnDemand => 256,
        };
        Self { cache, slots: Arc::new(Semaphore::new(slot_count)), slot_count }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<ModuleCache> {
        &self.cache
    }

    /// Time instantiation alone (the component must load): for the benchmark.
    pub async fn time_instantiation(
        &self,
        component_hash: &str,
        component_key: &str,
        call: CallState,
        limits: ExecLimits,
    ) -> Result<Duration, ExecError> {
        let (loaded, _) = self.cache.get(component_hash, component_key).await?;
        let mut store = Store::new(
            &self.cache.engine().engine,
            HostState::new(call, limits.max_memory_bytes, limits.max_output_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(u64::MAX / 2);
        if self.cache.engine().settings.fuel {
            store.set_fuel(u64::MAX).map_err(|e| ExecError::Trap(format!("{e:#}")))?;
        }
        let started = Instant::now();
        loaded.pre.instantiate_async(&mut store).await.map_err(|e| ExecError::Trap(format!("{e:#}")))?;
        Ok(started.elapsed())
    }

    /// Call `handler(request)` of the component with `call` as host state.
    pub async fn execute(
        &self,
        component_hash: &str,
        component_key: &str,
        mut call: CallState,
        request: ExecuteRequest,
        limits: ExecLimits,
    ) -> Result<ExecOutcome, ExecError> {
        let (loaded, tier) = self.cache.get(component_hash, component_key).await?;
        let started = Instant::now();
        let deadline = started + limits.timeout;
        let _slot = match tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(ExecError::Busy(self.slot_count)),
        };
        // Host calls get only the time left from here (the slot wait counts against the budget).
        call.http.deadline = deadline;
        call.business.deadline = deadline;
        let debug = call.debug.clone();
        let engine = &self.cache.engine().engine;
        let mut store = Store::new(engine, HostState::new(call, limits.max_memory_bytes, limits.max_output_bytes));
        store.limiter(|s| &mut s.limiter);
        if self.cache.engine().settings.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX)).map_err(|e| ExecError::Trap(format!("{e:#}")))?;
        }
        // Every epoch tick the guest yields to the executor and its deadline is checked.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        let run = async {
            let runner = loaded.pre.instantiate_async(&mut store).await?;
            runner.call_handler(&mut store, &request).await
        };
        let result = tokio::time::timeout(limits.timeout + HOST_CALL_GRACE, run).await;
        store.data().output.finish();
        let memory_hit = store.data().limiter.hit;
        let error = match result {
            Ok(Ok(response)) => return Ok(ExecOutcome { response, tier }),
            Err(_) => ExecError::Timeout(limits.timeout),
            Ok(Err(e)) => {
                let trap = e.downcast_ref::<Trap>().copied();
                if memory_hit {
                    ExecError::MemoryLimit(limits.max_memory_bytes)
                } else if matches!(trap, Some(Trap::Interrupt | Trap::OutOfFuel)) || Instant::now() >= deadline {
                    ExecError::Timeout(limits.timeout)
                } else if let Some((interface, capability)) = debug.first_denial() {
                    ExecError::CapabilityDenied { interface, capability }
                } else if let Some(thrown) = store.data().output.guest_exception() {
                    ExecError::GuestException { message: thrown.message, at: thrown.at }
                } else {
                    ExecError::Trap(format!("{e:#}"))
                }
            }
        };
        debug.emit_final("error", "log", format!("execution failed: {error}"));
        Err(error)
    }
}
