//! Business interfaces (ui-proxy, scheduler, invoicing, clients, services): answered by the
//! PSA's host API when one is configured and the capability is granted; otherwise each
//! returns its `denied`/`not-allowed` case. Never a trap.

pub mod host;
pub mod http;

pub use host::BusinessCtx;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::ids::{ExecIds, UserInfo};

/// Failures of a host API call, mapped to each interface's error enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostApiError {
    /// The PSA refused (403).
    #[error("denied by the host API")]
    Denied,
    /// Not found (404).
    #[error("not found")]
    NotFound,
    /// Invalid input (400/422), with the PSA's message.
    #[error("invalid input: {0}")]
    BadRequest(String),
    /// Unreachable, timed out, 5xx, oversized or malformed answer.
    #[error("host API failure: {0}")]
    Failed(String),
}

/// The PSA's host API: one JSON operation per call, made with the execution context.
#[async_trait]
pub trait HostApi: Send + Sync {
    /// Call `operation` (e.g. `clients.list`) with a JSON payload; answer within `timeout`.
    async fn call(
        &self,
        ids: &ExecIds,
        user: Option<&UserInfo>,
        operation: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, HostApiError>;
}
