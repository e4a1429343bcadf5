//! The SQLite engine: one file in WAL mode, `synchronous=FULL` so a commit survives a crash of
//! the machine, not only of the process. One writer connection (writes queue in the pool, not
//! in SQLite's busy loop) and a few readers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hodei_core::sched::Changes;
use hodei_core::{Attempt, BurstId, BurstSession, Job, JobEvent, JobId, JobState, Pool, PoolId, Tenant, TenantId, Timestamp, Worker, WorkerId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::rows::*;
use crate::sqlite_writer::Writer;
use crate::{BreachFilter, BurstFilter, JobFilter, LiveState, Purged, Result, ScalingEventFilter, Schema, Store, StoreError, WorkerFilter};
use hodei_core::sla_tally::SlaCount;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The predicate of the partial index `jobs_live`, word for word as in migration 0005: SQLite
/// uses a partial index only for a query that repeats its WHERE term.
macro_rules! live_jobs {
    () => {
        "(state = 'pending' OR state = 'held' OR state = 'scheduled' OR state = 'running' OR state = 'failed')"
    };
}

/// A job that has ended for good (prefix: the table alias with its dot): a failed job waiting
/// for an automatic retry has not.
macro_rules! ended {
    ("") => {
        "(state IN ('succeeded', 'cancelled', 'timed_out') OR (state = 'failed' AND next_retry_at IS NULL))"
    };
    ("j.") => {
        "(j.state IN ('succeeded', 'cancelled', 'timed_out') OR (j.state = 'failed' AND j.next_retry_at IS NULL))"
    };
}

/// The states `live_jobs!` covers.
/// A pool row's insert, without what to do on a conflict.
macro_rules! insert_pool {
    () => {
        "INSERT INTO pools (id, name, pool_type, provider, worker_cpu_m, worker_memory_mb, worker_gpu, worker_slots, min_size, max_size, labels, \
         managed_by, state, join_token_hash, created_at, updated_at, version, desired_size, auto_scaling_enabled, idle_timeout_ms, scaling_policies, state_reason, allowed_tenants) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, ''), ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

/// [`insert_pool!`]'s parameters bound, for `sql` that starts with it.
fn pool_row<'q>(sql: &'static str, p: &'q Pool, join_token_hash: Option<&'q str>) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(sql)
        .bind(p.id.as_str())
        .bind(&p.name)
        .bind(p.pool_type.as_str())
        .bind(&p.provider)
        .bind(i64::from(p.worker_resources.cpu_m.get()))
        .bind(i64::from(p.worker_resources.memory_mb.get()))
        .bind(i64::from(p.worker_resources.gpu.get()))
        .bind(i64::from(p.worker_slots))
        .bind(i64::from(p.min_size))
        .bind(i64::from(p.max_size))
        .bind(json_map(&p.labels))
        .bind(&p.managed_by)
        .bind(p.state.as_str())
        .bind(join_token_hash)
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .bind(p.version)
        .bind(i64::from(p.desired_size))
        .bind(p.auto_scaling_enabled)
        .bind(i64::try_from(p.idle_timeout.as_millis()).unwrap_or(i64::MAX))
        .bind(json_policies(&p.scaling_policies))
        .bind(&p.state_reason)
        .bind(json_tenants(&p.allowed_tenants))
}

const LIVE_STATES: [JobState; 5] = [JobState::Pending, JobState::Held, JobState::Scheduled, JobState::Running, JobState::Failed];

/// The SQLite JSON path of label `k` (quoted: a key may hold dots and quotes).
fn json_path(k: &str) -> String {
    format!("$.\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A job list's conditions other than its states, as ` AND …` terms and their parameters;
/// `None` when the caller sees no tenant. State names are literals (a closed enum, never input).
fn job_filter(f: &JobFilter) -> Option<(String, Vec<rusqlite::types::Value>)> {
    use rusqlite::types::Value;
    let mut sql = String::new();
    let mut params: Vec<Value> = Vec::new();
    let mut any_of = |sql: &mut String, column: &str, values: Vec<String>| {
        sql.push_str(&format!(" AND {column} IN ({})", vec!["?"; values.len()].join(", ")));
        params.extend(values.into_iter().map(Value::Text));
    };
    if let Some(t) = &f.tenant {
        any_of(&mut sql, "tenant_id", vec![t.as_str().to_owned()]);
    }
    match f.visible.as_deref() {
        Some([]) => return None,
        Some(visible) => any_of(&mut sql, "tenant_id", visible.iter().map(|t| t.as_str().to_owned()).collect()),
        None => {}
    }
    let path = |k: &str| Value::Text(json_path(k));
    for term in &f.labels {
        match term {
            crate::LabelTerm::Eq(k, v) => {
                sql.push_str(" AND json_extract(labels, ?) = ?");
                params.extend([path(k), Value::Text(v.clone())]);
            }
            crate::LabelTerm::Ne(k, v) => {
                sql.push_str(" AND COALESCE(json_extract(labels, ?) != ?, 1)");
                params.extend([path(k), Value::Text(v.clone())]);
            }
            crate::LabelTerm::Exists(k) => {
                sql.push_str(" AND json_type(labels, ?) IS NOT NULL");
                params.push(path(k));
            }
            crate::LabelTerm::Missing(k) => {
                sql.push_str(" AND json_type(labels, ?) IS NULL");
                params.push(path(k));
            }
        }
    }
    let blob = |id: uuid::Uuid| Value::Blob(id.as_bytes().to_vec());
    if let Some(a) = f.array {
        // The members' ids lie between the array's bounds: a range of the primary key.
        sql.push_str(
            " AND array_id = ? AND id BETWEEN (SELECT first_job_id FROM job_arrays WHERE id = ?) AND (SELECT last_job_id FROM job_arrays WHERE id = ?)",
        );
        params.extend([blob(a.as_uuid()), blob(a.as_uuid()), blob(a.as_uuid())]);
    }
    if let Some(c) = f.before {
        sql.push_str(" AND id < ?");
        params.push(blob(c.as_uuid()));
    }
    Some((sql, params))
}

/// The predicate of the partial index `attempts_live` (migration 0005).
macro_rules! live_attempts {
    () => {
        "(state = 'assigned' OR state = 'running')"
    };
}

pub struct SqliteStore {
    /// Rare writes (tenants, pools, worker registration) go through sqlx on one connection.
    write: SqlitePool,
    read: SqlitePool,
    /// Scheduler batches go through a dedicated rusqlite thread (see `sqlite_writer`).
    writer: Writer,
    /// The database file: start-up reads the live jobs on a connection of its own.
    path: std::path::PathBuf,
    /// Pages of the job list are read through rusqlite (see `sqlite_load`).
    readers: Arc<crate::sqlite_load::Readers>,
    /// Removed on drop: the backing file of `open_temporary`.
    _temp: Option<TempDb>,
}

/// A database file deleted when the store is dropped.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database file, fsyncing every commit.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, true, Schema::Migrate).await
    }

    /// `fsync_commits: false` is SQLite's `synchronous=NORMAL` in WAL mode: a commit survives
    /// a crash of the process (kill -9) but the last ones may be lost if the machine loses power.
    pub async fn open_with(path: &Path, fsync_commits: bool, schema: Schema) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // 4 KiB pages (for a new file; an existing one keeps its own). Most commits are small
            // (one submit, one dispatch) and write a few whole pages to the WAL before their
            // fdatasync: 16 KiB pages made them slower (dispatch p50 2.04–2.08 vs 1.73–1.89 ms,
            // sequential submits −10 %) for 9–14 % faster 100 000-job batches (BENCHMARKS.md).
            .page_size(4096)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if fsync_commits { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", "-65536");
        let write = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await.map_err(StoreError::db("opening the database"))?;
        crate::prepare_schema(&MIGRATOR, &write, schema).await?;
        let read = SqlitePoolOptions::new().max_connections(4).connect_with(opts.read_only(true)).await.map_err(StoreError::db("opening the database"))?;
        let writer = Writer::open(path, fsync_commits)?;
        private_files(path);
        let readers = Arc::new(crate::sqlite_load::Readers::new(path));
        Ok(SqliteStore { write, read, writer, path: path.to_owned(), readers, _temp: None })
    }

    /// A private throwaway database for tests: a temporary file (the writer thread and the
    /// readers need to share it), deleted when the store is dropped.
    pub async fn open_temporary() -> Result<SqliteStore> {
        let path = std::env::temp_dir().join(format!("hodei-test-{}.db", uuid::Uuid::new_v4()));
        let mut store = SqliteStore::open(&path).await?;
        store._temp = Some(TempDb(path));
        Ok(store)
    }
}

/// The database holds every tenant's job specs (their `env` too): readable by this user only.
/// SQLite gives the WAL and shared-memory files it creates later the database file's mode.
fn private_files(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

/// What start-up loads: jobs not ended, and failed ones that wait for a retry.
const LIVE_JOBS: &str = concat!(" WHERE ", live_jobs!(), " AND (state != 'failed' OR next_retry_at IS NOT NULL)");

fn live_jobs_query() -> String {
    format!("SELECT {} FROM job_rows{LIVE_JOBS}", JobCol::list())
}

/// A cost query's days, tenant, pool and visible tenants (after `WHERE day >= `); false when
/// no tenant is visible (nothing to read).
fn push_cost_scope(qb: &mut QueryBuilder<Sqlite>, q: &crate::CostQuery) -> bool {
    qb.push_bind(q.from_day).push(" AND day <= ").push_bind(q.to_day);
    if let Some(t) = &q.tenant {
        qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
    }
    if let Some(p) = &q.pool {
        qb.push(" AND pool_id = ").push_bind(p.as_str().to_owned());
    }
    push_visible(qb, q.visible.as_deref())
}

/// ` AND tenant_id IN (…)` for a caller who sees only some tenants; `false` when it sees none
/// (the query would find nothing).
fn push_visible(qb: &mut QueryBuilder<Sqlite>, visible: Option<&[TenantId]>) -> bool {
    let Some(visible) = visible else { return true };
    if visible.is_empty() {
        return false;
    }
    qb.push(" AND tenant_id IN (");
    let mut sep = qb.separated(", ");
    for t in visible {
        sep.push_bind(t.as_str().to_owned());
    }
    qb.push(")");
    true
}

/// ` AND {column} IN (…)` unless `values` is empty.
fn push_in(qb: &mut QueryBuilder<Sqlite>, column: &str, values: impl ExactSizeIterator<Item = &'static str>) {
    if values.len() == 0 {
        return;
    }
    qb.push(format!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v);
    }
    qb.push(")");
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(StoreError::db("pinging the database"))?;
        Ok(())
    }

    async fn schema_is_current(&self) -> Result<bool> {
        crate::schema_is_current(&MIGRATOR, &self.read).await
    }

    async fn create_tenant(&self, t: &Tenant) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO tenants (id, name, email, tier, weight, status, labels, created_at, updated_at, version, \
             quota_cpu_m, quota_memory_mb, quota_gpu, quota_max_concurrent_jobs, quota_max_queued_jobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(&t.email)
        .bind(t.tier.as_str())
        .bind(t.weight.map(i64::from))
        .bind(t.status.as_str())
        .bind(json_map(&t.labels))
        .bind(ms(t.created_at))
        .bind(ms(t.updated_at))
        .bind(t.version)
        .bind(t.quota.resources.cpu_m.get())
        .bind(t.quota.resources.memory_mb.get())
        .bind(t.quota.resources.gpu.get())
        .bind(t.quota.max_concurrent_jobs)
        .bind(t.quota.max_queued_jobs)
        .execute(&self.write)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("tenant {}", t.id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a tenant")),
        }
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row =
            sqlx::query("SELECT * FROM tenants WHERE id = ?").bind(id.as_str()).fetch_optional(&self.read).await.map_err(StoreError::db("reading a tenant"))?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY id").fetch_all(&self.read).await.map_err(StoreError::db("listing tenants"))?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let r = sqlx::query(
            "UPDATE tenants SET name = ?, email = ?, tier = ?, weight = ?, status = ?, labels = ?, updated_at = ?, version = ?, \
             quota_cpu_m = ?, quota_memory_mb = ?, quota_gpu = ?, quota_max_concurrent_jobs = ?, quota_max_queued_jobs = ? WHERE id = ? AND version = ?",
        )
        .bind(&t.name)
        .bind(&t.email)
        .bind(t.tier.as_str())
        .bind(t.weight.map(i64::from))
        .bind(t.status.as_str())
        .bind(json_map(&t.labels))
        .bind(ms(t.updated_at))
        .bind(t.version)
        .bind(t.quota.resources.cpu_m.get())
        .bind(t.quota.resources.memory_mb.get())
        .bind(t.quota.resources.gpu.get())
        .bind(t.quota.max_concurrent_jobs)
        .bind(t.quota.max_queued_jobs)
        .bind(t.id.as_str())
        .bind(t.version - 1)
        .execute(&self.write)
        .await
        .map_err(StoreError::db("updating a tenant"))?;
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("tenant {}", t.id) }) }
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<bool> {
        // IMMEDIATE: it reads, then writes; a deferred transaction could not take the write lock
        // after the writer thread committed in between (SQLITE_BUSY_SNAPSHOT, not retried).
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::db("deleting a tenant"))?;
        sqlx::query("DELETE FROM burst_sessions WHERE tenant_id = ?").bind(id.as_str()).execute(&mut *tx).await.map_err(StoreError::db("deleting a tenant"))?;
        let r = sqlx::query("DELETE FROM tenants WHERE id = ?").bind(id.as_str()).execute(&mut *tx).await.map_err(StoreError::db("deleting a tenant"))?;
        tx.commit().await.map_err(StoreError::db("deleting a tenant"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn create_burst(&self, b: &BurstSession) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO burst_sessions (id, tenant_id, state, requested_cpu_m, requested_memory_mb, requested_gpu, requested_concurrent_jobs, \
             duration_minutes, reason, requested_by, decided_by, created_at, activated_at, expires_at, ended_at, cooldown_until, version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(b.id.as_uuid())
        .bind(b.tenant_id.as_str())
        .bind(b.state.as_str())
        .bind(b.requested.cpu_m.get())
        .bind(b.requested.memory_mb.get())
        .bind(b.requested.gpu.get())
        .bind(b.requested_concurrent_jobs)
        .bind(b.duration_minutes)
        .bind(&b.reason)
        .bind(&b.requested_by)
        .bind(&b.decided_by)
        .bind(ms(b.created_at))
        .bind(b.activated_at.map(ms))
        .bind(b.expires_at.map(ms))
        .bind(b.ended_at.map(ms))
        .bind(b.cooldown_until.map(ms))
        .bind(b.version)
        .execute(&self.write)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("an open burst session of tenant {}", b.tenant_id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a burst session")),
        }
    }

    async fn update_burst(&self, b: &BurstSession) -> Result<()> {
        let r = sqlx::query(
            "UPDATE burst_sessions SET state = ?, decided_by = ?, activated_at = ?, expires_at = ?, ended_at = ?, cooldown_until = ?, version = ? \
             WHERE id = ? AND version = ?",
        )
        .bind(b.state.as_str())
        .bind(&b.decided_by)
        .bind(b.activated_at.map(ms))
        .bind(b.expires_at.map(ms))
        .bind(b.ended_at.map(ms))
        .bind(b.cooldown_until.map(ms))
        .bind(b.version)
        .bind(b.id.as_uuid())
        .bind(b.version - 1)
        .execute(&self.write)
        .await
        .map_err(StoreError::db("updating a burst session"))?;
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("burst session {}", b.id) }) }
    }

    async fn get_burst(&self, id: BurstId) -> Result<Option<BurstSession>> {
        let row = sqlx::query("SELECT * FROM burst_sessions WHERE id = ?")
            .bind(id.as_uuid())
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db("reading a burst session"))?;
        row.as_ref().map(burst_from_row).transpose()
    }

    async fn list_bursts(&self, f: &BurstFilter) -> Result<Vec<BurstSession>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM burst_sessions WHERE 1 = 1");
        if let Some(t) = &f.tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, f.visible.as_deref()) {
            return Ok(Vec::new());
        }
        push_in(&mut qb, "state", f.states.iter().map(|s| s.as_str()));
        if let Some(c) = f.before {
            qb.push(" AND id < ").push_bind(c.as_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing burst sessions"))?;
        rows.iter().map(burst_from_row).collect()
    }

    async fn count_live_jobs(&self, tenant: &TenantId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE tenant_id = ? AND state IN ('pending', 'held', 'scheduled', 'running')")
            .bind(tenant.as_str())
            .fetch_one(&self.read)
            .await
            .map_err(StoreError::db("counting live jobs"))?;
        Ok(n.max(0) as u64)
    }

    async fn upsert_pool(&self, p: &Pool, join_token_hash: Option<&str>) -> Result<()> {
        pool_row(
            concat!(
                insert_pool!(),
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, worker_cpu_m = excluded.worker_cpu_m, worker_memory_mb = excluded.worker_memory_mb, \
                 worker_gpu = excluded.worker_gpu, worker_slots = excluded.worker_slots, min_size = excluded.min_size, max_size = excluded.max_size, \
                 labels = excluded.labels, managed_by = excluded.managed_by, state = excluded.state, state_reason = excluded.state_reason, \
                 auto_scaling_enabled = excluded.auto_scaling_enabled, idle_timeout_ms = excluded.idle_timeout_ms, scaling_policies = excluded.scaling_policies, \
                 allowed_tenants = excluded.allowed_tenants, \
                 join_token_hash = COALESCE(?, pools.join_token_hash), updated_at = excluded.updated_at, version = pools.version + 1"
            ),
            p,
            join_token_hash,
        )
        .bind(join_token_hash)
        .execute(&self.write)
        .await
        .map_err(StoreError::db("writing a pool"))?;
        Ok(())
    }

    async fn create_pool(&self, p: &Pool, join_token_hash: &str) -> Result<()> {
        match pool_row(insert_pool!(), p, Some(join_token_hash)).execute(&self.write).await {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("pool {}", p.id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a pool")),
        }
    }

    async fn get_pool(&self, id: &PoolId) -> Result<Option<(Pool, String)>> {
        let row =
            sqlx::query("SELECT * FROM pools WHERE id = ?").bind(id.as_str()).fetch_optional(&self.read).await.map_err(StoreError::db("reading a pool"))?;
        row.as_ref().map(pool_from_row).transpose()
    }

    async fn set_pool_join_token(&self, id: &PoolId, join_token_hash: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE pools SET join_token_hash = ? WHERE id = ?")
            .bind(join_token_hash)
            .bind(id.as_str())
            .execute(&self.write)
            .await
            .map_err(StoreError::db("rotating a pool's join token"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_pools(&self) -> Result<Vec<Pool>> {
        let rows = sqlx::query("SELECT * FROM pools ORDER BY id").fetch_all(&self.read).await.map_err(StoreError::db("listing pools"))?;
        rows.iter().map(|r| pool_from_row(r).map(|p| p.0)).collect()
    }

    async fn set_pool_size(&self, id: &PoolId, desired_size: u32, state: hodei_core::PoolState, state_reason: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE pools SET desired_size = ?, state = ?, state_reason = ? WHERE id = ? \
             AND state <> 'destroyed' AND (state <> 'draining' OR ? IN ('draining', 'destroyed'))",
        )
        .bind(i64::from(desired_size))
        .bind(state.as_str())
        .bind(state_reason)
        .bind(id.as_str())
        .bind(state.as_str())
        .execute(&self.write)
        .await
        .map_err(StoreError::db("resizing a pool"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn record_scaling_event(&self, e: &hodei_core::autoscale::Event) -> Result<i64> {
        let d = &e.decision;
        let q = sqlx::query(
            "INSERT INTO scaling_events (pool_id, at, source, policy_id, trigger_text, observed_value, from_size, to_size, decision, reason, actor) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.pool_id.as_str())
        .bind(ms(e.at))
        .bind(d.source.as_str())
        .bind(d.policy_id.as_deref())
        .bind(d.trigger.as_deref())
        .bind(d.observed)
        .bind(i64::from(d.from))
        .bind(i64::from(d.to))
        .bind(d.outcome.as_str())
        .bind(&d.reason)
        .bind(e.actor.as_deref());
        let r = q.execute(&self.write).await.map_err(StoreError::db("recording a scaling event"))?;
        Ok(r.last_insert_rowid())
    }

    async fn list_scaling_events(&self, f: &ScalingEventFilter) -> Result<Vec<hodei_core::autoscale::Event>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM scaling_events WHERE pool_id = ");
        qb.push_bind(f.pool.as_str().to_owned());
        if let Some(t) = f.since {
            qb.push(" AND at >= ").push_bind(ms(t));
        }
        if let Some(t) = f.until {
            qb.push(" AND at < ").push_bind(ms(t));
        }
        if let Some(o) = f.outcome {
            qb.push(" AND decision = ").push_bind(o.as_str());
        }
        if let Some(c) = f.before {
            qb.push(" AND id < ").push_bind(c);
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing scaling events"))?;
        rows.iter().map(scaling_event_from_row).collect()
    }

    async fn delete_scaling_events_before(&self, before: Timestamp) -> Result<u64> {
        let r = sqlx::query("DELETE FROM scaling_events WHERE at < ?")
            .bind(ms(before))
            .execute(&self.write)
            .await
            .map_err(StoreError::db("forgetting old scaling events"))?;
        Ok(r.rows_affected())
    }

    async fn cost_breakdown(&self, q: &crate::CostQuery) -> Result<Vec<crate::CostGroupRow>> {
        let key = match q.group_by {
            crate::CostGroup::Tenant => "tenant_id",
            crate::CostGroup::Pool => "pool_id",
            crate::CostGroup::Day => "CAST(day AS TEXT)",
            crate::CostGroup::JobName => "job_name",
        };
        // By job name: from the records (the rollups have no job dimension).
        let from = match q.group_by {
            crate::CostGroup::JobName => {
                "SUM(cost_micros) AS cost, SUM(cpu_m * billed_seconds) AS cpu, SUM(memory_mb * billed_seconds) AS mem, \
                 SUM(gpu * billed_seconds) AS gpu, COUNT(DISTINCT attempt_id) AS n FROM cost_records"
            }
            _ => {
                "SUM(cost_micros) AS cost, SUM(cpu_m_seconds) AS cpu, SUM(memory_mb_seconds) AS mem, SUM(gpu_seconds) AS gpu, \
                 SUM(attempts) AS n FROM cost_rollups"
            }
        };
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {key} AS k, {from} WHERE day >= "));
        if !push_cost_scope(&mut qb, q) {
            return Ok(Vec::new());
        }
        qb.push(" GROUP BY k ORDER BY cost DESC, k LIMIT ").push_bind(i64::from(crate::MAX_COST_GROUPS));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("reading cost rollups"))?;
        rows.iter().map(cost_group_from_row).collect()
    }

    fn stage(&self, c: Arc<Changes>) {
        self.writer.stage(c);
    }

    async fn apply(&self, c: Arc<Changes>) -> Result<()> {
        self.writer.apply(c).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM job_rows WHERE id = ?").bind(id.as_uuid()).fetch_optional(&self.read).await.map_err(StoreError::db("reading a job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        use rusqlite::types::Value;
        let Some((filter, params)) = job_filter(f) else { return Ok(Vec::new()) };
        let limit = Value::Integer(i64::from(f.limit.max(1)));
        let cols = JobCol::list();
        let live = !f.states.is_empty() && f.states.iter().all(|s| LIVE_STATES.contains(s));
        let (sql, params) = if live && f.states.len() > 1 {
            // The live index holds each state's jobs in id order: one page per state, merged,
            // reads `limit` rows per state. `state IN (…)` sorted every live job of those
            // states for each page (a million pending: the whole million).
            let mut parts = Vec::new();
            let mut all = Vec::new();
            for st in &f.states {
                parts.push(format!(
                    "SELECT * FROM (SELECT {cols} FROM job_rows WHERE state = '{}' AND {}{filter} ORDER BY id DESC LIMIT ?)",
                    st.as_str(),
                    live_jobs!()
                ));
                all.extend(params.iter().cloned());
                all.push(limit.clone());
            }
            all.push(limit);
            (format!("SELECT * FROM ({}) ORDER BY id DESC LIMIT ?", parts.join(" UNION ALL ")), all)
        } else {
            let mut states = String::new();
            if !f.states.is_empty() {
                let names: Vec<String> = f.states.iter().map(|s| format!("'{}'", s.as_str())).collect();
                states = format!(" AND state IN ({})", names.join(", "));
                if live {
                    // Repeating the partial index's predicate lets SQLite search it instead
                    // of walking every ended job.
                    states.push_str(concat!(" AND ", live_jobs!()));
                }
            }
            let mut params = params;
            params.push(limit);
            (format!("SELECT {cols} FROM job_rows WHERE 1 = 1{states}{filter} ORDER BY id DESC LIMIT ?"), params)
        };
        self.readers.jobs(sql, params, "listing jobs").await
    }

    async fn sla_counts(&self, since: Timestamp, tenant: Option<&TenantId>) -> Result<Vec<SlaCount>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT tenant_id, level, met, bin, SUM(n) AS n FROM sla_counts WHERE hour >= ");
        qb.push_bind(ms(since));
        if let Some(t) = tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        qb.push(" GROUP BY tenant_id, level, met, bin");
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db(SLA_COUNTS))?;
        rows.iter().map(sla_count_from_row).collect()
    }

    async fn forget_sla_counts(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sla_counts WHERE hour < ?").bind(ms(before)).execute(&self.write).await;
        Ok(done.map_err(StoreError::db("deleting old SLA counts"))?.rows_affected())
    }

    async fn setting_overrides(&self) -> Result<Option<String>> {
        let body = sqlx::query_scalar("SELECT body FROM setting_overrides WHERE id = 1").fetch_optional(&self.read).await;
        body.map_err(StoreError::db("reading settings overrides"))
    }

    async fn put_setting_overrides(&self, body: &str, at: Timestamp) -> Result<()> {
        sqlx::query("INSERT INTO setting_overrides (id, body, updated_at) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at")
            .bind(body)
            .bind(ms(at))
            .execute(&self.write)
            .await
            .map_err(StoreError::db("writing settings overrides"))?;
        Ok(())
    }

    async fn put_metric_samples(&self, samples: &[crate::MetricSample]) -> Result<()> {
        for chunk in crate::metric_history::unique(samples).chunks(crate::metric_history::INSERT_CHUNK) {
            crate::metric_history::insert(chunk).build().execute(&self.write).await.map_err(StoreError::db("writing metric samples"))?;
        }
        Ok(())
    }

    async fn downsample_metric_samples(&self, width_s: u32, from: Timestamp, to: Timestamp) -> Result<u64> {
        let done = sqlx::query(sqlx::AssertSqlSafe(crate::metric_history::downsample(width_s, from, to))).execute(&self.write).await;
        Ok(done.map_err(StoreError::db("downsampling metric samples"))?.rows_affected())
    }

    async fn last_metric_sample(&self, resolution_s: u32) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(crate::metric_history::last(resolution_s)))
            .fetch_one(&self.read)
            .await
            .map_err(StoreError::db("reading metric samples"))?;
        Ok(at.map(Timestamp::from_millis))
    }

    async fn metric_history(&self, q: &crate::HistoryQuery) -> Result<Vec<crate::HistorySeries>> {
        let rows = crate::metric_history::history(q).build().fetch_all(&self.read).await.map_err(StoreError::db("reading metric history"))?;
        let points = crate::metric_history::decode(&rows).map_err(StoreError::db("reading metric history"))?;
        Ok(crate::metric_history::series(q, points))
    }

    async fn forget_metric_samples(&self, resolution_s: u32, before: Timestamp) -> Result<u64> {
        let done = sqlx::query(sqlx::AssertSqlSafe(crate::metric_history::forget(resolution_s, before))).execute(&self.write).await;
        Ok(done.map_err(StoreError::db("deleting old metric samples"))?.rows_affected())
    }

    async fn forget_cost_records(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM cost_records WHERE end_at < ?").bind(ms(before)).execute(&self.write).await;
        Ok(done.map_err(StoreError::db("deleting old cost records"))?.rows_affected())
    }

    async fn top_cost_jobs(&self, q: &crate::CostQuery, limit: u32) -> Result<Vec<crate::JobCost>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT job_id, MAX(job_name) AS job_name, MAX(tenant_id) AS tenant_id, SUM(cost_micros) AS cost FROM cost_records WHERE day >= ",
        );
        if !push_cost_scope(&mut qb, q) {
            return Ok(Vec::new());
        }
        qb.push(" GROUP BY job_id ORDER BY cost DESC, job_id LIMIT ").push_bind(i64::from(limit));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("reading job costs"))?;
        rows.iter().map(job_cost_from_row).collect()
    }

    async fn put_cost_report(&self, r: &crate::StoredReport) -> Result<()> {
        sqlx::query("INSERT INTO cost_reports (id, tenant_id, created_by, created_at, body) VALUES (?, ?, ?, ?, ?)")
            .bind(r.id)
            .bind(r.tenant.as_ref().map(|t| t.as_str().to_owned()))
            .bind(&r.created_by)
            .bind(ms(r.created_at))
            .bind(&r.body)
            .execute(&self.write)
            .await
            .map_err(StoreError::db("writing a cost report"))?;
        Ok(())
    }

    async fn get_cost_report(&self, id: uuid::Uuid) -> Result<Option<crate::StoredReport>> {
        let row = sqlx::query("SELECT * FROM cost_reports WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db("reading a cost report"))?;
        row.as_ref().map(report_from_row).transpose()
    }

    async fn list_cost_reports(
        &self,
        tenant: Option<&TenantId>,
        visible: Option<&[TenantId]>,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<crate::StoredReport>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM cost_reports WHERE 1 = 1");
        if let Some(t) = tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if visible.is_some() && !push_visible(&mut qb, visible) {
            return Ok(Vec::new());
        }
        if let Some(b) = before {
            qb.push(" AND id < ").push_bind(b);
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing cost reports"))?;
        rows.iter().map(report_from_row).collect()
    }

    async fn put_usage(&self, usage: &[crate::AttemptUsage]) -> Result<()> {
        for chunk in usage.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO attempt_usage (attempt_id, step_ms, points, summary, updated_at) ");
            qb.push_values(chunk, |mut b, u| {
                b.push_bind(u.attempt.as_uuid())
                    .push_bind(u.series.step_ms as i64)
                    .push_bind(series_text(&u.series))
                    .push_bind(u.summary.as_ref().map(summary_text))
                    .push_bind(ms(u.updated_at));
            });
            qb.push(
                " ON CONFLICT (attempt_id) DO UPDATE SET step_ms = excluded.step_ms, points = excluded.points, summary = excluded.summary, \
                 updated_at = excluded.updated_at",
            );
            qb.build().execute(&self.write).await.map_err(StoreError::db("writing usage"))?;
        }
        Ok(())
    }

    async fn attempt_usage(&self, attempts: &[hodei_core::AttemptId]) -> Result<Vec<crate::AttemptUsage>> {
        let mut out = Vec::new();
        for chunk in attempts.chunks(500) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM attempt_usage WHERE attempt_id IN (");
            let mut sep = qb.separated(", ");
            for a in chunk {
                sep.push_bind(a.as_uuid());
            }
            qb.push(")");
            for r in qb.build().fetch_all(&self.read).await.map_err(StoreError::db("reading usage"))? {
                out.push(usage_from_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn forget_usage(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM attempt_usage WHERE updated_at < ?").bind(ms(before)).execute(&self.write).await;
        Ok(done.map_err(StoreError::db("deleting old usage"))?.rows_affected())
    }

    async fn usage_runs(&self, since: Timestamp, tenant: Option<&TenantId>, per_name: u32, limit: u32) -> Result<Vec<crate::UsageRun>> {
        let sql = USAGE_RUNS
            .replace("{since}", "?")
            .replace("{tenant}", if tenant.is_some() { "j.tenant_id = ?" } else { "1 = 1" })
            .replace("{per_name}", &per_name.to_string())
            .replace("{limit}", &limit.to_string());
        // Only integers and fixed text are spliced in; values are bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(since));
        if let Some(t) = tenant {
            q = q.bind(t.as_str());
        }
        q.fetch_all(&self.read).await.map_err(StoreError::db("reading usage"))?.iter().map(usage_run_from_row).collect()
    }

    async fn raise_alert(&self, a: &hodei_core::alert::Alert) -> Result<bool> {
        let r = sqlx::query("INSERT INTO alerts (id, kind, severity, tenant_id, scope, dedup_key, value, message, state, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING")
            .bind(a.id.as_uuid())
            .bind(&a.kind)
            .bind(&a.severity)
            .bind(a.tenant.as_ref().map(|t| t.as_str().to_owned()))
            .bind(&a.scope)
            .bind(&a.dedup_key)
            .bind(a.value)
            .bind(&a.message)
            .bind(a.state.as_str())
            .bind(ms(a.fired_at))
            .execute(&self.write)
            .await
            .map_err(StoreError::db("raising an alert"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_alerts(&self, f: &crate::AlertFilter) -> Result<Vec<hodei_core::alert::Alert>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM alerts WHERE 1 = 1");
        if let Some(t) = &f.tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, f.visible.as_deref()) {
            return Ok(Vec::new());
        }
        if let Some(st) = f.state {
            qb.push(" AND state = ").push_bind(st.as_str());
        }
        if let Some(k) = &f.kind {
            qb.push(" AND kind = ").push_bind(k.clone());
        }
        if let Some(b) = f.before {
            qb.push(" AND id < ").push_bind(b.as_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn get_alert(&self, id: hodei_core::AlertId) -> Result<Option<hodei_core::alert::Alert>> {
        let row =
            sqlx::query("SELECT * FROM alerts WHERE id = ?").bind(id.as_uuid()).fetch_optional(&self.read).await.map_err(StoreError::db("reading an alert"))?;
        row.as_ref().map(alert_from_row).transpose()
    }

    async fn ack_alert(&self, id: hodei_core::AlertId, by: &str, at: Timestamp) -> Result<bool> {
        let r = sqlx::query("UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ? WHERE id = ? AND state = 'firing'")
            .bind(ms(at))
            .bind(by)
            .bind(id.as_uuid())
            .execute(&self.write)
            .await
            .map_err(StoreError::db("acknowledging an alert"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn resolve_alerts(&self, scope: &str, still: &[String], at: Timestamp) -> Result<u64> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE alerts SET state = 'resolved', resolved_at = ");
        qb.push_bind(ms(at)).push(" WHERE scope = ").push_bind(scope.to_owned()).push(" AND state != 'resolved'");
        for k in still {
            qb.push(" AND dedup_key != ").push_bind(k.clone());
        }
        let r = qb.build().execute(&self.write).await.map_err(StoreError::db("resolving alerts"))?;
        Ok(r.rows_affected())
    }

    async fn count_open_alerts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, severity, COUNT(*) AS n FROM alerts WHERE state != 'resolved' GROUP BY kind, severity")
            .fetch_all(&self.read)
            .await
            .map_err(StoreError::db("counting alerts"))?;
        let g = |e: sqlx::Error| StoreError::Db { doing: "counting alerts", source: e };
        rows.iter()
            .map(|row| {
                Ok((sqlx::Row::try_get(row, "kind").map_err(g)?, sqlx::Row::try_get(row, "severity").map_err(g)?, sqlx::Row::try_get(row, "n").map_err(g)?))
            })
            .collect()
    }

    async fn create_budget(&self, b: &hodei_core::budget::Budget) -> Result<()> {
        sqlx::query("INSERT INTO budgets (id, tenant_id, amount_micros, period, thresholds_pct, on_exhausted, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(b.id.as_uuid())
            .bind(b.tenant.as_str())
            .bind(b.amount_micros)
            .bind(b.period.as_str())
            .bind(json_thresholds(&b.thresholds_pct))
            .bind(b.on_exhausted.as_str())
            .bind(ms(b.created_at))
            .bind(ms(b.updated_at))
            .bind(b.version)
            .execute(&self.write)
            .await
            .map_err(StoreError::db("creating a budget"))?;
        Ok(())
    }

    async fn update_budget(&self, b: &hodei_core::budget::Budget) -> Result<()> {
        let r = sqlx::query(
            "UPDATE budgets SET amount_micros = ?, period = ?, thresholds_pct = ?, on_exhausted = ?, updated_at = ?, version = ? WHERE id = ? AND version = ?",
        )
        .bind(b.amount_micros)
        .bind(b.period.as_str())
        .bind(json_thresholds(&b.thresholds_pct))
        .bind(b.on_exhausted.as_str())
        .bind(ms(b.updated_at))
        .bind(b.version)
        .bind(b.id.as_uuid())
        .bind(b.version - 1)
        .execute(&self.write)
        .await
        .map_err(StoreError::db("updating a budget"))?;
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("budget {}", b.id) }) }
    }

    async fn get_budget(&self, id: hodei_core::BudgetId) -> Result<Option<hodei_core::budget::Budget>> {
        let row = sqlx::query("SELECT * FROM budgets WHERE id = ?")
            .bind(id.as_uuid())
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db("reading a budget"))?;
        row.as_ref().map(budget_from_row).transpose()
    }

    async fn list_budgets(&self, tenant: Option<&TenantId>, visible: Option<&[TenantId]>) -> Result<Vec<hodei_core::budget::Budget>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM budgets WHERE 1 = 1");
        if let Some(t) = tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, visible) {
            return Ok(Vec::new());
        }
        qb.push(" ORDER BY created_at, id LIMIT ").push_bind(i64::from(crate::MAX_BUDGETS));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing budgets"))?;
        rows.iter().map(budget_from_row).collect()
    }

    async fn delete_budget(&self, id: hodei_core::BudgetId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM budgets WHERE id = ?").bind(id.as_uuid()).execute(&self.write).await.map_err(StoreError::db("deleting a budget"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn add_rate_version(&self, r: &crate::StoredRates) -> Result<()> {
        let rates = &r.version.rates;
        let done = sqlx::query("INSERT INTO rate_versions (effective_from, rate_cpu, rate_memory, rate_gpu, source, created_by) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(ms(r.version.effective_from))
            .bind(rates.cpu_core_hour)
            .bind(rates.memory_gib_hour)
            .bind(rates.gpu_hour)
            .bind(&r.source)
            .bind(&r.created_by)
            .execute(&self.write)
            .await;
        match done {
            Err(e) if crate::identity::is_unique_violation(&e) => {
                Err(StoreError::AlreadyExists { what: format!("a rate version from {}", r.version.effective_from) })
            }
            r => r.map(|_| ()).map_err(StoreError::db("adding a rate version")),
        }
    }

    async fn list_rate_versions(&self) -> Result<Vec<crate::StoredRates>> {
        let rows = sqlx::query("SELECT * FROM (SELECT * FROM rate_versions ORDER BY effective_from DESC LIMIT ?) AS newest ORDER BY effective_from")
            .bind(i64::from(crate::MAX_RATE_VERSIONS))
            .fetch_all(&self.read)
            .await
            .map_err(StoreError::db("listing rate versions"))?;
        rows.iter().map(rate_version_from_row).collect()
    }

    async fn sla_breaches(&self, f: &BreachFilter) -> Result<Vec<Job>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM job_rows WHERE sla_breached_at IS NOT NULL");
        if let Some(t) = &f.tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, f.visible.as_deref()) {
            return Ok(Vec::new());
        }
        if let Some(l) = f.level {
            qb.push(" AND sla = ").push_bind(l.as_str());
        }
        if let Some(since) = f.since {
            qb.push(" AND sla_breached_at >= ").push_bind(ms(since));
        }
        qb.push(" ORDER BY sla_breached_at DESC, id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing SLA breaches"))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn list_attempts(&self, job: JobId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE job_id = ? ORDER BY number")
            .bind(job.as_uuid())
            .fetch_all(&self.read)
            .await
            .map_err(StoreError::db("listing attempts"))?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn job_costs(&self, jobs: &[JobId]) -> Result<Vec<(JobId, i64)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT job_id, SUM(cost_micros) AS cost FROM attempts WHERE cost_micros != 0 AND job_id IN (");
        let mut sep = qb.separated(", ");
        for j in jobs {
            sep.push_bind(j.as_uuid());
        }
        qb.push(") GROUP BY job_id");
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("summing job costs"))?;
        let g = |e: sqlx::Error| StoreError::Db { doing: "summing job costs", source: e };
        rows.iter().map(|r| Ok((JobId::from_uuid(sqlx::Row::try_get(r, "job_id").map_err(g)?), sqlx::Row::try_get(r, "cost").map_err(g)?))).collect()
    }

    async fn list_events(&self, job: JobId) -> Result<Vec<JobEvent>> {
        const D: &str = "listing job events";
        // The first transition is stored on the job's row (see the migration).
        let first = sqlx::query("SELECT submitted_at, created_state, created_reason, submitted_by FROM jobs WHERE id = ?")
            .bind(job.as_uuid())
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db(D))?;
        let Some(first) = first else { return Ok(Vec::new()) };
        let mut events = vec![created_event(job, &first)?];
        let rows =
            sqlx::query("SELECT * FROM job_events WHERE job_id = ? ORDER BY seq").bind(job.as_uuid()).fetch_all(&self.read).await.map_err(StoreError::db(D))?;
        for r in &rows {
            events.push(event_from_row(job, r)?);
        }
        Ok(events)
    }

    async fn delete_ended_jobs(&self, before: Timestamp, limit: u32) -> Result<Purged> {
        const D: &str = "deleting ended jobs";
        let db = StoreError::db(D);
        // IMMEDIATE, as for a tenant: under a steady stream of scheduler commits a deferred one
        // failed at its first DELETE every time (found by bench/soak.sh).
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        // Jobs of their own (uses the partial index `jobs_finished` of migration 0011).
        let mut ids: Vec<uuid::Uuid> = sqlx::query_scalar(concat!(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? AND array_id IS NULL AND ",
            ended!(""),
            " ORDER BY finished_at LIMIT ?"
        ))
        .bind(ms(before))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(D))?;
        // Arrays whose every member ended before `before`, in parts.
        let mut emptied = Vec::new();
        if (ids.len() as u32) < limit {
            let arrays: Vec<uuid::Uuid> = sqlx::query_scalar(concat!(
                "SELECT a.id FROM job_arrays a WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.array_id = a.id AND NOT (j.finished_at IS NOT NULL AND j.finished_at < ? AND ",
                ended!("j."),
                ")) LIMIT 16"
            ))
            .bind(ms(before))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(D))?;
            for a in arrays {
                let room = limit.saturating_sub(ids.len() as u32);
                if room == 0 {
                    break;
                }
                let members: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE array_id = ? LIMIT ?")
                    .bind(a)
                    .bind(room)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::db(D))?;
                if (members.len() as u32) < room {
                    emptied.push(a);
                }
                ids.extend(members);
            }
        }
        let mut purged = Purged { jobs: ids.len() as u64, attempts: Vec::new() };
        for chunk in ids.chunks(500) {
            let in_list = |head: &str| {
                let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(head);
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                list.push_unseparated(")");
                qb
            };
            let attempts: Vec<uuid::Uuid> =
                in_list("SELECT id FROM attempts WHERE job_id IN (").build_query_scalar().fetch_all(&mut *tx).await.map_err(StoreError::db(D))?;
            purged.attempts.extend(attempts.into_iter().map(hodei_core::AttemptId::from_uuid));
            for head in ["DELETE FROM job_events WHERE job_id IN (", "DELETE FROM attempts WHERE job_id IN (", "DELETE FROM jobs WHERE id IN ("] {
                in_list(head).build().execute(&mut *tx).await.map_err(StoreError::db(D))?;
            }
        }
        for a in emptied {
            sqlx::query("DELETE FROM job_arrays WHERE id = ? AND NOT EXISTS (SELECT 1 FROM jobs WHERE array_id = ?)")
                .bind(a)
                .bind(a)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(D))?;
        }
        tx.commit().await.map_err(StoreError::db(D))?;
        Ok(purged)
    }

    async fn load_live(&self) -> Result<LiveState> {
        let path = self.path.clone();
        let jobs = tokio::task::spawn_blocking(move || crate::sqlite_load::jobs(&path, &format!("SELECT count(*) FROM jobs{LIVE_JOBS}"), &live_jobs_query()));
        let workers =
            sqlx::query("SELECT * FROM workers WHERE state NOT IN ('terminated')").fetch_all(&self.read).await.map_err(StoreError::db("loading workers"))?;
        let attempts = sqlx::query(concat!("SELECT * FROM attempts WHERE ", live_attempts!()))
            .fetch_all(&self.read)
            .await
            .map_err(StoreError::db("loading live attempts"))?;
        let keys = sqlx::query("SELECT * FROM idempotency_keys").fetch_all(&self.read).await.map_err(StoreError::db("loading idempotency keys"))?;
        let jobs = jobs.await.map_err(|e| StoreError::Corrupt { doing: "loading live jobs", detail: e.to_string() })??;
        Ok(LiveState {
            jobs,
            workers: workers.iter().map(worker_from_row).collect::<Result<_>>()?,
            attempts: attempts.iter().map(attempt_from_row).collect::<Result<_>>()?,
            idempotency: keys.iter().map(idempotency_from_row).collect::<Result<_>>()?,
        })
    }

    async fn register_worker(&self, w: &Worker, session_token_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, instance_name, pool_id, state, capabilities, cpu_m, memory_mb, gpu, slots, labels, version, session_token_hash, registered_at, last_heartbeat_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(w.id.as_uuid())
        .bind(&w.instance_name)
        .bind(w.pool_id.as_str())
        .bind(w.state.as_str())
        .bind(json_vec(&w.capabilities))
        .bind(i64::from(w.resources.cpu_m.get()))
        .bind(i64::from(w.resources.memory_mb.get()))
        .bind(i64::from(w.resources.gpu.get()))
        .bind(i64::from(w.slots))
        .bind(json_map(&w.labels))
        .bind(&w.version)
        .bind(session_token_hash)
        .bind(ms(w.registered_at))
        .bind(ms(w.last_heartbeat_at))
        .execute(&self.write)
        .await
        .map_err(StoreError::db("registering a worker"))?;
        Ok(())
    }

    async fn worker_session_hash(&self, id: WorkerId) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT session_token_hash FROM workers WHERE id = ? AND state != 'terminated'")
            .bind(id.as_uuid())
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db("reading a worker session"))
    }

    async fn list_workers(&self, f: &WorkerFilter) -> Result<Vec<Worker>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM workers WHERE 1 = 1");
        if let Some(p) = &f.pool {
            qb.push(" AND pool_id = ").push_bind(p.as_str().to_owned());
        }
        for term in &f.labels {
            match term {
                crate::LabelTerm::Eq(k, v) => qb.push(" AND json_extract(labels, ").push_bind(json_path(k)).push(") = ").push_bind(v.clone()),
                crate::LabelTerm::Ne(k, v) => {
                    qb.push(" AND COALESCE(json_extract(labels, ").push_bind(json_path(k)).push(") != ").push_bind(v.clone()).push(", 1)")
                }
                crate::LabelTerm::Exists(k) => qb.push(" AND json_type(labels, ").push_bind(json_path(k)).push(") IS NOT NULL"),
                crate::LabelTerm::Missing(k) => qb.push(" AND json_type(labels, ").push_bind(json_path(k)).push(") IS NULL"),
            };
        }
        if !f.states.is_empty() {
            qb.push(" AND state IN (");
            let mut sep = qb.separated(", ");
            for st in &f.states {
                sep.push_bind(st.as_str());
            }
            qb.push(")");
        }
        if let Some(c) = f.before {
            qb.push(" AND id < ").push_bind(c.as_uuid());
        }
        // Ids are time-ordered (v7): newest registration first.
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await.map_err(StoreError::db("listing workers"))?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn get_worker(&self, id: WorkerId) -> Result<Option<Worker>> {
        let row = sqlx::query("SELECT * FROM workers WHERE id = ?")
            .bind(id.as_uuid())
            .fetch_optional(&self.read)
            .await
            .map_err(StoreError::db("reading a worker"))?;
        row.as_ref().map(worker_from_row).transpose()
    }
}

crate::identity::identity_methods!(crate::sqlite::SqliteStore, crate::identity::as_is, read, write);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_core::ArrayId;
    use hodei_core::spec::ArraySpec;
    use sqlx::Row;
    use uuid::Uuid;

    /// Retention deletes while the writer thread commits scheduler batches without pause: its
    /// transaction reads and then writes, which a deferred transaction cannot do once another
    /// connection committed in between (it failed every round under `bench/soak.sh`).
    #[tokio::test]
    async fn retention_deletes_while_the_scheduler_commits() {
        use hodei_core::sched::{SchedConfig, Scheduler};
        use hodei_core::spec::{JobSpecInput, SpecLimits};
        let store = std::sync::Arc::new(SqliteStore::open_temporary().await.unwrap());
        let spec = JobSpecInput { command: vec!["true".into()], ..Default::default() }.validate(&SpecLimits::default(), "").unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let job = move |n: u128| Job::new(JobId::from_uuid(Uuid::from_u128(n << 64)), tenant.clone(), spec.clone(), Timestamp::from_millis(n as i64));
        let mut s = Scheduler::new(SchedConfig::default());
        // The writer submits for as long as the deletes take (longer on a loaded machine): no
        // queue limit may stop it first.
        let roomy = hodei_core::Quota { max_queued_jobs: u32::MAX, ..hodei_core::Quota::DEFAULT };
        s.set_tenant(&TenantId::parse("t").unwrap(), hodei_core::TenantPolicy { quota: roomy, version: 1, ..Default::default() }, Timestamp::from_millis(0));
        for n in 1..=40 {
            s.submit(job(n), Timestamp::from_millis(1)).unwrap();
            s.cancel(JobId::from_uuid(Uuid::from_u128(n << 64)), hodei_core::job::Actor::Api, Timestamp::from_millis(2)).unwrap();
        }
        store.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
        let (busy, stop) = (store.clone(), std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let stopped = stop.clone();
        let writes = tokio::spawn(async move {
            let mut n = 1000;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                s.submit(job(n), Timestamp::from_millis(3)).unwrap();
                busy.apply(std::sync::Arc::new(s.take_changes())).await.unwrap();
            }
        });
        let mut deleted = 0;
        for _ in 0..40 {
            deleted += store.delete_ended_jobs(Timestamp::from_millis(10), 1).await.expect("deleting during scheduler commits").jobs;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writes.await.unwrap();
        assert_eq!(deleted, 40);
    }

    /// Start-up loads live jobs and attempts through their partial indexes: the queries repeat
    /// the indexes' predicates as SQLite requires (a scan of every ended job otherwise).
    #[tokio::test]
    async fn live_queries_use_the_partial_indexes() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let plan = |sql: &str| {
            let (read, sql) = (store.read.clone(), sql.to_owned());
            async move {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"))).fetch_all(&read).await.unwrap();
                rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("; ")
            }
        };
        let jobs = plan(&live_jobs_query()).await;
        assert!(jobs.contains("INDEX jobs_live"), "{jobs}");
        let attempts = plan(concat!("SELECT * FROM attempts WHERE ", live_attempts!())).await;
        assert!(attempts.contains("INDEX attempts_live"), "{attempts}");
        // A job list filtered on live states only (`jobs ls --state running`) searches it too.
        let listed = plan(concat!("SELECT * FROM job_rows WHERE 1 = 1 AND state IN ('running') AND ", live_jobs!(), " ORDER BY id DESC LIMIT 50")).await;
        assert!(listed.contains("INDEX jobs_live"), "{listed}");
    }

    /// Migration 0007 moves an array's spec out of its members' rows: jobs stored before it
    /// read back unchanged after it.
    #[tokio::test]
    async fn arrays_stored_before_migration_7_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).unwrap();
        for m in MIGRATOR.iter().filter(|m| m.version < 7) {
            std::fs::write(old.join(format!("{:04}_{}.sql", m.version, m.description.replace(' ', "_"))), m.sql.as_ref()).unwrap();
        }
        let path = dir.path().join("hodei.db");
        {
            let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
            sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
            let insert = "INSERT INTO jobs (id, tenant_id, name, command, env, cpu_m, memory_mb, gpu, timeout_ms, max_retries, priority, sla, preemptible, hold, \
                 labels, state, attempt_count, retries_left, lost_requeues, submitted_at, eligible_at, log_truncated, created_state, \
                 array_id, array_index, array_start, array_end, array_step) \
                 VALUES (?, 'acme', ?, ?, '{}', 100, 64, 0, 60000, 1, 'high', 'high', 0, 0, '{\"k\":\"v\"}', 'pending', 0, 1, 0, 5, 5, 0, 'pending', ?, ?, 0, 4, 2)";
            let array = Uuid::from_u128(9 << 80);
            for (n, name, command, member) in
                [(1u128, "own", r#"["true"]"#, None), (2, "arr", r#"["echo","x"]"#, Some(0)), (3, "arr", r#"["echo","x"]"#, Some(2))]
            {
                sqlx::query(insert)
                    .bind(Uuid::from_u128(n << 80))
                    .bind(name)
                    .bind(command)
                    .bind(member.map(|_| array))
                    .bind(member)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            // The own-spec job is not in an array: clear the range the statement set.
            sqlx::query("UPDATE jobs SET array_start = NULL, array_end = NULL, array_step = NULL WHERE array_id IS NULL").execute(&pool).await.unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let array = ArrayId::from_uuid(Uuid::from_u128(9 << 80));
        let own = store.get_job(JobId::from_uuid(Uuid::from_u128(1 << 80))).await.unwrap().unwrap();
        assert_eq!((own.spec.name.as_str(), own.spec.command.clone(), own.array, own.spec.array), ("own", vec!["true".to_owned()], None, None));
        let members = store.list_jobs(&JobFilter { array: Some(array), limit: 10, ..Default::default() }).await.unwrap();
        let got: Vec<_> =
            members.iter().map(|j| (j.id.as_uuid().as_u128() >> 80, j.array, j.spec.command.join(" "), j.spec.labels.clone(), j.spec.array)).collect();
        let spec = Some(ArraySpec { start: 0, end: 4, step: 2, max_parallel: None });
        let labels = std::collections::BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        assert_eq!(got, [(3, Some((array, 2)), "echo x".to_owned(), labels.clone(), spec), (2, Some((array, 0)), "echo x".to_owned(), labels, spec)]);
        let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT command FROM jobs ORDER BY id").fetch_all(&store.read).await.unwrap();
        assert_eq!(stored, [Some(r#"["true"]"#.to_owned()), None, None], "members keep no spec of their own");
    }

    /// The migration that counted the outcomes stored before it bins waits as the core does.
    #[tokio::test]
    async fn the_migrations_wait_bins_are_the_cores() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let sql = crate::testing::sla_bins_query(include_str!("../migrations/sqlite/0012_sla_counts.sql"));
        let got: Vec<(i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&store.read).await.unwrap();
        assert_eq!(got, crate::testing::sla_bins_expected());
    }

    /// Listing an array's jobs is a range of the primary key (the array's id bounds).
    #[tokio::test]
    async fn an_arrays_jobs_are_listed_through_a_primary_key_range() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let sql = "EXPLAIN QUERY PLAN SELECT * FROM job_rows WHERE 1 = 1 AND array_id = ?1 \
                   AND id BETWEEN (SELECT first_job_id FROM job_arrays WHERE id = ?1) AND (SELECT last_job_id FROM job_arrays WHERE id = ?1) ORDER BY id DESC LIMIT 50";
        let rows = sqlx::query(sql).bind(Uuid::nil()).fetch_all(&store.read).await.unwrap();
        let plan = rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("; ");
        assert!(plan.contains("SEARCH j USING PRIMARY KEY (id>? AND id<?)"), "{plan}");
    }
}
