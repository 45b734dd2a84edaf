//! The limits one request runs under: the default plan (the deployment's settings), under the
//! tenant's plan, narrowed by the install's own limits.

use std::time::Duration;

use crate::executor::ExecLimits;
use crate::limits::{InstallLimits, LimitSet, Rate};
use crate::storage::KvLimits;

/// The limits one request runs under, fully resolved: the default plan, then the tenant's
/// plan, then the install's overrides.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The plan they come from (`default` when the tenant has none).
    pub plan: String,
    /// Deadline, memory, fuel and output of the execution.
    pub exec: ExecLimits,
    /// Debug events one execution may publish.
    pub debug_events: usize,
    /// Requests to the install.
    pub install_rate: Rate,
    /// Requests to all the tenant's installs (`UNLIMITED` unless a plan sets one).
    pub tenant_rate: Rate,
    /// `http.fetch` calls per request.
    pub egress_calls: u32,
    /// Bytes of one `http.fetch` response.
    pub egress_response_bytes: usize,
    /// Storage limits.
    pub kv: KvLimits,
    /// Installs per tenant (`None`: no limit).
    pub installs: Option<u64>,
    /// Whether warm instances may serve (the deployment's `KELP_INSTANCE_REUSE` and the plan).
    pub warm_reuse: bool,
}

impl Limits {
    /// These limits (the default plan's) under `install`'s plan snapshot and overrides.
    pub fn for_install(&self, install: &InstallLimits) -> Limits {
        let plan = match &install.plan {
            Some(p) => self.under(&p.name, &p.limits),
            None => self.clone(),
        };
        plan.narrowed_by(&install.overrides)
    }

    /// These limits with every limit `set` sets lowered to it, never raised: an install's own
    /// limits narrow its plan, even a plan that later shrinks below them.
    pub fn narrowed_by(mut self, set: &LimitSet) -> Limits {
        let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        // The slower of two buckets (an unlimited one is never the slower).
        let slower = |current: Rate, per_minute: u64| {
            let asked = Rate::per_minute(per_minute);
            if current.burst == 0 || asked.per_sec < current.per_sec {
                asked
            } else {
                current
            }
        };
        let l = &mut self;
        if let Some(ms) = set.timeout_ms {
            l.exec.timeout = l.exec.timeout.min(Duration::from_millis(ms));
        }
        if let Some(mb) = set.memory_mb {
            l.exec.max_memory_bytes = l.exec.max_memory_bytes.min(usize_of(mb).saturating_mul(1 << 20));
        }
        if let Some(fuel) = set.fuel {
            l.exec.fuel = Some(l.exec.fuel.unwrap_or(u64::MAX).min(fuel));
        }
        if let Some(b) = set.output_bytes {
            l.exec.max_output_bytes = l.exec.max_output_bytes.min(usize_of(b));
        }
        if let Some(n) = set.debug_events {
            l.debug_events = l.debug_events.min(usize_of(n));
        }
        if let Some(rpm) = set.install_requests_per_minute {
            l.install_rate = slower(l.install_rate, rpm);
        }
        if let Some(rpm) = set.tenant_requests_per_minute {
            l.tenant_rate = slower(l.tenant_rate, rpm);
        }
        if let Some(n) = set.egress_calls {
            l.egress_calls = l.egress_calls.min(n.min(u32::MAX as u64) as u32);
        }
        if let Some(b) = set.egress_response_bytes {
            l.egress_response_bytes = l.egress_response_bytes.min(usize_of(b));
        }
        if let Some(n) = set.storage_namespaces {
            l.kv.max_namespaces = l.kv.max_namespaces.min(usize_of(n));
        }
        if let Some(n) = set.storage_keys_per_namespace {
            l.kv.max_keys_per_namespace = l.kv.max_keys_per_namespace.min(usize_of(n));
        }
        if let Some(b) = set.storage_value_bytes {
            l.kv.max_value_bytes = l.kv.max_value_bytes.min(usize_of(b));
        }
        if let Some(n) = set.installs {
            l.installs = Some(l.installs.unwrap_or(u64::MAX).min(n));
        }
        if let Some(reuse) = set.warm_reuse {
            l.warm_reuse &= reuse;
        }
        self
    }

    /// These limits with every limit `set` sets replaced by it.
    pub fn under(&self, plan: &str, set: &LimitSet) -> Limits {
        let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let mut l = self.clone();
        l.plan = plan.to_string();
        if let Some(ms) = set.timeout_ms {
            l.exec.timeout = Duration::from_millis(ms);
        }
        if let Some(mb) = set.memory_mb {
            l.exec.max_memory_bytes = usize_of(mb).saturating_mul(1 << 20);
        }
        if let Some(fuel) = set.fuel {
            l.exec.fuel = Some(fuel);
        }
        if let Some(b) = set.output_bytes {
            l.exec.max_output_bytes = usize_of(b);
        }
        if let Some(n) = set.debug_events {
            l.debug_events = usize_of(n);
        }
        if let Some(rpm) = set.install_requests_per_minute {
            l.install_rate = Rate::per_minute(rpm);
        }
        if let Some(rpm) = set.tenant_requests_per_minute {
            l.tenant_rate = Rate::per_minute(rpm);
        }
        if let Some(n) = set.egress_calls {
            l.egress_calls = n.min(u32::MAX as u64) as u32;
        }
        if let Some(b) = set.egress_response_bytes {
            l.egress_response_bytes = usize_of(b);
        }
        if let Some(n) = set.storage_namespaces {
            l.kv.max_namespaces = usize_of(n);
        }
        if let Some(n) = set.storage_keys_per_namespace {
            l.kv.max_keys_per_namespace = usize_of(n);
        }
        if let Some(b) = set.storage_value_bytes {
            l.kv.max_value_bytes = usize_of(b);
        }
        if let Some(n) = set.installs {
            l.installs = Some(n);
        }
        if let Some(reuse) = set.warm_reuse {
            // A plan cannot turn on what the deployment turned off.
            l.warm_reuse &= reuse;
        }
        l
    }

    /// The limits as the JSON object of `/admin/plans` (every value, the effective ones).
    pub fn view(&self) -> serde_json::Value {
        let per_minute = |r: Rate| (r.burst > 0).then(|| (r.per_sec * 60.0).round() as u64);
        serde_json::json!({
            "timeout_ms": self.exec.timeout.as_millis() as u64,
            "memory_mb": self.exec.max_memory_bytes >> 20,
            "fuel": self.exec.fuel,
            "output_bytes": self.exec.max_output_bytes,
            "debug_events": self.debug_events,
            "install_requests_per_minute": per_minute(self.install_rate),
            "tenant_requests_per_minute": per_minute(self.tenant_rate),
            "egress_calls": self.egress_calls,
            "egress_response_bytes": self.egress_response_bytes,
            "storage_namespaces": self.kv.max_namespaces,
            "storage_keys_per_namespace": self.kv.max_keys_per_namespace,
            "storage_value_bytes": self.kv.max_value_bytes,
            "installs": self.installs,
            "warm_reuse": self.warm_reuse,
        })
    }
}

impl Limits {
    /// The defaults of an unconfigured deployment (unit tests that need a platform).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Limits {
        Limits {
            plan: crate::limits::DEFAULT_PLAN.into(),
            exec: ExecLimits {
                timeout: Duration::from_millis(5000),
                max_memory_bytes: 256 << 20,
                fuel: None,
                max_output_bytes: 65536,
            },
            debug_events: 1000,
            install_rate: Rate { burst: 100, per_sec: 50.0 },
            tenant_rate: Rate::UNLIMITED,
            egress_calls: 16,
            egress_response_bytes: 4 << 20,
            kv: KvLimits::default(),
            installs: None,
            warm_reuse: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{AppliedPlan, DEFAULT_PLAN};

    fn defaults() -> Limits {
        Limits::for_tests()
    }

    #[test]
    fn a_plan_replaces_defaults_and_overrides_only_narrow() {
        let plan = LimitSet { timeout_ms: Some(200), memory_mb: Some(32), installs: Some(3), ..Default::default() };
        let install = InstallLimits {
            plan: Some(AppliedPlan { name: "small".into(), revision: 1, limits: plan }),
            overrides: LimitSet {
                timeout_ms: Some(100),
                memory_mb: Some(512),
                warm_reuse: Some(false),
                ..Default::default()
            },
        };
        let l = defaults().for_install(&install);
        assert_eq!(l.plan, "small");
        assert_eq!(l.exec.timeout, Duration::from_millis(100), "an override narrows");
        assert_eq!(l.exec.max_memory_bytes, 32 << 20, "an override cannot raise the plan");
        assert_eq!(l.installs, Some(3));
        assert!(!l.warm_reuse);
        assert_eq!(l.egress_calls, 16, "unset limits are the default plan's");
        let none = defaults().for_install(&InstallLimits::default());
        assert_eq!(none.plan, DEFAULT_PLAN);
        assert_eq!(none.exec.timeout, Duration::from_millis(5000));
        // On the default plan too, an install's own limits only narrow.
        let raising = InstallLimits {
            plan: None,
            overrides: LimitSet {
                timeout_ms: Some(60_000),
                install_requests_per_minute: Some(1_000_000),
                egress_calls: Some(2),
                ..Default::default()
            },
        };
        let l = defaults().for_install(&raising);
        assert_eq!(l.exec.timeout, Duration::from_millis(5000));
        assert_eq!(l.install_rate, Rate { burst: 100, per_sec: 50.0 }, "the slower bucket");
        assert_eq!(l.egress_calls, 2);
    }

    #[test]
    fn a_plan_cannot_turn_on_reuse_the_deployment_turned_off() {
        let mut d = defaults();
        d.warm_reuse = false;
        assert!(!d.under("big", &LimitSet { warm_reuse: Some(true), ..Default::default() }).warm_reuse);
    }

    #[test]
    fn rates_per_minute_burst_ten_seconds_worth() {
        assert_eq!(Rate::per_minute(2), Rate { burst: 1, per_sec: 2.0 / 60.0 });
        assert_eq!(Rate::per_minute(600).burst, 100);
    }
}
