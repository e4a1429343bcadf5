//! The PostgreSQL engine: the schema of the SQLite engine in PostgreSQL's types, read through
//! the same row mapping (`rows.rs`) and held to the same conformance suite.
//!
//! A scheduler batch is one transaction of a few statements: rows of one kind are sent as
//! column arrays and spread with `UNNEST`, so a 100 000-job submit is not 100 000 round trips.
//! Staged parts are kept in memory and written, with the batch that follows them, in that one
//! transaction. A server that schedules takes [`PgStore::lock_scheduler`], a session-level
//! advisory lock: a second server on the same database is refused instead of running the same
//! jobs again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hodei_core::ids::IdMap;
use hodei_core::sched::Changes;
use hodei_core::sla_tally::{SlaCount, SlaCountKey, count_outcomes};
use hodei_core::spec::JobSpec;
use hodei_core::{ArrayId, Attempt, BurstId, BurstSession, Job, JobEvent, JobId, JobState, Pool, PoolId, Tenant, TenantId, Timestamp, Worker, WorkerId};
use sqlx::Arguments;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::rows::*;
use crate::{BreachFilter, BurstFilter, JobFilter, LiveState, Purged, Result, ScalingEventFilter, Schema, Store, StoreError, WorkerFilter};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the advisory lock held by the server that runs the scheduler ("hodei" in ASCII).
const SCHEDULER_LOCK: i64 = 0x0068_6f64_6569;

/// How to connect: a `postgres://` URL and pool limits.
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub url: String,
    pub max_connections: u32,
    pub statement_timeout: Duration,
    pub schema: Schema,
}

pub struct PgStore {
    /// Reads and rare writes, bounded by `database.statement_timeout_ms`.
    pool: PgPool,
    /// Scheduler batches: not cut off by the statement timeout. The engine must get each one
    /// committed (or refused for a reason) before it can go on, and a large submit cut off
    /// after seconds of work would only come back bigger.
    writer: PgPool,
    connect: PgConnectOptions,
    /// Parts of the next batch (see `Store::stage`), written by the `apply` that follows.
    staged: Mutex<Vec<Arc<Changes>>>,
    /// The connection holding the scheduler lock, once taken.
    lock: tokio::sync::Mutex<Option<PgConnection>>,
    /// The scheduler epoch this store took with the lock (0: never took it, no guard).
    epoch: std::sync::atomic::AtomicI64,
    /// New job rows written since this store last had the job tables analyzed.
    unanalyzed: AtomicU64,
    analyzing: Arc<AtomicBool>,
}

/// Rows of new jobs after which this store refreshes the planner's statistics of the job tables
/// itself. Autovacuum does it a minute or so later; until then a plan made for a small table
/// can sort every row to list fifty (measured: 4 s for a page of a tenant's held jobs, just
/// after 1 000 000 were submitted, 0.15 ms once analyzed).
const ANALYZE_AFTER_ROWS: u64 = 10_000;

/// Live jobs: pending, held, scheduled, running, and failed with a retry to come.
macro_rules! live_jobs {
    () => {
        "state IN ('pending', 'held', 'scheduled', 'running', 'failed') AND (state != 'failed' OR next_retry_at IS NOT NULL)"
    };
}

impl PgStore {
    /// Connects and migrates the database.
    pub async fn open(o: &PgOptions) -> Result<PgStore> {
        let connect: PgConnectOptions = o.url.parse().map_err(StoreError::db("parsing database.url"))?;
        let timeout_ms = o.statement_timeout.as_millis().to_string();
        let connect = connect.options([("statement_timeout", timeout_ms.as_str())]);
        PgStore::open_with(connect, o.max_connections, o.schema).await
    }

    /// Connects with options already built (tests pass the `PG*` environment's).
    pub async fn open_with(connect: PgConnectOptions, max_connections: u32, schema: Schema) -> Result<PgStore> {
        // Every execution of a prepared statement is planned with its arguments. Otherwise,
        // after a few executions PostgreSQL may keep a generic plan made while a table was
        // small — a batch update by id as a scan of the whole table once it has grown (measured:
        // 48 ms per scheduler step at 225 000 jobs) — and it cannot size an `UNNEST` it cannot see.
        let connect = connect.options([("plan_cache_mode", "force_custom_plan")]);
        // Migrations and scheduler batches are not cut off by the statement timeout.
        let writer = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect.clone().options([("statement_timeout", "0")]))
            .await
            .map_err(StoreError::db("connecting to PostgreSQL"))?;
        crate::prepare_schema(&MIGRATOR, &writer, schema).await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect.clone())
            .await
            .map_err(StoreError::db("connecting to PostgreSQL"))?;
        Ok(PgStore {
            pool,
            writer,
            connect,
            staged: Mutex::new(Vec::new()),
            lock: tokio::sync::Mutex::new(None),
            epoch: Default::default(),
            unanalyzed: AtomicU64::new(0),
            analyzing: Arc::default(),
        })
    }

    /// Counts new job rows, and has the job tables analyzed in the background (one at a time)
    /// once [`ANALYZE_AFTER_ROWS`] have come since the last time.
    fn wrote_jobs(&self, rows: u64) {
        if rows == 0 || self.unanalyzed.fetch_add(rows, Ordering::Relaxed) + rows < ANALYZE_AFTER_ROWS {
            return;
        }
        if self.analyzing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.unanalyzed.store(0, Ordering::Relaxed);
        let (writer, analyzing) = (self.writer.clone(), self.analyzing.clone());
        tokio::spawn(async move {
            // ANALYZE takes no lock that writes wait for; it samples a bounded number of rows.
            if let Err(e) = sqlx::query("ANALYZE jobs, job_arrays").execute(&writer).await {
                tracing::warn!(error = %e, "cannot refresh the planner's statistics of the job tables");
            }
            analyzing.store(false, Ordering::Release);
        });
    }

    /// The live jobs, streamed and converted row by row in one snapshot (counted first, so the
    /// list is allocated once), an array's spec parsed once for all its members. Holding every
    /// row at once (`fetch_all`) took 6.9 s and left 1.7 KiB resident per job for 1 000 000.
    async fn load_live_jobs(&self) -> Result<Vec<Job>> {
        use futures::TryStreamExt;
        const D: &str = "loading live jobs";
        let mut tx = self.pool.begin().await.map_err(StoreError::db(D))?;
        for set in ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", "SET LOCAL statement_timeout = 0"] {
            sqlx::query(set).execute(&mut *tx).await.map_err(StoreError::db(D))?;
        }
        let count: i64 = sqlx::query_scalar(concat!("SELECT count(*) FROM jobs WHERE ", live_jobs!())).fetch_one(&mut *tx).await.map_err(StoreError::db(D))?;
        let mut jobs = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut specs = SharedSpecs::default();
        let mut rows = sqlx::query(concat!("SELECT * FROM job_rows WHERE ", live_jobs!())).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await.map_err(StoreError::db(D))? {
            jobs.push(specs.job(&row)?);
        }
        drop(rows);
        tx.commit().await.map_err(StoreError::db(D))?;
        // A server starting on many jobs plans its reads with fresh statistics.
        self.wrote_jobs(jobs.len() as u64);
        Ok(jobs)
    }

    /// Takes the scheduler's advisory lock on a connection of its own, held until the store is
    /// dropped, and starts a new scheduler epoch: from then on every scheduler batch of this
    /// store is refused once another server has taken the lock. `Ok(false)` when another
    /// server holds it.
    pub async fn lock_scheduler(&self) -> Result<bool> {
        let mut held = self.lock.lock().await;
        if held.is_some() {
            return Ok(true);
        }
        self.take_lock(&mut held).await
    }

    async fn take_lock(&self, held: &mut Option<PgConnection>) -> Result<bool> {
        let mut conn = PgConnection::connect_with(&self.connect).await.map_err(StoreError::db("connecting for the scheduler lock"))?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SCHEDULER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(StoreError::db("taking the scheduler lock"))?;
        if got {
            let epoch: i64 = sqlx::query_scalar("UPDATE scheduler_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch")
                .fetch_one(&mut conn)
                .await
                .map_err(StoreError::db("starting a scheduler epoch"))?;
            self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
            *held = Some(conn);
        }
        Ok(got)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn i64_of(v: u32) -> i64 {
    i64::from(v)
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One statement being built: data-modifying CTEs (PostgreSQL runs each of them, atomically,
/// with the statement) and their arguments, numbered as they are added.
#[derive(Default)]
struct Stmt {
    ctes: Vec<String>,
    args: PgArguments,
    n: usize,
    /// The first error encoding an argument, reported when the statement runs.
    bad: Option<String>,
}

impl Stmt {
    /// Adds an argument; returns its placeholder cast to `ty`.
    fn arg<'q, T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(&mut self, value: T, ty: &str) -> String {
        if let Err(e) = self.args.add(value) {
            self.bad.get_or_insert(e.to_string());
        }
        self.n += 1;
        format!("${}::{ty}", self.n)
    }

    fn cte(&mut self, sql: String) {
        self.ctes.push(format!("w{} AS ({sql})", self.ctes.len()));
    }

    /// Runs the statement. With an `epoch`, its main query divides by whether that epoch is
    /// still the current one: a stale leader's statement fails as a whole (division by zero,
    /// reported as `LeadershipLost`), its data-modifying parts included.
    async fn run(mut self, conn: &mut PgConnection, epoch: i64) -> Result<()> {
        if self.ctes.is_empty() {
            return Ok(());
        }
        if let Some(detail) = self.bad {
            return Err(StoreError::Write { doing: "encoding scheduler changes", detail });
        }
        let main = match epoch {
            0 => "SELECT 1".to_owned(),
            e => format!("SELECT 1 / (CASE WHEN epoch = {} THEN 1 ELSE 0 END) FROM scheduler_epoch WHERE id = 1", self.arg(e, "bigint")),
        };
        let sql = format!("WITH {} {main}", self.ctes.join(", "));
        match sqlx::query_with(sqlx::AssertSqlSafe(sql), self.args).execute(conn).await {
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("22012") => Err(StoreError::LeadershipLost { epoch }),
            r => r.map(|_| ()).map_err(StoreError::db("writing scheduler changes")),
        }
    }
}

/// Placeholders of column arrays, spread as rows: `UNNEST($1::uuid[], $2::text[], …)`.
fn unnest(cols: &[String]) -> String {
    format!("UNNEST({})", cols.join(", "))
}

/// A job's own state, one array per column, in the order of [`STATE_COLUMNS`].
#[derive(Default)]
struct StateCols {
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    state: Vec<&'static str>,
    state_reason: Vec<Option<String>>,
    attempt_count: Vec<i64>,
    current_attempt_id: Vec<Option<Uuid>>,
    retries_left: Vec<i64>,
    lost_requeues: Vec<i64>,
    exit_code: Vec<Option<i32>>,
    failure_reason: Vec<Option<&'static str>>,
    submitted_at: Vec<i64>,
    eligible_at: Vec<i64>,
    scheduled_at: Vec<Option<i64>>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    next_retry_at: Vec<Option<i64>>,
    cancel_requested_at: Vec<Option<i64>>,
    pool_id: Vec<Option<String>>,
    worker_id: Vec<Option<Uuid>>,
    log_truncated: Vec<bool>,
    sla_status: Vec<&'static str>,
    sla_waited_ms: Vec<i64>,
    sla_since: Vec<Option<i64>>,
    sla_breached_at: Vec<Option<i64>>,
    sla_wait_ms: Vec<Option<i64>>,
    sla_decided_at: Vec<Option<i64>>,
}

const STATE_COLUMNS: &str = "id, tenant_id, state, state_reason, attempt_count, current_attempt_id, retries_left, lost_requeues, exit_code, \
     failure_reason, submitted_at, eligible_at, scheduled_at, started_at, finished_at, next_retry_at, cancel_requested_at, pool_id, worker_id, \
     log_truncated, sla_status, sla_waited_ms, sla_since, sla_breached_at, sla_wait_ms, sla_decided_at";

impl StateCols {
    fn push(&mut self, j: &Job) {
        self.id.push(j.id.as_uuid());
        self.tenant_id.push(j.tenant.as_str().to_owned());
        self.state.push(j.state.as_str());
        self.state_reason.push(j.state_reason.clone());
        self.attempt_count.push(i64_of(j.attempt_count));
        self.current_attempt_id.push(j.current_attempt.map(|a| a.as_uuid()));
        self.retries_left.push(i64_of(j.retries_left));
        self.lost_requeues.push(i64_of(j.lost_requeues));
        self.exit_code.push(j.exit_code);
        self.failure_reason.push(j.failure_reason.map(|f| f.as_str()));
        self.submitted_at.push(ms(j.submitted_at));
        self.eligible_at.push(ms(j.eligible_at));
        self.scheduled_at.push(j.scheduled_at.map(ms));
        self.started_at.push(j.started_at.map(ms));
        self.finished_at.push(j.finished_at.map(ms));
        self.next_retry_at.push(j.next_retry_at.map(ms));
        self.cancel_requested_at.push(j.cancel_requested_at.map(ms));
        self.pool_id.push(j.pool_id.as_ref().map(|p| p.as_str().to_owned()));
        self.worker_id.push(j.worker_id.map(|w| w.as_uuid()));
        self.log_truncated.push(j.log_truncated);
        self.sla_status.push(j.sla.status.as_str());
        self.sla_waited_ms.push(j.sla.waited_ms as i64);
        self.sla_since.push(j.sla.since.map(ms));
        self.sla_breached_at.push(j.sla.breached_at.map(ms));
        self.sla_wait_ms.push(j.sla.wait_ms.map(|w| w as i64));
        self.sla_decided_at.push(j.sla.decided_at.map(ms));
    }

    /// The columns as arguments of `st`, in the order of [`STATE_COLUMNS`].
    fn args(self, st: &mut Stmt) -> Vec<String> {
        vec![
            st.arg(self.id, "uuid[]"),
            st.arg(self.tenant_id, "text[]"),
            st.arg(self.state, "text[]"),
            st.arg(self.state_reason, "text[]"),
            st.arg(self.attempt_count, "bigint[]"),
            st.arg(self.current_attempt_id, "uuid[]"),
            st.arg(self.retries_left, "bigint[]"),
            st.arg(self.lost_requeues, "bigint[]"),
            st.arg(self.exit_code, "integer[]"),
            st.arg(self.failure_reason, "text[]"),
            st.arg(self.submitted_at, "bigint[]"),
            st.arg(self.eligible_at, "bigint[]"),
            st.arg(self.scheduled_at, "bigint[]"),
            st.arg(self.started_at, "bigint[]"),
            st.arg(self.finished_at, "bigint[]"),
            st.arg(self.next_retry_at, "bigint[]"),
            st.arg(self.cancel_requested_at, "bigint[]"),
            st.arg(self.pool_id, "text[]"),
            st.arg(self.worker_id, "uuid[]"),
            st.arg(self.log_truncated, "boolean[]"),
            st.arg(self.sla_status, "text[]"),
            st.arg(self.sla_waited_ms, "bigint[]"),
            st.arg(self.sla_since, "bigint[]"),
            st.arg(self.sla_breached_at, "bigint[]"),
            st.arg(self.sla_wait_ms, "bigint[]"),
            st.arg(self.sla_decided_at, "bigint[]"),
        ]
    }
}

/// A spec, one array per column, in the order of [`SPEC_COLUMNS`].
#[derive(Default)]
struct SpecCols {
    name: Vec<String>,
    command: Vec<String>,
    env: Vec<String>,
    working_dir: Vec<Option<String>>,
    image: Vec<Option<String>>,
    cpu_m: Vec<i64>,
    memory_mb: Vec<i64>,
    gpu: Vec<i64>,
    timeout_ms: Vec<i64>,
    expected_duration_ms: Vec<Option<i64>>,
    max_retries: Vec<i64>,
    retry_backoff_ms: Vec<Option<i64>>,
    priority: Vec<&'static str>,
    sla: Vec<&'static str>,
    preemptible: Vec<bool>,
    hold: Vec<bool>,
    labels: Vec<String>,
    pool_selector: Vec<Option<String>>,
    submitted_by: Vec<Option<uuid::Uuid>>,
    depends_on: Vec<Option<String>>,
}

const SPEC_COLUMNS: &str = "name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, expected_duration_ms, max_retries, \
     retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, submitted_by, depends_on";

impl SpecCols {
    fn push(&mut self, s: &JobSpec) {
        self.name.push(s.name.clone());
        self.command.push(json_vec(&s.command));
        self.env.push(json_map(&s.env));
        self.working_dir.push(s.working_dir.clone());
        self.image.push(s.image.clone());
        self.cpu_m.push(i64_of(s.resources.cpu_m.get()));
        self.memory_mb.push(i64_of(s.resources.memory_mb.get()));
        self.gpu.push(i64_of(s.resources.gpu.get()));
        self.timeout_ms.push(dur_ms(s.timeout));
        self.expected_duration_ms.push(s.expected_duration.map(dur_ms));
        self.max_retries.push(i64_of(s.max_retries));
        self.retry_backoff_ms.push(s.retry_backoff.map(dur_ms));
        self.priority.push(s.priority.as_str());
        self.sla.push(s.sla.as_str());
        self.preemptible.push(s.preemptible);
        self.hold.push(s.hold);
        self.labels.push(json_map(&s.labels));
        self.pool_selector.push(selector_text(s));
        self.submitted_by.push(s.submitted_by.map(|p| p.as_uuid()));
        self.depends_on.push(depends_on_text(s));
    }

    /// The columns as arguments of `st`, in the order of [`SPEC_COLUMNS`].
    fn args(self, st: &mut Stmt) -> Vec<String> {
        vec![
            st.arg(self.name, "text[]"),
            st.arg(self.command, "text[]"),
            st.arg(self.env, "text[]"),
            st.arg(self.working_dir, "text[]"),
            st.arg(self.image, "text[]"),
            st.arg(self.cpu_m, "bigint[]"),
            st.arg(self.memory_mb, "bigint[]"),
            st.arg(self.gpu, "bigint[]"),
            st.arg(self.timeout_ms, "bigint[]"),
            st.arg(self.expected_duration_ms, "bigint[]"),
            st.arg(self.max_retries, "bigint[]"),
            st.arg(self.retry_backoff_ms, "bigint[]"),
            st.arg(self.priority, "text[]"),
            st.arg(self.sla, "text[]"),
            st.arg(self.preemptible, "boolean[]"),
            st.arg(self.hold, "boolean[]"),
            st.arg(self.labels, "text[]"),
            st.arg(self.pool_selector, "text[]"),
            st.arg(self.submitted_by, "uuid[]"),
            st.arg(self.depends_on, "text[]"),
        ]
    }
}

/// The last snapshot of each id, in first-seen order: one statement may not change a row twice.
fn last_of<T, K: std::hash::Hash + Eq + Copy>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut at: HashMap<K, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<&T> = Vec::with_capacity(rows.len());
    for r in rows {
        match at.get(&key(r)) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(key(r), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// One batch of scheduler changes as one statement. A job is new or updated in a batch, never
/// both (`Scheduler::take_changes`), so no part needs to see another's rows: they may share the
/// statement's one snapshot.
fn statement(c: &Changes) -> Stmt {
    let mut st = Stmt::default();
    new_jobs(&mut st, c);
    let jobs = last_of(&c.jobs, |j| j.id);
    if !jobs.is_empty() {
        let mut cols = StateCols::default();
        for j in &jobs {
            cols.push(j);
        }
        let from = unnest(&cols.args(&mut st));
        st.cte(format!(
            "UPDATE jobs SET state = u.state, state_reason = u.state_reason, attempt_count = u.attempt_count, current_attempt_id = u.current_attempt_id, \
             retries_left = u.retries_left, lost_requeues = u.lost_requeues, exit_code = u.exit_code, failure_reason = u.failure_reason, \
             eligible_at = u.eligible_at, scheduled_at = u.scheduled_at, started_at = u.started_at, finished_at = u.finished_at, \
             next_retry_at = u.next_retry_at, cancel_requested_at = u.cancel_requested_at, pool_id = u.pool_id, worker_id = u.worker_id, \
             log_truncated = u.log_truncated, sla_status = u.sla_status, sla_waited_ms = u.sla_waited_ms, sla_since = u.sla_since, \
             sla_breached_at = u.sla_breached_at, sla_wait_ms = u.sla_wait_ms, sla_decided_at = u.sla_decided_at \
             FROM {from} AS u({STATE_COLUMNS}) WHERE jobs.id = u.id"
        ));
    }
    attempts(&mut st, c);
    costs(&mut st, c);
    let workers = last_of(&c.workers, |w| w.id);
    if !workers.is_empty() {
        let cols = [
            st.arg(workers.iter().map(|w| w.id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
            st.arg(workers.iter().map(|w| w.state.as_str()).collect::<Vec<_>>(), "text[]"),
            st.arg(workers.iter().map(|w| ms(w.last_heartbeat_at)).collect::<Vec<_>>(), "bigint[]"),
            st.arg(workers.iter().map(|w| w.health.as_str()).collect::<Vec<_>>(), "text[]"),
            st.arg(workers.iter().map(|w| w.health_reason.as_str()).collect::<Vec<_>>(), "text[]"),
        ];
        st.cte(format!(
            "UPDATE workers SET state = u.state, last_heartbeat_at = u.at, health = u.health, health_reason = u.health_reason \
             FROM {} AS u(id, state, at, health, health_reason) WHERE workers.id = u.id",
            unnest(&cols)
        ));
    }
    let events: Vec<&JobEvent> = c.events.iter().filter(|e| e.from.is_some()).collect();
    if !events.is_empty() {
        let cols = [
            st.arg(events.iter().map(|e| e.job_id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
            st.arg(events.iter().map(|e| ms(e.at)).collect::<Vec<_>>(), "bigint[]"),
            st.arg(events.iter().map(|e| e.from.map(|s| s.as_str())).collect::<Vec<_>>(), "text[]"),
            st.arg(events.iter().map(|e| e.to.as_str()).collect::<Vec<_>>(), "text[]"),
            st.arg(events.iter().map(|e| e.actor.name()).collect::<Vec<_>>(), "text[]"),
            st.arg(events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>(), "text[]"),
        ];
        // Rows are numbered in the order given, so a job's events read back in order.
        st.cte(format!(
            "INSERT INTO job_events (job_id, at, from_state, to_state, actor, reason) \
             SELECT job_id, at, from_state, to_state, actor, reason FROM {} WITH ORDINALITY \
             AS u(job_id, at, from_state, to_state, actor, reason, n) ORDER BY n",
            unnest(&cols)
        ));
    }
    idempotency(&mut st, c);
    sla_counts(&mut st, c);
    st
}

/// The batch's SLA outcomes added to the stored counts (one row per key: a statement may not
/// change a row twice).
fn sla_counts(st: &mut Stmt, c: &Changes) {
    if c.sla_outcomes.is_empty() {
        return;
    }
    let counts: Vec<(SlaCountKey, u64)> = count_outcomes(&c.sla_outcomes).into_iter().collect();
    let cols = [
        st.arg(counts.iter().map(|(k, _)| ms(k.hour)).collect::<Vec<_>>(), "bigint[]"),
        st.arg(counts.iter().map(|(k, _)| k.tenant.as_str()).collect::<Vec<_>>(), "text[]"),
        st.arg(counts.iter().map(|(k, _)| k.level.as_str()).collect::<Vec<_>>(), "text[]"),
        st.arg(counts.iter().map(|(k, _)| k.met).collect::<Vec<_>>(), "boolean[]"),
        st.arg(counts.iter().map(|(k, _)| i32::from(k.bin)).collect::<Vec<_>>(), "integer[]"),
        st.arg(counts.iter().map(|(_, n)| *n as i64).collect::<Vec<_>>(), "bigint[]"),
    ];
    st.cte(format!(
        "INSERT INTO sla_counts (hour, tenant_id, level, met, bin, n) SELECT * FROM {} \
         ON CONFLICT (hour, tenant_id, level, met, bin) DO UPDATE SET n = sla_counts.n + EXCLUDED.n",
        unnest(&cols)
    ));
}

/// Idempotency keys: the expired deleted, the new inserted (one replacing an expired record of
/// its key; the delete spares the keys being inserted, as two parts of one statement must not
/// both change a row).
fn idempotency(st: &mut Stmt, c: &Changes) {
    if c.idempotency.is_empty() && c.idempotency_expired_before.is_none() {
        return;
    }
    let keys = [
        st.arg(c.idempotency.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>(), "text[]"),
        st.arg(c.idempotency.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), "text[]"),
    ];
    if let Some(cutoff) = c.idempotency_expired_before {
        let cutoff = st.arg(ms(cutoff), "bigint");
        st.cte(format!("DELETE FROM idempotency_keys WHERE created_at < {cutoff} AND (tenant_id, key) NOT IN (SELECT * FROM {})", unnest(&keys)));
    }
    if c.idempotency.is_empty() {
        return;
    }
    let cols: Vec<SubmittedCols> = c.idempotency.iter().map(|r| SubmittedCols::of(&r.submitted)).collect();
    let rest = [
        st.arg(c.idempotency.iter().map(|r| r.fingerprint.as_str()).collect::<Vec<_>>(), "text[]"),
        st.arg(cols.iter().map(|c| c.job_ids.clone()).collect::<Vec<_>>(), "bytea[]"),
        st.arg(cols.iter().map(|c| c.array_id).collect::<Vec<_>>(), "uuid[]"),
        st.arg(cols.iter().map(|c| c.array_count).collect::<Vec<_>>(), "bigint[]"),
        st.arg(c.idempotency.iter().map(|r| ms(r.created_at)).collect::<Vec<_>>(), "bigint[]"),
    ];
    let all: Vec<String> = keys.into_iter().chain(rest).collect();
    st.cte(format!(
        "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, job_ids, array_id, array_count, created_at) \
         SELECT * FROM {} ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, job_ids = EXCLUDED.job_ids, \
         array_id = EXCLUDED.array_id, array_count = EXCLUDED.array_count, created_at = EXCLUDED.created_at",
        unnest(&all)
    ));
}

/// New jobs: each array's spec once (its id bounds widened), members by state, the others with
/// their own spec. A job's creation event is stored on its row.
fn new_jobs(st: &mut Stmt, c: &Changes) {
    if c.new_jobs.is_empty() {
        return;
    }
    let created: IdMap<JobId, &JobEvent> = c.events.iter().filter(|e| e.from.is_none()).map(|e| (e.job_id, e)).collect();
    let mut arrays: Vec<(ArrayId, &Job, JobId, JobId)> = Vec::new();
    let (mut own, mut own_spec, mut members) = (StateCols::default(), SpecCols::default(), StateCols::default());
    let (mut own_created, mut member_created) = (Created::default(), Created::default());
    let (mut member_array, mut member_index) = (Vec::new(), Vec::new());
    for j in &c.new_jobs {
        let into = match j.array {
            Some((array, index)) => {
                match arrays.iter_mut().find(|a| a.0 == array) {
                    Some(a) => (a.2, a.3) = (a.2.min(j.id), a.3.max(j.id)),
                    None => arrays.push((array, j, j.id, j.id)),
                }
                members.push(j);
                member_array.push(array.as_uuid());
                member_index.push(i64_of(index));
                &mut member_created
            }
            None => {
                own.push(j);
                own_spec.push(&j.spec);
                &mut own_created
            }
        };
        into.push(j, created.get(&j.id).copied());
    }
    for (array, first, lo, hi) in arrays {
        let Some(a) = first.spec.array else { continue };
        let mut spec = SpecCols::default();
        spec.push(&first.spec);
        let spec = unnest(&spec.args(st));
        let (id, tenant) = (st.arg(array.as_uuid(), "uuid"), st.arg(first.tenant.as_str().to_owned(), "text"));
        let range = [
            st.arg(i64_of(a.start), "bigint"),
            st.arg(i64_of(a.end), "bigint"),
            st.arg(i64_of(a.step), "bigint"),
            st.arg(a.max_parallel.map(i64_of), "bigint"),
            st.arg(lo.as_uuid(), "uuid"),
            st.arg(hi.as_uuid(), "uuid"),
        ]
        .join(", ");
        st.cte(format!(
            "INSERT INTO job_arrays (id, tenant_id, {SPEC_COLUMNS}, array_start, array_end, array_step, array_max_parallel, first_job_id, last_job_id) \
             SELECT {id}, {tenant}, *, {range} FROM {spec} \
             ON CONFLICT (id) DO UPDATE SET first_job_id = LEAST(job_arrays.first_job_id, excluded.first_job_id), \
             last_job_id = GREATEST(job_arrays.last_job_id, excluded.last_job_id)"
        ));
    }
    if !own.id.is_empty() {
        let mut cols = own.args(st);
        cols.extend(own_created.args(st));
        cols.extend(own_spec.args(st));
        st.cte(format!("INSERT INTO jobs ({STATE_COLUMNS}, created_state, created_reason, warnings, {SPEC_COLUMNS}) SELECT * FROM {}", unnest(&cols)));
    }
    if !members.id.is_empty() {
        let mut cols = members.args(st);
        cols.extend(member_created.args(st));
        cols.push(st.arg(member_array, "uuid[]"));
        cols.push(st.arg(member_index, "bigint[]"));
        st.cte(format!("INSERT INTO jobs ({STATE_COLUMNS}, created_state, created_reason, warnings, array_id, array_index) SELECT * FROM {}", unnest(&cols)));
    }
}

/// The creation columns of new jobs: their first state and reason, and admission warnings.
#[derive(Default)]
struct Created {
    state: Vec<&'static str>,
    reason: Vec<Option<String>>,
    warnings: Vec<Option<String>>,
}

impl Created {
    fn push(&mut self, j: &Job, e: Option<&JobEvent>) {
        self.state.push(e.map_or(JobState::Pending, |e| e.to).as_str());
        self.reason.push(e.and_then(|e| e.reason.clone()));
        self.warnings.push((!j.warnings.is_empty()).then(|| json_vec(&j.warnings)));
    }

    fn args(self, st: &mut Stmt) -> Vec<String> {
        vec![st.arg(self.state, "text[]"), st.arg(self.reason, "text[]"), st.arg(self.warnings, "text[]")]
    }
}

fn attempts(st: &mut Stmt, c: &Changes) {
    let attempts: Vec<&Attempt> = last_of(&c.attempts, |a| a.id);
    if attempts.is_empty() {
        return;
    }
    let big = |f: fn(&Attempt) -> i64| attempts.iter().map(|a| f(a)).collect::<Vec<i64>>();
    let opt = |f: fn(&Attempt) -> Option<i64>| attempts.iter().map(|a| f(a)).collect::<Vec<Option<i64>>>();
    let cols = [
        st.arg(attempts.iter().map(|a| a.id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
        st.arg(attempts.iter().map(|a| a.job_id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
        st.arg(big(|a| i64_of(a.number)), "bigint[]"),
        st.arg(attempts.iter().map(|a| a.worker_id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
        st.arg(attempts.iter().map(|a| a.pool_id.as_str().to_owned()).collect::<Vec<_>>(), "text[]"),
        st.arg(big(|a| i64_of(a.resources.cpu_m.get())), "bigint[]"),
        st.arg(big(|a| i64_of(a.resources.memory_mb.get())), "bigint[]"),
        st.arg(big(|a| i64_of(a.resources.gpu.get())), "bigint[]"),
        st.arg(attempts.iter().map(|a| a.state.as_str()).collect::<Vec<_>>(), "text[]"),
        st.arg(big(|a| ms(a.assigned_at)), "bigint[]"),
        st.arg(opt(|a| a.started_at.map(ms)), "bigint[]"),
        st.arg(opt(|a| a.finished_at.map(ms)), "bigint[]"),
        st.arg(attempts.iter().map(|a| a.exit_code).collect::<Vec<_>>(), "integer[]"),
        st.arg(attempts.iter().map(|a| a.signal).collect::<Vec<_>>(), "integer[]"),
        st.arg(attempts.iter().map(|a| a.failure_reason.map(|f| f.as_str())).collect::<Vec<_>>(), "text[]"),
        st.arg(big(|a| a.cpu_time_ms as i64), "bigint[]"),
        st.arg(big(|a| a.max_rss_mb as i64), "bigint[]"),
        st.arg(big(|a| a.log_bytes as i64), "bigint[]"),
        st.arg(attempts.iter().map(|a| a.log_truncated).collect::<Vec<_>>(), "boolean[]"),
        st.arg(big(|a| a.billed_seconds as i64), "bigint[]"),
        st.arg(big(|a| a.cost_micros), "bigint[]"),
        st.arg(opt(|a| a.accrued_to.map(ms)), "bigint[]"),
    ];
    st.cte(format!(
        "INSERT INTO attempts (id, job_id, number, worker_id, pool_id, cpu_m, memory_mb, gpu, state, assigned_at, started_at, finished_at, \
         exit_code, signal, failure_reason, cpu_time_ms, max_rss_mb, log_bytes, log_truncated, billed_seconds, cost_micros, accrued_to) SELECT * FROM {} \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at, finished_at = excluded.finished_at, \
         exit_code = excluded.exit_code, signal = excluded.signal, failure_reason = excluded.failure_reason, cpu_time_ms = excluded.cpu_time_ms, \
         max_rss_mb = excluded.max_rss_mb, log_bytes = excluded.log_bytes, log_truncated = excluded.log_truncated, \
         billed_seconds = excluded.billed_seconds, cost_micros = excluded.cost_micros, accrued_to = excluded.accrued_to",
        unnest(&cols)
    ));
}

/// The ledger, in the statement of the attempts it prices: cost records, and what they add
/// to the daily rollups (one row per key, so no rollup is updated twice).
fn costs(st: &mut Stmt, c: &Changes) {
    let rows = cost_rows(&c.costs);
    if rows.is_empty() {
        return;
    }
    // Rollups from every row; records only of the attempts that keep them (track_by_job).
    let records: Vec<&CostRow> = rows.iter().filter(|r| r.c.keep_record).collect();
    if !records.is_empty() {
        cost_records(st, &records);
    }
    rollups(st, &rollup_deltas(&rows));
}

fn cost_records(st: &mut Stmt, rows: &[&CostRow]) {
    let big = |f: &dyn Fn(&CostRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let cols = [
        st.arg(rows.iter().map(|r| r.c.attempt_id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
        st.arg(rows.iter().map(|r| r.c.job_id.as_uuid()).collect::<Vec<_>>(), "uuid[]"),
        st.arg(rows.iter().map(|r| r.tenant.to_owned()).collect::<Vec<_>>(), "text[]"),
        st.arg(rows.iter().map(|r| r.pool.to_owned()).collect::<Vec<_>>(), "text[]"),
        st.arg(rows.iter().map(|r| r.name.to_owned()).collect::<Vec<_>>(), "text[]"),
        st.arg(big(&|r| i64_of(r.c.resources.cpu_m.get())), "bigint[]"),
        st.arg(big(&|r| i64_of(r.c.resources.memory_mb.get())), "bigint[]"),
        st.arg(big(&|r| i64_of(r.c.resources.gpu.get())), "bigint[]"),
        st.arg(big(&|r| r.seg.rates.cpu_core_hour), "bigint[]"),
        st.arg(big(&|r| r.seg.rates.memory_gib_hour), "bigint[]"),
        st.arg(big(&|r| r.seg.rates.gpu_hour), "bigint[]"),
        st.arg(big(&|r| ms(r.seg.start)), "bigint[]"),
        st.arg(big(&|r| ms(r.seg.end)), "bigint[]"),
        st.arg(big(&|r| r.seg.day), "bigint[]"),
        st.arg(big(&|r| r.seg.billed_seconds as i64), "bigint[]"),
        st.arg(big(&|r| r.seg.cost_micros), "bigint[]"),
    ];
    st.cte(format!(
        "INSERT INTO cost_records (attempt_id, job_id, tenant_id, pool_id, job_name, cpu_m, memory_mb, gpu, rate_cpu, rate_memory, rate_gpu, \
         start_at, end_at, day, billed_seconds, cost_micros) SELECT * FROM {}",
        unnest(&cols)
    ));
}

fn rollups(st: &mut Stmt, deltas: &std::collections::BTreeMap<(i64, &str, &str), RollupDelta>) {
    let col = |f: &dyn Fn(&RollupDelta) -> i64| deltas.values().map(f).collect::<Vec<i64>>();
    let cols = [
        st.arg(deltas.keys().map(|k| k.0).collect::<Vec<i64>>(), "bigint[]"),
        st.arg(deltas.keys().map(|k| k.1.to_owned()).collect::<Vec<String>>(), "text[]"),
        st.arg(deltas.keys().map(|k| k.2.to_owned()).collect::<Vec<String>>(), "text[]"),
        st.arg(col(&|d| d.cost_micros), "bigint[]"),
        st.arg(col(&|d| d.cpu_m_seconds), "bigint[]"),
        st.arg(col(&|d| d.memory_mb_seconds), "bigint[]"),
        st.arg(col(&|d| d.gpu_seconds), "bigint[]"),
        st.arg(col(&|d| d.attempts), "bigint[]"),
    ];
    st.cte(format!(
        "INSERT INTO cost_rollups (day, tenant_id, pool_id, cost_micros, cpu_m_seconds, memory_mb_seconds, gpu_seconds, attempts) SELECT * FROM {} \
         ON CONFLICT (day, tenant_id, pool_id) DO UPDATE SET cost_micros = cost_rollups.cost_micros + excluded.cost_micros, \
         cpu_m_seconds = cost_rollups.cpu_m_seconds + excluded.cpu_m_seconds, memory_mb_seconds = cost_rollups.memory_mb_seconds + excluded.memory_mb_seconds, \
         gpu_seconds = cost_rollups.gpu_seconds + excluded.gpu_seconds, attempts = cost_rollups.attempts + excluded.attempts",
        unnest(&cols)
    ));
}

/// A cost query's days, tenant, pool and visible tenants (after `WHERE day >= `); false when
/// no tenant is visible (nothing to read).
fn push_cost_scope(qb: &mut QueryBuilder<Postgres>, q: &crate::CostQuery) -> bool {
    qb.push_bind(q.from_day).push(" AND day <= ").push_bind(q.to_day);
    if let Some(t) = &q.tenant {
        qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
    }
    if let Some(p) = &q.pool {
        qb.push(" AND pool_id = ").push_bind(p.as_str().to_owned());
    }
    push_visible(qb, q.visible.as_deref())
}

/// ` AND tenant_id = ANY(…)` for a caller who sees only some tenants; `false` when it sees
/// none (the query would find nothing).
fn push_visible(qb: &mut QueryBuilder<Postgres>, visible: Option<&[TenantId]>) -> bool {
    let Some(visible) = visible else { return true };
    if visible.is_empty() {
        return false;
    }
    qb.push(" AND tenant_id = ANY(").push_bind(visible.iter().map(|t| t.as_str().to_owned()).collect::<Vec<String>>()).push(")");
    true
}

/// A pool row's insert, without what to do on a conflict.
macro_rules! insert_pool {
    () => {
        "INSERT INTO pools (id, name, pool_type, provider, worker_cpu_m, worker_memory_mb, worker_gpu, worker_slots, min_size, max_size, labels, \
         managed_by, state, join_token_hash, created_at, updated_at, version, desired_size, auto_scaling_enabled, idle_timeout_ms, scaling_policies, state_reason, allowed_tenants) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, COALESCE($14, ''), $15, $16, $17, $18, $19, $20, $21, $22, $23)"
    };
}

/// [`insert_pool!`]'s parameters bound, for `sql` that starts with it.
fn pool_row<'q>(sql: &'static str, p: &'q Pool, join_token_hash: Option<&'q str>) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(p.id.as_str())
        .bind(&p.name)
        .bind(p.pool_type.as_str())
        .bind(&p.provider)
        .bind(i64_of(p.worker_resources.cpu_m.get()))
        .bind(i64_of(p.worker_resources.memory_mb.get()))
        .bind(i64_of(p.worker_resources.gpu.get()))
        .bind(i64_of(p.worker_slots))
        .bind(i64_of(p.min_size))
        .bind(i64_of(p.max_size))
        .bind(json_map(&p.labels))
        .bind(&p.managed_by)
        .bind(p.state.as_str())
        .bind(join_token_hash)
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .bind(p.version)
        .bind(i64_of(p.desired_size))
        .bind(p.auto_scaling_enabled)
        .bind(i64::try_from(p.idle_timeout.as_millis()).unwrap_or(i64::MAX))
        .bind(json_policies(&p.scaling_policies))
        .bind(&p.state_reason)
        .bind(json_tenants(&p.allowed_tenants))
}

/// ` AND …` for each term of a label selector, over a `labels` column of JSON text.
fn push_label_terms(qb: &mut QueryBuilder<Postgres>, terms: &[crate::LabelTerm]) {
    for term in terms {
        match term {
            crate::LabelTerm::Eq(k, v) => qb.push(" AND (labels::jsonb ->> ").push_bind(k.clone()).push(") = ").push_bind(v.clone()),
            crate::LabelTerm::Ne(k, v) => qb.push(" AND (labels::jsonb ->> ").push_bind(k.clone()).push(") IS DISTINCT FROM ").push_bind(v.clone()),
            crate::LabelTerm::Exists(k) => qb.push(" AND labels::jsonb ? ").push_bind(k.clone()),
            crate::LabelTerm::Missing(k) => qb.push(" AND NOT (labels::jsonb ? ").push_bind(k.clone()).push(")"),
        };
    }
}

/// A job list's conditions other than its states; false when the caller sees no tenant.
fn push_job_filter(qb: &mut QueryBuilder<Postgres>, f: &JobFilter) -> bool {
    if let Some(t) = &f.tenant {
        qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
    }
    if !push_visible(qb, f.visible.as_deref()) {
        return false;
    }
    push_label_terms(qb, &f.labels);
    if let Some(a) = f.array {
        qb.push(" AND array_id = ").push_bind(a.as_uuid());
    }
    if let Some(c) = f.before {
        qb.push(" AND id < ").push_bind(c.as_uuid());
    }
    true
}

/// ` AND {column} IN ('a', 'b')` unless `values` is empty. The values are the names of a closed
/// enum (never input), written as literals so the planner can match a partial index on them:
/// with a bound array, the generic plan PostgreSQL settles on after a few executions of a
/// prepared statement cannot, and a filter on live states scans every ended job.
fn push_states(qb: &mut QueryBuilder<Postgres>, column: &str, values: Vec<&'static str>) {
    if values.is_empty() {
        return;
    }
    debug_assert!(values.iter().all(|v| v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')), "enum names only: {values:?}");
    let list: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    qb.push(format!(" AND {column} IN ({})", list.join(", ")));
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::db("pinging the database"))?;
        Ok(())
    }

    async fn schema_is_current(&self) -> Result<bool> {
        crate::schema_is_current(&MIGRATOR, &self.pool).await
    }

    fn log_store(&self) -> Option<Arc<dyn crate::logs::LogStore>> {
        Some(Arc::new(crate::postgres_logs::PgLogs::new(self.pool.clone())))
    }

    async fn hold_scheduler_lock(&self) -> Result<bool> {
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if epoch == 0 {
            return Ok(false);
        }
        let mut held = self.lock.lock().await;
        if let Some(conn) = held.as_mut() {
            let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM scheduler_epoch WHERE id = 1").fetch_optional(&mut *conn).await.ok().flatten();
            match current {
                Some(c) if c == epoch => return Ok(false),
                Some(_) => return Err(StoreError::LeadershipLost { epoch }),
                // The lock's session is gone (e.g. the database restarted): so is the lock.
                None => *held = None,
            }
        }
        match self.take_lock(&mut held).await? {
            true => Ok(true),
            false => Err(StoreError::LeadershipLost { epoch }),
        }
    }

    async fn create_tenant(&self, t: &Tenant) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO tenants (id, name, email, tier, weight, status, labels, created_at, updated_at, version, \
             quota_cpu_m, quota_memory_mb, quota_gpu, quota_max_concurrent_jobs, quota_max_queued_jobs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
        .bind(i64_of(t.quota.resources.cpu_m.get()))
        .bind(i64_of(t.quota.resources.memory_mb.get()))
        .bind(i64_of(t.quota.resources.gpu.get()))
        .bind(i64_of(t.quota.max_concurrent_jobs))
        .bind(i64_of(t.quota.max_queued_jobs))
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("tenant {}", t.id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a tenant")),
        }
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a tenant"))?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY id").fetch_all(&self.pool).await.map_err(StoreError::db("listing tenants"))?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let r = sqlx::query(
            "UPDATE tenants SET name = $1, email = $2, tier = $3, weight = $4, status = $5, labels = $6, updated_at = $7, version = $8, \
             quota_cpu_m = $9, quota_memory_mb = $10, quota_gpu = $11, quota_max_concurrent_jobs = $12, quota_max_queued_jobs = $13 \
             WHERE id = $14 AND version = $15",
        )
        .bind(&t.name)
        .bind(&t.email)
        .bind(t.tier.as_str())
        .bind(t.weight.map(i64::from))
        .bind(t.status.as_str())
        .bind(json_map(&t.labels))
        .bind(ms(t.updated_at))
        .bind(t.version)
        .bind(i64_of(t.quota.resources.cpu_m.get()))
        .bind(i64_of(t.quota.resources.memory_mb.get()))
        .bind(i64_of(t.quota.resources.gpu.get()))
        .bind(i64_of(t.quota.max_concurrent_jobs))
        .bind(i64_of(t.quota.max_queued_jobs))
        .bind(t.id.as_str())
        .bind(t.version - 1)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("updating a tenant"))?;
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("tenant {}", t.id) }) }
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(StoreError::db("deleting a tenant"))?;
        sqlx::query("DELETE FROM burst_sessions WHERE tenant_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("deleting a tenant"))?;
        let r = sqlx::query("DELETE FROM tenants WHERE id = $1").bind(id.as_str()).execute(&mut *tx).await.map_err(StoreError::db("deleting a tenant"))?;
        tx.commit().await.map_err(StoreError::db("deleting a tenant"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn count_live_jobs(&self, tenant: &TenantId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND state IN ('pending', 'held', 'scheduled', 'running')")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
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
                 join_token_hash = COALESCE($14, pools.join_token_hash), updated_at = excluded.updated_at, version = pools.version + 1"
            ),
            p,
            join_token_hash,
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("writing a pool"))?;
        Ok(())
    }

    async fn create_pool(&self, p: &Pool, join_token_hash: &str) -> Result<()> {
        match pool_row(insert_pool!(), p, Some(join_token_hash)).execute(&self.pool).await {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("pool {}", p.id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a pool")),
        }
    }

    async fn get_pool(&self, id: &PoolId) -> Result<Option<(Pool, String)>> {
        let row =
            sqlx::query("SELECT * FROM pools WHERE id = $1").bind(id.as_str()).fetch_optional(&self.pool).await.map_err(StoreError::db("reading a pool"))?;
        row.as_ref().map(pool_from_row).transpose()
    }

    async fn set_pool_join_token(&self, id: &PoolId, join_token_hash: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE pools SET join_token_hash = $1 WHERE id = $2")
            .bind(join_token_hash)
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("rotating a pool's join token"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_pools(&self) -> Result<Vec<Pool>> {
        let rows = sqlx::query("SELECT * FROM pools ORDER BY id").fetch_all(&self.pool).await.map_err(StoreError::db("listing pools"))?;
        rows.iter().map(|r| pool_from_row(r).map(|p| p.0)).collect()
    }

    async fn set_pool_size(&self, id: &PoolId, desired_size: u32, state: hodei_core::PoolState, state_reason: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE pools SET desired_size = $1, state = $2, state_reason = $3 WHERE id = $4 \
             AND state <> 'destroyed' AND (state <> 'draining' OR $2 IN ('draining', 'destroyed'))",
        )
        .bind(i64_of(desired_size))
        .bind(state.as_str())
        .bind(state_reason)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("resizing a pool"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn record_scaling_event(&self, e: &hodei_core::autoscale::Event) -> Result<i64> {
        let d = &e.decision;
        let q = sqlx::query(
            "INSERT INTO scaling_events (pool_id, at, source, policy_id, trigger_text, observed_value, from_size, to_size, decision, reason, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(e.pool_id.as_str())
        .bind(ms(e.at))
        .bind(d.source.as_str())
        .bind(d.policy_id.as_deref())
        .bind(d.trigger.as_deref())
        .bind(d.observed)
        .bind(i64_of(d.from))
        .bind(i64_of(d.to))
        .bind(d.outcome.as_str())
        .bind(&d.reason)
        .bind(e.actor.as_deref());
        let row = q.fetch_one(&self.pool).await.map_err(StoreError::db("recording a scaling event"))?;
        sqlx::Row::try_get::<i64, _>(&row, "id").map_err(StoreError::db("recording a scaling event"))
    }

    async fn list_scaling_events(&self, f: &ScalingEventFilter) -> Result<Vec<hodei_core::autoscale::Event>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM scaling_events WHERE pool_id = ");
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
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing scaling events"))?;
        rows.iter().map(scaling_event_from_row).collect()
    }

    async fn delete_scaling_events_before(&self, before: Timestamp) -> Result<u64> {
        let r = sqlx::query("DELETE FROM scaling_events WHERE at < $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("forgetting old scaling events"))?;
        Ok(r.rows_affected())
    }

    async fn cost_breakdown(&self, q: &crate::CostQuery) -> Result<Vec<crate::CostGroupRow>> {
        let key = match q.group_by {
            crate::CostGroup::Tenant => "tenant_id",
            crate::CostGroup::Pool => "pool_id",
            crate::CostGroup::Day => "day::text",
            crate::CostGroup::JobName => "job_name",
        };
        // By job name: from the records (the rollups have no job dimension).
        let from = match q.group_by {
            crate::CostGroup::JobName => {
                "SUM(cost_micros)::bigint AS cost, SUM(cpu_m * billed_seconds)::bigint AS cpu, SUM(memory_mb * billed_seconds)::bigint AS mem, \
                 SUM(gpu * billed_seconds)::bigint AS gpu, COUNT(DISTINCT attempt_id)::bigint AS n FROM cost_records"
            }
            _ => {
                "SUM(cost_micros)::bigint AS cost, SUM(cpu_m_seconds)::bigint AS cpu, SUM(memory_mb_seconds)::bigint AS mem, SUM(gpu_seconds)::bigint AS gpu, \
                 SUM(attempts)::bigint AS n FROM cost_rollups"
            }
        };
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {key} AS k, {from} WHERE day >= "));
        if !push_cost_scope(&mut qb, q) {
            return Ok(Vec::new());
        }
        qb.push(" GROUP BY k ORDER BY cost DESC, k LIMIT ").push_bind(i64::from(crate::MAX_COST_GROUPS));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("reading cost rollups"))?;
        rows.iter().map(cost_group_from_row).collect()
    }

    async fn create_burst(&self, b: &BurstSession) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO burst_sessions (id, tenant_id, state, requested_cpu_m, requested_memory_mb, requested_gpu, requested_concurrent_jobs, \
             duration_minutes, reason, requested_by, decided_by, created_at, activated_at, expires_at, ended_at, cooldown_until, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(b.id.as_uuid())
        .bind(b.tenant_id.as_str())
        .bind(b.state.as_str())
        .bind(i64_of(b.requested.cpu_m.get()))
        .bind(i64_of(b.requested.memory_mb.get()))
        .bind(i64_of(b.requested.gpu.get()))
        .bind(i64_of(b.requested_concurrent_jobs))
        .bind(i64_of(b.duration_minutes))
        .bind(&b.reason)
        .bind(&b.requested_by)
        .bind(&b.decided_by)
        .bind(ms(b.created_at))
        .bind(b.activated_at.map(ms))
        .bind(b.expires_at.map(ms))
        .bind(b.ended_at.map(ms))
        .bind(b.cooldown_until.map(ms))
        .bind(b.version)
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists { what: format!("an open burst session of tenant {}", b.tenant_id) }),
            r => r.map(|_| ()).map_err(StoreError::db("creating a burst session")),
        }
    }

    async fn update_burst(&self, b: &BurstSession) -> Result<()> {
        let r = sqlx::query(
            "UPDATE burst_sessions SET state = $1, decided_by = $2, activated_at = $3, expires_at = $4, ended_at = $5, cooldown_until = $6, version = $7 \
             WHERE id = $8 AND version = $9",
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
        .execute(&self.pool)
        .await;
        let r = match r {
            // Reopening an ended session while another one is open.
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists { what: format!("an open burst session of tenant {}", b.tenant_id) }),
            r => r.map_err(StoreError::db("updating a burst session"))?,
        };
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("burst session {}", b.id) }) }
    }

    async fn get_burst(&self, id: BurstId) -> Result<Option<BurstSession>> {
        let row = sqlx::query("SELECT * FROM burst_sessions WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a burst session"))?;
        row.as_ref().map(burst_from_row).transpose()
    }

    async fn list_bursts(&self, f: &BurstFilter) -> Result<Vec<BurstSession>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM burst_sessions WHERE 1 = 1");
        if let Some(t) = &f.tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, f.visible.as_deref()) {
            return Ok(Vec::new());
        }
        push_states(&mut qb, "state", f.states.iter().map(|s| s.as_str()).collect());
        if let Some(c) = f.before {
            qb.push(" AND id < ").push_bind(c.as_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit.max(1)));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing burst sessions"))?;
        rows.iter().map(burst_from_row).collect()
    }

    fn stage(&self, changes: Arc<Changes>) {
        if let Ok(mut staged) = self.staged.lock() {
            staged.push(changes);
        }
    }

    async fn apply(&self, changes: Arc<Changes>) -> Result<()> {
        let staged = self.staged.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        let new_jobs: u64 = staged.iter().chain([&changes]).map(|c| c.new_jobs.len() as u64).sum();
        if staged.is_empty() {
            // One statement is one round trip, and atomic on its own.
            let mut conn = self.writer.acquire().await.map_err(StoreError::db("writing scheduler changes"))?;
            statement(&changes).run(&mut conn, epoch).await?;
        } else {
            let mut tx = self.writer.begin().await.map_err(StoreError::db("starting a transaction"))?;
            for c in staged.iter().chain([&changes]) {
                statement(c).run(&mut tx, epoch).await?;
            }
            tx.commit().await.map_err(StoreError::db("committing scheduler changes"))?;
        }
        self.wrote_jobs(new_jobs);
        Ok(())
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let row =
            sqlx::query("SELECT * FROM job_rows WHERE id = $1").bind(id.as_uuid()).fetch_optional(&self.pool).await.map_err(StoreError::db("reading a job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        const LIVE: [JobState; 5] = [JobState::Pending, JobState::Held, JobState::Scheduled, JobState::Running, JobState::Failed];
        let limit = i64::from(f.limit.max(1));
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("");
        if f.states.len() > 1 && f.states.iter().all(|s| LIVE.contains(s)) {
            // The live index holds each state's jobs in id order: one page per state, merged,
            // reads `limit` rows per state instead of sorting every job of those states.
            qb.push("SELECT * FROM (");
            for (i, st) in f.states.iter().enumerate() {
                if i > 0 {
                    qb.push(" UNION ALL ");
                }
                qb.push("(SELECT * FROM job_rows WHERE 1 = 1");
                push_states(&mut qb, "state", vec![st.as_str()]);
                if !push_job_filter(&mut qb, f) {
                    return Ok(Vec::new());
                }
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit).push(")");
            }
            qb.push(") pages");
        } else {
            qb.push("SELECT * FROM job_rows WHERE 1 = 1");
            push_states(&mut qb, "state", f.states.iter().map(|s| s.as_str()).collect());
            if !push_job_filter(&mut qb, f) {
                return Ok(Vec::new());
            }
        }
        qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing jobs"))?;
        let mut specs = SharedSpecs::default();
        rows.iter().map(|r| specs.job(r)).collect()
    }

    async fn list_attempts(&self, job: JobId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE job_id = $1 ORDER BY number")
            .bind(job.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing attempts"))?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn job_costs(&self, jobs: &[JobId]) -> Result<Vec<(JobId, i64)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT job_id, SUM(cost_micros)::bigint AS cost FROM attempts WHERE cost_micros != 0 AND job_id IN (");
        let mut sep = qb.separated(", ");
        for j in jobs {
            sep.push_bind(j.as_uuid());
        }
        qb.push(") GROUP BY job_id");
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("summing job costs"))?;
        let g = |e: sqlx::Error| StoreError::Db { doing: "summing job costs", source: e };
        rows.iter().map(|r| Ok((JobId::from_uuid(sqlx::Row::try_get(r, "job_id").map_err(g)?), sqlx::Row::try_get(r, "cost").map_err(g)?))).collect()
    }

    async fn list_events(&self, job: JobId) -> Result<Vec<JobEvent>> {
        const D: &str = "listing job events";
        // The first transition is stored on the job's row.
        let first = sqlx::query("SELECT submitted_at, created_state, created_reason, submitted_by FROM jobs WHERE id = $1")
            .bind(job.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db(D))?;
        let Some(first) = first else { return Ok(Vec::new()) };
        let mut events = vec![created_event(job, &first)?];
        let rows = sqlx::query("SELECT * FROM job_events WHERE job_id = $1 ORDER BY seq")
            .bind(job.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(D))?;
        for r in &rows {
            events.push(event_from_row(job, r)?);
        }
        Ok(events)
    }

    async fn delete_ended_jobs(&self, before: Timestamp, limit: u32) -> Result<Purged> {
        const D: &str = "deleting ended jobs";
        macro_rules! ended {
            () => {
                "(j.state IN ('succeeded', 'cancelled', 'timed_out') OR (j.state = 'failed' AND j.next_retry_at IS NULL))"
            };
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::db(D))?;
        let mut ids: Vec<Uuid> = sqlx::query_scalar(concat!(
            "SELECT j.id FROM jobs j WHERE j.finished_at IS NOT NULL AND j.finished_at < $1 AND j.array_id IS NULL AND ",
            ended!(),
            " ORDER BY j.finished_at LIMIT $2"
        ))
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(D))?;
        let mut emptied = Vec::new();
        if (ids.len() as u32) < limit {
            let arrays: Vec<Uuid> = sqlx::query_scalar(concat!(
                "SELECT a.id FROM job_arrays a WHERE NOT EXISTS \
                 (SELECT 1 FROM jobs j WHERE j.array_id = a.id AND NOT (j.finished_at IS NOT NULL AND j.finished_at < $1 AND ",
                ended!(),
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
                let members: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE array_id = $1 LIMIT $2")
                    .bind(a)
                    .bind(i64::from(room))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::db(D))?;
                if (members.len() as u32) < room {
                    emptied.push(a);
                }
                ids.extend(members);
            }
        }
        let attempts: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM attempts WHERE job_id = ANY($1)").bind(&ids).fetch_all(&mut *tx).await.map_err(StoreError::db(D))?;
        for q in ["DELETE FROM job_events WHERE job_id = ANY($1)", "DELETE FROM attempts WHERE job_id = ANY($1)", "DELETE FROM jobs WHERE id = ANY($1)"] {
            sqlx::query(q).bind(&ids).execute(&mut *tx).await.map_err(StoreError::db(D))?;
        }
        sqlx::query("DELETE FROM job_arrays a WHERE a.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM jobs WHERE array_id = a.id)")
            .bind(&emptied)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(D))?;
        tx.commit().await.map_err(StoreError::db(D))?;
        Ok(Purged { jobs: ids.len() as u64, attempts: attempts.into_iter().map(hodei_core::AttemptId::from_uuid).collect() })
    }

    async fn load_live(&self) -> Result<LiveState> {
        let jobs = self.load_live_jobs().await?;
        let workers =
            sqlx::query("SELECT * FROM workers WHERE state != 'terminated'").fetch_all(&self.pool).await.map_err(StoreError::db("loading workers"))?;
        let attempts = sqlx::query("SELECT * FROM attempts WHERE state IN ('assigned', 'running')")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("loading live attempts"))?;
        let keys = sqlx::query("SELECT * FROM idempotency_keys").fetch_all(&self.pool).await.map_err(StoreError::db("loading idempotency keys"))?;
        Ok(LiveState {
            jobs,
            workers: workers.iter().map(worker_from_row).collect::<Result<_>>()?,
            attempts: attempts.iter().map(attempt_from_row).collect::<Result<_>>()?,
            idempotency: keys.iter().map(idempotency_from_row).collect::<Result<_>>()?,
        })
    }

    async fn sla_counts(&self, since: Timestamp, tenant: Option<&TenantId>) -> Result<Vec<SlaCount>> {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT tenant_id, level, met, bin::bigint AS bin, SUM(n)::bigint AS n FROM sla_counts WHERE hour >= ");
        qb.push_bind(ms(since));
        if let Some(t) = tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        qb.push(" GROUP BY tenant_id, level, met, bin");
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db(SLA_COUNTS))?;
        rows.iter().map(sla_count_from_row).collect()
    }

    async fn forget_sla_counts(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sla_counts WHERE hour < $1").bind(ms(before)).execute(&self.pool).await;
        Ok(done.map_err(StoreError::db("deleting old SLA counts"))?.rows_affected())
    }

    async fn setting_overrides(&self) -> Result<Option<String>> {
        let body = sqlx::query_scalar("SELECT body FROM setting_overrides WHERE id = 1").fetch_optional(&self.pool).await;
        body.map_err(StoreError::db("reading settings overrides"))
    }

    async fn put_setting_overrides(&self, body: &str, at: Timestamp) -> Result<()> {
        sqlx::query("INSERT INTO setting_overrides (id, body, updated_at) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at")
            .bind(body)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("writing settings overrides"))?;
        Ok(())
    }

    async fn put_metric_samples(&self, samples: &[crate::MetricSample]) -> Result<()> {
        for chunk in crate::metric_history::unique(samples).chunks(crate::metric_history::INSERT_CHUNK) {
            crate::metric_history::insert(chunk).build().execute(&self.pool).await.map_err(StoreError::db("writing metric samples"))?;
        }
        Ok(())
    }

    async fn downsample_metric_samples(&self, width_s: u32, from: Timestamp, to: Timestamp) -> Result<u64> {
        let done = sqlx::query(sqlx::AssertSqlSafe(crate::metric_history::downsample(width_s, from, to))).execute(&self.pool).await;
        Ok(done.map_err(StoreError::db("downsampling metric samples"))?.rows_affected())
    }

    async fn last_metric_sample(&self, resolution_s: u32) -> Result<Option<Timestamp>> {
        let at: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(crate::metric_history::last(resolution_s)))
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("reading metric samples"))?;
        Ok(at.map(Timestamp::from_millis))
    }

    async fn metric_history(&self, q: &crate::HistoryQuery) -> Result<Vec<crate::HistorySeries>> {
        let rows = crate::metric_history::history(q).build().fetch_all(&self.pool).await.map_err(StoreError::db("reading metric history"))?;
        let points = crate::metric_history::decode(&rows).map_err(StoreError::db("reading metric history"))?;
        Ok(crate::metric_history::series(q, points))
    }

    async fn forget_metric_samples(&self, resolution_s: u32, before: Timestamp) -> Result<u64> {
        let done = sqlx::query(sqlx::AssertSqlSafe(crate::metric_history::forget(resolution_s, before))).execute(&self.pool).await;
        Ok(done.map_err(StoreError::db("deleting old metric samples"))?.rows_affected())
    }

    async fn forget_cost_records(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM cost_records WHERE end_at < $1").bind(ms(before)).execute(&self.pool).await;
        Ok(done.map_err(StoreError::db("deleting old cost records"))?.rows_affected())
    }

    async fn top_cost_jobs(&self, q: &crate::CostQuery, limit: u32) -> Result<Vec<crate::JobCost>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT job_id, MAX(job_name) AS job_name, MAX(tenant_id) AS tenant_id, SUM(cost_micros)::BIGINT AS cost FROM cost_records WHERE day >= ",
        );
        if !push_cost_scope(&mut qb, q) {
            return Ok(Vec::new());
        }
        qb.push(" GROUP BY job_id ORDER BY cost DESC, job_id LIMIT ").push_bind(i64::from(limit));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("reading job costs"))?;
        rows.iter().map(job_cost_from_row).collect()
    }

    async fn put_cost_report(&self, r: &crate::StoredReport) -> Result<()> {
        sqlx::query("INSERT INTO cost_reports (id, tenant_id, created_by, created_at, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(r.id)
            .bind(r.tenant.as_ref().map(|t| t.as_str().to_owned()))
            .bind(&r.created_by)
            .bind(ms(r.created_at))
            .bind(&r.body)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("writing a cost report"))?;
        Ok(())
    }

    async fn get_cost_report(&self, id: uuid::Uuid) -> Result<Option<crate::StoredReport>> {
        let row = sqlx::query("SELECT * FROM cost_reports WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM cost_reports WHERE TRUE");
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
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing cost reports"))?;
        rows.iter().map(report_from_row).collect()
    }

    async fn put_usage(&self, usage: &[crate::AttemptUsage]) -> Result<()> {
        for chunk in usage.chunks(500) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("INSERT INTO attempt_usage (attempt_id, step_ms, points, summary, updated_at) ");
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
            qb.build().execute(&self.pool).await.map_err(StoreError::db("writing usage"))?;
        }
        Ok(())
    }

    async fn attempt_usage(&self, attempts: &[hodei_core::AttemptId]) -> Result<Vec<crate::AttemptUsage>> {
        let mut out = Vec::new();
        for chunk in attempts.chunks(500) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM attempt_usage WHERE attempt_id IN (");
            let mut sep = qb.separated(", ");
            for a in chunk {
                sep.push_bind(a.as_uuid());
            }
            qb.push(")");
            for r in qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("reading usage"))? {
                out.push(usage_from_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn forget_usage(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM attempt_usage WHERE updated_at < $1").bind(ms(before)).execute(&self.pool).await;
        Ok(done.map_err(StoreError::db("deleting old usage"))?.rows_affected())
    }

    async fn usage_runs(&self, since: Timestamp, tenant: Option<&TenantId>, per_name: u32, limit: u32) -> Result<Vec<crate::UsageRun>> {
        let sql = USAGE_RUNS
            .replace("{since}", "$1")
            .replace("{tenant}", if tenant.is_some() { "j.tenant_id = $2" } else { "1 = 1" })
            .replace("{per_name}", &per_name.to_string())
            .replace("{limit}", &limit.to_string());
        // Only integers and fixed text are spliced in; values are bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(since));
        if let Some(t) = tenant {
            q = q.bind(t.as_str());
        }
        q.fetch_all(&self.pool).await.map_err(StoreError::db("reading usage"))?.iter().map(usage_run_from_row).collect()
    }

    async fn raise_alert(&self, a: &hodei_core::alert::Alert) -> Result<bool> {
        let r = sqlx::query("INSERT INTO alerts (id, kind, severity, tenant_id, scope, dedup_key, value, message, state, fired_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (dedup_key) DO NOTHING")
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
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("raising an alert"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn list_alerts(&self, f: &crate::AlertFilter) -> Result<Vec<hodei_core::alert::Alert>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM alerts WHERE 1 = 1");
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
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing alerts"))?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn get_alert(&self, id: hodei_core::AlertId) -> Result<Option<hodei_core::alert::Alert>> {
        let row = sqlx::query("SELECT * FROM alerts WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading an alert"))?;
        row.as_ref().map(alert_from_row).transpose()
    }

    async fn ack_alert(&self, id: hodei_core::AlertId, by: &str, at: Timestamp) -> Result<bool> {
        let r = sqlx::query("UPDATE alerts SET state = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND state = 'firing'")
            .bind(ms(at))
            .bind(by)
            .bind(id.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("acknowledging an alert"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn resolve_alerts(&self, scope: &str, still: &[String], at: Timestamp) -> Result<u64> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE alerts SET state = 'resolved', resolved_at = ");
        qb.push_bind(ms(at)).push(" WHERE scope = ").push_bind(scope.to_owned()).push(" AND state != 'resolved'");
        for k in still {
            qb.push(" AND dedup_key != ").push_bind(k.clone());
        }
        let r = qb.build().execute(&self.pool).await.map_err(StoreError::db("resolving alerts"))?;
        Ok(r.rows_affected())
    }

    async fn count_open_alerts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT kind, severity, COUNT(*) AS n FROM alerts WHERE state != 'resolved' GROUP BY kind, severity")
            .fetch_all(&self.pool)
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
        sqlx::query("INSERT INTO budgets (id, tenant_id, amount_micros, period, thresholds_pct, on_exhausted, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(b.id.as_uuid())
            .bind(b.tenant.as_str())
            .bind(b.amount_micros)
            .bind(b.period.as_str())
            .bind(json_thresholds(&b.thresholds_pct))
            .bind(b.on_exhausted.as_str())
            .bind(ms(b.created_at))
            .bind(ms(b.updated_at))
            .bind(b.version)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("creating a budget"))?;
        Ok(())
    }

    async fn update_budget(&self, b: &hodei_core::budget::Budget) -> Result<()> {
        let r = sqlx::query("UPDATE budgets SET amount_micros = $1, period = $2, thresholds_pct = $3, on_exhausted = $4, updated_at = $5, version = $6 WHERE id = $7 AND version = $8")
            .bind(b.amount_micros)
            .bind(b.period.as_str())
            .bind(json_thresholds(&b.thresholds_pct))
            .bind(b.on_exhausted.as_str())
            .bind(ms(b.updated_at))
            .bind(b.version)
            .bind(b.id.as_uuid())
            .bind(b.version - 1)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("updating a budget"))?;
        if r.rows_affected() == 1 { Ok(()) } else { Err(StoreError::VersionMismatch { what: format!("budget {}", b.id) }) }
    }

    async fn get_budget(&self, id: hodei_core::BudgetId) -> Result<Option<hodei_core::budget::Budget>> {
        let row = sqlx::query("SELECT * FROM budgets WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a budget"))?;
        row.as_ref().map(budget_from_row).transpose()
    }

    async fn list_budgets(&self, tenant: Option<&TenantId>, visible: Option<&[TenantId]>) -> Result<Vec<hodei_core::budget::Budget>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM budgets WHERE 1 = 1");
        if let Some(t) = tenant {
            qb.push(" AND tenant_id = ").push_bind(t.as_str().to_owned());
        }
        if !push_visible(&mut qb, visible) {
            return Ok(Vec::new());
        }
        qb.push(" ORDER BY created_at, id LIMIT ").push_bind(i64::from(crate::MAX_BUDGETS));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing budgets"))?;
        rows.iter().map(budget_from_row).collect()
    }

    async fn delete_budget(&self, id: hodei_core::BudgetId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM budgets WHERE id = $1").bind(id.as_uuid()).execute(&self.pool).await.map_err(StoreError::db("deleting a budget"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn add_rate_version(&self, r: &crate::StoredRates) -> Result<()> {
        let rates = &r.version.rates;
        let done =
            sqlx::query("INSERT INTO rate_versions (effective_from, rate_cpu, rate_memory, rate_gpu, source, created_by) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(ms(r.version.effective_from))
                .bind(rates.cpu_core_hour)
                .bind(rates.memory_gib_hour)
                .bind(rates.gpu_hour)
                .bind(&r.source)
                .bind(&r.created_by)
                .execute(&self.pool)
                .await;
        match done {
            Err(e) if crate::identity::is_unique_violation(&e) => {
                Err(StoreError::AlreadyExists { what: format!("a rate version from {}", r.version.effective_from) })
            }
            r => r.map(|_| ()).map_err(StoreError::db("adding a rate version")),
        }
    }

    async fn list_rate_versions(&self) -> Result<Vec<crate::StoredRates>> {
        let rows = sqlx::query("SELECT * FROM (SELECT * FROM rate_versions ORDER BY effective_from DESC LIMIT $1) AS newest ORDER BY effective_from")
            .bind(i64::from(crate::MAX_RATE_VERSIONS))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing rate versions"))?;
        rows.iter().map(rate_version_from_row).collect()
    }

    async fn sla_breaches(&self, f: &BreachFilter) -> Result<Vec<Job>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM job_rows WHERE sla_breached_at IS NOT NULL");
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
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing SLA breaches"))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn register_worker(&self, w: &Worker, session_token_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, instance_name, pool_id, state, capabilities, cpu_m, memory_mb, gpu, slots, labels, version, session_token_hash, \
             registered_at, last_heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(w.id.as_uuid())
        .bind(&w.instance_name)
        .bind(w.pool_id.as_str())
        .bind(w.state.as_str())
        .bind(json_vec(&w.capabilities))
        .bind(i64_of(w.resources.cpu_m.get()))
        .bind(i64_of(w.resources.memory_mb.get()))
        .bind(i64_of(w.resources.gpu.get()))
        .bind(i64_of(w.slots))
        .bind(json_map(&w.labels))
        .bind(&w.version)
        .bind(session_token_hash)
        .bind(ms(w.registered_at))
        .bind(ms(w.last_heartbeat_at))
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("registering a worker"))?;
        Ok(())
    }

    async fn worker_session_hash(&self, id: WorkerId) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT session_token_hash FROM workers WHERE id = $1 AND state != 'terminated'")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a worker session"))
    }

    async fn list_workers(&self, f: &WorkerFilter) -> Result<Vec<Worker>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM workers WHERE 1 = 1");
        if let Some(p) = &f.pool {
            qb.push(" AND pool_id = ").push_bind(p.as_str().to_owned());
        }
        push_label_terms(&mut qb, &f.labels);
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
        let rows = qb.build().fetch_all(&self.pool).await.map_err(StoreError::db("listing workers"))?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn get_worker(&self, id: WorkerId) -> Result<Option<Worker>> {
        let row = sqlx::query("SELECT * FROM workers WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a worker"))?;
        row.as_ref().map(worker_from_row).transpose()
    }
}

crate::identity::identity_methods!(crate::postgres::PgStore, crate::identity::numbered, pool, pool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_numbers_its_arguments_across_its_parts() {
        let mut st = Stmt::default();
        let first = [st.arg(vec![1i64], "bigint[]"), st.arg(vec!["a"], "text[]")];
        st.cte(format!("SELECT * FROM {}", unnest(&first)));
        let second = st.arg(7i64, "bigint");
        st.cte(format!("SELECT {second}"));
        assert_eq!(st.ctes, ["w0 AS (SELECT * FROM UNNEST($1::bigint[], $2::text[]))", "w1 AS (SELECT $3::bigint)"]);
        assert_eq!(st.args.len(), 3);
    }

    #[test]
    fn a_row_changed_twice_in_one_batch_is_written_once_with_its_last_snapshot() {
        let rows = [(1, "a"), (2, "b"), (1, "c")];
        let got: Vec<_> = last_of(&rows, |r| r.0).into_iter().copied().collect();
        assert_eq!(got, [(1, "c"), (2, "b")]);
    }

    #[test]
    fn column_lists_and_arguments_agree() {
        let mut st = Stmt::default();
        assert_eq!(STATE_COLUMNS.split(',').count(), StateCols::default().args(&mut st).len());
        assert_eq!(SPEC_COLUMNS.split(',').count(), SpecCols::default().args(&mut st).len());
    }
}
