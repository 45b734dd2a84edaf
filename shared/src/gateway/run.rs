//! What both entry points (tenant traffic and `/v1/execute`) share: building the invocation
//! from a plan and classifying execution failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;

use crate::bindings::types::ExecuteRequest;
use crate::debug::{DebugSink, EventContext};
use crate::egress::AllowEntry;
use crate::error::ApiError;
use crate::executor::{ExecError, ExecLimits, ExecOutcome};
use crate::host::{ExecIds, Invocation, SecretsState, UserInfo};
use crate::platform::Platform;
use crate::stores::VersionRecord;

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
    /// Egress allow-list.
    pub egress_allow: Vec<AllowEntry>,
    /// Limits.
    pub limits: ExecLimits,
}

/// The debug sink of an execution: every event carries these ids (B1).
pub fn sink(platform: &Platform, ids: &ExecIds) -> DebugSink {
    DebugSink::new(
        platform.debug.clone(),
        EventContext {
            tenant_id: ids.tenant_id.clone(),
            extension_id: ids.extension_id.clone(),
            install_id: ids.install_id.clone(),
            request_id: ids.request_id.clone(),
            version_id: ids.version_id.clone(),
            content_hash: ids.content_hash.clone(),
        },
        platform.settings.debug_max_event_bytes,
    )
    .with_event_budget(platform.settings.debug_max_events_per_call)
}

/// The host state of a plan (the version is kept by the caller).
pub fn invocation(platform: &Platform, plan: Plan) -> (Invocation, Arc<VersionRecord>, ExecLimits) {
    let debug = sink(platform, &plan.ids);
    let invocation = Invocation {
        endpoints: plan.version.manifest.endpoints().to_vec().into(),
        ids: plan.ids,
        config: plan.config,
        config_version: plan.config_version,
        capabilities: plan.capabilities,
        user: plan.user,
        secrets: plan.secrets,
        storage: platform.kv.clone(),
        kv_limits: platform.settings.kv_limits,
        egress_allow: plan.egress_allow,
        egress: platform.egress.clone(),
        egress_calls: 0,
        host_api: platform.host_api.clone(),
        host_api_calls: 0,
        debug,
        deadline: Instant::now() + plan.limits.timeout,
    };
    (invocation, plan.version, plan.limits)
}

/// Run a plan.
pub async fn execute(platform: &Platform, plan: Plan, request: ExecuteRequest) -> Result<ExecOutcome, ExecError> {
    let (invocation, v, limits) = invocation(platform, plan);
    platform.executor.execute(&v.component_hash, &v.component_key, invocation, request, limits).await
}

/// The error response of a failed execution: trap → 500, timeout → 504, memory → 500.
pub fn exec_error_response(e: &ExecError) -> ApiError {
    match e {
        ExecError::Trap(detail) => {
            tracing::info!(error = %detail, "extension trapped");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "extension_error", "the extension failed (trap)")
        }
        ExecError::Timeout(limit) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "extension_timeout",
            format!("the extension did not answer within {} ms", limit.as_millis()),
        ),
        ExecError::MemoryLimit(bytes) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "extension_memory_limit",
            format!("the extension exceeded its memory limit of {} MiB", bytes >> 20),
        ),
        ExecError::Busy(slots) => {
            tracing::warn!(slots, "all instance slots busy");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the runtime is at capacity; retry shortly")
                .with_header(axum::http::header::RETRY_AFTER, "1")
        }
        ExecError::Load(crate::cache::CacheError::Unavailable(m)) => {
            tracing::warn!(error = %m, "component unavailable");
            ApiError::unavailable("the extension's component is temporarily unavailable")
        }
        ExecError::Load(other) => {
            tracing::error!(error = %other, "component failed to load");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "extension_error",
                "the extension's component cannot be loaded",
            )
        }
    }
}

/// Short status of an execution record.
pub fn exec_status(e: &ExecError) -> &'static str {
    match e {
        ExecError::Timeout(_) => "timeout",
        _ => "error",
    }
}
