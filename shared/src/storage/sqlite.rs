//! SQLite storage backend (embedded default). Shares the control-plane database file.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{KvEntry, KvError, KvLimits, KvStore, Scope};
use crate::stores::sqlite::SqliteDb;
use crate::stores::StoreError;

/// Storage KV in SQLite.
#[derive(Clone)]
pub struct SqliteKv {
    db: SqliteDb,
}

impl SqliteKv {
    /// Storage over an open database.
    pub fn new(db: SqliteDb) -> Self {
        Self { db }
    }
}

fn map_err(e: StoreError) -> KvError {
    match e {
        StoreError::Unavailable(m) => KvError::Unavailable(m),
        other => KvError::Internal(other.to_string()),
    }
}

/// What a put transaction decided, before mapping to the WIT result.
enum PutOutcome {
    Written(u64),
    Conflict,
    Limit(String),
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, s: &Scope, namespace: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        let (t, i, ns, k) = (s.tenant_id.clone(), s.install_id.clone(), namespace.to_string(), key.to_string());
        self.db
            .run(move |c| {
                c.prepare_cached(
                    "SELECT value, revision FROM kv WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
                )?
                .query_row(params![t, i, ns, k], |r| {
                    Ok(KvEntry { namespace: ns.clone(), key: k.clone(), value: r.get(0)?, revision: r.get::<_, i64>(1)? as u64 })
                })
                .optional()
            })
            .await
            .map_err(map_err)
    }

    async fn put(
        &self,
        s: &Scope,
        namespace: &str,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        limits: &KvLimits,
    ) -> Result<KvEntry, KvError> {
        let (t, i, ns, k, v) =
            (s.tenant_id.clone(), s.install_id.clone(), namespace.to_string(), key.to_string(), value.to_vec());
        let limits = *limits;
        let (ns2, k2, v2) = (ns.clone(), k.clone(), v.clone());
        let outcome = self
            .db
            .run(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT revision FROM kv WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
                        params![t, i, ns, k],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(exp) = expected {
                    if current.map(|c| c as u64) != Some(exp) {
                        return Ok(PutOutcome::Conflict);
                    }
                }
                if current.is_none() {
                    let keys: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM kv WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3",
                        params![t, i, ns],
                        |r| r.get(0),
                    )?;
                    if keys as usize >= limits.max_keys_per_namespace {
                        return Ok(PutOutcome::Limit(format!(
                            "namespace {ns:?} already holds {} keys (the limit)",
                            limits.max_keys_per_namespace
                        )));
                    }
                    if keys == 0 {
                        let namespaces: i64 = tx.query_row(
                            "SELECT COUNT(DISTINCT namespace) FROM kv WHERE tenant_id = ?1 AND install_id = ?2",
                            params![t, i],
                            |r| r.get(0),
                        )?;
                        if namespaces as usize >= limits.max_namespaces {
                            return Ok(PutOutcome::Limit(format!(
                                "install already uses {} namespaces (the limit)",
                                limits.max_namespaces
                            )));
                        }
                    }
                }
                let revision = current.unwrap_or(0) + 1;
                tx.execute(
                    "INSERT INTO kv (tenant_id, install_id, namespace, key, value, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (tenant_id, install_id, namespace, key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
                    params![t, i, ns, k, v, revision],
                )?;
                tx.commit()?;
                Ok(PutOutcome::Written(revision as u64))
            })
            .await
            .map_err(map_err)?;
        match outcome {
            PutOutcome::Written(revision) => Ok(KvEntry { namespace: ns2, key: k2, value: v2, revision }),
            PutOutcome::Conflict => Err(KvError::Conflict),
            PutOutcome::Limit(m) => Err(KvError::Limit(m)),
        }
    }

    async fn delete(&self, s: &Scope, namespace: &str, key: &str) -> Result<(), KvError> {
        let (t, i, ns, k) = (s.tenant_id.clone(), s.install_id.clone(), namespace.to_string(), key.to_string());
        let n = self
            .db
            .run(move |c| {
                c.execute(
                    "DELETE FROM kv WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 AND key = ?4",
                    params![t, i, ns, k],
                )
            })
            .await
            .map_err(map_err)?;
        if n == 0 {
            Err(KvError::Missing)
        } else {
            Ok(())
        }
    }

    async fn list(
        &self,
        s: &Scope,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        let (t, i, ns) = (s.tenant_id.clone(), s.install_id.clone(), namespace.to_string());
        let after = after.unwrap_or("").to_string();
        self.db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT key, value, revision FROM kv WHERE tenant_id = ?1 AND install_id = ?2 AND namespace = ?3 \
                     AND key > ?4 ORDER BY key LIMIT ?5",
                )?;
                let rows = st.query_map(params![t, i, ns, after, limit as i64], |r| {
                    Ok(KvEntry {
                        namespace: ns.clone(),
                        key: r.get(0)?,
                        value: r.get(1)?,
                        revision: r.get::<_, i64>(2)? as u64,
                    })
                })?;
                rows.collect()
            })
            .await
            .map_err(map_err)
    }

    async fn purge(&self, s: &Scope) -> Result<u64, KvError> {
        let (t, i) = (s.tenant_id.clone(), s.install_id.clone());
        self.db
            .run(move |c| c.execute("DELETE FROM kv WHERE tenant_id = ?1 AND install_id = ?2", params![t, i]))
            .await
            .map(|n| n as u64)
            .map_err(map_err)
    }
}
