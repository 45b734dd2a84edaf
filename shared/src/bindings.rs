//! The one `bindgen!` of the guest contract (`wit/`).
//!
//! Kelp generates bindings for `kelp:extension/runner`, which includes `alga:extension/runner`
//! and adds `kelp:extension/config`. Both worlds export the same `handler`, so the same
//! pre-instantiated bindings serve components of either world; a component that does not
//! import `config` simply ignores that linker entry.

#![allow(missing_docs)] // generated code; the WIT in wit/ is the documentation

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kelp:extension/runner",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use alga::extension::types;
