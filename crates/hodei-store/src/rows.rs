//! Engine-neutral helpers for turning rows into core records: every engine reads its rows
//! through [`Cols`], so SQLite and PostgreSQL share one mapping of columns to fields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hodei_core::autoscale::{Decision, Event, Policy, Trigger};
use hodei_core::idempotency::{IdempotencyRecord, Submitted};
use hodei_core::spec::{ArraySpec, Dependency, JobSpec};
use hodei_core::{
    ArrayId, Attempt, AttemptId, BurstId, BurstSession, CpuMillis, Gpus, Job, JobId, MemoryMb, Pool, PoolId, PrincipalId, Quota, Resources, SlaClock, Tenant,
    TenantId, Timestamp, Worker, WorkerId,
};
use sqlx::{Postgres, Row, Sqlite};
use uuid::Uuid;

use hodei_core::job::Actor;
use hodei_core::{JobEvent, JobState};

use crate::{Result, StoreError};
use hodei_core::sla_tally::SlaCount;

/// A row of either engine, read by column name. Every column type the schema uses decodes in
/// both (integers are 64-bit but for exit codes and signals, booleans are booleans).
pub(crate) trait Cols {
    fn col<'a, T>(&'a self, column: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'a, Sqlite> + sqlx::Type<Sqlite> + sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>;
}

impl Cols for sqlx::sqlite::SqliteRow {
    fn col<'a, T>(&'a self, column: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'a, Sqlite> + sqlx::Type<Sqlite> + sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
    {
        self.try_get(column)
    }
}

impl Cols for sqlx::postgres::PgRow {
    fn col<'a, T>(&'a self, column: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'a, Sqlite> + sqlx::Type<Sqlite> + sqlx::Decode<'a, Postgres> + sqlx::Type<Postgres>,
    {
        self.try_get(column)
    }
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millis()
}

pub(crate) fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

pub(crate) fn json_map(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn json_vec(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn json_tenants(ts: &[TenantId]) -> String {
    serde_json::to_string(&ts.iter().map(TenantId::as_str).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_tenants(doing: &'static str, s: &str) -> Result<Vec<TenantId>, StoreError> {
    parse_vec(doing, s)?.iter().map(|t| parse_slug(doing, t, TenantId::parse)).collect()
}

/// A job's `pool_selector` column: the pool's id alone, or `{"pool": …, "labels": {…}}` when
/// the job selects labels.
pub(crate) fn selector_text(s: &JobSpec) -> Option<String> {
    if s.pool_labels.is_empty() {
        return s.pool_selector.as_ref().map(|p| p.as_str().to_owned());
    }
    Some(serde_json::json!({"pool": s.pool_selector.as_ref().map(|p| p.as_str()), "labels": s.pool_labels}).to_string())
}

fn parse_selector(doing: &'static str, text: Option<&str>) -> Result<(Option<PoolId>, BTreeMap<String, String>), StoreError> {
    let Some(text) = text else { return Ok((None, BTreeMap::new())) };
    if !text.starts_with('{') {
        return Ok((Some(parse_slug(doing, text, PoolId::parse)?), BTreeMap::new()));
    }
    let corrupt = |detail: String| StoreError::Corrupt { doing, detail };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let pool = v.get("pool").and_then(|p| p.as_str()).map(|p| parse_slug(doing, p, PoolId::parse)).transpose()?;
    let labels = serde_json::from_value(v.get("labels").cloned().unwrap_or_default()).map_err(|e| corrupt(e.to_string()))?;
    Ok((pool, labels))
}

pub(crate) fn parse_map(doing: &'static str, s: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn parse_vec(doing: &'static str, s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn parse_enum<T: std::str::FromStr>(doing: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt { doing, detail: format!("unknown value {s:?}") })
}

pub(crate) fn parse_slug<T>(doing: &'static str, s: &str, f: impl Fn(&str) -> Result<T, hodei_core::SlugError>) -> Result<T, StoreError> {
    f(s).map_err(|e| StoreError::Corrupt { doing, detail: e.to_string() })
}

pub(crate) fn u32_of(doing: &'static str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt { doing, detail: format!("{v} out of range") })
}

/// The `{prefix}cpu_m`, `{prefix}memory_mb`, `{prefix}gpu` columns of a row.
pub(crate) fn resources(r: &impl Cols, doing: &'static str, prefix: &str) -> Result<Resources> {
    let col = |name: &str| -> Result<u32> {
        let v: i64 = r.col(format!("{prefix}{name}").as_str()).map_err(|e| StoreError::Db { doing, source: e })?;
        u32_of(doing, v)
    };
    Ok(Resources { cpu_m: CpuMillis(col("cpu_m")?), memory_mb: MemoryMb(col("memory_mb")?), gpu: Gpus(col("gpu")?) })
}

/// The columns a job is read from (`job_rows`), in the order [`JobCol::ALL`] selects them, so
/// that a reader may find them by position as well as by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobCol {
    Id,
    TenantId,
    State,
    StateReason,
    AttemptCount,
    CurrentAttemptId,
    RetriesLeft,
    LostRequeues,
    ExitCode,
    FailureReason,
    SubmittedAt,
    EligibleAt,
    ScheduledAt,
    StartedAt,
    FinishedAt,
    NextRetryAt,
    CancelRequestedAt,
    PoolId,
    WorkerId,
    LogTruncated,
    Warnings,
    SlaStatus,
    SlaWaitedMs,
    SlaSince,
    SlaBreachedAt,
    SlaWaitMs,
    SlaDecidedAt,
    ArrayId,
    ArrayIndex,
    // The spec: an array's members share theirs.
    Name,
    Command,
    Env,
    WorkingDir,
    Image,
    CpuM,
    MemoryMb,
    Gpu,
    TimeoutMs,
    ExpectedDurationMs,
    MaxRetries,
    RetryBackoffMs,
    Priority,
    Sla,
    Preemptible,
    Hold,
    Labels,
    PoolSelector,
    SubmittedBy,
    ArrayStart,
    ArrayEnd,
    ArrayStep,
    ArrayMaxParallel,
    DependsOn,
}

impl JobCol {
    const NAMES: [&'static str; 53] = [
        "id",
        "tenant_id",
        "state",
        "state_reason",
        "attempt_count",
        "current_attempt_id",
        "retries_left",
        "lost_requeues",
        "exit_code",
        "failure_reason",
        "submitted_at",
        "eligible_at",
        "scheduled_at",
        "started_at",
        "finished_at",
        "next_retry_at",
        "cancel_requested_at",
        "pool_id",
        "worker_id",
        "log_truncated",
        "warnings",
        "sla_status",
        "sla_waited_ms",
        "sla_since",
        "sla_breached_at",
        "sla_wait_ms",
        "sla_decided_at",
        "array_id",
        "array_index",
        "name",
        "command",
        "env",
        "working_dir",
        "image",
        "cpu_m",
        "memory_mb",
        "gpu",
        "timeout_ms",
        "expected_duration_ms",
        "max_retries",
        "retry_backoff_ms",
        "priority",
        "sla",
        "preemptible",
        "hold",
        "labels",
        "pool_selector",
        "submitted_by",
        "array_start",
        "array_end",
        "array_step",
        "array_max_parallel",
        "depends_on",
    ];

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Every column, comma-separated, in order: `SELECT {list} FROM job_rows`.
    pub(crate) fn list() -> String {
        Self::NAMES.join(", ")
    }
}

/// A job row read column by column, by name or by position. Absent values are `None`.
pub(crate) trait JobRow {
    fn int(&self, c: JobCol) -> Result<Option<i64>>;
    /// A 32-bit integer column (exit codes).
    fn int32(&self, c: JobCol) -> Result<Option<i32>>;
    fn text(&self, c: JobCol) -> Result<Option<&str>>;
    fn uuid(&self, c: JobCol) -> Result<Option<Uuid>>;
    fn flag(&self, c: JobCol) -> Result<Option<bool>>;
}

const JOB: &str = "reading a job";

impl<R: Cols> JobRow for R {
    fn int(&self, c: JobCol) -> Result<Option<i64>> {
        self.col(c.name()).map_err(|e| StoreError::Db { doing: JOB, source: e })
    }
    fn int32(&self, c: JobCol) -> Result<Option<i32>> {
        self.col(c.name()).map_err(|e| StoreError::Db { doing: JOB, source: e })
    }
    fn text(&self, c: JobCol) -> Result<Option<&str>> {
        self.col(c.name()).map_err(|e| StoreError::Db { doing: JOB, source: e })
    }
    fn uuid(&self, c: JobCol) -> Result<Option<Uuid>> {
        self.col(c.name()).map_err(|e| StoreError::Db { doing: JOB, source: e })
    }
    fn flag(&self, c: JobCol) -> Result<Option<bool>> {
        self.col(c.name()).map_err(|e| StoreError::Db { doing: JOB, source: e })
    }
}

fn need<T>(v: Option<T>, c: JobCol) -> Result<T> {
    v.ok_or_else(|| StoreError::Corrupt { doing: JOB, detail: format!("{} is NULL", c.name()) })
}

/// Jobs read from rows, the spec of an array parsed once for all its members among them.
#[derive(Default)]
pub(crate) struct SharedSpecs(std::collections::HashMap<ArrayId, Arc<JobSpec>>);

impl SharedSpecs {
    pub(crate) fn job(&mut self, r: &impl JobRow) -> Result<Job> {
        let spec = match r.uuid(JobCol::ArrayId)?.map(ArrayId::from_uuid) {
            None => None,
            Some(a) => Some(match self.0.get(&a) {
                Some(s) => s.clone(),
                None => self.0.entry(a).or_insert(Arc::new(spec_from(r)?)).clone(),
            }),
        };
        job_from(r, spec)
    }
}

/// A job's spec, from its row.
pub(crate) fn spec_from(r: &impl JobRow) -> Result<JobSpec> {
    use JobCol as C;
    let int = |c| r.int(c).and_then(|v| need(v, c));
    let text = |c| r.text(c).and_then(|v| need(v, c));
    let flag = |c| r.flag(c).and_then(|v| need(v, c));
    let millis = |v: i64| Duration::from_millis(v.max(0) as u64);
    let u32_at = |c| int(c).and_then(|v| u32_of(JOB, v));
    let (pool_selector, pool_labels) = parse_selector(JOB, r.text(C::PoolSelector)?)?;
    Ok(JobSpec {
        name: text(C::Name)?.to_owned(),
        command: parse_vec(JOB, text(C::Command)?)?,
        env: parse_map(JOB, text(C::Env)?)?,
        working_dir: r.text(C::WorkingDir)?.map(str::to_owned),
        image: r.text(C::Image)?.map(str::to_owned),
        resources: Resources { cpu_m: CpuMillis(u32_at(C::CpuM)?), memory_mb: MemoryMb(u32_at(C::MemoryMb)?), gpu: Gpus(u32_at(C::Gpu)?) },
        timeout: millis(int(C::TimeoutMs)?),
        expected_duration: r.int(C::ExpectedDurationMs)?.map(millis),
        max_retries: u32_at(C::MaxRetries)?,
        retry_backoff: r.int(C::RetryBackoffMs)?.map(millis),
        priority: parse_enum(JOB, text(C::Priority)?)?,
        sla: parse_enum(JOB, text(C::Sla)?)?,
        preemptible: flag(C::Preemptible)?,
        hold: flag(C::Hold)?,
        labels: parse_map(JOB, text(C::Labels)?)?,
        pool_selector,
        pool_labels,
        submitted_by: r.uuid(C::SubmittedBy)?.map(PrincipalId::from_uuid),
        array: match r.int(C::ArrayStart)? {
            None => None,
            Some(start) => Some(ArraySpec {
                start: u32_of(JOB, start)?,
                end: u32_at(C::ArrayEnd)?,
                step: u32_at(C::ArrayStep)?,
                max_parallel: r.int(C::ArrayMaxParallel)?.map(|p| u32_of(JOB, p)).transpose()?,
            }),
        },
        depends_on: parse_depends_on(r.text(C::DependsOn)?)?,
    })
}

/// A job's `depends_on` column: `[{"job_id": …, "condition": …}]`, NULL for none.
pub(crate) fn depends_on_text(s: &JobSpec) -> Option<String> {
    if s.depends_on.is_empty() {
        return None;
    }
    let items: Vec<serde_json::Value> =
        s.depends_on.iter().map(|d| serde_json::json!({"job_id": d.job.to_string(), "condition": d.condition.as_str()})).collect();
    Some(serde_json::Value::Array(items).to_string())
}

fn parse_depends_on(text: Option<&str>) -> Result<Vec<Dependency>> {
    let Some(text) = text else { return Ok(Vec::new()) };
    let bad = |detail: String| StoreError::Corrupt { doing: JOB, detail };
    let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| bad(format!("depends_on: {e}")))?;
    items
        .iter()
        .map(|d| {
            let job = d["job_id"].as_str().and_then(|j| j.parse::<JobId>().ok()).ok_or_else(|| bad(format!("depends_on: job_id of {d}")))?;
            let condition = d["condition"].as_str().and_then(|c| c.parse().ok()).ok_or_else(|| bad(format!("depends_on: condition of {d}")))?;
            Ok(Dependency { job, condition })
        })
        .collect()
}

pub(crate) fn job_from_row(r: &impl Cols) -> Result<Job> {
    job_from(r, None)
}

/// A job from its row; `spec`, when given, is used instead of the row's (an array's members
/// share one).
pub(crate) fn job_from(r: &impl JobRow, spec: Option<Arc<JobSpec>>) -> Result<Job> {
    use JobCol as C;
    let int = |c| r.int(c).and_then(|v| need(v, c));
    let text = |c| r.text(c).and_then(|v| need(v, c));
    let u32_at = |c| int(c).and_then(|v| u32_of(JOB, v));
    let at = |c| r.int(c).map(ts);
    let spec = match spec {
        Some(s) => s,
        None => Arc::new(spec_from(r)?),
    };
    let array = match r.uuid(C::ArrayId)? {
        None => None,
        Some(id) => Some((ArrayId::from_uuid(id), u32_at(C::ArrayIndex)?)),
    };
    Ok(Job {
        id: JobId::from_uuid(r.uuid(C::Id).and_then(|v| need(v, C::Id))?),
        tenant: parse_slug(JOB, text(C::TenantId)?, TenantId::parse)?,
        spec,
        state: parse_enum(JOB, text(C::State)?)?,
        state_reason: r.text(C::StateReason)?.map(str::to_owned),
        attempt_count: u32_at(C::AttemptCount)?,
        current_attempt: r.uuid(C::CurrentAttemptId)?.map(AttemptId::from_uuid),
        retries_left: u32_at(C::RetriesLeft)?,
        lost_requeues: u32_at(C::LostRequeues)?,
        exit_code: r.int32(C::ExitCode)?,
        failure_reason: r.text(C::FailureReason)?.map(|s| parse_enum(JOB, s)).transpose()?,
        submitted_at: Timestamp::from_millis(int(C::SubmittedAt)?),
        eligible_at: Timestamp::from_millis(int(C::EligibleAt)?),
        scheduled_at: at(C::ScheduledAt)?,
        started_at: at(C::StartedAt)?,
        finished_at: at(C::FinishedAt)?,
        next_retry_at: at(C::NextRetryAt)?,
        cancel_requested_at: at(C::CancelRequestedAt)?,
        pool_id: r.text(C::PoolId)?.map(|p| parse_slug(JOB, p, PoolId::parse)).transpose()?,
        worker_id: r.uuid(C::WorkerId)?.map(WorkerId::from_uuid),
        log_truncated: r.flag(C::LogTruncated).and_then(|v| need(v, C::LogTruncated))?,
        warnings: r.text(C::Warnings)?.map(|w| parse_vec(JOB, w)).transpose()?.unwrap_or_default(),
        sla: SlaClock {
            waited_ms: int(C::SlaWaitedMs)?.max(0) as u64,
            since: at(C::SlaSince)?,
            mark: 0,
            status: parse_enum(JOB, text(C::SlaStatus)?)?,
            breached_at: at(C::SlaBreachedAt)?,
            wait_ms: r.int(C::SlaWaitMs)?.map(|w| w.max(0) as u64),
            decided_at: at(C::SlaDecidedAt)?,
            due: None,
            escalated: None,
        },
        array,
    })
}

pub(crate) fn attempt_from_row(r: &impl Cols) -> Result<Attempt> {
    const D: &str = "reading an attempt";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Attempt {
        id: AttemptId::from_uuid(r.col("id").map_err(g)?),
        job_id: JobId::from_uuid(r.col("job_id").map_err(g)?),
        number: u32_of(D, r.col("number").map_err(g)?)?,
        worker_id: WorkerId::from_uuid(r.col("worker_id").map_err(g)?),
        pool_id: parse_slug(D, r.col("pool_id").map_err(g)?, PoolId::parse)?,
        resources: resources(r, D, "")?,
        state: parse_enum(D, r.col("state").map_err(g)?)?,
        assigned_at: Timestamp::from_millis(r.col("assigned_at").map_err(g)?),
        started_at: ts(r.col("started_at").map_err(g)?),
        finished_at: ts(r.col("finished_at").map_err(g)?),
        exit_code: r.col("exit_code").map_err(g)?,
        signal: r.col("signal").map_err(g)?,
        failure_reason: r.col::<Option<&str>>("failure_reason").map_err(g)?.map(|s| parse_enum(D, s)).transpose()?,
        cpu_time_ms: r.col::<i64>("cpu_time_ms").map_err(g)?.max(0) as u64,
        max_rss_mb: r.col::<i64>("max_rss_mb").map_err(g)?.max(0) as u64,
        log_bytes: r.col::<i64>("log_bytes").map_err(g)?.max(0) as u64,
        log_truncated: r.col("log_truncated").map_err(g)?,
        billed_seconds: r.col::<i64>("billed_seconds").map_err(g)?.max(0) as u64,
        cost_micros: r.col("cost_micros").map_err(g)?,
        accrued_to: ts(r.col("accrued_to").map_err(g)?),
    })
}

/// One cost record row (SPEC §2.12): a stretch of an attempt priced at one rate version.
pub(crate) struct CostRow<'a> {
    pub c: &'a hodei_core::sched::AttemptCost,
    pub tenant: &'a str,
    /// The pool, or empty where the ledger keeps no pool (`track_by_pool: false`).
    pub pool: &'a str,
    pub name: &'a str,
    pub seg: &'a hodei_core::cost::Segment,
}

/// The records of the priced attempts that name their tenant (the engine fills them in).
pub(crate) fn cost_rows(costs: &[hodei_core::sched::AttemptCost]) -> Vec<CostRow<'_>> {
    costs
        .iter()
        .filter_map(|c| Some((c, c.tenant.as_ref()?.as_str(), c.job_name.as_deref().unwrap_or(""))))
        .flat_map(|(c, tenant, name)| {
            let pool = if c.by_pool { c.pool_id.as_str() } else { "" };
            c.segments.iter().map(move |seg| CostRow { c, tenant, pool, name, seg })
        })
        .collect()
}

/// What a batch adds to one daily rollup.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RollupDelta {
    pub cost_micros: i64,
    pub cpu_m_seconds: i64,
    pub memory_mb_seconds: i64,
    pub gpu_seconds: i64,
    /// Attempts that ended that day.
    pub attempts: i64,
}

/// The records summed by (day, tenant, pool): one upsert per key, so that a statement never
/// updates a rollup twice.
pub(crate) fn rollup_deltas<'a>(rows: &[CostRow<'a>]) -> BTreeMap<(i64, &'a str, &'a str), RollupDelta> {
    let mut out: BTreeMap<(i64, &str, &str), RollupDelta> = BTreeMap::new();
    for r in rows {
        let d = out.entry((r.seg.day, r.tenant, r.pool)).or_default();
        let s = r.seg.billed_seconds as i64;
        d.cost_micros += r.seg.cost_micros;
        d.cpu_m_seconds += s * i64::from(r.c.resources.cpu_m.get());
        d.memory_mb_seconds += s * i64::from(r.c.resources.memory_mb.get());
        d.gpu_seconds += s * i64::from(r.c.resources.gpu.get());
        d.attempts += i64::from(r.c.segments.last().is_some_and(|l| std::ptr::eq(l, r.seg)));
    }
    out
}

pub(crate) fn alert_from_row(r: &impl Cols) -> Result<hodei_core::alert::Alert> {
    const D: &str = "reading an alert";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(hodei_core::alert::Alert {
        id: hodei_core::AlertId::from_uuid(r.col("id").map_err(g)?),
        kind: r.col("kind").map_err(g)?,
        severity: r.col("severity").map_err(g)?,
        tenant: r.col::<Option<&str>>("tenant_id").map_err(g)?.map(|t| parse_slug(D, t, TenantId::parse)).transpose()?,
        scope: r.col("scope").map_err(g)?,
        dedup_key: r.col("dedup_key").map_err(g)?,
        value: r.col("value").map_err(g)?,
        message: r.col("message").map_err(g)?,
        state: parse_enum(D, r.col("state").map_err(g)?)?,
        fired_at: Timestamp::from_millis(r.col("fired_at").map_err(g)?),
        acknowledged_at: ts(r.col("acknowledged_at").map_err(g)?),
        acknowledged_by: r.col("acknowledged_by").map_err(g)?,
        resolved_at: ts(r.col("resolved_at").map_err(g)?),
    })
}

pub(crate) fn budget_from_row(r: &impl Cols) -> Result<hodei_core::budget::Budget> {
    const D: &str = "reading a budget";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    let thresholds: Vec<u32> =
        serde_json::from_str(r.col("thresholds_pct").map_err(g)?).map_err(|e| StoreError::Corrupt { doing: D, detail: e.to_string() })?;
    Ok(hodei_core::budget::Budget {
        id: hodei_core::BudgetId::from_uuid(r.col("id").map_err(g)?),
        tenant: parse_slug(D, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        amount_micros: r.col("amount_micros").map_err(g)?,
        period: parse_enum(D, r.col("period").map_err(g)?)?,
        thresholds_pct: thresholds,
        on_exhausted: parse_enum(D, r.col("on_exhausted").map_err(g)?)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        updated_at: Timestamp::from_millis(r.col("updated_at").map_err(g)?),
        version: r.col("version").map_err(g)?,
    })
}

pub(crate) fn json_thresholds(t: &[u32]) -> String {
    serde_json::to_string(t).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn rate_version_from_row(r: &impl Cols) -> Result<crate::StoredRates> {
    const D: &str = "listing rate versions";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(crate::StoredRates {
        version: hodei_core::cost::RateVersion {
            effective_from: Timestamp::from_millis(r.col("effective_from").map_err(g)?),
            rates: hodei_core::cost::Rates {
                cpu_core_hour: r.col("rate_cpu").map_err(g)?,
                memory_gib_hour: r.col("rate_memory").map_err(g)?,
                gpu_hour: r.col("rate_gpu").map_err(g)?,
            },
        },
        source: r.col("source").map_err(g)?,
        created_by: r.col("created_by").map_err(g)?,
    })
}

/// A breakdown group: `k` and the sums `cost`, `cpu`, `mem`, `gpu`, `n`.
pub(crate) fn cost_group_from_row(r: &impl Cols) -> Result<crate::CostGroupRow> {
    let g = |e: sqlx::Error| StoreError::Db { doing: "reading cost rollups", source: e };
    Ok(crate::CostGroupRow {
        key: r.col("k").map_err(g)?,
        cost_micros: r.col("cost").map_err(g)?,
        cpu_m_seconds: r.col("cpu").map_err(g)?,
        memory_mb_seconds: r.col("mem").map_err(g)?,
        gpu_seconds: r.col("gpu").map_err(g)?,
        attempts: r.col("n").map_err(g)?,
    })
}

pub(crate) fn worker_from_row(r: &impl Cols) -> Result<Worker> {
    const D: &str = "reading a worker";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Worker {
        id: WorkerId::from_uuid(r.col("id").map_err(g)?),
        instance_name: r.col("instance_name").map_err(g)?,
        pool_id: parse_slug(D, r.col("pool_id").map_err(g)?, PoolId::parse)?,
        state: parse_enum(D, r.col("state").map_err(g)?)?,
        capabilities: parse_vec(D, r.col("capabilities").map_err(g)?)?,
        resources: resources(r, D, "")?,
        allocated: Resources::ZERO,
        slots: u32_of(D, r.col("slots").map_err(g)?)?,
        slots_used: 0,
        labels: parse_map(D, r.col("labels").map_err(g)?)?,
        version: r.col("version").map_err(g)?,
        registered_at: Timestamp::from_millis(r.col("registered_at").map_err(g)?),
        last_heartbeat_at: Timestamp::from_millis(r.col("last_heartbeat_at").map_err(g)?),
        idle_since: None,
        connected: false,
        allowed_tenants: Vec::new(),
        health: parse_enum(D, r.col("health").map_err(g)?)?,
        health_reason: r.col("health_reason").map_err(g)?,
    })
}

pub(crate) fn tenant_from_row(r: &impl Cols) -> Result<Tenant> {
    const D: &str = "reading a tenant";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Tenant {
        id: parse_slug(D, r.col("id").map_err(g)?, TenantId::parse)?,
        name: r.col("name").map_err(g)?,
        email: r.col("email").map_err(g)?,
        tier: parse_enum(D, r.col("tier").map_err(g)?)?,
        weight: r.col::<Option<i64>>("weight").map_err(g)?.map(|w| u32_of(D, w)).transpose()?,
        status: parse_enum(D, r.col("status").map_err(g)?)?,
        quota: Quota {
            resources: resources(r, D, "quota_")?,
            max_concurrent_jobs: u32_of(D, r.col("quota_max_concurrent_jobs").map_err(g)?)?,
            max_queued_jobs: u32_of(D, r.col("quota_max_queued_jobs").map_err(g)?)?,
        },
        labels: parse_map(D, r.col("labels").map_err(g)?)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        updated_at: Timestamp::from_millis(r.col("updated_at").map_err(g)?),
        version: r.col("version").map_err(g)?,
    })
}

pub(crate) fn burst_from_row(r: &impl Cols) -> Result<BurstSession> {
    const D: &str = "reading a burst session";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(BurstSession {
        id: BurstId::from_uuid(r.col("id").map_err(g)?),
        tenant_id: parse_slug(D, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        state: parse_enum(D, r.col("state").map_err(g)?)?,
        requested: resources(r, D, "requested_")?,
        requested_concurrent_jobs: u32_of(D, r.col("requested_concurrent_jobs").map_err(g)?)?,
        duration_minutes: u32_of(D, r.col("duration_minutes").map_err(g)?)?,
        reason: r.col("reason").map_err(g)?,
        requested_by: r.col("requested_by").map_err(g)?,
        decided_by: r.col("decided_by").map_err(g)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        activated_at: ts(r.col("activated_at").map_err(g)?),
        expires_at: ts(r.col("expires_at").map_err(g)?),
        ended_at: ts(r.col("ended_at").map_err(g)?),
        cooldown_until: ts(r.col("cooldown_until").map_err(g)?),
        version: r.col("version").map_err(g)?,
    })
}

pub(crate) fn pool_from_row(r: &impl Cols) -> Result<(Pool, String)> {
    const D: &str = "reading a pool";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    let pool = Pool {
        id: parse_slug(D, r.col("id").map_err(g)?, PoolId::parse)?,
        name: r.col("name").map_err(g)?,
        pool_type: parse_enum(D, r.col("pool_type").map_err(g)?)?,
        provider: r.col("provider").map_err(g)?,
        worker_resources: resources(r, D, "worker_")?,
        worker_slots: u32_of(D, r.col("worker_slots").map_err(g)?)?,
        min_size: u32_of(D, r.col("min_size").map_err(g)?)?,
        max_size: u32_of(D, r.col("max_size").map_err(g)?)?,
        desired_size: u32_of(D, r.col("desired_size").map_err(g)?)?,
        auto_scaling_enabled: r.col("auto_scaling_enabled").map_err(g)?,
        idle_timeout: Duration::from_millis(u64::try_from(r.col::<i64>("idle_timeout_ms").map_err(g)?).unwrap_or(0)),
        scaling_policies: parse_policies(D, r.col("scaling_policies").map_err(g)?)?,
        allowed_tenants: parse_tenants(D, r.col("allowed_tenants").map_err(g)?)?,
        labels: parse_map(D, r.col("labels").map_err(g)?)?,
        managed_by: r.col("managed_by").map_err(g)?,
        state: parse_enum(D, r.col("state").map_err(g)?)?,
        state_reason: r.col("state_reason").map_err(g)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        updated_at: Timestamp::from_millis(r.col("updated_at").map_err(g)?),
        version: r.col("version").map_err(g)?,
    };
    Ok((pool, r.col("join_token_hash").map_err(g)?))
}

/// A job's first transition, stored on its row (`submitted_at`, `created_state`,
/// `created_reason`, by `submitted_by`).
pub(crate) fn created_event(job: JobId, r: &impl Cols) -> Result<JobEvent> {
    const D: &str = "listing job events";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(JobEvent {
        job_id: job,
        at: Timestamp::from_millis(r.col("submitted_at").map_err(g)?),
        from: None,
        to: parse_enum(D, r.col("created_state").map_err(g)?)?,
        actor: Actor::of_submitter(r.col::<Option<Uuid>>("submitted_by").map_err(g)?.map(PrincipalId::from_uuid)),
        reason: r.col("created_reason").map_err(g)?,
    })
}

/// A later transition, from a `job_events` row.
pub(crate) fn event_from_row(job: JobId, r: &impl Cols) -> Result<JobEvent> {
    const D: &str = "listing job events";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    let actor = Actor::parse(r.col::<&str>("actor").map_err(g)?);
    Ok(JobEvent {
        job_id: job,
        at: Timestamp::from_millis(r.col("at").map_err(g)?),
        from: r.col::<Option<&str>>("from_state").map_err(g)?.map(|s| parse_enum::<JobState>(D, s)).transpose()?,
        to: parse_enum(D, r.col("to_state").map_err(g)?)?,
        actor,
        reason: r.col("reason").map_err(g)?,
    })
}

pub(crate) const SLA_COUNTS: &str = "reading SLA counts";

/// One summed count from a row of `tenant_id, level, met, bin, n`.
pub(crate) fn sla_count_from_row(r: &impl Cols) -> Result<SlaCount> {
    let g = |e: sqlx::Error| StoreError::Db { doing: SLA_COUNTS, source: e };
    let bin: i64 = r.col("bin").map_err(g)?;
    Ok(SlaCount {
        tenant: parse_slug(SLA_COUNTS, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        level: parse_enum(SLA_COUNTS, r.col("level").map_err(g)?)?,
        met: r.col("met").map_err(g)?,
        bin: u16::try_from(bin).map_err(|_| StoreError::Corrupt { doing: SLA_COUNTS, detail: format!("wait bin {bin}") })?,
        n: r.col::<i64>("n").map_err(g)?.max(0) as u64,
    })
}

/// An idempotency record's jobs as stored: `job_ids` holds 16 bytes per id (all zero for a job
/// quota refused); for an array, its first and last member, with `array_id` and `array_count`.
pub(crate) struct SubmittedCols {
    pub job_ids: Vec<u8>,
    pub array_id: Option<Uuid>,
    pub array_count: Option<i64>,
}

impl SubmittedCols {
    pub(crate) fn of(s: &Submitted) -> SubmittedCols {
        let bytes = |ids: &mut dyn Iterator<Item = Option<JobId>>| ids.flat_map(|id| id.map_or([0; 16], |j| j.as_uuid().into_bytes())).collect();
        match s {
            Submitted::Jobs(ids) => SubmittedCols { job_ids: bytes(&mut ids.iter().copied()), array_id: None, array_count: None },
            Submitted::Array { array, first, last, count } => SubmittedCols {
                job_ids: bytes(&mut [Some(*first), Some(*last)].into_iter()),
                array_id: Some(array.as_uuid()),
                array_count: Some(i64::from(*count)),
            },
        }
    }
}

pub(crate) fn idempotency_from_row(r: &impl Cols) -> Result<IdempotencyRecord> {
    const D: &str = "reading an idempotency key";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    let raw: Vec<u8> = r.col("job_ids").map_err(g)?;
    let (chunks, rest) = raw.as_chunks::<16>();
    if !rest.is_empty() {
        return Err(StoreError::Corrupt { doing: D, detail: format!("job_ids of {} bytes, not a multiple of 16", raw.len()) });
    }
    let ids: Vec<Option<JobId>> = chunks.iter().map(|c| Some(Uuid::from_bytes(*c)).filter(|u| !u.is_nil()).map(JobId::from_uuid)).collect();
    let array: Option<Uuid> = r.col("array_id").map_err(g)?;
    let submitted = match (array, ids.as_slice()) {
        (None, _) => Submitted::Jobs(ids),
        (Some(a), [Some(first), Some(last)]) => {
            Submitted::Array { array: ArrayId::from_uuid(a), first: *first, last: *last, count: u32_of(D, r.col("array_count").map_err(g)?)? }
        }
        (Some(_), _) => return Err(StoreError::Corrupt { doing: D, detail: "an array's record without its first and last member".into() }),
    };
    Ok(IdempotencyRecord {
        tenant: parse_slug(D, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        key: r.col("key").map_err(g)?,
        fingerprint: r.col("fingerprint").map_err(g)?,
        submitted,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
    })
}

/// A pool's scaling policies as stored (a JSON array).
pub(crate) fn json_policies(ps: &[Policy]) -> String {
    let v: Vec<serde_json::Value> = ps
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id, "name": p.name, "mode": p.mode.as_str(), "trigger": p.trigger.as_ref().map(|t| t.to_string()),
                "action": p.direction.as_str(), "step": p.step, "cooldown_ms": p.cooldown.as_millis() as u64,
                "window_ms": p.window.as_millis() as u64, "hysteresis_pct": p.hysteresis_pct, "enabled": p.enabled,
            })
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn parse_policies(doing: &'static str, s: &str) -> Result<Vec<Policy>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { doing, detail };
    let items: Vec<serde_json::Value> = serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))?;
    items
        .iter()
        .map(|v| {
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or_else(|| corrupt(format!("scaling policy without {k}")));
            let num = |k: &str| v.get(k).and_then(|x| x.as_u64()).ok_or_else(|| corrupt(format!("scaling policy without {k}")));
            let trigger = match v.get("trigger").and_then(|x| x.as_str()) {
                Some(t) => Some(Trigger::parse(t).map_err(|e| corrupt(e.to_string()))?),
                None => None,
            };
            Ok(Policy {
                id: text("id")?.to_owned(),
                name: text("name")?.to_owned(),
                mode: parse_enum(doing, text("mode")?)?,
                trigger,
                direction: parse_enum(doing, text("action")?)?,
                step: u32::try_from(num("step")?).map_err(|e| corrupt(e.to_string()))?,
                cooldown: Duration::from_millis(num("cooldown_ms")?),
                window: Duration::from_millis(num("window_ms")?),
                hysteresis_pct: u32::try_from(num("hysteresis_pct")?).map_err(|e| corrupt(e.to_string()))?,
                enabled: v.get("enabled").and_then(|x| x.as_bool()).unwrap_or(true),
            })
        })
        .collect()
}

pub(crate) fn scaling_event_from_row(r: &impl Cols) -> Result<Event> {
    const D: &str = "reading a scaling event";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(Event {
        id: r.col("id").map_err(g)?,
        pool_id: parse_slug(D, r.col("pool_id").map_err(g)?, PoolId::parse)?,
        at: Timestamp::from_millis(r.col("at").map_err(g)?),
        decision: Decision {
            source: parse_enum(D, r.col("source").map_err(g)?)?,
            policy_id: r.col("policy_id").map_err(g)?,
            trigger: r.col("trigger_text").map_err(g)?,
            observed: r.col("observed_value").map_err(g)?,
            from: u32_of(D, r.col("from_size").map_err(g)?)?,
            to: u32_of(D, r.col("to_size").map_err(g)?)?,
            outcome: parse_enum(D, r.col("decision").map_err(g)?)?,
            reason: r.col("reason").map_err(g)?,
        },
        actor: r.col("actor").map_err(g)?,
    })
}

/// A usage series as stored: `at,samples,cpu,rss,gpu,gpu_mem,io_read,io_write,gpu_samples` per
/// point, points separated by `;` (compact, and no serde on core types).
pub(crate) fn series_text(s: &hodei_core::usage::Series) -> String {
    let mut out = String::with_capacity(s.points.len() * 40);
    for (i, p) in s.points.iter().enumerate() {
        use std::fmt::Write;
        if i > 0 {
            out.push(';');
        }
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{}",
            p.at.as_millis(),
            p.samples,
            p.cpu_m,
            p.rss_mb,
            p.gpu_pct,
            p.gpu_memory_mb,
            p.io_read_bytes,
            p.io_write_bytes
        );
    }
    out
}

const USAGE: &str = "reading usage";

/// `N` comma-separated numbers, of which the last `optional` may be missing (0: written before
/// they existed).
fn numbers<const N: usize>(text: &str, optional: usize) -> Result<[u64; N]> {
    let corrupt = || StoreError::Corrupt { doing: USAGE, detail: format!("bad usage numbers {text:?}") };
    let mut out = [0u64; N];
    let mut it = text.split(',');
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = match it.next() {
            Some(v) => v.parse().map_err(|_| corrupt())?,
            None if i >= N - optional => 0,
            None => return Err(corrupt()),
        };
    }
    Ok(out)
}

pub(crate) fn series_from(step_ms: i64, text: &str) -> Result<hodei_core::usage::Series> {
    let points = text
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let [at, n, cpu, rss, gpu, gm, ior, iow, gn] = numbers::<9>(p, 1)?;
            let c = |v: u64| v.min(u64::from(u32::MAX)) as u32;
            Ok(hodei_core::usage::Point {
                at: Timestamp::from_millis(at as i64),
                samples: c(n),
                cpu_m: c(cpu),
                rss_mb: c(rss),
                gpu_pct: c(gpu),
                gpu_memory_mb: c(gm),
                io_read_bytes: ior,
                io_write_bytes: iow,
                gpu_samples: c(gn),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(hodei_core::usage::Series { step_ms: step_ms.max(0) as u64, points })
}

pub(crate) fn summary_text(s: &hodei_core::usage::Summary) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{}",
        s.samples,
        s.cpu_avg_m,
        s.cpu_p95_m,
        s.cpu_peak_m,
        s.memory_avg_mb,
        s.memory_p95_mb,
        s.memory_peak_mb,
        s.gpu_avg_pct,
        s.cpu_time_ms,
        s.io_read_bytes,
        s.io_write_bytes,
        s.gpu_samples
    )
}

pub(crate) fn summary_from(text: &str) -> Result<hodei_core::usage::Summary> {
    let [n, avg, p95, peak, mavg, mp95, mpeak, gpu, cpu_time, ior, iow, gn] = numbers::<12>(text, 1)?;
    let c = |v: u64| v.min(u64::from(u32::MAX)) as u32;
    Ok(hodei_core::usage::Summary {
        samples: c(n),
        cpu_avg_m: c(avg),
        cpu_p95_m: c(p95),
        cpu_peak_m: c(peak),
        memory_avg_mb: c(mavg),
        memory_p95_mb: c(mp95),
        memory_peak_mb: c(mpeak),
        gpu_avg_pct: c(gpu),
        gpu_samples: c(gn),
        cpu_time_ms: cpu_time,
        io_read_bytes: ior,
        io_write_bytes: iow,
    })
}

/// A row of `attempt_usage`.
pub(crate) fn usage_from_row(r: &impl Cols) -> Result<crate::AttemptUsage> {
    let g = |e: sqlx::Error| StoreError::Db { doing: USAGE, source: e };
    Ok(crate::AttemptUsage {
        attempt: AttemptId::from_uuid(r.col("attempt_id").map_err(g)?),
        series: series_from(r.col("step_ms").map_err(g)?, r.col::<&str>("points").map_err(g)?)?,
        summary: r.col::<Option<&str>>("summary").map_err(g)?.map(summary_from).transpose()?,
        updated_at: Timestamp::from_millis(r.col("updated_at").map_err(g)?),
    })
}

/// A row of the analyzer's query: an attempt's summary with its job's tenant and name.
pub(crate) fn usage_run_from_row(r: &impl Cols) -> Result<crate::UsageRun> {
    let g = |e: sqlx::Error| StoreError::Db { doing: USAGE, source: e };
    Ok(crate::UsageRun {
        tenant: parse_slug(USAGE, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        job_name: r.col::<String>("name").map_err(g)?,
        pool: parse_slug(USAGE, r.col("pool_id").map_err(g)?, PoolId::parse)?,
        requested: resources(r, USAGE, "")?,
        started_at: Timestamp::from_millis(r.col("started_at").map_err(g)?),
        finished_at: Timestamp::from_millis(r.col("finished_at").map_err(g)?),
        oom: r.col::<Option<&str>>("failure_reason").map_err(g)? == Some("oom"),
        summary: summary_from(r.col::<&str>("summary").map_err(g)?)?,
    })
}

/// The analyzer's query: each finished attempt's summary with its job's tenant and name, the
/// latest `per_name` of each (tenant, name). Placeholders: `{since}`, `{tenant}` (a condition
/// or `TRUE`), `{per_name}`, `{limit}` — filled by each store in its own syntax.
pub(crate) const USAGE_RUNS: &str = "SELECT * FROM (SELECT j.tenant_id, j.name, a.pool_id, a.cpu_m, a.memory_mb, a.gpu, a.started_at, a.finished_at, a.failure_reason, u.summary, \
     ROW_NUMBER() OVER (PARTITION BY j.tenant_id, j.name ORDER BY a.finished_at DESC) AS nth \
     FROM attempt_usage u JOIN attempts a ON a.id = u.attempt_id JOIN jobs j ON j.id = a.job_id \
     WHERE u.summary IS NOT NULL AND a.started_at IS NOT NULL AND a.finished_at >= {since} AND {tenant}) AS runs \
     WHERE nth <= {per_name} ORDER BY tenant_id, name, finished_at DESC LIMIT {limit}";

pub(crate) fn report_from_row(r: &impl Cols) -> Result<crate::StoredReport> {
    const D: &str = "reading a cost report";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(crate::StoredReport {
        id: r.col("id").map_err(g)?,
        tenant: r.col::<Option<&str>>("tenant_id").map_err(g)?.map(|t| parse_slug(D, t, TenantId::parse)).transpose()?,
        created_by: r.col::<String>("created_by").map_err(g)?,
        created_at: Timestamp::from_millis(r.col("created_at").map_err(g)?),
        body: r.col::<String>("body").map_err(g)?,
    })
}

pub(crate) fn job_cost_from_row(r: &impl Cols) -> Result<crate::JobCost> {
    const D: &str = "reading job costs";
    let g = |e: sqlx::Error| StoreError::Db { doing: D, source: e };
    Ok(crate::JobCost {
        job_id: JobId::from_uuid(r.col("job_id").map_err(g)?),
        job_name: r.col::<String>("job_name").map_err(g)?,
        tenant: parse_slug(D, r.col("tenant_id").map_err(g)?, TenantId::parse)?,
        cost_micros: r.col("cost").map_err(g)?,
    })
}
