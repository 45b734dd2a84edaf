//! The audit log's one writer: every router and service appends through [`record`], so a
//! failed append is handled the same way everywhere (logged, never fatal to the operation it
//! records).

use crate::stores::{now_rfc3339, AuditLog, AuditRecord};

/// Append an audit row; a failure is logged, never fatal to the (already done) operation.
pub async fn record(
    log: &dyn AuditLog,
    actor: &str,
    tenant: Option<&str>,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    details: serde_json::Value,
) {
    let record = AuditRecord {
        id: uuid::Uuid::new_v4().to_string(),
        ts: now_rfc3339(),
        tenant_id: tenant.map(str::to_string),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.map(str::to_string),
        outcome: outcome.to_string(),
        details,
    };
    if let Err(e) = log.append(&record).await {
        tracing::error!(error = %e, action, "audit append failed");
    }
}
