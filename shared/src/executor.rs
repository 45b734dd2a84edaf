//! Runs one call of a component's `handler`: a fresh store (or, for an install that opted in,
//! a warm instance of an earlier call), limits, epoch deadline, memory limiter, optional fuel,
//! then classifies failures (trap, timeout, memory) for the routers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::types::{ExecuteRequest, ExecuteResponse};
use crate::bindings::Runner;
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
    /// Which cache tier provided the component (a reused instance: [`Tier::Memory`]).
    pub tier: Tier,
    /// Whether a warm instance of an earlier call served it.
    pub reused: bool,
}

/// Warm instance reuse for one call, decided when the call was planned (the manifest's
/// `instances`): the instance may serve later calls with the same key, one at a time.
#[derive(Debug, Clone)]
pub struct Reuse {
    /// Whose instances these are (tenant and install). One scope keeps instances of one key
    /// only: those of an older key are dropped when a call of a newer key comes.
    pub scope: String,
    /// Calls share instances only when their keys are equal. The planner puts in it
    /// everything an instance may have seen: tenant, install, version, and the install's
    /// revision, config and secrets versions.
    pub key: String,
    /// Calls one instance serves before it is dropped.
    pub max_requests: u32,
    /// Age at which an instance is dropped instead of serving again.
    pub max_age: Duration,
}

/// An instance between two calls.
struct WarmInstance {
    store: Store<HostState>,
    runner: Runner,
    served: u32,
    born: Instant,
    /// The pool slot it holds: released when the instance is dropped.
    slot: OwnedSemaphorePermit,
}

/// The idle instances of one scope, all of one key.
struct IdleSet {
    key: String,
    instances: Vec<WarmInstance>,
}

/// Idle warm instances by scope.
#[derive(Default)]
struct WarmInstances {
    idle: Mutex<HashMap<String, IdleSet>>,
    /// Calls waiting for a pool slot. While any wait, a finished instance is dropped instead
    /// of parked, so idle instances never starve a call of a slot.
    waiting: AtomicUsize,
}

impl WarmInstances {
    /// An idle instance for `reuse`, if one is young enough. Older ones, and the scope's
    /// instances of another key (the install changed since they ran), are dropped here.
    fn take(&self, reuse: &Reuse) -> Option<WarmInstance> {
        let mut dropped = Vec::new();
        let found = {
            let mut idle = self.idle.lock();
            let set = idle.get_mut(&reuse.scope)?;
            let mut found = None;
            if set.key == reuse.key {
                while let Some(instance) = set.instances.pop() {
                    if instance.born.elapsed() < reuse.max_age {
                        found = Some(instance);
                        break;
                    }
                    dropped.push(instance);
                }
            } else {
                dropped.append(&mut set.instances);
            }
            if set.instances.is_empty() {
                idle.remove(&reuse.scope);
            }
            found
        };
        // Stores are dropped outside the lock: resetting a pool slot takes a while.
        drop(dropped);
        found
    }

    /// Keep `instance` for the next call of its key, unless it has served its share, is too
    /// old, or a call is waiting for the slot it holds.
    fn park(&self, reuse: &Reuse, instance: WarmInstance) {
        if instance.served >= reuse.max_requests || instance.born.elapsed() >= reuse.max_age {
            return;
        }
        let mut idle = self.idle.lock();
        // Checked under the lock that `evict_one` takes after a waiter registers, so either
        // the waiter evicts this instance or this sees the waiter.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            drop(idle);
            return;
        }
        let set = idle
            .entry(reuse.scope.clone())
            .or_insert_with(|| IdleSet { key: reuse.key.clone(), instances: Vec::new() });
        // The latest call's key wins: the scope's instances of another key are dropped.
        let stale = if set.key == reuse.key {
            Vec::new()
        } else {
            set.key = reuse.key.clone();
            std::mem::take(&mut set.instances)
        };
        set.instances.push(instance);
        drop(idle);
        drop(stale);
    }

    /// Drop the oldest idle instance, freeing its slot. False when none is idle.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut idle = self.idle.lock();
            let Some(scope) = idle
                .iter()
                .filter_map(|(scope, set)| set.instances.first().map(|oldest| (scope.clone(), oldest.born)))
                .min_by_key(|(_, born)| *born)
                .map(|(scope, _)| scope)
            else {
                return false;
            };
            let set = idle.get_mut(&scope).expect("scope found above");
            let victim = set.instances.remove(0);
            if set.instances.is_empty() {
                idle.remove(&scope);
            }
            victim
        };
        drop(victim);
        true
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().values().map(|set| set.instances.len()).sum()
    }
}

/// Counts a waiting call for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn register(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
    /// The guest failed after a storage write was refused by its plan's quota.
    #[error("extension failed after a storage quota was hit: {0}")]
    QuotaExceeded(String),
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
    /// The version is UI-only: there is no handler to call.
    #[error("the version has no handler component (UI-only)")]
    NoHandler,
}

/// Runs components from the cache.
pub struct Executor {
    cache: Arc<ModuleCache>,
    // One permit per pool slot: a request waits for a free slot instead of failing to
    // instantiate when the pool is exhausted.
    slots: Arc<Semaphore>,
    slot_count: usize,
    warm: WarmInstances,
}

/// Whether wasmtime stopped a copy between guest and host at the hostcall fuel the executor
/// set (the error type is private to wasmtime; its message is what there is).
fn copied_past_the_limit(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| cause.to_string().contains("fuel allocated for hostcalls has been exhausted"))
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
        Self { cache, slots: Arc::new(Semaphore::new(slot_count)), slot_count, warm: WarmInstances::default() }
    }

    /// Warm instances waiting for their next call.
    pub fn idle_warm_instances(&self) -> usize {
        self.warm.idle_count()
    }

    /// A pool slot, evicting idle warm instances when none is free, waiting at most until
    /// `deadline`.
    async fn acquire_slot(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, ExecError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // From here on this call counts as waiting, so finishing calls free their slots.
        let _waiting = Waiting::register(&self.warm.waiting);
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Ok(permit);
            }
            if !self.warm.evict_one() {
                break;
            }
        }
        match tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ExecError::Busy(self.slot_count)),
        }
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

    /// Call `handler(request)` of the component with `call` as host state: on a warm instance
    /// of an earlier call with the same reuse key when there is one, else on a fresh one
    /// (kept for later calls when `reuse` allows and the call succeeds).
    pub async fn execute(
        &self,
        component_hash: &str,
        component_key: &str,
        mut call: CallState,
        request: ExecuteRequest,
        limits: ExecLimits,
        reuse: Option<&Reuse>,
    ) -> Result<ExecOutcome, ExecError> {
        let warm = reuse.and_then(|r| self.warm.take(r));
        let (loaded, tier) = match warm {
            Some(_) => (None, Tier::Memory),
            None => {
                let (loaded, tier) = self.cache.get(component_hash, component_key).await?;
                (Some(loaded), tier)
            }
        };
        let started = Instant::now();
        let deadline = started + limits.timeout;
        // Host calls get only the time left from here (a slot wait counts against the budget).
        call.http.deadline = deadline;
        call.business.deadline = deadline;
        let debug = call.debug.clone();
        let tally = call.tally.clone();
        let (mut store, runner, served, born, slot) = match warm {
            Some(instance) => {
                let mut store = instance.store;
                store.data_mut().renew(call, limits.max_output_bytes);
                (store, Some(instance.runner), instance.served, instance.born, instance.slot)
            }
            None => {
                let slot = self.acquire_slot(deadline).await?;
                let engine = &self.cache.engine().engine;
                let mut store =
                    Store::new(engine, HostState::new(call, limits.max_memory_bytes, limits.max_output_bytes));
                store.limiter(|s| &mut s.limiter);
                (store, None, 0, Instant::now(), slot)
            }
        };
        let reused = runner.is_some();
        let fuel_given = limits.fuel.unwrap_or(u64::MAX);
        if self.cache.engine().settings.fuel {
            store.set_fuel(fuel_given).map_err(|e| ExecError::Trap(format!("{e:#}")))?;
        }
        // What the host copies out of the guest in one crossing (its answer, a host call's
        // arguments) is bounded by the call's own memory limit, not wasmtime's 128 MiB default:
        // a guest can alias one string from many places in its answer and the host would
        // copy each.
        store.set_hostcall_fuel(limits.max_memory_bytes);
        // Every epoch tick the guest yields to the executor and its deadline is checked.
        store.set_epoch_deadline(1);
        // The ticks the guest runs through are its CPU time for usage metering.
        let ticks = tally.clone();
        store.epoch_deadline_callback(move |_| {
            ticks.epoch_ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        let run = async {
            let runner = match (runner, &loaded) {
                (Some(runner), _) => runner,
                (None, Some(loaded)) => loaded.pre.instantiate_async(&mut store).await?,
                // Not reachable: a call without a warm instance loaded the component above.
                (None, None) => return Err(wasmtime::format_err!("no instance and no component to instantiate")),
            };
            let response = runner.call_handler(&mut store, &request).await?;
            Ok::<_, wasmtime::Error>((runner, response))
        };
        let result = tokio::time::timeout(limits.timeout + HOST_CALL_GRACE, run).await;
        store.data().output.finish();
        let memory_hit = store.data().limiter.hit;
        tally
            .peak_memory_bytes
            .fetch_max(store.data().limiter.memory_bytes() as u64, std::sync::atomic::Ordering::Relaxed);
        if self.cache.engine().settings.fuel {
            let left = store.get_fuel().unwrap_or(0);
            tally.fuel.fetch_add(fuel_given.saturating_sub(left), std::sync::atomic::Ordering::Relaxed);
        }
        let error = match result {
            Ok(Ok((runner, response))) => {
                // Only an instance whose call finished cleanly serves again: after a trap, a
                // timeout or a memory-limit hit its state is not trustworthy.
                let instance = WarmInstance { store, runner, served: served + 1, born, slot };
                match reuse.filter(|_| !memory_hit) {
                    Some(reuse) => self.warm.park(reuse, instance),
                    // Fields drop in order: the store (and its pool slot's memory) before the
                    // permit that lets another call take the slot.
                    None => drop(instance),
                }
                return Ok(ExecOutcome { response, tier, reused });
            }
            Err(_) => ExecError::Timeout(limits.timeout),
            Ok(Err(e)) => {
                let trap = e.downcast_ref::<Trap>().copied();
                if memory_hit || copied_past_the_limit(&e) {
                    ExecError::MemoryLimit(limits.max_memory_bytes)
                } else if matches!(trap, Some(Trap::Interrupt | Trap::OutOfFuel)) || Instant::now() >= deadline {
                    ExecError::Timeout(limits.timeout)
                } else if let Some((interface, capability)) = debug.first_denial() {
                    ExecError::CapabilityDenied { interface, capability }
                } else if let Some(what) = tally.first_quota() {
                    ExecError::QuotaExceeded(what)
                } else if let Some(thrown) = store.data().output.guest_exception() {
                    ExecError::GuestException { message: thrown.message, at: thrown.at }
                } else {
                    ExecError::Trap(format!("{e:#}"))
                }
            }
        };
        // The failed instance is never reused; its slot is released after it is gone.
        drop(store);
        drop(slot);
        debug.emit_final("error", "log", format!("execution failed: {error}"));
        Err(error)
    }
}
