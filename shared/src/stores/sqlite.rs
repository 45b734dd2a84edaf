//! The embedded default of every control-plane store: one SQLite file (WAL), shared with the
//! storage KV. Calls run on the blocking pool so the async executor never waits on disk.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::*;

const SCHEMA: &str = r#"
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS extensions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, publisher TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, extension_id TEXT NOT NULL, version TEXT NOT NULL, manifest TEXT NOT NULL,
    content_hash TEXT NOT NULL, component_hash TEXT NOT NULL, component_key TEXT NOT NULL,
    bundle_key TEXT NOT NULL, published_at TEXT NOT NULL, UNIQUE (extension_id, version));
CREATE INDEX IF NOT EXISTS versions_by_hash ON versions (content_hash);
CREATE TABLE IF NOT EXISTS artifact_digests (
    component_hash TEXT NOT NULL, compat_hash TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (component_hash, compat_hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS installs (
    install_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, extension_id TEXT NOT NULL,
    version_id TEXT NOT NULL, config TEXT NOT NULL, config_version INTEGER NOT NULL,
    secrets_ref TEXT, secrets_version INTEGER NOT NULL, granted TEXT NOT NULL, egress TEXT NOT NULL,
    enabled INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL, limits TEXT NOT NULL DEFAULT '{}', UNIQUE (tenant_id, extension_id));
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, ts TEXT NOT NULL, tenant_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, outcome TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_ts ON audit (ts, id);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant_id, ts, id);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, install_id TEXT NOT NULL, viewer TEXT NOT NULL,
    doc TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS grants_by_tenant ON grants (tenant_id, install_id, viewer);
CREATE TABLE IF NOT EXISTS kv (
    tenant_id TEXT NOT NULL, install_id TEXT NOT NULL, namespace TEXT NOT NULL, key TEXT NOT NULL,
    value BLOB NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, install_id, namespace, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    tenant_id TEXT NOT NULL, hour TEXT NOT NULL, install_id TEXT NOT NULL, extension_id TEXT NOT NULL,
    counters TEXT NOT NULL, PRIMARY KEY (tenant_id, hour, install_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_hour ON usage (hour);
CREATE TABLE IF NOT EXISTS usage_writers (writer TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"#;

/// Create what is missing: the tables, and the columns later versions added to a database
/// an earlier `kelp up` made.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let has_limits = conn.prepare("SELECT 1 FROM pragma_table_info('installs') WHERE name = 'limits'")?.exists([])?;
    if !has_limits {
        conn.execute_batch("ALTER TABLE installs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'")?;
    }
    Ok(())
}

/// A shared SQLite connection.
#[derive(Clone)]
pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDb {
    /// Open (and migrate) the database file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> anyhow::Result<Self> {
        let conn = Connection::open_in_memory()?;
        migrate(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Run a short read on the caller's thread when the connection is free. A point lookup on
    /// the request path (the caller's install) takes microseconds, less than handing it to
    /// the blocking pool and back, which costs two thread wake-ups per request. Under WAL a
    /// reader never waits for a writer; when another task holds the connection, the read
    /// goes to the blocking pool like any other statement.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        if let Some(mut conn) = self.conn.try_lock() {
            return f(&mut conn).map_err(map_sqlite_error);
        }
        self.run(f).await
    }

    /// Run `f` with the connection on the blocking pool.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> StoreResult<R> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(|e| StoreError::Internal(format!("sqlite task: {e}")))?
            .map_err(map_sqlite_error)
    }
}

fn map_sqlite_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data")
}

/// Opaque cursors: base64url of the last sort key.
pub(crate) fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// Decode a cursor made by [`encode_cursor`]; a malformed one restarts from the beginning.
pub(crate) fn decode_cursor(cursor: Option<&str>) -> String {
    cursor
        .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

fn page_of<T>(mut items: Vec<T>, size: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items.last().map(|i| encode_cursor(&key(i)))
    } else {
        None
    };
    Page { items, next_cursor }
}

fn extension_row(row: &Row<'_>) -> rusqlite::Result<ExtensionRecord> {
    Ok(ExtensionRecord { id: row.get(0)?, name: row.get(1)?, publisher: row.get(2)?, created_at: row.get(3)? })
}

const VERSION_COLS: &str =
    "id, extension_id, version, manifest, content_hash, component_hash, component_key, bundle_key, published_at";

fn version_row(row: &Row<'_>) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        id: row.get(0)?,
        extension_id: row.get(1)?,
        version: row.get(2)?,
        manifest: json_col(row, 3)?,
        content_hash: row.get(4)?,
        component_hash: row.get(5)?,
        component_key: row.get(6)?,
        bundle_key: row.get(7)?,
        published_at: row.get(8)?,
    })
}

const INSTALL_COLS: &str = "install_id, tenant_id, extension_id, version_id, config, config_version, secrets_ref, \
     secrets_version, granted, egress, enabled, created_at, updated_at, revision, limits";

fn install_row(row: &Row<'_>) -> rusqlite::Result<InstallRecord> {
    Ok(InstallRecord {
        install_id: row.get(0)?,
        tenant_id: row.get(1)?,
        extension_id: row.get(2)?,
        version_id: row.get(3)?,
        config: json_col(row, 4)?,
        config_version: row.get::<_, i64>(5)? as u64,
        secrets_ref: row.get(6)?,
        secrets_version: row.get::<_, i64>(7)? as u64,
        granted: json_col(row, 8)?,
        egress: json_col(row, 9)?,
        enabled: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        revision: row.get::<_, i64>(13)? as u64,
        limits: install_limits(row, 14)?,
    })
}

/// Decode an install's plan snapshot, memoised by its text: the gateway reads the install on
/// every request, the snapshot changes only with the plan, and decoding it (~0.6 µs) is most
/// of what a plan costs a warm request in kelp-bench.
fn install_limits(row: &Row<'_>, idx: usize) -> rusqlite::Result<crate::limits::InstallLimits> {
    static DECODED: std::sync::OnceLock<Mutex<lru::LruCache<String, crate::limits::InstallLimits>>> =
        std::sync::OnceLock::new();
    let text = row.get_ref(idx)?.as_str()?;
    let cache = DECODED.get_or_init(|| Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(1024).unwrap())));
    if let Some(limits) = cache.lock().get(text) {
        return Ok(limits.clone());
    }
    let limits: crate::limits::InstallLimits = serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))?;
    cache.lock().put(text.to_string(), limits.clone());
    Ok(limits)
}

/// SQLite-backed registry, installs and audit log.
#[derive(Clone)]
pub struct SqliteStores {
    db: SqliteDb,
}

impl SqliteStores {
    /// Stores over an open database.
    pub fn new(db: SqliteDb) -> Self {
        Self { db }
    }

    /// The extension whose `column` (`id` or `name`, both unique) equals `value`.
    async fn extension_where(&self, column: &'static str, value: String) -> StoreResult<Option<ExtensionRecord>> {
        self.db
            .run(move |c| {
                c.query_row(
                    &format!("SELECT id, name, publisher, created_at FROM extensions WHERE {column} = ?1"),
                    [value],
                    extension_row,
                )
                .optional()
            })
            .await
    }
}

#[async_trait]
impl Registry for SqliteStores {
    async fn ensure_extension(&self, ext: &ExtensionRecord) -> StoreResult<ExtensionRecord> {
        let ext = ext.clone();
        let insert = ext.clone();
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO extensions (id, name, publisher, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
                    params![insert.id, insert.name, insert.publisher, insert.created_at],
                )?;
                Ok(())
            })
            .await?;
        self.extension_where("name", ext.name.clone())
            .await?
            .ok_or_else(|| StoreError::Internal("extension vanished after insert".into()))
    }

    async fn get_extension(&self, id: &str) -> StoreResult<Option<ExtensionRecord>> {
        self.extension_where("id", id.to_string()).await
    }

    async fn find_extension_by_name(&self, name: &str) -> StoreResult<Option<ExtensionRecord>> {
        self.extension_where("name", name.to_lowercase()).await
    }

    async fn list_extensions(&self, page: &PageRequest) -> StoreResult<Page<ExtensionRecord>> {
        let (after, size) = (decode_cursor(page.cursor.as_deref()), page.size());
        let items = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, name, publisher, created_at FROM extensions WHERE name > ?1 ORDER BY name LIMIT ?2",
                )?;
                let rows = st.query_map(params![after, size as i64 + 1], extension_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(page_of(items, size, |e| e.name.clone()))
    }

    async fn put_version(&self, version: &VersionRecord) -> StoreResult<PutVersion> {
        let v = version.clone();
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                let existing = tx
                    .query_row(
                        &format!("SELECT {VERSION_COLS} FROM versions WHERE extension_id = ?1 AND version = ?2"),
                        params![v.extension_id, v.version],
                        version_row,
                    )
                    .optional()?;
                if let Some(e) = existing {
                    return Ok(PutVersion::Existing(Box::new(e)));
                }
                tx.execute(
                    &format!("INSERT INTO versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                    params![
                        v.id,
                        v.extension_id,
                        v.version,
                        to_json(&v.manifest),
                        v.content_hash,
                        v.component_hash,
                        v.component_key,
                        v.bundle_key,
                        v.published_at
                    ],
                )?;
                tx.commit()?;
                Ok(PutVersion::Created)
            })
            .await
    }

    async fn get_version(&self, id: &str) -> StoreResult<Option<VersionRecord>> {
        let id = id.to_string();
        self.db
            .run(move |c| {
                c.query_row(&format!("SELECT {VERSION_COLS} FROM versions WHERE id = ?1"), [id], version_row).optional()
            })
            .await
    }

    async fn find_version(&self, extension_id: &str, version: &str) -> StoreResult<Option<VersionRecord>> {
        let (e, v) = (extension_id.to_string(), version.to_string());
        self.db
            .run(move |c| {
                c.query_row(
                    &format!("SELECT {VERSION_COLS} FROM versions WHERE extension_id = ?1 AND version = ?2"),
                    params![e, v],
                    version_row,
                )
                .optional()
            })
            .await
    }

    async fn find_version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRecord>> {
        let h = content_hash.to_string();
        self.db
            .run(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {VERSION_COLS} FROM versions WHERE content_hash = ?1 ORDER BY published_at LIMIT 1"
                    ),
                    [h],
                    version_row,
                )
                .optional()
            })
            .await
    }

    async fn list_versions(&self, extension_id: &str, page: &PageRequest) -> StoreResult<Page<VersionRecord>> {
        let (e, after, size) = (extension_id.to_string(), decode_cursor(page.cursor.as_deref()), page.size());
        let items = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {VERSION_COLS} FROM versions WHERE extension_id = ?1 AND (published_at || id) > ?2 \
                     ORDER BY published_at, id LIMIT ?3"
                ))?;
                let rows = st.query_map(params![e, after, size as i64 + 1], version_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(page_of(items, size, |v| format!("{}{}", v.published_at, v.id)))
    }

    async fn put_artifact_digest(&self, component_hash: &str, compat_hash: &str, sha256: &str) -> StoreResult<()> {
        let (h, e, d) = (component_hash.to_string(), compat_hash.to_string(), sha256.to_string());
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO artifact_digests (component_hash, compat_hash, sha256) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (component_hash, compat_hash) DO UPDATE SET sha256 = excluded.sha256",
                    params![h, e, d],
                )
            })
            .await?;
        Ok(())
    }

    async fn artifact_digest(&self, component_hash: &str, compat_hash: &str) -> StoreResult<Option<String>> {
        let (h, e) = (component_hash.to_string(), compat_hash.to_string());
        self.db
            .run(move |c| {
                c.query_row(
                    "SELECT sha256 FROM artifact_digests WHERE component_hash = ?1 AND compat_hash = ?2",
                    params![h, e],
                    |r| r.get(0),
                )
                .optional()
            })
            .await
    }
}

#[async_trait]
impl Installs for SqliteStores {
    async fn create_install(&self, i: &InstallRecord) -> StoreResult<()> {
        let i = i.clone();
        self.db
            .run(move |c| {
                c.execute(
                    &format!(
                        "INSERT INTO installs ({INSTALL_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"
                    ),
                    params![
                        i.install_id,
                        i.tenant_id,
                        i.extension_id,
                        i.version_id,
                        to_json(&i.config),
                        i.config_version as i64,
                        i.secrets_ref,
                        i.secrets_version as i64,
                        to_json(&i.granted),
                        to_json(&i.egress),
                        i.enabled,
                        i.created_at,
                        i.updated_at,
                        i.revision as i64,
                        to_json(&i.limits)
                    ],
                )
                .map(|_| ())
            })
            .await
    }

    async fn get_install(&self, tenant: &str, install_id: &str) -> StoreResult<Option<InstallRecord>> {
        let (t, id) = (tenant.to_string(), install_id.to_string());
        self.db
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {INSTALL_COLS} FROM installs WHERE tenant_id = ?1 AND install_id = ?2"
                ))?
                .query_row(params![t, id], install_row)
                .optional()
            })
            .await
    }

    async fn find_install(&self, tenant: &str, extension_id: &str) -> StoreResult<Option<InstallRecord>> {
        let (t, e) = (tenant.to_string(), extension_id.to_string());
        self.db
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {INSTALL_COLS} FROM installs WHERE tenant_id = ?1 AND extension_id = ?2"
                ))?
                .query_row(params![t, e], install_row)
                .optional()
            })
            .await
    }

    async fn list_installs(&self, tenant: Option<&str>, page: &PageRequest) -> StoreResult<Page<InstallRecord>> {
        let (t, after, size) = (tenant.map(str::to_string), decode_cursor(page.cursor.as_deref()), page.size());
        let items = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {INSTALL_COLS} FROM installs WHERE (?1 IS NULL OR tenant_id = ?1) AND install_id > ?2 \
                     ORDER BY install_id LIMIT ?3"
                ))?;
                let rows = st.query_map(params![t, after, size as i64 + 1], install_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(page_of(items, size, |i| i.install_id.clone()))
    }

    async fn update_install(&self, i: &InstallRecord) -> StoreResult<()> {
        let i = i.clone();
        let changed = self
            .db
            .run(move |c| {
                c.execute(
                    "UPDATE installs SET version_id = ?3, config = ?4, config_version = ?5, secrets_ref = ?6, \
                     secrets_version = ?7, granted = ?8, egress = ?9, enabled = ?10, updated_at = ?11, revision = ?12, \
                     limits = ?14 WHERE tenant_id = ?1 AND install_id = ?2 AND revision = ?13",
                    params![
                        i.tenant_id,
                        i.install_id,
                        i.version_id,
                        to_json(&i.config),
                        i.config_version as i64,
                        i.secrets_ref,
                        i.secrets_version as i64,
                        to_json(&i.granted),
                        to_json(&i.egress),
                        i.enabled,
                        i.updated_at,
                        i.revision as i64,
                        i.revision as i64 - 1,
                        to_json(&i.limits)
                    ],
                )
            })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("install changed concurrently or no longer exists".into()))
        }
    }

    async fn delete_install(&self, tenant: &str, install_id: &str) -> StoreResult<bool> {
        let (t, id) = (tenant.to_string(), install_id.to_string());
        self.db
            .run(move |c| c.execute("DELETE FROM installs WHERE tenant_id = ?1 AND install_id = ?2", params![t, id]))
            .await
            .map(|n| n > 0)
    }
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        ts: row.get(1)?,
        tenant_id: row.get(2)?,
        actor: row.get(3)?,
        action: row.get(4)?,
        target: row.get(5)?,
        outcome: row.get(6)?,
        details: json_col(row, 7)?,
    })
}

#[async_trait]
impl AuditLog for SqliteStores {
    async fn append(&self, r: &AuditRecord) -> StoreResult<()> {
        let r = r.clone();
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO audit (id, ts, tenant_id, actor, action, target, outcome, details) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                    params![r.id, r.ts, r.tenant_id, r.actor, r.action, r.target, r.outcome, to_json(&r.details)],
                )
                .map(|_| ())
            })
            .await
    }

    async fn query(&self, f: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditRecord>> {
        let f = f.clone();
        // Newest first: the cursor is the (ts, id) of the last row, and the next page is older.
        let before = decode_cursor(page.cursor.as_deref());
        let size = page.size();
        let items = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, ts, tenant_id, actor, action, target, outcome, details FROM audit \
                     WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR action = ?3) \
                     AND (?4 IS NULL OR ts >= ?4) AND (?5 IS NULL OR ts < ?5) AND (?6 = '' OR (ts || '|' || id) < ?6) \
                     ORDER BY ts DESC, id DESC LIMIT ?7",
                )?;
                let rows = st.query_map(
                    params![f.tenant_id, f.actor, f.action, f.since, f.until, before, size as i64 + 1],
                    audit_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(page_of(items, size, |r| format!("{}|{}", r.ts, r.id)))
    }
}

#[async_trait]
impl Grants for SqliteStores {
    async fn create_grant(&self, g: &DebugGrant) -> StoreResult<()> {
        let g = g.clone();
        self.db
            .run(move |c| {
                c.execute(
                    "INSERT INTO grants (id, tenant_id, install_id, viewer, doc, created_at) VALUES (?1,?2,?3,?4,?5,?6)",
                    params![g.id, g.tenant_id, g.install_id, g.viewer, to_json(&g), g.created_at],
                )
                .map(|_| ())
            })
            .await
    }

    async fn get_grant(&self, tenant: &str, id: &str) -> StoreResult<Option<DebugGrant>> {
        let (t, id) = (tenant.to_string(), id.to_string());
        self.db
            .run(move |c| {
                c.query_row("SELECT doc FROM grants WHERE tenant_id = ?1 AND id = ?2", params![t, id], |r| {
                    json_col(r, 0)
                })
                .optional()
            })
            .await
    }

    async fn list_grants(
        &self,
        tenant: Option<&str>,
        viewer: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<DebugGrant>> {
        let (t, v, before, size) = (
            tenant.map(str::to_string),
            viewer.map(str::to_string),
            decode_cursor(page.cursor.as_deref()),
            page.size(),
        );
        let items = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT doc FROM grants WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR viewer = ?2) \
                     AND (?3 = '' OR (created_at || '|' || id) < ?3) ORDER BY created_at DESC, id DESC LIMIT ?4",
                )?;
                let rows = st.query_map(params![t, v, before, size as i64 + 1], |r| json_col(r, 0))?;
                rows.collect::<rusqlite::Result<Vec<DebugGrant>>>()
            })
            .await?;
        Ok(page_of(items, size, |g| format!("{}|{}", g.created_at, g.id)))
    }

    async fn revoke_grant(&self, tenant: &str, id: &str, at: &str) -> StoreResult<bool> {
        let Some(mut g) = self.get_grant(tenant, id).await? else { return Ok(false) };
        g.revoked_at = Some(at.to_string());
        self.db
            .run(move |c| {
                c.execute("UPDATE grants SET doc = ?2 WHERE id = ?1", params![g.id, to_json(&g)]).map(|n| n > 0)
            })
            .await
    }

    async fn has_active_grant(&self, tenant: &str, install_id: &str, viewer: &GrantViewer<'_>) -> StoreResult<bool> {
        let (t, i, v) = (tenant.to_string(), install_id.to_string(), viewer.sub.to_string());
        let grants = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT doc FROM grants WHERE tenant_id = ?1 AND install_id = ?2 AND viewer = ?3",
                )?;
                let rows = st.query_map(params![t, i, v], |r| json_col(r, 0))?;
                rows.collect::<rusqlite::Result<Vec<DebugGrant>>>()
            })
            .await?;
        Ok(grants.iter().any(|g| g.active() && g.names(viewer)))
    }
}
