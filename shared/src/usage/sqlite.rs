//! Usage in SQLite (`kelp up`): one row per (tenant, hour, install), a batch applied in one
//! transaction together with its writer's sequence number.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{Batch, Counters, UsageQuery, UsageRow, UsageStore};
use crate::stores::sqlite::SqliteDb;
use crate::stores::StoreResult;

/// Usage over the embedded database.
#[derive(Clone)]
pub struct SqliteUsage {
    db: SqliteDb,
}

impl SqliteUsage {
    /// Usage over an open database.
    pub fn new(db: SqliteDb) -> Self {
        Self { db }
    }
}

fn decode(text: &str) -> rusqlite::Result<Counters> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[async_trait]
impl UsageStore for SqliteUsage {
    async fn apply(&self, batch: &Batch) -> StoreResult<()> {
        let batch = batch.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                let applied: Option<i64> = tx
                    .query_row("SELECT seq FROM usage_writers WHERE writer = ?1", params![batch.writer], |r| r.get(0))
                    .optional()?;
                if applied.is_some_and(|seq| seq as u64 >= batch.seq) {
                    // This batch (or a later one of the writer) was applied: a retry adds nothing.
                    return Ok(());
                }
                for row in &batch.rows {
                    let current: Option<String> = tx
                        .query_row(
                            "SELECT counters FROM usage WHERE tenant_id = ?1 AND hour = ?2 AND install_id = ?3",
                            params![row.tenant_id, row.hour, row.install_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let mut counters = match current {
                        Some(text) => decode(&text)?,
                        None => Counters::default(),
                    };
                    counters.add(&row.counters);
                    tx.execute(
                        "INSERT INTO usage (tenant_id, hour, install_id, extension_id, counters) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (tenant_id, hour, install_id) DO UPDATE SET counters = excluded.counters",
                        params![
                            row.tenant_id,
                            row.hour,
                            row.install_id,
                            row.extension_id,
                            serde_json::to_string(&counters).expect("plain data")
                        ],
                    )?;
                }
                tx.execute(
                    "INSERT INTO usage_writers (writer, seq) VALUES (?1, ?2) \
                     ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq",
                    params![batch.writer, batch.seq as i64],
                )?;
                tx.commit()
            })
            .await
    }

    async fn query(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let q = query.clone();
        let rows = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT tenant_id, hour, install_id, extension_id, counters FROM usage \
                     WHERE (?1 IS NULL OR tenant_id = ?1) AND hour >= ?2 AND hour < ?3 \
                     ORDER BY tenant_id, hour, install_id",
                )?;
                let rows = st.query_map(params![q.tenant, q.from, q.to], |r| {
                    Ok(UsageRow {
                        tenant_id: r.get(0)?,
                        hour: r.get(1)?,
                        install_id: r.get(2)?,
                        extension_id: r.get(3)?,
                        counters: decode(&r.get::<_, String>(4)?)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows.into_iter().filter(|r| query.matches(r)).collect())
    }
}
