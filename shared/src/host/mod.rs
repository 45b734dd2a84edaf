//! The per-call host state of a guest and the linker wiring of every import.
//!
//! One [`HostState`] lives in each `Store` (one per request). It only assembles: the WASI
//! context (no preopens, no sockets, stdout/stderr captured to the debug bus), the per-call
//! limits, and one context per capability — each capability module owns its per-call state,
//! its host trait impls and its backends, and is linked with its own `add_to_linker` and a
//! getter of its field here. Grants are decided when the call is planned (each context says
//! whether its capability was granted), not looked up by the host functions.

mod limits;

pub use crate::ids::{ExecIds, UserInfo};
pub use limits::CallLimiter;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::alga::extension as alga;
use crate::bindings::kelp::extension as kelp;
use crate::business::BusinessCtx;
use crate::context::ContextCtx;
use crate::debug::output::Capture;
use crate::debug::{DebugSink, LoggingCtx};
use crate::egress::EgressCtx;
use crate::install_config::InstallConfigCtx;
use crate::secrets::SecretsCtx;
use crate::storage::StorageCtx;

/// Everything one call's host functions need, decided when the call was planned: one
/// context per capability.
pub struct CallState {
    /// `context`, `user`, `user-v2`.
    pub context: ContextCtx,
    /// `kelp:extension/config`.
    pub config: InstallConfigCtx,
    /// Whether `logging.*` lines are published (`cap:log.emit`).
    pub log_granted: bool,
    /// `storage`.
    pub storage: StorageCtx,
    /// `secrets`.
    pub secrets: SecretsCtx,
    /// `http.fetch`.
    pub http: EgressCtx,
    /// `ui-proxy`, `scheduler`, `invoicing`, `clients`, `services`.
    pub business: BusinessCtx,
    /// Debug events of the call (guest output and host warnings).
    pub debug: DebugSink,
    /// What the call used (usage metering).
    pub tally: std::sync::Arc<crate::usage::CallTally>,
}

/// The store data of one call.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance limits (the store's `ResourceLimiter`).
    pub limiter: CallLimiter,
    /// Log, stdout and stderr capture (one budget), flushed after the call.
    pub output: Capture,
    context: ContextCtx,
    config: InstallConfigCtx,
    logging: LoggingCtx,
    storage: StorageCtx,
    secrets: SecretsCtx,
    http: EgressCtx,
    business: BusinessCtx,
}

impl HostState {
    /// State for one call: WASI with no preopens, no network, no environment, and
    /// stdout/stderr going to the debug bus (log lines, stdout and stderr share
    /// `max_output_bytes`).
    pub fn new(call: CallState, max_memory_bytes: usize, max_output_bytes: usize) -> Self {
        let output = Capture::for_source(call.debug, max_output_bytes, call.config.dev_source.clone());
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stdout())
            .stderr(output.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(max_memory_bytes),
            logging: LoggingCtx { granted: call.log_granted, output: output.clone() },
            output,
            context: call.context,
            config: call.config,
            storage: call.storage,
            secrets: call.secrets,
            http: call.http,
            business: call.business,
        }
    }
}

impl HostState {
    /// Hand a reused instance's state to its next call: every capability context is the new
    /// call's (its grants, ids, user, secrets, deadline and budgets), output goes to the new
    /// call's debug sink within a fresh budget, and a memory-limit hit of an earlier call is
    /// forgotten. The WASI context and the resource table stay: they belong to the instance
    /// (the guest holds handles into them), and neither carries anything of a caller.
    pub fn renew(&mut self, call: CallState, max_output_bytes: usize) {
        self.output.restart(call.debug, max_output_bytes);
        self.limiter.hit = false;
        self.logging = LoggingCtx { granted: call.log_granted, output: self.output.clone() };
        self.context = call.context;
        self.config = call.config;
        self.storage = call.storage;
        self.secrets = call.secrets;
        self.http = call.http;
        self.business = call.business;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The linker every component is instantiated with: WASI 0.2 and every interface of
/// `kelp:extension/runner` (all 12 alga interfaces plus `config`), each with its own
/// capability context. A flat list, no logic.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut l: Linker<HostState> = Linker::new(engine);
    let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    wasmtime_wasi::p2::add_to_linker_async(&mut l).map_err(wrap)?;
    alga::types::add_to_linker::<_, HasSelf<ContextCtx>>(&mut l, |s| &mut s.context).map_err(wrap)?;
    alga::context::add_to_linker::<_, HasSelf<ContextCtx>>(&mut l, |s| &mut s.context).map_err(wrap)?;
    alga::user::add_to_linker::<_, HasSelf<ContextCtx>>(&mut l, |s| &mut s.context).map_err(wrap)?;
    alga::user_v2::add_to_linker::<_, HasSelf<ContextCtx>>(&mut l, |s| &mut s.context).map_err(wrap)?;
    alga::logging::add_to_linker::<_, HasSelf<LoggingCtx>>(&mut l, |s| &mut s.logging).map_err(wrap)?;
    alga::storage::add_to_linker::<_, HasSelf<StorageCtx>>(&mut l, |s| &mut s.storage).map_err(wrap)?;
    alga::secrets::add_to_linker::<_, HasSelf<SecretsCtx>>(&mut l, |s| &mut s.secrets).map_err(wrap)?;
    alga::http::add_to_linker::<_, HasSelf<EgressCtx>>(&mut l, |s| &mut s.http).map_err(wrap)?;
    alga::ui_proxy::add_to_linker::<_, HasSelf<BusinessCtx>>(&mut l, |s| &mut s.business).map_err(wrap)?;
    alga::scheduler::add_to_linker::<_, HasSelf<BusinessCtx>>(&mut l, |s| &mut s.business).map_err(wrap)?;
    alga::invoicing::add_to_linker::<_, HasSelf<BusinessCtx>>(&mut l, |s| &mut s.business).map_err(wrap)?;
    alga::clients::add_to_linker::<_, HasSelf<BusinessCtx>>(&mut l, |s| &mut s.business).map_err(wrap)?;
    alga::services::add_to_linker::<_, HasSelf<BusinessCtx>>(&mut l, |s| &mut s.business).map_err(wrap)?;
    kelp::config::add_to_linker::<_, HasSelf<InstallConfigCtx>>(&mut l, |s| &mut s.config).map_err(wrap)?;
    Ok(l)
}
