//! The SQLite write path: one thread owning one connection, fed scheduler batches through a
//! channel. A whole batch is one handoff and one transaction of cached prepared statements,
//! instead of a round trip to an async driver per row. A batch may come in parts: staged parts
//! are written into an open transaction as they arrive, and the next `apply` commits them with
//! its own rows (or, if any part failed, rolls all of them back and reports that failure).

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use hodei_core::ids::IdMap;

use crate::rows::{depends_on_text, selector_text};
use hodei_core::sched::Changes;
use hodei_core::sla_tally::count_outcomes;
use hodei_core::spec::JobSpec;
use hodei_core::{Job, JobEvent, JobId, JobState, Timestamp};
use rusqlite::{Connection, ToSql, params, params_from_iter};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::rows::{SubmittedCols, cost_rows, json_map, json_vec, rollup_deltas};

enum Msg {
    Stage(Arc<Changes>),
    Apply(Arc<Changes>, oneshot::Sender<Result<(), StoreError>>),
}

pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

/// The writer thread's connection and the state of a batch being staged.
struct Thread {
    conn: Connection,
    /// None: no staged part. Some(Ok): a transaction is open with the staged parts written.
    /// Some(Err): a part failed; its transaction is rolled back and the error awaits `apply`.
    staged: Option<Result<(), StoreError>>,
}

impl Thread {
    fn stage(&mut self, c: &Changes) {
        let r = match self.staged.take() {
            Some(Err(e)) => Err(e),
            Some(Ok(())) => write(&self.conn, c),
            None => self.conn.execute_batch("BEGIN").map_err(map_err("starting a transaction")).and_then(|()| write(&self.conn, c)),
        };
        if r.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.staged = Some(r);
    }

    fn apply(&mut self, c: &Changes) -> Result<(), StoreError> {
        match self.staged.take() {
            Some(Err(e)) => Err(e),
            Some(Ok(())) => {
                let r = write(&self.conn, c).and_then(|()| self.conn.execute_batch("COMMIT").map_err(map_err("committing scheduler changes")));
                if r.is_err() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                r
            }
            None if is_empty(c) => Ok(()),
            None => {
                let tx = self.conn.transaction().map_err(map_err("starting a transaction"))?;
                write(&tx, c)?;
                tx.commit().map_err(map_err("committing scheduler changes"))
            }
        }
    }
}

fn is_empty(c: &Changes) -> bool {
    c.new_jobs.is_empty()
        && c.jobs.is_empty()
        && c.attempts.is_empty()
        && c.workers.is_empty()
        && c.events.is_empty()
        && c.idempotency.is_empty()
        && c.idempotency_expired_before.is_none()
        && c.sla_outcomes.is_empty()
        && c.costs.is_empty()
}

pub(crate) fn map_err(doing: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| {
        let unavailable = matches!(
            e.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
            )
        );
        if unavailable { StoreError::WriteUnavailable { doing, detail: e.to_string() } } else { StoreError::Write { doing, detail: e.to_string() } }
    }
}

impl Writer {
    pub(crate) fn open(path: &Path, fsync_commits: bool) -> Result<Writer, StoreError> {
        let conn = Connection::open(path).map_err(map_err("opening the database for writing"))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err("configuring the writer"))?;
        let sync = if fsync_commits { "FULL" } else { "NORMAL" };
        // SQLite's own checkpoint every ~1000 WAL pages, inside a commit: cheap for the steady
        // small commits of submits and dispatch (a checkpointer thread measured slower for them).
        conn.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA cache_size = -65536;"))
            .map_err(map_err("configuring the writer"))?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("hodei-sqlite-writer".into())
            .spawn(move || {
                let mut t = Thread { conn, staged: None };
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Msg::Stage(c) => t.stage(&c),
                        Msg::Apply(c, reply) => {
                            let _ = reply.send(t.apply(&c));
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Write { doing: "starting the writer thread", detail: e.to_string() })?;
        Ok(Writer { tx })
    }

    /// Writes `c` into the open (or a new) transaction without committing it; a failure is
    /// reported by the next `apply`.
    pub(crate) fn stage(&self, c: Arc<Changes>) {
        // A stopped thread is reported by the `apply` that follows.
        let _ = self.tx.send(Msg::Stage(c));
    }

    /// Writes `c` and commits it with the parts staged before it.
    pub(crate) async fn apply(&self, c: Arc<Changes>) -> Result<(), StoreError> {
        let stopped = || StoreError::WriteUnavailable { doing: "writing", detail: "the writer thread stopped".into() };
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Apply(c, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millis()
}

fn oms(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_millis)
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Columns of a job's own state, shared by the two inserts below.
const STATE_COLUMNS: &str = "id, tenant_id, state, state_reason, attempt_count, current_attempt_id, retries_left, lost_requeues, exit_code, \
     failure_reason, submitted_at, eligible_at, scheduled_at, started_at, finished_at, next_retry_at, cancel_requested_at, pool_id, worker_id, \
     log_truncated, created_state, created_reason, warnings, sla_status, sla_waited_ms, sla_since, sla_breached_at, sla_wait_ms, sla_decided_at";
const STATE_VALUES: &str =
    "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29";

/// A job with its own spec.
fn insert_job_sql() -> String {
    format!(
        "INSERT INTO jobs ({STATE_COLUMNS}, name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, expected_duration_ms, max_retries, \
         retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, submitted_by, depends_on) \
         VALUES ({STATE_VALUES}, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37, ?38, ?39, ?40, ?41, ?42, ?43, ?44, ?45, ?46, ?47, ?48, ?49)"
    )
}

/// A member of an array: its spec is the array's (`job_arrays`).
fn insert_member_sql() -> String {
    format!("INSERT INTO jobs ({STATE_COLUMNS}, array_id, array_index) VALUES ({STATE_VALUES}, ?30, ?31)")
}

/// An array's spec, once; the id bounds widen as its members arrive (in one or more parts).
const UPSERT_ARRAY: &str = "INSERT INTO job_arrays (id, tenant_id, name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, \
     expected_duration_ms, max_retries, retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, submitted_by, depends_on, array_start, \
     array_end, array_step, array_max_parallel, first_job_id, last_job_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28) \
     ON CONFLICT (id) DO UPDATE SET first_job_id = min(first_job_id, excluded.first_job_id), last_job_id = max(last_job_id, excluded.last_job_id)";

const UPDATE_JOB: &str = "UPDATE jobs SET state = ?1, state_reason = ?2, attempt_count = ?3, current_attempt_id = ?4, retries_left = ?5, lost_requeues = ?6, \
     exit_code = ?7, failure_reason = ?8, eligible_at = ?9, scheduled_at = ?10, started_at = ?11, finished_at = ?12, next_retry_at = ?13, \
     cancel_requested_at = ?14, pool_id = ?15, worker_id = ?16, log_truncated = ?17, \
     sla_status = ?19, sla_waited_ms = ?20, sla_since = ?21, sla_breached_at = ?22, sla_wait_ms = ?23, sla_decided_at = ?24 WHERE id = ?18";

const UPSERT_ATTEMPT: &str = "INSERT INTO attempts (id, job_id, number, worker_id, pool_id, cpu_m, memory_mb, gpu, state, assigned_at, started_at, finished_at, \
     exit_code, signal, failure_reason, cpu_time_ms, max_rss_mb, log_bytes, log_truncated, billed_seconds, cost_micros, accrued_to) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) \
     ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at, finished_at = excluded.finished_at, \
     exit_code = excluded.exit_code, signal = excluded.signal, failure_reason = excluded.failure_reason, cpu_time_ms = excluded.cpu_time_ms, \
     max_rss_mb = excluded.max_rss_mb, log_bytes = excluded.log_bytes, log_truncated = excluded.log_truncated, \
     billed_seconds = excluded.billed_seconds, cost_micros = excluded.cost_micros, accrued_to = excluded.accrued_to";

const INSERT_COST_RECORD: &str = "INSERT INTO cost_records (attempt_id, job_id, tenant_id, pool_id, job_name, cpu_m, memory_mb, gpu, \
     rate_cpu, rate_memory, rate_gpu, start_at, end_at, day, billed_seconds, cost_micros) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

const ADD_TO_ROLLUP: &str = "INSERT INTO cost_rollups (day, tenant_id, pool_id, cost_micros, cpu_m_seconds, memory_mb_seconds, gpu_seconds, attempts) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (day, tenant_id, pool_id) DO UPDATE SET \
     cost_micros = cost_rollups.cost_micros + excluded.cost_micros, cpu_m_seconds = cost_rollups.cpu_m_seconds + excluded.cpu_m_seconds, \
     memory_mb_seconds = cost_rollups.memory_mb_seconds + excluded.memory_mb_seconds, gpu_seconds = cost_rollups.gpu_seconds + excluded.gpu_seconds, \
     attempts = cost_rollups.attempts + excluded.attempts";

const INSERT_EVENT: &str = "INSERT INTO job_events (job_id, at, from_state, to_state, actor, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The spec columns' values, in the order of `insert_job_sql` and `UPSERT_ARRAY`.
struct SpecValues<'a> {
    s: &'a JobSpec,
    command: String,
    env: String,
    labels: String,
    timeout_ms: i64,
    expected_duration_ms: Option<i64>,
    retry_backoff_ms: Option<i64>,
    priority: &'static str,
    sla: &'static str,
    pool_selector: Option<String>,
    submitted_by: Option<uuid::Uuid>,
    depends_on: Option<String>,
}

impl<'a> SpecValues<'a> {
    fn of(s: &'a JobSpec) -> SpecValues<'a> {
        SpecValues {
            s,
            command: json_vec(&s.command),
            env: json_map(&s.env),
            labels: json_map(&s.labels),
            timeout_ms: dur_ms(s.timeout),
            expected_duration_ms: s.expected_duration.map(dur_ms),
            retry_backoff_ms: s.retry_backoff.map(dur_ms),
            priority: s.priority.as_str(),
            sla: s.sla.as_str(),
            pool_selector: selector_text(s),
            submitted_by: s.submitted_by.map(|p| p.as_uuid()),
            depends_on: depends_on_text(s),
        }
    }

    fn params(&self) -> [&dyn ToSql; 20] {
        let s = self.s;
        [
            &s.name,
            &self.command,
            &self.env,
            &s.working_dir,
            &s.image,
            &s.resources.cpu_m.0,
            &s.resources.memory_mb.0,
            &s.resources.gpu.0,
            &self.timeout_ms,
            &self.expected_duration_ms,
            &s.max_retries,
            &self.retry_backoff_ms,
            &self.priority,
            &self.sla,
            &s.preemptible,
            &s.hold,
            &self.labels,
            &self.pool_selector,
            &self.submitted_by,
            &self.depends_on,
        ]
    }
}

fn insert_job(
    own: &mut rusqlite::CachedStatement<'_>,
    member: &mut rusqlite::CachedStatement<'_>,
    j: &Job,
    created: Option<&JobEvent>,
) -> rusqlite::Result<usize> {
    let warnings = (!j.warnings.is_empty()).then(|| json_vec(&j.warnings));
    let state = params![
        j.id.as_uuid(),
        j.tenant.as_str(),
        j.state.as_str(),
        j.state_reason,
        j.attempt_count,
        j.current_attempt.map(|a| a.as_uuid()),
        j.retries_left,
        j.lost_requeues,
        j.exit_code,
        j.failure_reason.map(|f| f.as_str()),
        ms(j.submitted_at),
        ms(j.eligible_at),
        oms(j.scheduled_at),
        oms(j.started_at),
        oms(j.finished_at),
        oms(j.next_retry_at),
        oms(j.cancel_requested_at),
        j.pool_id.as_ref().map(|p| p.as_str()),
        j.worker_id.map(|w| w.as_uuid()),
        j.log_truncated,
        created.map_or(JobState::Pending, |e| e.to).as_str(),
        created.and_then(|e| e.reason.as_deref()),
        warnings,
        j.sla.status.as_str(),
        j.sla.waited_ms as i64,
        oms(j.sla.since),
        oms(j.sla.breached_at),
        j.sla.wait_ms.map(|w| w as i64),
        oms(j.sla.decided_at),
    ];
    match j.array {
        Some((array, index)) => member.execute(params_from_iter(state.iter().chain(params![array.as_uuid(), index]))),
        None => {
            let spec = SpecValues::of(&j.spec);
            own.execute(params_from_iter(state.iter().chain(spec.params().iter())))
        }
    }
}

/// Writes each array's spec once per batch (the upsert widens its id bounds).
fn upsert_arrays(st: &mut rusqlite::CachedStatement<'_>, jobs: &[Job]) -> rusqlite::Result<()> {
    // Members of one array arrive in a run, in id order; a run is written as one upsert.
    let mut runs = jobs.iter().filter(|j| j.array.is_some()).peekable();
    while let Some(first) = runs.next() {
        let Some((array, _)) = first.array else { continue };
        let (mut lo, mut hi) = (first.id, first.id);
        while let Some(next) = runs.next_if(|n| n.array.is_some_and(|(a, _)| a == array)) {
            (lo, hi) = (lo.min(next.id), hi.max(next.id));
        }
        let Some(a) = first.spec.array else { continue };
        let spec = SpecValues::of(&first.spec);
        let head = params![array.as_uuid(), first.tenant.as_str()];
        let tail = params![a.start, a.end, a.step, a.max_parallel, lo.as_uuid(), hi.as_uuid()];
        st.execute(params_from_iter(head.iter().chain(spec.params().iter()).chain(tail.iter())))?;
    }
    Ok(())
}

/// Writes one batch of scheduler decisions into the open transaction of `tx`.
fn write(tx: &Connection, c: &Changes) -> Result<(), StoreError> {
    {
        // A job's creation event is stored on its row (see the migration).
        let created: IdMap<JobId, &JobEvent> = c.events.iter().filter(|e| e.from.is_none()).map(|e| (e.job_id, e)).collect();
        let mut arrays = tx.prepare_cached(UPSERT_ARRAY).map_err(map_err("preparing the array insert"))?;
        upsert_arrays(&mut arrays, &c.new_jobs).map_err(map_err("inserting arrays"))?;
        let mut own = tx.prepare_cached(&insert_job_sql()).map_err(map_err("preparing the job insert"))?;
        let mut member = tx.prepare_cached(&insert_member_sql()).map_err(map_err("preparing the array member insert"))?;
        for j in &c.new_jobs {
            insert_job(&mut own, &mut member, j, created.get(&j.id).copied()).map_err(map_err("inserting jobs"))?;
        }
    }
    {
        let mut st = tx.prepare_cached(UPDATE_JOB).map_err(map_err("preparing the job update"))?;
        for j in &c.jobs {
            st.execute(params![
                j.state.as_str(),
                j.state_reason,
                j.attempt_count,
                j.current_attempt.map(|a| a.as_uuid()),
                j.retries_left,
                j.lost_requeues,
                j.exit_code,
                j.failure_reason.map(|f| f.as_str()),
                ms(j.eligible_at),
                oms(j.scheduled_at),
                oms(j.started_at),
                oms(j.finished_at),
                oms(j.next_retry_at),
                oms(j.cancel_requested_at),
                j.pool_id.as_ref().map(|p| p.as_str()),
                j.worker_id.map(|w| w.as_uuid()),
                j.log_truncated,
                j.id.as_uuid(),
                j.sla.status.as_str(),
                j.sla.waited_ms as i64,
                oms(j.sla.since),
                oms(j.sla.breached_at),
                j.sla.wait_ms.map(|w| w as i64),
                oms(j.sla.decided_at),
            ])
            .map_err(map_err("updating a job"))?;
        }
    }
    {
        let mut st = tx.prepare_cached(UPSERT_ATTEMPT).map_err(map_err("preparing the attempt upsert"))?;
        for a in &c.attempts {
            st.execute(params![
                a.id.as_uuid(),
                a.job_id.as_uuid(),
                a.number,
                a.worker_id.as_uuid(),
                a.pool_id.as_str(),
                a.resources.cpu_m.get(),
                a.resources.memory_mb.get(),
                a.resources.gpu.get(),
                a.state.as_str(),
                ms(a.assigned_at),
                oms(a.started_at),
                oms(a.finished_at),
                a.exit_code,
                a.signal,
                a.failure_reason.map(|f| f.as_str()),
                a.cpu_time_ms as i64,
                a.max_rss_mb as i64,
                a.log_bytes as i64,
                a.log_truncated,
                a.billed_seconds as i64,
                a.cost_micros,
                oms(a.accrued_to),
            ])
            .map_err(map_err("writing an attempt"))?;
        }
    }
    if !c.costs.is_empty() {
        // The ledger, in the transaction of the attempts it prices.
        let rows = cost_rows(&c.costs);
        let mut st = tx.prepare_cached(INSERT_COST_RECORD).map_err(map_err("preparing the cost record insert"))?;
        // Rollups from every row; records only of the attempts that keep them (track_by_job).
        for r in rows.iter().filter(|r| r.c.keep_record) {
            let (res, rates) = (&r.c.resources, &r.seg.rates);
            st.execute(params![
                r.c.attempt_id.as_uuid(),
                r.c.job_id.as_uuid(),
                r.tenant,
                r.pool,
                r.name,
                res.cpu_m.get(),
                res.memory_mb.get(),
                res.gpu.get(),
                rates.cpu_core_hour,
                rates.memory_gib_hour,
                rates.gpu_hour,
                ms(r.seg.start),
                ms(r.seg.end),
                r.seg.day,
                r.seg.billed_seconds as i64,
                r.seg.cost_micros,
            ])
            .map_err(map_err("writing a cost record"))?;
        }
        let mut st = tx.prepare_cached(ADD_TO_ROLLUP).map_err(map_err("preparing the cost rollup upsert"))?;
        for ((day, tenant, pool), d) in rollup_deltas(&rows) {
            st.execute(params![day, tenant, pool, d.cost_micros, d.cpu_m_seconds, d.memory_mb_seconds, d.gpu_seconds, d.attempts])
                .map_err(map_err("adding to a cost rollup"))?;
        }
    }
    {
        let mut st = tx
            .prepare_cached("UPDATE workers SET state = ?1, last_heartbeat_at = ?2, health = ?3, health_reason = ?4 WHERE id = ?5")
            .map_err(map_err("preparing the worker update"))?;
        for w in &c.workers {
            st.execute(params![w.state.as_str(), ms(w.last_heartbeat_at), w.health.as_str(), w.health_reason, w.id.as_uuid()])
                .map_err(map_err("updating a worker"))?;
        }
    }
    {
        let mut st = tx.prepare_cached(INSERT_EVENT).map_err(map_err("preparing the event insert"))?;
        for e in c.events.iter().filter(|e| e.from.is_some()) {
            st.execute(params![e.job_id.as_uuid(), ms(e.at), e.from.map(|s| s.as_str()), e.to.as_str(), &*e.actor.name(), e.reason])
                .map_err(map_err("inserting job events"))?;
        }
    }
    if let Some(cutoff) = c.idempotency_expired_before {
        tx.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")
            .and_then(|mut st| st.execute(params![ms(cutoff)]))
            .map_err(map_err("deleting expired idempotency keys"))?;
    }
    if !c.idempotency.is_empty() {
        // A key used again after its record expired replaces it.
        let mut st = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO idempotency_keys (tenant_id, key, fingerprint, job_ids, array_id, array_count, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err("preparing the idempotency key insert"))?;
        for r in &c.idempotency {
            let cols = SubmittedCols::of(&r.submitted);
            st.execute(params![r.tenant.as_str(), r.key, r.fingerprint, cols.job_ids, cols.array_id, cols.array_count, ms(r.created_at)])
                .map_err(map_err("inserting idempotency keys"))?;
        }
    }
    if !c.sla_outcomes.is_empty() {
        let mut st = tx
            .prepare_cached(
                "INSERT INTO sla_counts (hour, tenant_id, level, met, bin, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (hour, tenant_id, level, met, bin) DO UPDATE SET n = n + excluded.n",
            )
            .map_err(map_err("preparing the SLA count update"))?;
        for (k, n) in count_outcomes(&c.sla_outcomes) {
            st.execute(params![ms(k.hour), k.tenant.as_str(), k.level.as_str(), k.met, k.bin, n as i64]).map_err(map_err("adding SLA counts"))?;
        }
    }
    Ok(())
}
