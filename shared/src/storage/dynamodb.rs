//! Storage KV on DynamoDB. Entries live under `pk = T#{tenant}#I#{install}#N#{namespace}`,
//! `sk = key`, with a `revision`. Writes are conditional, so a lost update is impossible:
//! compare-and-set is `revision = :expected`, a new key is `attribute_not_exists`. The
//! per-namespace key count and per-install namespace count are counter items updated in the
//! same transaction as the entry, so the limits hold under concurrency.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, Put, ReturnValue, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use super::{KvEntry, KvError, KvLimits, KvStore, Scope};
use crate::aws::{conditional_check_failed, describe, is_unavailable};

/// Storage KV in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoKv {
    client: Client,
    table: String,
}

impl DynamoKv {
    /// Storage in `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }
}

/// Escape `%` and `#` so ids can never forge another scope's key.
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('#', "%23")
}

fn scope_pk(s: &Scope) -> String {
    format!("T#{}#I#{}", part(&s.tenant_id), part(&s.install_id))
}

fn entry_pk(s: &Scope, namespace: &str) -> String {
    format!("{}#N#{}", scope_pk(s), part(namespace))
}

fn sv(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn nv(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".into(), sv(pk)), ("sk".into(), sv(sk))])
}

fn err<E: std::fmt::Debug, R>(op: &str, e: aws_sdk_dynamodb::error::SdkError<E, R>) -> KvError {
    if is_unavailable(&e) {
        KvError::Unavailable(format!("{op}: {}", describe(&e)))
    } else {
        KvError::Internal(format!("{op}: {}", describe(&e)))
    }
}

/// Which parts of a cancelled transaction failed their condition.
fn cancelled<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> Option<Vec<bool>> {
    match e.as_service_error()? {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect())
        }
        _ => None,
    }
}

fn entry_of(namespace: &str, key: &str, item: &HashMap<String, AttributeValue>) -> Result<KvEntry, KvError> {
    let value = item.get("v").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()).unwrap_or_default();
    let revision = item
        .get("revision")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| KvError::Internal("entry without revision".into()))?;
    Ok(KvEntry { namespace: namespace.into(), key: key.into(), value, revision })
}

/// A transaction `Put` with a condition.
fn tx_put(table: &str, item: HashMap<String, AttributeValue>, condition: &str) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .build()
        .expect("complete put");
    TransactWriteItem::builder().put(put).build()
}

/// A transaction `Update` (an optional condition, named values).
fn tx_update(
    table: &str,
    key: HashMap<String, AttributeValue>,
    expression: &str,
    condition: Option<&str>,
    values: &[(&str, AttributeValue)],
) -> TransactWriteItem {
    let mut u = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(expression)
        .set_condition_expression(condition.map(str::to_string));
    for (name, value) in values {
        u = u.expression_attribute_values(*name, value.clone());
    }
    TransactWriteItem::builder().update(u.build().expect("complete update")).build()
}

/// A transaction `Delete` with a condition (and named values).
fn tx_delete(
    table: &str,
    key: HashMap<String, AttributeValue>,
    condition: &str,
    values: &[(&str, AttributeValue)],
) -> TransactWriteItem {
    let mut d = Delete::builder().table_name(table).set_key(Some(key)).condition_expression(condition);
    for (name, value) in values {
        d = d.expression_attribute_values(*name, value.clone());
    }
    TransactWriteItem::builder().delete(d.build().expect("complete delete")).build()
}

/// Attempts before a contended put gives up (each round is a conditional write that lost).
const MAX_ROUNDS: usize = 8;

impl DynamoKv {
    /// Update an existing entry (optionally compare-and-set); `None` when the key is absent
    /// (and no revision was expected).
    async fn update_existing(
        &self,
        s: &Scope,
        ns: &str,
        k: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<Option<KvEntry>, KvError> {
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(entry_pk(s, ns), k.into())))
            .update_expression("SET v = :v, revision = revision + :one")
            .expression_attribute_values(":v", AttributeValue::B(value.to_vec().into()))
            .expression_attribute_values(":one", nv(1))
            .return_values(ReturnValue::AllNew);
        u = match expected {
            Some(rev) => {
                u.condition_expression("revision = :expected").expression_attribute_values(":expected", nv(rev))
            }
            None => u.condition_expression("attribute_exists(pk)"),
        };
        match u.send().await {
            Ok(out) => Ok(Some(entry_of(ns, k, &out.attributes.unwrap_or_default())?)),
            Err(e) if conditional_check_failed(&e) => match expected {
                Some(_) => Err(KvError::Conflict),
                None => Ok(None),
            },
            Err(e) => Err(err("UpdateItem", e)),
        }
    }

    /// The namespace's counter item, if the namespace is registered.
    async fn namespace_counter(&self, s: &Scope, ns: &str) -> Result<Option<HashMap<String, AttributeValue>>, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(scope_pk(s), format!("NS#{ns}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| err("GetItem", e))?;
        Ok(out.item)
    }

    /// Register a namespace for the install (counted against `max_namespaces`).
    async fn register_namespace(&self, s: &Scope, ns: &str, limits: &KvLimits) -> Result<(), KvError> {
        let pk = scope_pk(s);
        let counter = HashMap::from([
            ("pk".into(), sv(pk.clone())),
            ("sk".into(), sv(format!("NS#{ns}"))),
            ("key_count".into(), nv(0)),
        ]);
        let result = self
            .client
            .transact_write_items()
            .transact_items(tx_put(&self.table, counter, "attribute_not_exists(pk)"))
            .transact_items(tx_update(
                &self.table,
                key(pk, "META".into()),
                "SET ns_count = if_not_exists(ns_count, :zero) + :one",
                Some("attribute_not_exists(ns_count) OR ns_count < :max"),
                &[(":zero", nv(0)), (":one", nv(1)), (":max", nv(limits.max_namespaces as u64))],
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match cancelled(&e) {
                // Someone registered it first: fine.
                Some(r) if r.first() == Some(&true) => Ok(()),
                Some(_) => Err(KvError::Limit(format!(
                    "install already uses {} namespaces (the limit)",
                    limits.max_namespaces
                ))),
                None => Err(err("TransactWriteItems", e)),
            },
        }
    }

    /// Create a new key, counting it against the namespace's limit. `Ok(None)` = the key was
    /// created concurrently (retry as an update); `Err(Missing)` = namespace not registered.
    async fn create(
        &self,
        s: &Scope,
        ns: &str,
        k: &str,
        value: &[u8],
        limits: &KvLimits,
    ) -> Result<Option<KvEntry>, KvError> {
        let entry = HashMap::from([
            ("pk".into(), sv(entry_pk(s, ns))),
            ("sk".into(), sv(k)),
            ("v".into(), AttributeValue::B(value.to_vec().into())),
            ("revision".into(), nv(1)),
        ]);
        let result = self
            .client
            .transact_write_items()
            .transact_items(tx_put(&self.table, entry, "attribute_not_exists(pk)"))
            .transact_items(tx_update(
                &self.table,
                key(scope_pk(s), format!("NS#{ns}")),
                "SET key_count = key_count + :one",
                Some("attribute_exists(key_count) AND key_count < :max"),
                &[(":one", nv(1)), (":max", nv(limits.max_keys_per_namespace as u64))],
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(KvEntry { namespace: ns.into(), key: k.into(), value: value.to_vec(), revision: 1 })),
            Err(e) => match cancelled(&e) {
                Some(r) if r.first() == Some(&true) => Ok(None),
                Some(_) => {
                    // Namespace full, or not registered yet.
                    if self.namespace_counter(s, ns).await?.is_some() {
                        Err(KvError::Limit(format!(
                            "namespace {ns:?} already holds {} keys (the limit)",
                            limits.max_keys_per_namespace
                        )))
                    } else {
                        Err(KvError::Missing)
                    }
                }
                None => Err(err("TransactWriteItems", e)),
            },
        }
    }

    /// After a delete: drop the namespace's registration if it is now empty.
    async fn release_namespace_if_empty(&self, s: &Scope, ns: &str) {
        let pk = scope_pk(s);
        let _ = self
            .client
            .transact_write_items()
            .transact_items(tx_delete(
                &self.table,
                key(pk.clone(), format!("NS#{ns}")),
                "key_count = :zero",
                &[(":zero", nv(0))],
            ))
            .transact_items(tx_update(
                &self.table,
                key(pk, "META".into()),
                "SET ns_count = ns_count - :one",
                Some("attribute_exists(ns_count)"),
                &[(":one", nv(1))],
            ))
            .send()
            .await;
    }
}

#[async_trait]
impl KvStore for DynamoKv {
    async fn get(&self, s: &Scope, namespace: &str, key_: &str) -> Result<Option<KvEntry>, KvError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(entry_pk(s, namespace), key_.into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| err("GetItem", e))?;
        out.item.map(|i| entry_of(namespace, key_, &i)).transpose()
    }

    async fn put(
        &self,
        s: &Scope,
        namespace: &str,
        key_: &str,
        value: &[u8],
        expected: Option<u64>,
        limits: &KvLimits,
    ) -> Result<KvEntry, KvError> {
        if expected.is_some() {
            return self.update_existing(s, namespace, key_, value, expected).await?.ok_or(KvError::Conflict);
        }
        for _ in 0..MAX_ROUNDS {
            if let Some(e) = self.update_existing(s, namespace, key_, value, None).await? {
                return Ok(e);
            }
            match self.create(s, namespace, key_, value, limits).await {
                Ok(Some(e)) => return Ok(e),
                Ok(None) => continue,
                Err(KvError::Missing) => self.register_namespace(s, namespace, limits).await?,
                Err(e) => return Err(e),
            }
        }
        Err(KvError::Internal("put kept losing to concurrent writers".into()))
    }

    async fn delete(&self, s: &Scope, namespace: &str, key_: &str) -> Result<(), KvError> {
        let result = self
            .client
            .transact_write_items()
            .transact_items(tx_delete(
                &self.table,
                key(entry_pk(s, namespace), key_.into()),
                "attribute_exists(pk)",
                &[],
            ))
            .transact_items(tx_update(
                &self.table,
                key(scope_pk(s), format!("NS#{namespace}")),
                "SET key_count = key_count - :one",
                Some("attribute_exists(key_count)"),
                &[(":one", nv(1))],
            ))
            .send()
            .await;
        match result {
            Ok(_) => {
                let counter = self.namespace_counter(s, namespace).await?;
                let empty = counter
                    .and_then(|i| i.get("key_count").and_then(|v| v.as_n().ok()).map(|n| n == "0"))
                    .unwrap_or(false);
                if empty {
                    self.release_namespace_if_empty(s, namespace).await;
                }
                Ok(())
            }
            Err(e) => match cancelled(&e) {
                Some(_) => Err(KvError::Missing),
                None => Err(err("TransactWriteItems", e)),
            },
        }
    }

    async fn list(
        &self,
        s: &Scope,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let pk = entry_pk(s, namespace);
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", sv(pk.clone()))
            .consistent_read(true)
            .limit(limit as i32);
        if let Some(after) = after {
            q = q.set_exclusive_start_key(Some(key(pk, after.into())));
        }
        let out = q.send().await.map_err(|e| err("Query", e))?;
        out.items()
            .iter()
            .map(|i| {
                let k = i.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                entry_of(namespace, &k, i)
            })
            .collect()
    }

    async fn purge(&self, s: &Scope) -> Result<u64, KvError> {
        let scope = scope_pk(s);
        // The install's namespaces are its NS# counter items.
        let counters: Vec<HashMap<String, AttributeValue>> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", sv(scope.clone()))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| err("Query", e))?;
        let mut deleted = 0u64;
        for counter in &counters {
            let sk = counter.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            if let Some(ns) = sk.strip_prefix("NS#") {
                let pk = entry_pk(s, ns);
                let keys: Vec<HashMap<String, AttributeValue>> = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", sv(pk.clone()))
                    .projection_expression("pk, sk")
                    .into_paginator()
                    .items()
                    .send()
                    .collect::<Result<Vec<_>, _>>()
                    .await
                    .map_err(|e| err("Query", e))?;
                deleted += keys.len() as u64;
                self.batch_delete(keys).await?;
            }
        }
        let own: Vec<_> = counters
            .into_iter()
            .map(|c| key(scope.clone(), c.get("sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()))
            .collect();
        self.batch_delete(own).await?;
        Ok(deleted)
    }
}

impl DynamoKv {
    async fn batch_delete(&self, keys: Vec<HashMap<String, AttributeValue>>) -> Result<(), KvError> {
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    WriteRequest::builder()
                        .delete_request(DeleteRequest::builder().set_key(Some(k.clone())).build().expect("key set"))
                        .build()
                })
                .collect();
            for _ in 0..MAX_ROUNDS {
                if requests.is_empty() {
                    break;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests.clone())
                    .send()
                    .await
                    .map_err(|e| err("BatchWriteItem", e))?;
                requests = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ids made of the characters that could forge a key: separators, escapes, case.
    fn id() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[aA#%:/I N2]{0,8}").expect("regex")
    }

    proptest! {
        #[test]
        fn different_scopes_and_namespaces_never_share_a_partition_key(
            a in (id(), id(), id()),
            b in (id(), id(), id()),
        ) {
            let scope = |t: &str, i: &str| Scope { tenant_id: t.into(), install_id: i.into() };
            let (ka, kb) = (entry_pk(&scope(&a.0, &a.1), &a.2), entry_pk(&scope(&b.0, &b.1), &b.2));
            prop_assert_eq!(ka == kb, a == b, "{} vs {}", ka, kb);
            let (sa, sb) = (scope_pk(&scope(&a.0, &a.1)), scope_pk(&scope(&b.0, &b.1)));
            prop_assert_eq!(sa == sb, (&a.0, &a.1) == (&b.0, &b.1));
        }
    }
}
