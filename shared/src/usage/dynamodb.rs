//! Usage in DynamoDB (`KELP_TABLE_USAGE`). One item per (tenant, hour, install) —
//! `pk = T#<tenant>`, `sk = H#<hour>#I#<install>` — whose counters are numeric attributes
//! added to with `ADD` (atomic across every sandbox writing at once). Each item also keeps,
//! per writer, the sequence of the last batch it took (`w_<writer>`); the update is
//! conditional on that being lower, so a retried batch adds nothing where it already landed
//! and the rest where it did not. Peak memory is a conditional `SET` (the larger wins).
//!
//! An index item per (hour, tenant) — `pk = HOUR#<hour>`, `sk = T#<tenant>` — lets an
//! operator ask for every tenant's usage of a range with queries, never a scan.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;

use super::{Batch, Counters, UsageQuery, UsageRow, UsageStore};
use crate::stores::dynamodb::sdk_err;
use crate::stores::{StoreError, StoreResult};

type Item = HashMap<String, AttributeValue>;

/// Usage over a DynamoDB table.
pub struct DynamoUsage {
    client: Client,
    table: String,
    /// What this process already wrote, so a request in Lambda (which writes its usage before
    /// answering) usually costs one `UpdateItem`: the peak memory written per item, and the
    /// (hour, tenant) index items written.
    written: Mutex<Written>,
}

#[derive(Default)]
struct Written {
    peaks: HashMap<(String, String), u64>,
    indexed: HashSet<(String, String)>,
}

/// Entries of each [`Written`] map before it is emptied (a cache: forgetting only costs a
/// write that changes nothing).
const WRITTEN_MAX: usize = 10_000;

/// Hours an operator may ask about without naming a tenant (one query per hour).
pub const MAX_HOURS_ALL_TENANTS: usize = 31 * 24;

/// Rows written at once by one flush.
const CONCURRENT_WRITES: usize = 8;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

const ID_ATTRIBUTES: [&str; 4] = ["tenant_id", "install_id", "extension_id", "usage_hour"];

impl DynamoUsage {
    /// Usage over `table`.
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table, written: Mutex::new(Written::default()) }
    }

    async fn apply_row(&self, writer: &str, seq: u64, row: &UsageRow) -> StoreResult<()> {
        let pk = format!("T#{}", row.tenant_id);
        let sk = format!("H#{}#I#{}", row.hour, row.install_id);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk.clone()))
            .key("sk", s(sk.clone()))
            .expression_attribute_names("#w", format!("w_{writer}"))
            .expression_attribute_values(":seq", n(seq))
            .condition_expression("attribute_not_exists(#w) OR #w < :seq");
        let mut set = vec!["#w = :seq".to_string()];
        for (i, (name, value)) in
            ID_ATTRIBUTES.iter().zip([&row.tenant_id, &row.install_id, &row.extension_id, &row.hour]).enumerate()
        {
            set.push(format!("#id{i} = :id{i}"));
            update = update
                .expression_attribute_names(format!("#id{i}"), *name)
                .expression_attribute_values(format!(":id{i}"), s(value.clone()));
        }
        let mut add = Vec::new();
        for (i, (name, value)) in row.counters.additive().into_iter().enumerate() {
            add.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), name)
                .expression_attribute_values(format!(":c{i}"), n(value));
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !add.is_empty() {
            expression.push_str(&format!(" ADD {}", add.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => {}
            // This batch reached the item before (a retried flush): nothing to add.
            Err(e) if crate::aws::conditional_check_failed(&e) => {}
            Err(e) => return Err(sdk_err("UpdateItem", e)),
        }
        let peak = row.counters.peak_memory_bytes;
        let item = (pk.clone(), sk.clone());
        let known_peak = self.written.lock().peaks.get(&item).copied().unwrap_or(0);
        if peak > known_peak {
            let raised = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .update_expression("SET peak_memory_bytes = :p")
                .condition_expression("attribute_not_exists(peak_memory_bytes) OR peak_memory_bytes < :p")
                .expression_attribute_values(":p", n(peak))
                .send()
                .await;
            match raised {
                Ok(_) => {}
                Err(e) if crate::aws::conditional_check_failed(&e) => {}
                Err(e) => return Err(sdk_err("UpdateItem", e)),
            }
            let mut written = self.written.lock();
            if written.peaks.len() >= WRITTEN_MAX {
                written.peaks.clear();
            }
            written.peaks.insert(item, peak);
        }
        let index = (row.hour.clone(), row.tenant_id.clone());
        if self.written.lock().indexed.contains(&index) {
            return Ok(());
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("HOUR#{}", row.hour)))
            .item("sk", s(format!("T#{}", row.tenant_id)))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        let mut written = self.written.lock();
        if written.indexed.len() >= WRITTEN_MAX {
            written.indexed.clear();
        }
        written.indexed.insert(index);
        Ok(())
    }

    /// Every item of a query, following pages.
    async fn query_all(&self, pk: String, from_sk: String, to_sk: String) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":from", s(from_sk.clone()))
                .expression_attribute_values(":to", s(to_sk.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn tenant_rows(&self, tenant: &str, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        // `H#<to>` sorts before every item of hour `to` (they continue with `#I#`): the range
        // ends before it.
        let items =
            self.query_all(format!("T#{tenant}"), format!("H#{}", query.from), format!("H#{}", query.to)).await?;
        Ok(items.iter().filter_map(row_of).filter(|r| query.matches(r)).collect())
    }
}

fn row_of(item: &Item) -> Option<UsageRow> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let mut counters = Counters::default();
    for (name, value) in item {
        if name.starts_with("w_") {
            continue;
        }
        if let Some(v) = value.as_n().ok().and_then(|v| v.parse::<u64>().ok()) {
            counters.set(name, v);
        }
    }
    Some(UsageRow {
        tenant_id: text("tenant_id")?,
        install_id: text("install_id")?,
        extension_id: text("extension_id")?,
        hour: text("usage_hour")?,
        counters,
    })
}

/// The hours `[from, to)` (`YYYY-MM-DDTHH`), at most `max` of them.
fn hours_between(from: &str, to: &str, max: usize) -> StoreResult<Vec<String>> {
    let parse = |h: &str| {
        chrono::NaiveDateTime::parse_from_str(&format!("{h}:00"), "%Y-%m-%dT%H:%M")
            .map_err(|_| StoreError::Internal(format!("not an hour: {h}")))
    };
    let (mut at, end) = (parse(from)?, parse(to)?);
    let mut hours = Vec::new();
    while at < end {
        if hours.len() == max {
            return Err(StoreError::Internal(format!("more than {max} hours")));
        }
        hours.push(at.format("%Y-%m-%dT%H").to_string());
        at += chrono::Duration::hours(1);
    }
    Ok(hours)
}

#[async_trait]
impl UsageStore for DynamoUsage {
    async fn apply(&self, batch: &Batch) -> StoreResult<()> {
        let writes: Vec<_> = batch.rows.iter().map(|row| self.apply_row(&batch.writer, batch.seq, row)).collect();
        futures::stream::iter(writes).buffer_unordered(CONCURRENT_WRITES).try_collect::<Vec<()>>().await.map(|_| ())
    }

    async fn query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        if let Some(tenant) = &query.tenant {
            return self.tenant_rows(tenant, query).await;
        }
        let mut tenants = BTreeSet::new();
        for hour in hours_between(&query.from, &query.to, MAX_HOURS_ALL_TENANTS)? {
            for item in self.query_all(format!("HOUR#{hour}"), "T#".into(), "T$".into()).await? {
                if let Some(t) = item.get("sk").and_then(|v| v.as_s().ok()).and_then(|sk| sk.strip_prefix("T#")) {
                    tenants.insert(t.to_string());
                }
            }
        }
        let mut rows = Vec::new();
        for tenant in tenants {
            rows.extend(self.tenant_rows(&tenant, query).await?);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_between_counts_whole_hours_and_stops_at_the_bound() {
        assert_eq!(
            hours_between("2026-12-31T22", "2027-01-01T01", 10).unwrap(),
            ["2026-12-31T22", "2026-12-31T23", "2027-01-01T00"]
        );
        assert!(hours_between("2026-01-01T00", "2026-03-01T00", MAX_HOURS_ALL_TENANTS).is_err());
    }
}
