//! The execution runtime: the executor (engine, module cache) plus what a call's host state
//! is assembled from (storage, egress, the host API, the debug bus) and the per-call
//! defaults. It turns a [`Plan`] — one execution, fully decided by a router — into each
//! capability's per-call state and runs it. Functions that never run a guest (the debug
//! relay) do not build one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::bindings::types::ExecuteRequest;
use crate::business::{BusinessCtx, HostApi};
use crate::cache::ModuleCache;
use crate::call_limits::Limits;
use crate::context::ContextCtx;
use crate::debug::{DebugBus, DebugSink, EventContext};
use crate::egress::{EgressAllow, EgressClient, EgressCtx};
use crate::executor::{ExecError, ExecLimits, ExecOutcome, Executor, Reuse};
use crate::host::CallState;
use crate::ids::{ExecIds, UserInfo};
use crate::install_config::InstallConfigCtx;
use crate::manifest::{
    BUSINESS_CAPABILITIES, CAP_HTTP_FETCH, CAP_LOG_EMIT, CAP_SECRETS_GET, CAP_STORAGE_KV, CAP_UI_PROXY, CAP_USER_READ,
};
use crate::secrets::{SecretsCtx, SecretsState};
use crate::storage::{KvStore, Scope, StorageCtx};
use crate::stores::VersionRecord;
use crate::usage::CallTally;

/// Per-call defaults of the runtime.
#[derive(Debug, Clone, Copy)]
pub struct CallDefaults {
    /// Debug event message cap.
    pub debug_max_event_bytes: usize,
}

/// The execution runtime of a process.
pub struct Runtime {
    /// The executor (engine and module cache).
    pub executor: Executor,
    /// Storage backend of `storage.*`.
    pub kv: Arc<dyn KvStore>,
    /// Egress client of `http.fetch`.
    pub egress: Arc<EgressClient>,
    /// The PSA's host API of the business interfaces, if configured.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Where debug events go.
    pub debug: Arc<dyn DebugBus>,
    /// Per-call defaults.
    pub defaults: CallDefaults,
}

/// One execution, fully decided.
pub struct Plan {
    /// Ids (A1).
    pub ids: ExecIds,
    /// The version to run.
    pub version: Arc<VersionRecord>,
    /// Config map.
    pub config: Arc<BTreeMap<String, String>>,
    /// Config version label.
    pub config_version: String,
    /// Effective capabilities (defaults included).
    pub capabilities: BTreeSet<String>,
    /// The caller.
    pub user: Option<UserInfo>,
    /// Secrets.
    pub secrets: SecretsState,
    /// What the call may fetch.
    pub egress_allow: EgressAllow,
    /// The limits of the tenant's plan (the default plan's for `/v1/execute` calls, with the
    /// caller's deadline and memory).
    pub limits: Limits,
    /// What the call used, counted while it runs (the caller records it as usage).
    pub tally: Arc<CallTally>,
    /// Warm instance reuse, when the version opts in and the deployment allows it.
    pub reuse: Option<Reuse>,
}

impl Runtime {
    /// The debug sink of an execution: every event carries these ids (B1); it publishes at
    /// most `max_events` events.
    pub fn sink(&self, ids: &ExecIds, max_events: usize) -> DebugSink {
        DebugSink::new(
            self.debug.clone(),
            EventContext {
                tenant_id: ids.tenant_id.clone(),
                extension_id: ids.extension_id.clone(),
                install_id: ids.install_id.clone(),
                request_id: ids.request_id.clone(),
                version_id: ids.version_id.clone(),
                version: ids.version.clone(),
                content_hash: ids.content_hash.clone(),
            },
            self.defaults.debug_max_event_bytes,
        )
        .with_event_budget(max_events)
    }

    /// The per-capability contexts of a plan: each capability gets its own state, and whether it
    /// was granted is decided here, once.
    pub fn call_state(&self, plan: Plan) -> (CallState, Arc<VersionRecord>, ExecLimits, Option<Reuse>) {
        let debug = self.sink(&plan.ids, plan.limits.debug_events);
        let can = |cap: &str| plan.capabilities.contains(cap);
        let deadline = Instant::now() + plan.limits.exec.timeout;
        let business: BTreeSet<String> =
            BUSINESS_CAPABILITIES.iter().filter(|c| can(c)).map(|c| c.to_string()).collect();
        // Alga's ui-proxy authenticates to Alga's platform APIs with the install's `api_key`.
        let api_key = match &plan.secrets {
            SecretsState::Ready(s) if can(CAP_UI_PROXY) && !s.expired() => s.values.0.get("api_key").cloned(),
            _ => None,
        };
        let call = CallState {
            context: ContextCtx {
                ids: plan.ids.clone(),
                user: plan.user.clone(),
                user_granted: can(CAP_USER_READ),
                debug: debug.clone(),
            },
            config: InstallConfigCtx { values: plan.config, version: plan.config_version, dev_source: None },
            log_granted: can(CAP_LOG_EMIT),
            storage: StorageCtx {
                granted: can(CAP_STORAGE_KV),
                scope: Scope { tenant_id: plan.ids.tenant_id.clone(), install_id: plan.ids.install_id.clone() },
                backend: self.kv.clone(),
                limits: plan.limits.kv,
                plan: plan.limits.plan.clone(),
                tally: plan.tally.clone(),
                debug: debug.clone(),
            },
            secrets: SecretsCtx { granted: can(CAP_SECRETS_GET), state: plan.secrets, debug: debug.clone() },
            http: EgressCtx {
                granted: can(CAP_HTTP_FETCH),
                allow: plan.egress_allow,
                client: self.egress.clone(),
                calls: 0,
                max_calls: plan.limits.egress_calls,
                max_response_bytes: plan.limits.egress_response_bytes,
                deadline,
                tally: plan.tally.clone(),
                debug: debug.clone(),
            },
            business: BusinessCtx {
                granted: business,
                host_api: self.host_api.clone(),
                ids: plan.ids,
                user: plan.user,
                api_key,
                endpoints: plan.version.manifest.endpoints().to_vec().into(),
                calls: 0,
                deadline,
                debug: debug.clone(),
            },
            debug,
            tally: plan.tally,
        };
        (call, plan.version, plan.limits.exec, plan.reuse)
    }

    /// Run a plan.
    pub async fn execute(&self, plan: Plan, request: ExecuteRequest) -> Result<ExecOutcome, ExecError> {
        if !plan.version.has_component() {
            return Err(ExecError::NoHandler);
        }
        // A `kelp dev` version runs the source it carries: read before the call, so the
        // config interface answers it without touching the blob store mid-call.
        let dev_source = match plan.version.manifest.dev_source {
            Some(_) => Some(self.executor.cache().dev_source(&plan.version.content_hash).await?),
            None => None,
        };
        let (mut call, v, limits, reuse) = self.call_state(plan);
        call.config.dev_source = dev_source;
        let (debug, tally) = (call.debug.clone(), call.tally.clone());
        let outcome =
            self.executor.execute(&v.component_hash, &v.component_key, call, request, limits, reuse.as_ref()).await;
        tally.debug_events.store(debug.published() as u64, std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    /// The module cache.
    pub fn cache(&self) -> &Arc<ModuleCache> {
        self.executor.cache()
    }
}
