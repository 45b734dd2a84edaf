//! The per-call host state of a guest and the linker wiring of every import.
//!
//! One [`HostState`] lives in each `Store` (one per request). It carries the WASI context
//! (no preopens, no sockets, stdout/stderr captured to the debug bus), the memory limiter and
//! the [`Invocation`]: everything the host functions need to answer for this request.

mod context;
mod limits;
pub mod stdio;

pub use limits::CallLimiter;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::business::HostApi;
use crate::debug::DebugSink;
use crate::egress::{AllowEntry, EgressClient};
use crate::manifest::Endpoint;
use crate::secrets::ResolvedSecrets;
use crate::storage::{KvLimits, KvStore};

/// Identifiers of one execution (A1): what `context.get-context` returns and what every
/// debug event carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecIds {
    /// Request id.
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Install id (always set by Kelp).
    pub install_id: String,
    /// Version id.
    pub version_id: String,
    /// `sha256:<hex>` of the bundle.
    pub content_hash: String,
}

/// The caller, as the guest may see it through `user`/`user-v2` (with `cap:user.read`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Subject.
    pub user_id: String,
    /// Email.
    pub user_email: String,
    /// Display name.
    pub user_name: String,
    /// `internal` or `client`.
    pub user_type: String,
    /// Client (company) name.
    pub client_name: String,
    /// Client id for client-portal users.
    pub client_id: Option<String>,
    /// Extra fields from the token or the control plane.
    pub additional_fields: Vec<(String, String)>,
}

/// The secrets of one call.
#[derive(Debug, Clone)]
pub enum SecretsState {
    /// The install has no secrets (or may not read them): every key is `missing`.
    None,
    /// Decoded envelope.
    Ready(ResolvedSecrets),
    /// The envelope exists but cannot be decoded: every key is `internal`.
    Broken,
}

/// Everything the host functions need for one call.
pub struct Invocation {
    /// Ids (A1).
    pub ids: ExecIds,
    /// Config map (A2).
    pub config: Arc<BTreeMap<String, String>>,
    /// Config version label (A2).
    pub config_version: String,
    /// Granted capabilities including the defaults.
    pub capabilities: BTreeSet<String>,
    /// The caller.
    pub user: Option<UserInfo>,
    /// Secrets, resolved before the call when the install may read them.
    pub secrets: SecretsState,
    /// Storage backend and its limits.
    pub storage: Arc<dyn KvStore>,
    /// Storage limits.
    pub kv_limits: KvLimits,
    /// Egress allow-list of the install.
    pub egress_allow: Vec<AllowEntry>,
    /// Egress client (process-wide).
    pub egress: Arc<EgressClient>,
    /// Outbound calls made so far in this execution.
    pub egress_calls: u32,
    /// The version's declared endpoints (scheduler.get-endpoints).
    pub endpoints: Arc<[Endpoint]>,
    /// Host API of the PSA for business interfaces, if configured.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Host API calls made so far in this execution.
    pub host_api_calls: u32,
    /// Debug events of this execution.
    pub debug: DebugSink,
    /// Wall-clock deadline of the call; host calls get only the time left.
    pub deadline: Instant,
}

impl Invocation {
    /// Whether the execution has a capability.
    pub fn can(&self, cap: &str) -> bool {
        self.capabilities.contains(cap)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The store data of one call.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance limits (the store's `ResourceLimiter`).
    pub limiter: CallLimiter,
    /// Per-call data.
    pub inv: Invocation,
    /// stdout/stderr capture, flushed after the call.
    pub stdio: stdio::Capture,
}

impl HostState {
    /// State for one call: WASI with no preopens, no network, no environment, and
    /// stdout/stderr going to the debug bus (at most `max_output_bytes` together).
    pub fn new(inv: Invocation, max_memory_bytes: usize, max_output_bytes: usize) -> Self {
        let stdio = stdio::Capture::new(inv.debug.clone(), max_output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdio.stdout())
            .stderr(stdio.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self { wasi, table: ResourceTable::new(), limiter: CallLimiter::new(max_memory_bytes), inv, stdio }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The linker every component is instantiated with: WASI 0.2 and every interface of
/// `kelp:extension/runner` (so all 12 alga interfaces plus `config`). A flat list, no logic.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wrap)?;
    crate::bindings::Runner::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(wrap)?;
    Ok(linker)
}
