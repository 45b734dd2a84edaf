//! Tenant plans: named limit sets an operator manages (`/admin/plans`, `kelp plans`), assigned
//! to tenants, narrowed per install. The deployment's settings are the `default` plan.
//!
//! The request path reads no plan: every install record carries a snapshot of its tenant's
//! plan ([`InstallLimits`](crate::limits::InstallLimits)), rewritten — with a revision bump, like a config change — whenever
//! the plan or the tenant's assignment changes. The gateway reads the install on every
//! request anyway, so a plan change takes effect on the next request in every sandbox, and a
//! warm instance (whose reuse key holds the install's revision) never outlives its limits.
//!
//! Plans and assignments are kept in Kelp's own KV under a system scope (as idempotency
//! records are), so both backends hold them without a table of their own.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::limits::{AppliedPlan, LimitSet, DEFAULT_PLAN};
use crate::platform::Platform;
use crate::storage::{KvError, KvLimits, Scope};
use crate::stores::{now_rfc3339, InstallRecord, PageRequest, StoreError};

/// Why a plan operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Invalid input (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown plan (404).
    #[error("{0}")]
    NotFound(String),
    /// A concurrent change, or a plan still assigned (409).
    #[error("{0}")]
    Conflict(String),
    /// Backend failure (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(m) => ApiError::bad_request(m),
            PlanError::NotFound(m) => ApiError::not_found(m),
            PlanError::Conflict(m) => ApiError::new(axum::http::StatusCode::CONFLICT, "conflict", m),
            PlanError::Store(s) => s.into(),
        }
    }
}

/// Plans an operator may define (a KV namespace's key budget).
const MAX_PLANS: usize = 1000;

/// A named plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// Name (`[a-z0-9._-]`, 1–64 characters; `default` is the deployment's settings).
    pub name: String,
    /// The plan's limits; unset ones are the default plan's.
    pub limits: LimitSet,
    /// Bumped on every change.
    pub revision: u64,
    /// RFC 3339.
    pub updated_at: String,
}

// ------------------------------------------------------------------ storage

fn scope() -> Scope {
    Scope { tenant_id: "_kelp".into(), install_id: "plans".into() }
}

fn kv_limits() -> KvLimits {
    KvLimits { max_namespaces: 2, max_keys_per_namespace: 1_000_000, ..KvLimits::default() }
}

const PLANS: &str = "plans";
const ASSIGNMENTS: &str = "tenants";

/// A tenant's assignment, keyed by a digest of the tenant id (any string is a tenant id; a
/// KV key is not).
#[derive(Serialize, Deserialize)]
struct Assignment {
    tenant: String,
    plan: String,
}

fn assignment_key(tenant: &str) -> String {
    hex::encode(Sha256::digest(tenant.as_bytes()))
}

fn kv_err(e: KvError) -> PlanError {
    match e {
        KvError::Unavailable(m) => PlanError::Store(StoreError::Unavailable(m)),
        other => PlanError::Store(StoreError::Internal(other.to_string())),
    }
}

/// A stored plan or assignment; one that does not decode is the store's fault.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PlanError> {
    serde_json::from_slice(bytes).map_err(|e| PlanError::Store(StoreError::Internal(e.to_string())))
}

/// Check a plan name.
pub fn check_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        return Err(PlanError::Invalid(format!(
            "plan name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// A plan by name (`None` for `default`, which is not stored).
pub async fn get_plan(platform: &Platform, name: &str) -> Result<Option<PlanRecord>, PlanError> {
    if name == DEFAULT_PLAN {
        return Ok(None);
    }
    let Some(entry) = platform.kv.get(&scope(), PLANS, name).await.map_err(kv_err)? else { return Ok(None) };
    decode(&entry.value).map(Some)
}

/// Every stored plan, by name.
pub async fn list_plans(platform: &Platform) -> Result<Vec<PlanRecord>, PlanError> {
    let entries = platform.kv.list(&scope(), PLANS, None, MAX_PLANS).await.map_err(kv_err)?;
    entries.iter().map(|e| decode(&e.value)).collect()
}

/// Create or replace a plan, then apply it to the installs of every tenant on it. Returns the
/// plan and how many installs were updated.
pub async fn put_plan(platform: &Platform, name: &str, limits: LimitSet) -> Result<(PlanRecord, u64), PlanError> {
    check_name(name)?;
    if name == DEFAULT_PLAN {
        return Err(PlanError::Invalid(
            "the default plan is the deployment's settings (KELP_EXEC_TIMEOUT_MS, ...); change those".into(),
        ));
    }
    platform.check_limits(&limits).map_err(PlanError::Invalid)?;
    let current = platform.kv.get(&scope(), PLANS, name).await.map_err(kv_err)?;
    let previous: Option<PlanRecord> = current.as_ref().and_then(|e| serde_json::from_slice(&e.value).ok());
    let record = match previous {
        // The same limits again (a retry of a change that failed half-way, say): nothing to
        // store, and only the installs that missed it are written below.
        Some(same) if same.limits == limits => same,
        previous => {
            let record = PlanRecord {
                name: name.to_string(),
                limits,
                revision: previous.map(|p| p.revision + 1).unwrap_or(1),
                updated_at: now_rfc3339(),
            };
            let bytes = serde_json::to_vec(&record).expect("plain JSON");
            // Compare-and-set on an existing entry: two concurrent changes never both win. (A
            // compare-and-set cannot express "still absent"; two creations at once: the last wins.)
            let expected = current.map(|e| e.revision);
            platform.kv.put(&scope(), PLANS, name, &bytes, expected, &kv_limits()).await.map_err(|e| match e {
                KvError::Conflict => PlanError::Conflict(format!("plan {name} changed concurrently; retry")),
                other => kv_err(other),
            })?;
            record
        }
    };
    let mut updated = 0;
    for tenant in tenants_on(platform, name).await? {
        updated += apply_to_tenant(platform, &tenant, Some(&record)).await?;
    }
    Ok((record, updated))
}

/// Delete a plan no tenant is on.
pub async fn delete_plan(platform: &Platform, name: &str) -> Result<(), PlanError> {
    check_name(name)?;
    let tenants = tenants_on(platform, name).await?;
    if !tenants.is_empty() {
        return Err(PlanError::Conflict(format!(
            "plan {name} is assigned to {} tenant(s) (e.g. {}); assign them another plan first",
            tenants.len(),
            tenants[0]
        )));
    }
    match platform.kv.delete(&scope(), PLANS, name).await {
        Ok(()) => Ok(()),
        Err(KvError::Missing) => Err(PlanError::NotFound(format!("plan {name} not found"))),
        Err(e) => Err(kv_err(e)),
    }
}

/// The plan assigned to a tenant (`None`: the default plan).
pub async fn tenant_plan(platform: &Platform, tenant: &str) -> Result<Option<PlanRecord>, PlanError> {
    let Some(entry) = platform.kv.get(&scope(), ASSIGNMENTS, &assignment_key(tenant)).await.map_err(kv_err)? else {
        return Ok(None);
    };
    let assignment: Assignment = decode(&entry.value)?;
    get_plan(platform, &assignment.plan).await
}

/// Assign `plan` to a tenant (`default` or `None` removes the assignment), then apply it to
/// the tenant's installs. Returns how many installs were updated.
pub async fn assign(platform: &Platform, tenant: &str, plan: Option<&str>) -> Result<u64, PlanError> {
    let key = assignment_key(tenant);
    let record = match plan.filter(|p| *p != DEFAULT_PLAN) {
        Some(name) => {
            let record =
                get_plan(platform, name).await?.ok_or_else(|| PlanError::NotFound(format!("plan {name} not found")))?;
            let value = serde_json::to_vec(&Assignment { tenant: tenant.into(), plan: name.into() }).expect("JSON");
            platform.kv.put(&scope(), ASSIGNMENTS, &key, &value, None, &kv_limits()).await.map_err(kv_err)?;
            Some(record)
        }
        None => {
            match platform.kv.delete(&scope(), ASSIGNMENTS, &key).await {
                Ok(()) | Err(KvError::Missing) => {}
                Err(e) => return Err(kv_err(e)),
            }
            None
        }
    };
    apply_to_tenant(platform, tenant, record.as_ref()).await
}

/// Tenants assigned to `plan`.
async fn tenants_on(platform: &Platform, plan: &str) -> Result<Vec<String>, PlanError> {
    let mut tenants = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = platform.kv.list(&scope(), ASSIGNMENTS, after.as_deref(), 500).await.map_err(kv_err)?;
        for entry in &page {
            if let Ok(a) = serde_json::from_slice::<Assignment>(&entry.value) {
                if a.plan == plan {
                    tenants.push(a.tenant);
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.key.clone()),
            _ => return Ok(tenants),
        }
    }
}

/// The limits `plan` gives (the default plan's for `None`).
pub fn limits_of(platform: &Platform, plan: Option<&PlanRecord>) -> crate::call_limits::Limits {
    match plan {
        Some(p) => platform.plan_defaults.under(&p.name, &p.limits),
        None => platform.plan_defaults.clone(),
    }
}

/// The snapshot `plan` gives an install.
pub fn applied(plan: Option<&PlanRecord>) -> Option<AppliedPlan> {
    plan.map(|p| AppliedPlan { name: p.name.clone(), revision: p.revision, limits: p.limits })
}

/// Write `plan`'s snapshot into every install of `tenant` that does not carry it yet (each a
/// revision-checked update, retried on a concurrent change). Returns how many changed.
async fn apply_to_tenant(platform: &Platform, tenant: &str, plan: Option<&PlanRecord>) -> Result<u64, PlanError> {
    let snapshot = applied(plan);
    let mut updated = 0;
    let mut page = PageRequest { limit: 1000, cursor: None };
    loop {
        let installs = platform.installs.list_installs(Some(tenant), &page).await?;
        for install in installs.items.iter().filter(|i| i.limits.plan != snapshot) {
            set_snapshot(platform, install, &snapshot).await?;
            updated += 1;
        }
        match installs.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(updated),
        }
    }
}

async fn set_snapshot(
    platform: &Platform,
    install: &InstallRecord,
    snapshot: &Option<AppliedPlan>,
) -> Result<(), PlanError> {
    let mut current = install.clone();
    for _ in 0..5 {
        current.limits.plan = snapshot.clone();
        current.revision += 1;
        current.updated_at = now_rfc3339();
        match platform.installs.update_install(&current).await {
            Ok(()) => return Ok(()),
            // Changed meanwhile: apply to what is there now.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match platform.installs.get_install(&install.tenant_id, &install.install_id).await? {
            Some(fresh) if fresh.limits.plan != *snapshot => current = fresh,
            // Uninstalled, or already carrying it.
            _ => return Ok(()),
        }
    }
    Err(PlanError::Conflict(format!("install {} kept changing; send the change again", install.install_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_zeros_and_memory_past_the_engine() {
        assert!(LimitSet { timeout_ms: Some(0), ..Default::default() }.validate(256 << 20, false).is_err());
        assert!(LimitSet { memory_mb: Some(512), ..Default::default() }.validate(256 << 20, false).is_err());
        assert!(LimitSet { memory_mb: Some(256), egress_calls: Some(0), ..Default::default() }
            .validate(256 << 20, false)
            .is_ok());
        let fuel = LimitSet { fuel: Some(1_000_000), ..Default::default() };
        assert!(fuel.validate(256 << 20, false).is_err() && fuel.validate(256 << 20, true).is_ok());
        assert!(check_name("Gold").is_err() && check_name("gold-2026").is_ok() && check_name("").is_err());
    }
}
