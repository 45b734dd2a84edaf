//! What both entry points (tenant traffic and `/v1/execute`) share: classifying execution
//! failures into the JSON error shape.

use axum::http::StatusCode;

use crate::executor::ExecError;
use crate::http::error::ApiError;

/// The error response of a failed execution: trap → 500, timeout → 504, memory → 500.
pub fn exec_error_response(e: &ExecError) -> ApiError {
    match e {
        ExecError::Trap(detail) => {
            tracing::info!(error = %detail, "extension trapped");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "extension_error", "the extension failed (trap)")
        }
        // The message and place are in the debug stream; the client learns what happened, not
        // the extension's internals.
        ExecError::GuestException { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "extension_exception",
            "the extension threw an uncaught exception (its debug stream has the message and where)",
        ),
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
        ExecError::CapabilityDenied { interface, capability } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "capability_denied",
            format!(
                "the extension failed after calling {interface} without {capability}: grant it to the install \
                 (`kelp grant <install> {capability}`, if its manifest declares it) or handle the denial in the \
                 extension"
            ),
        ),
        ExecError::QuotaExceeded(what) => storage_quota_refusal(what),
        ExecError::NoHandler => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_handler",
            "this version of the extension is UI-only: it has no handler to answer API calls",
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

/// 507 `storage_quota_exceeded`: the guest failed (or answered 5xx) after a storage write
/// was refused by its plan; `what` names the limit and the plan.
pub fn storage_quota_refusal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "storage_quota_exceeded",
        format!("the extension's storage is full: {what}"),
    )
}

/// Short status of an execution record.
pub fn exec_status(e: &ExecError) -> &'static str {
    match e {
        ExecError::Timeout(_) => "timeout",
        _ => "error",
    }
}
