//! What a plan says: the limits a plan (or an install's overrides) sets, and the snapshot of
//! its tenant's plan each install record carries. Plain data of the control plane; the
//! limits a request runs under are resolved from them in [`crate::call_limits`], and plans
//! are managed in [`crate::plans`].

use serde::{Deserialize, Serialize};

/// The name of the plan made of the deployment's settings (`KELP_EXEC_TIMEOUT_MS`, ...).
pub const DEFAULT_PLAN: &str = "default";

/// Every limit a plan (or an install's overrides) can set. `None` keeps the value of the
/// level below: a plan's unset limits are the default plan's, an install's unset overrides
/// are its plan's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// Wall-clock deadline of one execution, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Linear memory of one execution, in MiB (at most the engine's `KELP_MAX_MEMORY_MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Fuel units of one execution (only where the engine meters fuel, `KELP_FUEL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// stdout + stderr + log bytes one execution may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Debug events one execution may publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_events: Option<u64>,
    /// Requests per minute to one install (bursts of up to ten seconds' worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_requests_per_minute: Option<u64>,
    /// Requests per minute to all of a tenant's installs together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_requests_per_minute: Option<u64>,
    /// `http.fetch` calls per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_calls: Option<u64>,
    /// Bytes of one `http.fetch` response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_response_bytes: Option<u64>,
    /// Storage namespaces per install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespaces: Option<u64>,
    /// Storage keys per namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_keys_per_namespace: Option<u64>,
    /// Bytes of one storage value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_value_bytes: Option<u64>,
    /// Installs per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installs: Option<u64>,
    /// Whether warm instances may serve the tenant's installs (manifest `instances.reuse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_reuse: Option<bool>,
}

impl LimitSet {
    /// Refuse values no execution could run under: zeros where a zero would refuse every
    /// request, memory past what the engine's pool slots hold, and fuel on an engine that
    /// meters none (it would silently not apply).
    pub fn validate(&self, engine_max_memory_bytes: usize, engine_meters_fuel: bool) -> Result<(), String> {
        if self.fuel.is_some() && !engine_meters_fuel {
            return Err("fuel applies only where the engine meters fuel (KELP_FUEL); set timeout_ms instead".into());
        }
        let positive = [
            ("timeout_ms", self.timeout_ms),
            ("memory_mb", self.memory_mb),
            ("fuel", self.fuel),
            ("install_requests_per_minute", self.install_requests_per_minute),
            ("tenant_requests_per_minute", self.tenant_requests_per_minute),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.timeout_ms.is_some_and(|ms| ms > 900_000) {
            return Err("timeout_ms must be at most 900000 (Lambda's 15 minutes)".into());
        }
        let engine_mb = (engine_max_memory_bytes >> 20) as u64;
        if self.memory_mb.is_some_and(|mb| mb > engine_mb) {
            return Err(format!(
                "memory_mb must be at most {engine_mb} (the engine's KELP_MAX_MEMORY_MB, the size of its instance slots)"
            ));
        }
        Ok(())
    }
}

/// The plan snapshot an install carries (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallLimits {
    /// The tenant's plan when it was last applied; `None`: the default plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<AppliedPlan>,
    /// The install's own overrides (they only narrow).
    #[serde(default)]
    pub overrides: LimitSet,
}

/// A plan as applied to an install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPlan {
    /// The plan's name.
    pub name: String,
    /// Its revision when applied.
    pub revision: u64,
    /// Its limits.
    pub limits: LimitSet,
}

/// A token bucket: `burst` requests at once, refilled at `per_sec`. A burst of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket size.
    pub burst: u32,
    /// Refill per second.
    pub per_sec: f64,
}

impl Rate {
    /// `per_minute` requests a minute, in bursts of up to ten seconds' worth (at least one).
    pub fn per_minute(per_minute: u64) -> Self {
        Self { burst: per_minute.div_ceil(6).clamp(1, u32::MAX as u64) as u32, per_sec: per_minute as f64 / 60.0 }
    }

    /// No limit.
    pub const UNLIMITED: Rate = Rate { burst: 0, per_sec: 0.0 };
}
