//! Installs: create, update, config and secrets with their validation rules, uninstall, and
//! finding a tenant's install by any of its names. `kelp up`, the routers and the tests share
//! this one set of rules.

use std::collections::BTreeMap;

use std::sync::Arc;

use axum::http::StatusCode;

use crate::egress::parse_allow_list;
use crate::http::error::ApiError;
use crate::manifest::{normalize_capabilities, CAP_DEBUG_LOGS};
use crate::platform::Platform;
use crate::secrets::{SecretEnvelope, SecretsError};
use crate::stores::{now_rfc3339, InstallRecord, StoreError, VersionRecord};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Invalid input (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown extension, version or install (404).
    #[error("{0}")]
    NotFound(String),
    /// Duplicate or concurrent change (409).
    #[error("{0}")]
    Conflict(String),
    /// Backend failure (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Secrets backend failure.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Over a limit of the tenant's plan (403 `quota_exceeded`; the message names both).
    #[error("{0}")]
    Quota(String),
}

/// What a new install asks for.
#[derive(Debug, Clone, Default)]
pub struct NewInstall {
    /// Tenant.
    pub tenant_id: String,
    /// Extension registry id.
    pub extension_id: String,
    /// Version id to install.
    pub version_id: String,
    /// Config map.
    pub config: BTreeMap<String, String>,
    /// Capabilities to grant (with or without `cap:`).
    pub granted: Vec<String>,
    /// Egress allow-list.
    pub egress: Vec<String>,
    /// Enabled at once.
    pub enabled: bool,
    /// The install's own limits (they only narrow the tenant's plan).
    pub limits: crate::limits::LimitSet,
}

/// Check a grant: capabilities known and declared by the version's manifest, except
/// `cap:debug.logs`, an install-level switch no manifest declares.
pub fn check_grants(granted: &[String], declared: &[String]) -> Result<Vec<String>, AdminError> {
    let normalized =
        normalize_capabilities(granted.iter().map(String::as_str)).map_err(|e| AdminError::Invalid(e.0))?;
    for cap in &normalized {
        if cap != CAP_DEBUG_LOGS && !declared.contains(cap) {
            return Err(AdminError::Invalid(format!("{cap} is not declared by the extension's manifest")));
        }
    }
    Ok(normalized.into_iter().collect())
}

/// Config keys of one install.
pub const MAX_CONFIG_KEYS: usize = 256;
/// Bytes of one install's config (keys and values). The install record carries it, and a
/// DynamoDB item stops at 400 KB: a larger map is refused up front, not half-written.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Entries of one install's egress allow-list.
pub const MAX_EGRESS_ENTRIES: usize = 64;

/// Check a config map against the size limits.
pub fn check_config(config: &BTreeMap<String, String>) -> Result<(), AdminError> {
    check_map_size("config", config, MAX_CONFIG_BYTES)
}

/// Check a config or secrets map (`what`) against the size limits (Secrets Manager also
/// stops at 64 KB per secret).
fn check_map_size(what: &str, map: &BTreeMap<String, String>, max_bytes: usize) -> Result<(), AdminError> {
    if map.len() > MAX_CONFIG_KEYS {
        return Err(AdminError::Invalid(format!("{what} has {} keys; the limit is {MAX_CONFIG_KEYS}", map.len())));
    }
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > max_bytes {
        return Err(AdminError::Invalid(format!("{what} is {bytes} bytes; the limit is {max_bytes}")));
    }
    Ok(())
}

/// Normalise and check an egress allow-list.
pub fn check_egress(egress: &[String]) -> Result<Vec<String>, AdminError> {
    if egress.len() > MAX_EGRESS_ENTRIES {
        return Err(AdminError::Invalid(format!(
            "egress has {} entries; the limit is {MAX_EGRESS_ENTRIES}",
            egress.len()
        )));
    }
    parse_allow_list(egress).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(egress.iter().map(|e| e.trim().trim_end_matches('/').to_lowercase()).collect())
}

/// The id of a tenant's install of an extension: the same every time the tenant installs it,
/// so storage kept by an uninstall (without purge) belongs to the next install again instead
/// of staying where nothing can reach it. A tenant holds at most one install of an extension,
/// so the pair names one install at a time. (Installs made before ids were derived keep their
/// random ids until uninstalled.)
pub fn install_id_for(tenant_id: &str, extension_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"kelp install\0")
        .chain_update(tenant_id)
        .chain_update(b"\0")
        .chain_update(extension_id)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// Create an install.
pub async fn create_install(platform: &Platform, new: NewInstall) -> Result<InstallRecord, AdminError> {
    let version =
        platform.version(&new.version_id).await?.filter(|v| v.extension_id == new.extension_id).ok_or_else(|| {
            AdminError::NotFound(format!("version {} of extension {} not found", new.version_id, new.extension_id))
        })?;
    let granted = check_grants(&new.granted, &version.manifest.capabilities)?;
    let egress = check_egress(&new.egress)?;
    check_config(&new.config)?;
    platform.check_limits(&new.limits).map_err(AdminError::Invalid)?;
    let plan = crate::plans::tenant_plan(platform, &new.tenant_id).await?;
    check_install_quota(platform, &new.tenant_id, plan.as_ref()).await?;
    let now = now_rfc3339();
    let install = InstallRecord {
        install_id: install_id_for(&new.tenant_id, &new.extension_id),
        tenant_id: new.tenant_id,
        extension_id: new.extension_id,
        version_id: new.version_id,
        config: new.config,
        config_version: 1,
        secrets_ref: None,
        secrets_version: 0,
        granted,
        egress,
        enabled: new.enabled,
        created_at: now.clone(),
        updated_at: now,
        revision: 1,
        limits: crate::limits::InstallLimits { plan: crate::plans::applied(plan.as_ref()), overrides: new.limits },
    };
    platform.installs.create_install(&install).await.map_err(|e| match e {
        StoreError::Conflict(_) => AdminError::Conflict("the tenant already has an install of this extension".into()),
        other => AdminError::Store(other),
    })?;
    Ok(install)
}

/// Refuse a new install past the `installs` limit of the tenant's plan. (Two installs created
/// at the same moment may both pass: the limit is a plan's promise, not a lock.)
async fn check_install_quota(
    platform: &Platform,
    tenant: &str,
    plan: Option<&crate::plans::PlanRecord>,
) -> Result<(), AdminError> {
    let limits = crate::plans::limits_of(platform, plan);
    let Some(max) = limits.installs else { return Ok(()) };
    let page = crate::stores::PageRequest { limit: (max as usize).saturating_add(1).min(1000), cursor: None };
    let count = platform.installs.list_installs(Some(tenant), &page).await?.items.len() as u64;
    if count >= max {
        return Err(AdminError::Quota(format!(
            "the tenant has {count} installs; plan {:?} allows {max} (limit `installs`)",
            limits.plan
        )));
    }
    Ok(())
}

/// Apply `change` to an install and store it with the next revision (optimistic concurrency:
/// a concurrent change makes this a 409, never a lost update).
pub async fn update_install(
    platform: &Platform,
    tenant: &str,
    install_id: &str,
    change: impl FnOnce(&mut InstallRecord) -> Result<(), AdminError>,
) -> Result<InstallRecord, AdminError> {
    let mut install = platform
        .installs
        .get_install(tenant, install_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("install {install_id} not found")))?;
    change(&mut install)?;
    install.revision += 1;
    install.updated_at = now_rfc3339();
    platform.installs.update_install(&install).await.map_err(|e| match e {
        StoreError::Conflict(_) => AdminError::Conflict("the install changed concurrently; retry".into()),
        other => AdminError::Store(other),
    })?;
    Ok(install)
}

/// Replace the config map and bump `config_version` (A2): the next request sees it.
pub async fn set_config(
    platform: &Platform,
    tenant: &str,
    install_id: &str,
    config: BTreeMap<String, String>,
) -> Result<InstallRecord, AdminError> {
    check_config(&config)?;
    update_install(platform, tenant, install_id, |i| {
        i.config = config;
        i.config_version += 1;
        Ok(())
    })
    .await
}

/// Change some config keys and remove others, keeping the rest; bumps `config_version`.
pub async fn patch_config(
    platform: &Platform,
    tenant: &str,
    install_id: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
) -> Result<InstallRecord, AdminError> {
    update_install(platform, tenant, install_id, |i| {
        let mut config = i.config.clone();
        merge(&mut config, set, unset);
        check_config(&config)?;
        i.config = config;
        i.config_version += 1;
        Ok(())
    })
    .await
}

/// `unset` removed, then `set` written over what is left.
fn merge(map: &mut BTreeMap<String, String>, set: &BTreeMap<String, String>, unset: &[String]) {
    for key in unset {
        map.remove(key);
    }
    map.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// A fresh secret reference for one write of an install's envelope, under the Kelp prefix.
/// Every write gets its own reference, so an envelope only goes live when the install record
/// points at it.
pub fn secret_ref_for(install: &InstallRecord) -> String {
    format!("kelp/{}/{}/{}", install.tenant_id, install.install_id, uuid::Uuid::new_v4().simple())
}

/// Write the secret envelope and bump `secrets_version` (A2). Values are write-only: they
/// are never returned or logged.
///
/// The envelope is written under a new reference first and goes live only through the
/// install's revision-checked update: with two concurrent writes, the one answered 409 never
/// owns the live values (its envelope is deleted), and the winner deletes the envelope it
/// replaced.
pub async fn set_secrets(
    platform: &Platform,
    tenant: &str,
    install_id: &str,
    values: &BTreeMap<String, String>,
    expires_at: Option<String>,
) -> Result<InstallRecord, AdminError> {
    let current = get_existing(platform, tenant, install_id).await?;
    write_secrets(platform, tenant, current, values, expires_at).await
}

/// Change some secrets and remove others, keeping the rest (and, unless a new one is given,
/// the envelope's expiry); bumps `secrets_version`. The live envelope is read to merge into,
/// and the write goes live only if the install has not changed since: a concurrent write is
/// a 409, never a lost key.
pub async fn patch_secrets(
    platform: &Platform,
    tenant: &str,
    install_id: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
    expires_at: Option<String>,
) -> Result<(InstallRecord, Vec<String>), AdminError> {
    let current = get_existing(platform, tenant, install_id).await?;
    let (mut values, current_expiry) = match &current.secrets_ref {
        Some(secret_ref) => {
            let envelope = match platform.secrets.source().fetch(secret_ref).await {
                Ok(envelope) => envelope,
                // A concurrent write made another envelope live and deleted this one between
                // the two reads: the same conflict its revision check would report.
                Err(SecretsError::NotFound)
                    if get_existing(platform, tenant, install_id).await?.revision != current.revision =>
                {
                    return Err(AdminError::Conflict("the install changed concurrently; retry".into()));
                }
                Err(e) => return Err(e.into()),
            };
            (envelope.decode()?.0, envelope.expires_at.clone())
        }
        None => (BTreeMap::new(), None),
    };
    merge(&mut values, set, unset);
    let keys = values.keys().cloned().collect();
    let updated = write_secrets(platform, tenant, current, &values, expires_at.or(current_expiry)).await?;
    Ok((updated, keys))
}

async fn get_existing(platform: &Platform, tenant: &str, install_id: &str) -> Result<InstallRecord, AdminError> {
    platform
        .installs
        .get_install(tenant, install_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("install {install_id} not found")))
}

/// Write `values` as the envelope of `current` (read by the caller) and make it live.
async fn write_secrets(
    platform: &Platform,
    tenant: &str,
    current: InstallRecord,
    values: &BTreeMap<String, String>,
    expires_at: Option<String>,
) -> Result<InstallRecord, AdminError> {
    let install_id = current.install_id.clone();
    // The envelope base64-encodes the values: 3/4 of 64 KB keeps it within Secrets Manager's cap.
    check_map_size("secrets", values, MAX_CONFIG_BYTES * 3 / 4)?;
    let secret_ref = secret_ref_for(&current);
    let mut envelope = SecretEnvelope::inline(values, expires_at);
    envelope.version = Some((current.secrets_version + 1).to_string());
    let source = platform.secrets.source();
    source.store(&secret_ref, &envelope).await?;
    let expected_revision = current.revision;
    let updated = update_install(platform, tenant, &install_id, |i| {
        if i.revision != expected_revision {
            return Err(AdminError::Conflict("the install changed concurrently; retry".into()));
        }
        i.secrets_ref = Some(secret_ref.clone());
        i.secrets_version += 1;
        Ok(())
    })
    .await;
    match updated {
        Ok(install) => {
            if let Some(replaced) = current.secrets_ref.filter(|r| *r != secret_ref) {
                forget_envelope(platform, &replaced).await;
            }
            Ok(install)
        }
        Err(e) => {
            forget_envelope(platform, &secret_ref).await;
            Err(e)
        }
    }
}

/// Delete an envelope no install points at any more. A failure leaves an orphan that holds no
/// live values; it is logged (by reference, never by content) and the caller's answer stands.
async fn forget_envelope(platform: &Platform, secret_ref: &str) {
    if let Err(e) = platform.secrets.source().delete(secret_ref).await {
        tracing::warn!(%secret_ref, error = %e, "could not delete a replaced secret envelope");
    }
}

/// Uninstall; storage data is purged only when asked. Returns the purged entry count.
pub async fn uninstall(platform: &Platform, tenant: &str, install_id: &str, purge: bool) -> Result<u64, AdminError> {
    let install = platform
        .installs
        .get_install(tenant, install_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("install {install_id} not found")))?;
    let purged = if purge {
        let scope = crate::storage::Scope { tenant_id: tenant.into(), install_id: install_id.into() };
        platform.kv.purge(&scope).await.map_err(|e| AdminError::Store(StoreError::Unavailable(e.to_string())))?
    } else {
        0
    };
    platform.installs.delete_install(tenant, &install.install_id).await?;
    if let Some(secret_ref) = &install.secrets_ref {
        forget_envelope(platform, secret_ref).await;
    }
    Ok(purged)
}

/// The tenant's enabled install addressed by registry id, install id or manifest name.
pub async fn resolve_install(
    platform: &Platform,
    tenant: &str,
    extension_ref: &str,
) -> Result<Option<(InstallRecord, Arc<VersionRecord>)>, ApiError> {
    let install = if uuid::Uuid::parse_str(extension_ref).is_ok() {
        match platform.installs.get_install(tenant, extension_ref).await? {
            Some(i) => Some(i),
            None => platform.installs.find_install(tenant, extension_ref).await?,
        }
    } else {
        match platform.extension_id_by_name(extension_ref).await? {
            Some(id) => platform.installs.find_install(tenant, &id).await?,
            None => None,
        }
    };
    let Some(install) = install.filter(|i| i.enabled && i.tenant_id == tenant) else { return Ok(None) };
    let version = platform
        .version(&install.version_id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("install {} points at a missing version", install.install_id)))?;
    Ok(Some((install, version)))
}

impl From<crate::plans::PlanError> for AdminError {
    fn from(e: crate::plans::PlanError) -> Self {
        match e {
            crate::plans::PlanError::Invalid(m) => AdminError::Invalid(m),
            crate::plans::PlanError::NotFound(m) => AdminError::NotFound(m),
            crate::plans::PlanError::Conflict(m) => AdminError::Conflict(m),
            crate::plans::PlanError::Store(s) => AdminError::Store(s),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
            AdminError::NotFound(m) => ApiError::not_found(m),
            AdminError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AdminError::Quota(m) => ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", m),
            AdminError::Store(s) => s.into(),
            AdminError::Secrets(crate::secrets::SecretsError::Unavailable(m)) => {
                tracing::warn!(error = %m, "secrets backend unavailable");
                ApiError::unavailable("the secrets backend is unavailable; retry shortly")
            }
            AdminError::Secrets(other) => ApiError::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// PATCH's merge: a set key has its new value, an unset one (not also set) is gone,
        /// every other key is kept as it was.
        #[test]
        fn a_patch_merge_sets_unsets_and_keeps_the_rest(
            before in proptest::collection::btree_map("[a-e]{1,2}", "[a-z]{0,3}", 0..8),
            set in proptest::collection::btree_map("[a-e]{1,2}", "[A-Z]{1,3}", 0..5),
            unset in proptest::collection::vec("[a-e]{1,2}", 0..5),
        ) {
            let mut after = before.clone();
            merge(&mut after, &set, &unset);
            for (k, v) in &set {
                prop_assert_eq!(after.get(k), Some(v));
            }
            for k in unset.iter().filter(|k| !set.contains_key(*k)) {
                prop_assert!(!after.contains_key(k));
            }
            for (k, v) in before.iter().filter(|(k, _)| !set.contains_key(*k) && !unset.contains(k)) {
                prop_assert_eq!(after.get(k), Some(v));
            }
            prop_assert!(after.keys().all(|k| before.contains_key(k) || set.contains_key(k)));
        }
    }
}
