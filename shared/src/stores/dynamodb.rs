//! DynamoDB implementations of the registry, installs and the audit log. Key design (see
//! docs/aws-backends.md): every record is one JSON document (`doc`) under a `pk`/`sk` key;
//! extra items exist only to serve an access pattern with a `GetItem` or a `Query` (never a
//! scan), and are written in the same transaction as the record.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;

use super::sqlite::{decode_cursor, encode_cursor};
use super::*;
use crate::aws::{describe, is_unavailable};

/// DynamoDB table names.
#[derive(Debug, Clone)]
pub struct TableNames {
    /// Extensions and versions.
    pub registry: String,
    /// Tenant installs.
    pub installs: String,
    /// Storage KV.
    pub storage: String,
    /// Audit log.
    pub audit: String,
    /// Usage counters per install and hour.
    pub usage: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn item(pk: String, sk: String, doc: &impl Serialize) -> Item {
    HashMap::from([
        ("pk".into(), s(pk)),
        ("sk".into(), s(sk)),
        ("doc".into(), s(serde_json::to_string(doc).expect("serialising a record"))),
    ])
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

fn doc<T: DeserializeOwned>(item: &Item) -> StoreResult<T> {
    let text =
        item.get("doc").and_then(|v| v.as_s().ok()).ok_or_else(|| StoreError::Internal("item without doc".into()))?;
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("corrupt record: {e}")))
}

/// Map an SDK error: unreachable → `Unavailable`, anything else → `Internal`.
pub(crate) fn sdk_err<E: std::fmt::Debug, R>(op: &str, e: SdkError<E, R>) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(format!("{op}: {}", describe(&e)))
    } else {
        StoreError::Internal(format!("{op}: {}", describe(&e)))
    }
}

/// Whether a transaction was cancelled because of a condition (not a service failure).
fn cancelled_by_condition<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<bool>> {
    let service = e.as_service_error()?;
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) =
        service
    else {
        return None;
    };
    Some(c.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect())
}

fn put(table: &str, item: Item, condition: Option<&str>) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    TransactWriteItem::builder().put(p.build().expect("table and item are set")).build()
}

/// The control-plane stores on DynamoDB.
#[derive(Clone)]
pub struct DynamoStores {
    client: Client,
    tables: TableNames,
}

impl DynamoStores {
    /// Stores over a client and table names.
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self { client, tables }
    }

    async fn get(&self, table: &str, pk: String, sk: String) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        Ok(out.item)
    }

    async fn get_doc<T: DeserializeOwned>(&self, table: &str, pk: String, sk: String) -> StoreResult<Option<T>> {
        self.get(table, pk, sk).await?.map(|i| doc(&i)).transpose()
    }

    /// One page of `pk`'s items whose sort key starts with `prefix`, after `after` (a full
    /// sort key), ascending. Returns `limit + 1` items at most so callers know if more exist.
    async fn query_prefix<T: DeserializeOwned>(
        &self,
        table: &str,
        pk: String,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<T>> {
        let mut q = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk.clone()))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .limit(limit as i32 + 1);
        if let Some(after) = after {
            q = q.set_exclusive_start_key(Some(key(pk, after)));
        }
        let out = q.send().await.map_err(|e| sdk_err("Query", e))?;
        out.items().iter().map(doc).collect()
    }
}

fn page_after(cursor: Option<&str>, prefix: &str) -> Option<String> {
    cursor.filter(|c| !c.is_empty()).map(|c| format!("{prefix}{}", decode_cursor(Some(c))))
}

fn paged<T>(mut items: Vec<T>, size: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items.last().map(|i| encode_cursor(&cursor(i)))
    } else {
        None
    };
    Page { items, next_cursor }
}

#[async_trait]
impl Registry for DynamoStores {
    async fn ensure_extension(&self, ext: &ExtensionRecord) -> StoreResult<ExtensionRecord> {
        let t = &self.tables.registry;
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(
                t,
                item("EXTENSIONS".into(), format!("NAME#{}", ext.name), ext),
                Some("attribute_not_exists(pk)"),
            ))
            .transact_items(put(
                t,
                item(format!("EXT#{}", ext.id), "META".into(), ext),
                Some("attribute_not_exists(pk)"),
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ext.clone()),
            Err(e) if cancelled_by_condition(&e).is_some() => self
                .find_extension_by_name(&ext.name)
                .await?
                .ok_or_else(|| StoreError::Conflict("extension name raced with a concurrent publish".into())),
            Err(e) => Err(sdk_err("TransactWriteItems", e)),
        }
    }

    async fn get_extension(&self, id: &str) -> StoreResult<Option<ExtensionRecord>> {
        self.get_doc(&self.tables.registry, format!("EXT#{id}"), "META".into()).await
    }

    async fn find_extension_by_name(&self, name: &str) -> StoreResult<Option<ExtensionRecord>> {
        self.get_doc(&self.tables.registry, "EXTENSIONS".into(), format!("NAME#{}", name.to_lowercase())).await
    }

    async fn list_extensions(&self, page: &PageRequest) -> StoreResult<Page<ExtensionRecord>> {
        let after = page_after(page.cursor.as_deref(), "NAME#");
        let items = self.query_prefix(&self.tables.registry, "EXTENSIONS".into(), "NAME#", after, page.size()).await?;
        Ok(paged(items, page.size(), |e: &ExtensionRecord| e.name.clone()))
    }

    async fn put_version(&self, v: &VersionRecord) -> StoreResult<PutVersion> {
        let t = &self.tables.registry;
        let order = format!("{}#{}", v.published_at, v.id);
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(
                t,
                item(format!("EXT#{}", v.extension_id), format!("VER#{}", v.version), v),
                Some("attribute_not_exists(pk)"),
            ))
            .transact_items(put(t, item(format!("EXT#{}", v.extension_id), format!("PUB#{order}"), v), None))
            .transact_items(put(
                t,
                item(format!("VERSION#{}", v.id), "META".into(), v),
                Some("attribute_not_exists(pk)"),
            ))
            .transact_items(put(t, item(format!("HASH#{}", v.content_hash), format!("VER#{order}"), v), None))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutVersion::Created),
            Err(e) if cancelled_by_condition(&e).is_some() => {
                let existing = self
                    .find_version(&v.extension_id, &v.version)
                    .await?
                    .ok_or_else(|| StoreError::Conflict("version id collision".into()))?;
                Ok(PutVersion::Existing(Box::new(existing)))
            }
            Err(e) => Err(sdk_err("TransactWriteItems", e)),
        }
    }

    async fn get_version(&self, id: &str) -> StoreResult<Option<VersionRecord>> {
        self.get_doc(&self.tables.registry, format!("VERSION#{id}"), "META".into()).await
    }

    async fn find_version(&self, extension_id: &str, version: &str) -> StoreResult<Option<VersionRecord>> {
        self.get_doc(&self.tables.registry, format!("EXT#{extension_id}"), format!("VER#{version}")).await
    }

    async fn find_version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRecord>> {
        let items: Vec<VersionRecord> =
            self.query_prefix(&self.tables.registry, format!("HASH#{content_hash}"), "VER#", None, 0).await?;
        Ok(items.into_iter().next())
    }

    async fn list_versions(&self, extension_id: &str, page: &PageRequest) -> StoreResult<Page<VersionRecord>> {
        let after = page_after(page.cursor.as_deref(), "PUB#");
        let items =
            self.query_prefix(&self.tables.registry, format!("EXT#{extension_id}"), "PUB#", after, page.size()).await?;
        Ok(paged(items, page.size(), |v: &VersionRecord| format!("{}#{}", v.published_at, v.id)))
    }

    async fn put_artifact_digest(&self, component_hash: &str, compat_hash: &str, sha256: &str) -> StoreResult<()> {
        let record = ArtifactDigest { sha256: sha256.to_string() };
        self.client
            .put_item()
            .table_name(&self.tables.registry)
            .set_item(Some(item(format!("ARTIFACT#{component_hash}"), format!("ENGINE#{compat_hash}"), &record)))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    async fn artifact_digest(&self, component_hash: &str, compat_hash: &str) -> StoreResult<Option<String>> {
        let record: Option<ArtifactDigest> = self
            .get_doc(&self.tables.registry, format!("ARTIFACT#{component_hash}"), format!("ENGINE#{compat_hash}"))
            .await?;
        Ok(record.map(|r| r.sha256))
    }
}

/// The registry item holding a precompiled artifact's sha256.
#[derive(Serialize, Deserialize)]
struct ArtifactDigest {
    sha256: String,
}

fn install_items(i: &InstallRecord) -> (Item, Item) {
    let mut a = item(format!("TENANT#{}", i.tenant_id), format!("INSTALL#{}", i.install_id), i);
    a.insert("rev".into(), n(i.revision));
    a.insert("gsi1pk".into(), s("INSTALL"));
    a.insert("gsi1sk".into(), s(format!("{}#{}", i.install_id, i.tenant_id)));
    let mut b = item(format!("TENANT#{}", i.tenant_id), format!("EXT#{}", i.extension_id), i);
    b.insert("rev".into(), n(i.revision));
    (a, b)
}

#[async_trait]
impl Installs for DynamoStores {
    async fn create_install(&self, i: &InstallRecord) -> StoreResult<()> {
        let t = &self.tables.installs;
        let (a, b) = install_items(i);
        match self
            .client
            .transact_write_items()
            .transact_items(put(t, a, Some("attribute_not_exists(pk)")))
            .transact_items(put(t, b, Some("attribute_not_exists(pk)")))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if cancelled_by_condition(&e).is_some() => Err(StoreError::Conflict("install exists".into())),
            Err(e) => Err(sdk_err("TransactWriteItems", e)),
        }
    }

    async fn get_install(&self, tenant: &str, install_id: &str) -> StoreResult<Option<InstallRecord>> {
        self.get_doc(&self.tables.installs, format!("TENANT#{tenant}"), format!("INSTALL#{install_id}")).await
    }

    async fn find_install(&self, tenant: &str, extension_id: &str) -> StoreResult<Option<InstallRecord>> {
        self.get_doc(&self.tables.installs, format!("TENANT#{tenant}"), format!("EXT#{extension_id}")).await
    }

    async fn list_installs(&self, tenant: Option<&str>, page: &PageRequest) -> StoreResult<Page<InstallRecord>> {
        let size = page.size();
        if let Some(tenant) = tenant {
            let after = page_after(page.cursor.as_deref(), "INSTALL#");
            let items =
                self.query_prefix(&self.tables.installs, format!("TENANT#{tenant}"), "INSTALL#", after, size).await?;
            return Ok(paged(items, size, |i: &InstallRecord| i.install_id.clone()));
        }
        // Every tenant (operators): the sparse `all-installs` index, ordered by install id.
        let mut q = self
            .client
            .query()
            .table_name(&self.tables.installs)
            .index_name("all-installs")
            .key_condition_expression("gsi1pk = :k")
            .expression_attribute_values(":k", s("INSTALL"))
            .limit(size as i32 + 1);
        if let Some(c) = page.cursor.as_deref().filter(|c| !c.is_empty()) {
            let last = decode_cursor(Some(c));
            let (install_id, tenant) = last.split_once('#').unwrap_or((&last, ""));
            q = q.set_exclusive_start_key(Some(HashMap::from([
                ("pk".into(), s(format!("TENANT#{tenant}"))),
                ("sk".into(), s(format!("INSTALL#{install_id}"))),
                ("gsi1pk".into(), s("INSTALL")),
                ("gsi1sk".into(), s(last.clone())),
            ])));
        }
        let out = q.send().await.map_err(|e| sdk_err("Query", e))?;
        let items = out.items().iter().map(doc).collect::<StoreResult<Vec<InstallRecord>>>()?;
        Ok(paged(items, size, |i| format!("{}#{}", i.install_id, i.tenant_id)))
    }

    async fn update_install(&self, i: &InstallRecord) -> StoreResult<()> {
        let t = &self.tables.installs;
        let (a, b) = install_items(i);
        let expected = i.revision.saturating_sub(1);
        let cond = |item: Item| {
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(t)
                        .set_item(Some(item))
                        .condition_expression("rev = :expected")
                        .expression_attribute_values(":expected", n(expected))
                        .build()
                        .expect("table and item are set"),
                )
                .build()
        };
        match self.client.transact_write_items().transact_items(cond(a)).transact_items(cond(b)).send().await {
            Ok(_) => Ok(()),
            Err(e) if cancelled_by_condition(&e).is_some() => {
                Err(StoreError::Conflict("install changed concurrently or no longer exists".into()))
            }
            Err(e) => Err(sdk_err("TransactWriteItems", e)),
        }
    }

    async fn delete_install(&self, tenant: &str, install_id: &str) -> StoreResult<bool> {
        let Some(existing) = self.get_install(tenant, install_id).await? else { return Ok(false) };
        let t = &self.tables.installs;
        let del = |pk: String, sk: String| {
            TransactWriteItem::builder()
                .delete(
                    Delete::builder().table_name(t).set_key(Some(key(pk, sk))).build().expect("table and key are set"),
                )
                .build()
        };
        self.client
            .transact_write_items()
            .transact_items(del(format!("TENANT#{tenant}"), format!("INSTALL#{install_id}")))
            .transact_items(del(format!("TENANT#{tenant}"), format!("EXT#{}", existing.extension_id)))
            .send()
            .await
            .map_err(|e| sdk_err("TransactWriteItems", e))?;
        Ok(true)
    }
}

fn grant_item(g: &DebugGrant) -> Item {
    let mut it = item(format!("TENANT#{}", g.tenant_id), format!("GRANT#{}#{}", g.created_at, g.id), g);
    // Shares the sparse all-installs index (gsi1pk distinguishes the kinds) for operators.
    it.insert("gsi1pk".into(), s("GRANT"));
    it.insert("gsi1sk".into(), s(format!("{}#{}", g.created_at, g.id)));
    it
}

#[async_trait]
impl Grants for DynamoStores {
    async fn create_grant(&self, g: &DebugGrant) -> StoreResult<()> {
        let mut lookup = item(format!("TENANT#{}", g.tenant_id), format!("GRANTID#{}", g.id), g);
        lookup.insert("created_at".into(), s(g.created_at.clone()));
        self.client
            .transact_write_items()
            .transact_items(put(&self.tables.installs, grant_item(g), Some("attribute_not_exists(pk)")))
            .transact_items(put(&self.tables.installs, lookup, Some("attribute_not_exists(pk)")))
            .send()
            .await
            .map_err(|e| sdk_err("TransactWriteItems", e))?;
        Ok(())
    }

    async fn get_grant(&self, tenant: &str, id: &str) -> StoreResult<Option<DebugGrant>> {
        self.get_doc(&self.tables.installs, format!("TENANT#{tenant}"), format!("GRANTID#{id}")).await
    }

    async fn list_grants(
        &self,
        tenant: Option<&str>,
        viewer: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<DebugGrant>> {
        let size = page.size();
        let before = page.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| decode_cursor(Some(c)));
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.tables.installs)
                .scan_index_forward(false)
                .limit(((size + 1) * 2) as i32);
            q = match tenant {
                Some(t) => q
                    .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":pk", s(format!("TENANT#{t}")))
                    .expression_attribute_values(":lo", s("GRANT#"))
                    .expression_attribute_values(
                        ":hi",
                        s(format!("GRANT#{}", before.clone().unwrap_or_else(|| "\u{10ffff}".into()))),
                    ),
                None => q
                    .index_name("all-installs")
                    .key_condition_expression("gsi1pk = :k AND gsi1sk < :hi")
                    .expression_attribute_values(":k", s("GRANT"))
                    .expression_attribute_values(":hi", s(before.clone().unwrap_or_else(|| "\u{10ffff}".into()))),
            };
            let out = q.set_exclusive_start_key(start.take()).send().await.map_err(|e| sdk_err("Query", e))?;
            for it in out.items() {
                let g: DebugGrant = doc(it)?;
                let order = format!("{}#{}", g.created_at, g.id);
                if before.as_deref().is_some_and(|b| order.as_str() >= b) || viewer.is_some_and(|v| v != g.viewer) {
                    continue;
                }
                rows.push(g);
            }
            match out.last_evaluated_key {
                Some(k) if rows.len() <= size => start = Some(k),
                _ => break,
            }
        }
        Ok(paged(rows, size, |g| format!("{}#{}", g.created_at, g.id)))
    }

    async fn revoke_grant(&self, tenant: &str, id: &str, at: &str) -> StoreResult<bool> {
        let Some(mut g) = self.get_grant(tenant, id).await? else { return Ok(false) };
        g.revoked_at = Some(at.to_string());
        let lookup = item(format!("TENANT#{tenant}"), format!("GRANTID#{id}"), &g);
        self.client
            .transact_write_items()
            .transact_items(put(&self.tables.installs, grant_item(&g), None))
            .transact_items(put(&self.tables.installs, lookup, None))
            .send()
            .await
            .map_err(|e| sdk_err("TransactWriteItems", e))?;
        Ok(true)
    }

    async fn has_active_grant(&self, tenant: &str, install_id: &str, viewer: &GrantViewer<'_>) -> StoreResult<bool> {
        // A tenant holds few grants: one query of its GRANT# items, filtered here.
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.installs)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(format!("TENANT#{tenant}")))
                .expression_attribute_values(":p", s("GRANT#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for it in out.items() {
                let g: DebugGrant = doc(it)?;
                if g.install_id == install_id && g.names(viewer) && g.active() {
                    return Ok(true);
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(false),
            }
        }
    }
}

/// Audit rows without a tenant live under this partition.
const PLATFORM_TENANT: &str = "_platform";
/// How far back an audit query without `since` looks when it must walk monthly partitions.
const DEFAULT_AUDIT_MONTHS: i32 = 12;

#[async_trait]
impl AuditLog for DynamoStores {
    async fn append(&self, r: &AuditRecord) -> StoreResult<()> {
        let order = format!("{}#{}", r.ts, r.id);
        let mut it = item(format!("TENANT#{}", r.tenant_id.as_deref().unwrap_or(PLATFORM_TENANT)), order.clone(), r);
        it.insert("gsi1pk".into(), s(format!("ACTOR#{}", r.actor)));
        it.insert("gsi1sk".into(), s(order.clone()));
        it.insert("gsi2pk".into(), s(format!("AUDIT#{}", &r.ts[..7.min(r.ts.len())])));
        it.insert("gsi2sk".into(), s(order));
        self.client
            .put_item()
            .table_name(&self.tables.audit)
            .set_item(Some(it))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    async fn query(&self, f: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditRecord>> {
        let size = page.size();
        // Newest first; the cursor is the `ts#id` of the last row returned.
        let before = page.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| decode_cursor(Some(c)));
        let upper = match (&before, &f.until) {
            (Some(b), Some(u)) => Some(b.clone().min(u.clone())),
            (Some(b), None) => Some(b.clone()),
            (None, u) => u.clone(),
        };
        // Key values may not be empty; "0" sorts before every timestamp.
        let lower = f.since.clone().unwrap_or_else(|| "0".into());
        let partitions: Vec<(Option<&str>, String, &str)> = if let Some(t) = &f.tenant_id {
            vec![(None, format!("TENANT#{t}"), "sk")]
        } else if let Some(a) = &f.actor {
            vec![(Some("by-actor"), format!("ACTOR#{a}"), "gsi1sk")]
        } else {
            months_back(upper.as_deref(), f.since.as_deref())
                .into_iter()
                .map(|m| (Some("by-month"), format!("AUDIT#{m}"), "gsi2sk"))
                .collect()
        };
        let mut rows: Vec<AuditRecord> = Vec::new();
        for (index, pk_value, sort_attr) in partitions {
            let pk_attr = match index {
                None => "pk",
                Some("by-actor") => "gsi1pk",
                Some(_) => "gsi2pk",
            };
            let mut start: Option<Item> = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.tables.audit)
                    .set_index_name(index.map(str::to_string))
                    .key_condition_expression(format!("{pk_attr} = :pk AND {sort_attr} BETWEEN :lo AND :hi"))
                    .expression_attribute_values(":pk", s(pk_value.clone()))
                    .expression_attribute_values(":lo", s(lower.clone()))
                    .expression_attribute_values(":hi", s(upper.clone().unwrap_or_else(|| "\u{10ffff}".into())))
                    .scan_index_forward(false)
                    .limit(((size + 1) * 2) as i32)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("Query", e))?;
                for it in out.items() {
                    let r: AuditRecord = doc(it)?;
                    // BETWEEN is inclusive; the upper bound (cursor or `until`) is exclusive.
                    if upper.as_deref().is_some_and(|u| format!("{}#{}", r.ts, r.id).as_str() >= u) {
                        continue;
                    }
                    let keep = f.actor.as_ref().is_none_or(|a| &r.actor == a)
                        && f.action.as_ref().is_none_or(|a| &r.action == a)
                        && f.tenant_id.as_ref().is_none_or(|t| r.tenant_id.as_ref() == Some(t));
                    if keep {
                        rows.push(r);
                    }
                }
                match out.last_evaluated_key {
                    Some(k) if rows.len() <= size => start = Some(k),
                    _ => break,
                }
            }
            if rows.len() > size {
                break;
            }
        }
        Ok(paged(rows, size, |r| format!("{}#{}", r.ts, r.id)))
    }
}

/// The `yyyy-mm` partitions from the month of `upper` (or now) back to `since` (or a year).
fn months_back(upper: Option<&str>, since: Option<&str>) -> Vec<String> {
    let now = chrono::Utc::now().format("%Y-%m").to_string();
    let start = upper.map(|u| u.chars().take(7).collect::<String>()).unwrap_or(now);
    let parse = |m: &str| -> Option<(i32, i32)> { Some((m.get(..4)?.parse().ok()?, m.get(5..7)?.parse().ok()?)) };
    let Some((mut y, mut m)) = parse(&start) else { return Vec::new() };
    let stop = since.and_then(|s| parse(&s.chars().take(7).collect::<String>()));
    let mut out = Vec::new();
    for _ in 0..(12 * 50) {
        out.push(format!("{y:04}-{m:02}"));
        if stop.map(|(sy, sm)| (y, m) <= (sy, sm)).unwrap_or(out.len() as i32 >= DEFAULT_AUDIT_MONTHS) {
            break;
        }
        m -= 1;
        if m == 0 {
            m = 12;
            y -= 1;
        }
    }
    out
}

/// Create Kelp's tables (on-demand) if they do not exist: for moto in tests and for
/// `kelp up --aws`. In AWS, template.yaml creates them with the same keys.
pub async fn create_tables(client: &Client, tables: &TableNames) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
        ScalarAttributeType,
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("complete")
    };
    let keys = |hash: &str, range: &str| {
        vec![
            KeySchemaElement::builder().attribute_name(hash).key_type(KeyType::Hash).build().expect("complete"),
            KeySchemaElement::builder().attribute_name(range).key_type(KeyType::Range).build().expect("complete"),
        ]
    };
    let gsi = |name: &str, hash: &str, range: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .set_key_schema(Some(keys(hash, range)))
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .expect("complete")
    };
    let specs: Vec<(&str, Vec<&str>, Vec<GlobalSecondaryIndex>)> = vec![
        (&tables.registry, vec!["pk", "sk"], vec![]),
        (&tables.installs, vec!["pk", "sk", "gsi1pk", "gsi1sk"], vec![gsi("all-installs", "gsi1pk", "gsi1sk")]),
        (&tables.storage, vec!["pk", "sk"], vec![]),
        (&tables.usage, vec!["pk", "sk"], vec![]),
        (
            &tables.audit,
            vec!["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"],
            vec![gsi("by-actor", "gsi1pk", "gsi1sk"), gsi("by-month", "gsi2pk", "gsi2sk")],
        ),
    ];
    for (name, attrs, indexes) in specs {
        let result = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(attrs.iter().map(|a| attr(a)).collect()))
            .set_key_schema(Some(keys("pk", "sk")))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => anyhow::bail!("creating table {name}: {}", describe(&e)),
        }
    }
    Ok(())
}
