//! Per-call resource limits: linear memory, tables and instances, counted across every core
//! instance of the component.

use wasmtime::ResourceLimiter;

use crate::engine::{
    MAX_CORE_INSTANCES_PER_CALL, MAX_MEMORIES_PER_CALL, MAX_TABLES_PER_CALL, MAX_TABLE_ELEMENTS_PER_CALL,
};

/// The resource limits of one call, enforced as totals across every core instance, linear
/// memory and table of the component (a component is several core instances; a limit per
/// memory would let k memories take k times the budget).
///
/// It also remembers that a memory limit was hit, so the trap can be reported as
/// `extension_memory_limit` rather than a generic guest error.
pub struct CallLimiter {
    max_memory_bytes: usize,
    memory_bytes: usize,
    table_elements: usize,
    /// Set when a memory growth past the limit was refused.
    pub hit: bool,
}

impl CallLimiter {
    /// A limiter allowing `max_memory_bytes` of linear memory in total.
    pub fn new(max_memory_bytes: usize) -> Self {
        Self { max_memory_bytes, memory_bytes: 0, table_elements: 0, hit: false }
    }

    /// Linear memory committed by the call so far, across all its memories.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Past the memory's own declared maximum: wasmtime refuses the growth itself.
            return Ok(false);
        }
        // `current` is 0 when a memory is created, so initial sizes are charged too.
        let total = self.memory_bytes.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded ({} bytes requested across all memories)",
                self.max_memory_bytes,
                total
            ));
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.table_elements.saturating_sub(current).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS_PER_CALL {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_CALL as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_CALL as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_CALL as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineSettings, KelpEngine};
    use wasmtime::component::{Component, Linker};
    use wasmtime::Store;

    const MIB: usize = 1 << 20;

    fn engines(max_memory_bytes: usize) -> Vec<KelpEngine> {
        [true, false]
            .into_iter()
            .map(|pooling| {
                KelpEngine::new(EngineSettings {
                    pooling,
                    pool_instances: 2,
                    max_memory_bytes,
                    ..EngineSettings::default()
                })
                .expect("engine")
            })
            .collect()
    }

    /// A store limited like a guest call (epochs are on in Kelp's engine: give it time).
    fn store(engine: &KelpEngine, max_memory_bytes: usize) -> Store<CallLimiter> {
        let mut store = Store::new(&engine.engine, CallLimiter::new(max_memory_bytes));
        store.limiter(|l| l);
        store.set_epoch_deadline(1 << 40);
        store
    }

    /// Instantiate `component` in a store limited like a guest call. The pooling allocator
    /// refuses some components when they are loaded already: that is an `Err` too.
    async fn instantiate(
        engine: &KelpEngine,
        component: &str,
        max_memory_bytes: usize,
    ) -> (Result<(), String>, CallLimiter) {
        let mut store = store(engine, max_memory_bytes);
        let component = match Component::new(&engine.engine, component) {
            Ok(c) => c,
            Err(e) => return (Err(format!("{e:#}")), store.into_data()),
        };
        let linker = Linker::<CallLimiter>::new(&engine.engine);
        let result = linker.instantiate_async(&mut store, &component).await.map(|_| ()).map_err(|e| format!("{e:#}"));
        let limiter = store.into_data();
        (result, limiter)
    }

    /// A component instantiating `module` `copies` times.
    fn component(module: &str, copies: usize) -> String {
        let instances: String = (0..copies).map(|_| "(core instance (instantiate $m))\n").collect();
        format!("(component (core module $m {module})\n{instances})")
    }

    #[tokio::test]
    async fn memory_is_limited_across_all_memories_of_a_call_on_both_allocators() {
        for engine in engines(64 * MIB) {
            // 56 MiB per memory fits one memory's limit; two of them do not fit the call's.
            let (result, limiter) = instantiate(&engine, &component("(memory 896)", 2), 64 * MIB).await;
            let err = result.expect_err("the second 56 MiB memory must be refused");
            assert!(err.contains("memory limit"), "{:?}: {err}", engine.allocator);
            assert!(limiter.hit);
            assert!(limiter.memory_bytes() <= 64 * MIB);
            // Within the budget, several memories are fine.
            let (result, limiter) = instantiate(&engine, &component("(memory 100)", 4), 64 * MIB).await;
            result.unwrap_or_else(|e| panic!("{:?}: {e}", engine.allocator));
            assert_eq!(limiter.memory_bytes(), 4 * 100 * 65536);
        }
    }

    #[tokio::test]
    async fn memory_growth_is_charged_to_the_call_total() {
        let grow = r#"(memory 1) (func (export "grow") (result i32) (memory.grow (i32.const 896)))"#;
        for engine in engines(64 * MIB) {
            let component = Component::new(&engine.engine, component(grow, 2)).unwrap();
            let mut store = store(&engine, 64 * MIB);
            let linker = Linker::<CallLimiter>::new(&engine.engine);
            linker.instantiate_async(&mut store, &component).await.unwrap();
            assert_eq!(store.data().memory_bytes(), 2 * 65536);
            // Grow through a core module directly: components export no core functions.
            let module = wasmtime::Module::new(&engine.engine, format!("(module {grow})")).unwrap();
            let mut grown = Vec::new();
            for _ in 0..2 {
                let instance = wasmtime::Instance::new_async(&mut store, &module, &[]).await.unwrap();
                let f = instance.get_typed_func::<(), i32>(&mut store, "grow").unwrap();
                grown.push(f.call_async(&mut store, ()).await.map_err(|e| format!("{e:#}")));
            }
            assert!(grown[0].is_ok(), "{:?}: {:?}", engine.allocator, grown[0]);
            assert!(
                grown[1].as_ref().is_err_and(|e| e.contains("memory limit")),
                "{:?}: {:?}",
                engine.allocator,
                grown[1]
            );
            assert!(store.data().hit);
        }
    }

    #[tokio::test]
    async fn counts_of_instances_memories_and_tables_are_capped_on_both_allocators() {
        for engine in engines(256 * MIB) {
            let per_call = [
                ("(memory 0)", MAX_MEMORIES_PER_CALL as usize),
                ("(table 0 funcref)", MAX_TABLES_PER_CALL as usize),
                ("", MAX_CORE_INSTANCES_PER_CALL as usize),
            ];
            for (module, max) in per_call {
                let (at_max, _) = instantiate(&engine, &component(module, max), 256 * MIB).await;
                at_max.unwrap_or_else(|e| panic!("{:?}: {max} x {module:?}: {e}", engine.allocator));
                let (over, _) = instantiate(&engine, &component(module, max + 1), 256 * MIB).await;
                assert!(over.is_err(), "{:?}: {} x {module:?} must be refused", engine.allocator, max + 1);
            }
        }
    }

    #[tokio::test]
    async fn table_elements_are_limited_across_all_tables() {
        let per_table = MAX_TABLE_ELEMENTS_PER_CALL / 3 + 1;
        let module = format!("(table {per_table} funcref)");
        // The on-demand allocator has no per-table slot size, so only the call total stops
        // the third table (the pool's smaller slots refuse it earlier).
        let engine = KelpEngine::new(EngineSettings { pooling: false, ..EngineSettings::default() }).unwrap();
        let (two, _) = instantiate(&engine, &component(&module, 2), 256 * MIB).await;
        two.unwrap();
        let (three, _) = instantiate(&engine, &component(&module, 3), 256 * MIB).await;
        assert!(three.is_err(), "three tables of {per_table} elements exceed the call's total");
    }
}
