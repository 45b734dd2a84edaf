//! Business interfaces (ui-proxy, scheduler, invoicing, clients, services): answered by the
//! PSA's host API when one is configured and the capability is granted; otherwise each
//! returns its `denied`/`not-allowed` case. Never a trap.

pub mod alga;
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
    /// Too many calls (Alga's scheduler answers 429 past its quota).
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Unreachable, timed out, 5xx, oversized or malformed answer.
    #[error("host API failure: {0}")]
    Failed(String),
}

/// Who calls the host API: the execution's ids and user, and the install's `api_key` secret
/// (sent only by Alga's ui-proxy protocol, to Alga's platform APIs).
pub struct Caller<'a> {
    /// Ids of the execution.
    pub ids: &'a ExecIds,
    /// The caller.
    pub user: Option<&'a UserInfo>,
    /// The install's `api_key` secret, when it has one and may proxy UI routes.
    pub api_key: Option<&'a str>,
}

/// The PSA's host API: one JSON operation per call, made with the execution context. Two
/// protocols implement it: Kelp's own ([`http`]) and Alga's internal API ([`alga`]).
#[async_trait]
pub trait HostApi: Send + Sync {
    /// Call `operation` (e.g. `clients.list`) with a JSON payload; answer within `timeout`.
    async fn call(
        &self,
        caller: &Caller<'_>,
        operation: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, HostApiError>;
}
