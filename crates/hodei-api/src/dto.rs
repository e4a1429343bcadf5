//! Wire shapes of the REST API. Core types are not serializable; these mirrors are, and are
//! converted by hand.

use std::collections::BTreeMap;

use hodei_core::sched::{Explanation, QueueStatus};
use hodei_core::{Attempt, BurstSession, Job, JobEvent, Quota, Tenant, Timestamp, Worker};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: Timestamp) -> String {
    match jiff::Timestamp::from_millisecond(t.as_millis()) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => t.as_millis().to_string(),
    }
}

fn ort(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesIn {
    #[schema(minimum = 1, maximum = 4294967295.0)]
    pub cpu_m: Option<i64>,
    #[schema(minimum = 1, maximum = 4294967295.0)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 0, maximum = 1024)]
    pub gpu: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSelectorIn {
    /// Only this pool's workers run the job.
    pub pool: Option<String>,
    /// Only workers carrying every one of these labels (their own or their pool's) run the job.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Where a job may run: the pool it names and the labels its worker must carry.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolSelectorOut {
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A job to submit (SPEC §2.7).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmit {
    /// Default: the program's file name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: Option<String>,
    /// argv; run without a shell.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub image: Option<String>,
    #[serde(default)]
    pub resources: ResourcesIn,
    /// At most `jobs.max_timeout` (7 days by default).
    #[schema(minimum = 1)]
    pub timeout_ms: Option<i64>,
    #[schema(minimum = 1)]
    pub expected_duration_ms: Option<i64>,
    /// At most `jobs.max_retries`.
    #[schema(minimum = 0)]
    pub max_retries: Option<i64>,
    #[schema(minimum = 0)]
    pub retry_backoff_ms: Option<i64>,
    /// critical|high|normal|low|batch
    #[schema(pattern = "^(critical|high|normal|low|batch)$")]
    pub priority: Option<String>,
    /// critical|high|medium|low|best_effort
    #[schema(pattern = "^(critical|high|medium|low|best_effort)$")]
    pub sla: Option<String>,
    pub preemptible: Option<bool>,
    pub hold: Option<bool>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pool_selector: Option<PoolSelectorIn>,
    pub tenant_id: Option<String>,
    /// One job per index `start, start + step, …, ≤ end` (an array job); at most
    /// `max_parallel` of them scheduled or running at once.
    pub array: Option<ArrayIn>,
    /// Jobs of the same tenant this one waits for: held `dependency_pending` until each is
    /// met, cancelled (`dependency_failed`, `skipped`) once one can never be.
    #[serde(default)]
    pub depends_on: Vec<DependsOnIn>,
}

/// One dependency: a job by id (an array's id stands for each of its jobs), or (in a batch) an
/// earlier item by its index.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DependsOnIn {
    pub job_id: Option<String>,
    /// In a batch: the index of an earlier item.
    pub index: Option<usize>,
    /// after_ok|after_any|after_not_ok
    pub condition: String,
}

/// A dependency of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependsOnOut {
    pub job_id: String,
    /// after_ok|after_any|after_not_ok
    pub condition: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrayIn {
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub start: Option<i64>,
    /// At least `start`; at most `jobs.max_array_size` jobs in all.
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub end: Option<i64>,
    /// Default 1.
    #[schema(minimum = 1, maximum = 4294967295.0)]
    pub step: Option<i64>,
    #[schema(minimum = 1, maximum = 4294967295.0)]
    pub max_parallel: Option<i64>,
}

/// An array job, created (201): its jobs are listed by `GET /jobs?array_id=`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArraySubmitted {
    pub array_id: String,
    pub count: u32,
    pub first_job_id: String,
    pub last_job_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArrayOut {
    pub start: u32,
    pub end: u32,
    pub step: u32,
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmit {
    /// At most `jobs.max_batch_size`.
    #[schema(min_items = 1)]
    pub jobs: Vec<JobSubmit>,
    /// All or nothing (default true).
    #[serde(default = "yes")]
    pub atomic: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub items: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourcesOut {
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub tenant_id: String,
    /// The principal whose token submitted the job.
    pub submitted_by: Option<String>,
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub image: Option<String>,
    pub resources: ResourcesOut,
    pub timeout_ms: u64,
    pub expected_duration_ms: Option<u64>,
    pub max_retries: u32,
    pub retry_backoff_ms: Option<u64>,
    pub priority: String,
    pub sla: String,
    pub preemptible: bool,
    pub labels: BTreeMap<String, String>,
    pub pool_selector: Option<PoolSelectorOut>,
    pub state: String,
    pub state_reason: Option<String>,
    pub attempt_count: u32,
    pub current_attempt_id: Option<String>,
    pub retries_left: u32,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub submitted_at: String,
    pub eligible_at: String,
    pub scheduled_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub next_retry_at: Option<String>,
    pub cancel_requested_at: Option<String>,
    pub queue_wait_ms: Option<i64>,
    pub run_time_ms: Option<i64>,
    pub pool_id: Option<String>,
    pub worker_id: Option<String>,
    pub log_truncated: bool,
    pub warnings: Vec<String>,
    /// What its ended attempts cost (each billed at its end), in micro-units of the currency.
    pub cost_micros: i64,
    /// `cost_micros` as an amount, e.g. `0.070000 USD`.
    pub cost: String,
    /// on_track|at_risk|critical|breached while waiting; met|breached once started.
    pub sla_status: String,
    /// Queue wait counted against the SLA (final once the first attempt started).
    pub sla_wait_ms: Option<u64>,
    /// When a waiting job reaches its level's maximum wait if it keeps waiting.
    pub sla_deadline_at: Option<String>,
    pub sla_breached_at: Option<String>,
    /// The array job this job belongs to, its index, and the array's range.
    pub array_id: Option<String>,
    pub array_index: Option<u32>,
    pub array: Option<ArrayOut>,
    /// The jobs it waits for (or waited for).
    pub depends_on: Vec<DependsOnOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl JobView {
    /// The view with the SLA deadline (from the configured maximum waits) and its cost so far.
    pub fn of(j: &Job, cfg: &crate::ApiConfig, cost_micros: i64) -> JobView {
        let sla = &cfg.sla;
        let mut v = JobView::from(j);
        v.set_cost(cost_micros, &cfg.currency);
        let waiting = j.sla.wait_ms.is_none() && matches!(j.state, hodei_core::JobState::Pending | hodei_core::JobState::Scheduled);
        if let Some(since) = j.sla.since.or(waiting.then_some(j.eligible_at)) {
            let left = sla.max_wait_ms(j.spec.sla).saturating_sub(j.sla.waited_ms);
            v.sla_deadline_at = Some(rfc3339(since.saturating_add(std::time::Duration::from_millis(left))));
        }
        v
    }
}

impl JobView {
    /// Its cost: the sum of its attempts'.
    pub fn set_cost(&mut self, micros: i64, currency: &str) {
        self.cost_micros = micros;
        self.cost = crate::routes::costs::money(micros, currency);
    }
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        let s = &j.spec;
        JobView {
            id: j.id.to_string(),
            tenant_id: j.tenant.to_string(),
            submitted_by: s.submitted_by.map(|p| p.to_string()),
            name: s.name.clone(),
            command: s.command.clone(),
            env: s.env.clone(),
            working_dir: s.working_dir.clone(),
            image: s.image.clone(),
            resources: ResourcesOut { cpu_m: s.resources.cpu_m.get(), memory_mb: s.resources.memory_mb.get(), gpu: s.resources.gpu.get() },
            timeout_ms: s.timeout.as_millis() as u64,
            expected_duration_ms: s.expected_duration.map(|d| d.as_millis() as u64),
            max_retries: s.max_retries,
            retry_backoff_ms: s.retry_backoff.map(|d| d.as_millis() as u64),
            priority: s.priority.to_string(),
            sla: s.sla.to_string(),
            preemptible: s.preemptible,
            labels: s.labels.clone(),
            pool_selector: (s.pool_selector.is_some() || !s.pool_labels.is_empty())
                .then(|| PoolSelectorOut { pool: s.pool_selector.as_ref().map(|p| p.to_string()), labels: s.pool_labels.clone() }),
            state: j.state.to_string(),
            state_reason: j.state_reason.clone(),
            attempt_count: j.attempt_count,
            current_attempt_id: j.current_attempt.map(|a| a.to_string()),
            retries_left: j.retries_left,
            exit_code: j.exit_code,
            failure_reason: j.failure_reason.map(|f| f.to_string()),
            submitted_at: rfc3339(j.submitted_at),
            eligible_at: rfc3339(j.eligible_at),
            scheduled_at: ort(j.scheduled_at),
            started_at: ort(j.started_at),
            finished_at: ort(j.finished_at),
            next_retry_at: ort(j.next_retry_at),
            cancel_requested_at: ort(j.cancel_requested_at),
            queue_wait_ms: j.queue_wait_ms(),
            run_time_ms: j.run_time_ms(),
            pool_id: j.pool_id.as_ref().map(|p| p.to_string()),
            worker_id: j.worker_id.map(|w| w.to_string()),
            log_truncated: j.log_truncated,
            warnings: j.warnings.clone(),
            cost_micros: 0,
            cost: String::new(),
            sla_status: j.sla.status.as_str().to_owned(),
            sla_wait_ms: j.sla.wait_ms,
            sla_deadline_at: None,
            sla_breached_at: ort(j.sla.breached_at),
            array_id: j.array.map(|(a, _)| a.to_string()),
            array_index: j.array.map(|(_, i)| i),
            array: s.array.map(|a| ArrayOut { start: a.start, end: a.end, step: a.step, max_parallel: a.max_parallel }),
            depends_on: s.depends_on.iter().map(|d| DependsOnOut { job_id: d.job.to_string(), condition: d.condition.to_string() }).collect(),
            attempts: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub id: String,
    pub job_id: String,
    pub number: u32,
    pub worker_id: String,
    pub pool_id: String,
    pub state: String,
    pub assigned_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub failure_reason: Option<String>,
    pub cpu_time_ms: u64,
    pub max_rss_mb: u64,
    pub log_bytes: u64,
    pub log_truncated: bool,
    /// Every begun second from its start (at least one); 0 until it ends, and for an attempt
    /// that never started (free).
    pub billed_seconds: u64,
    /// Billed seconds × requested resources × the rates in force, in micro-units of the currency.
    pub cost_micros: i64,
    /// `cost_micros` as an amount, e.g. `0.070000 USD`.
    pub cost: String,
    /// What it used, once it ended (`GET /jobs/{id}/usage` has the samples).
    pub usage: Option<crate::routes::usage::UsageSummaryView>,
}

impl AttemptView {
    pub fn of(a: &Attempt, currency: &str) -> Self {
        AttemptView {
            id: a.id.to_string(),
            job_id: a.job_id.to_string(),
            number: a.number,
            worker_id: a.worker_id.to_string(),
            pool_id: a.pool_id.to_string(),
            state: a.state.to_string(),
            assigned_at: rfc3339(a.assigned_at),
            started_at: ort(a.started_at),
            finished_at: ort(a.finished_at),
            exit_code: a.exit_code,
            signal: a.signal,
            failure_reason: a.failure_reason.map(|f| f.to_string()),
            cpu_time_ms: a.cpu_time_ms,
            max_rss_mb: a.max_rss_mb,
            log_bytes: a.log_bytes,
            log_truncated: a.log_truncated,
            billed_seconds: a.billed_seconds,
            cost_micros: a.cost_micros,
            cost: crate::routes::costs::money(a.cost_micros, currency),
            usage: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    /// `principal:<id>` for a user's submit, cancel, retry, hold or release; `scheduler` or
    /// `worker` for the system's moves (a running job's cancel ends with its worker's report).
    pub actor: String,
    pub reason: Option<String>,
}

impl From<&JobEvent> for EventView {
    fn from(e: &JobEvent) -> Self {
        EventView { at: rfc3339(e.at), from: e.from.map(|s| s.to_string()), to: e.to.to_string(), actor: e.actor.name().into_owned(), reason: e.reason.clone() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    /// A slug; default: made from the name.
    pub id: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub email: Option<String>,
    /// free|standard|premium|enterprise
    #[schema(pattern = "^(free|standard|premium|enterprise)$")]
    pub tier: Option<String>,
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<i64>,
    /// Defaults to `multi_tenancy.default_tenant_quota`.
    pub quota: Option<QuotaIn>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub email: Option<String>,
    #[schema(pattern = "^(free|standard|premium|enterprise)$")]
    pub tier: Option<String>,
    /// A number 1–1000, or null to use the tier's weight.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub weight: Option<Option<i64>>,
    /// active|suspended
    #[schema(pattern = "^(active|suspended)$")]
    pub status: Option<String>,
    pub quota: Option<QuotaIn>,
    pub labels: Option<BTreeMap<String, String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(d).map(Some)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub tier: String,
    pub weight: Option<u32>,
    pub effective_weight: u32,
    pub status: String,
    pub quota: QuotaOut,
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

impl TenantView {
    pub fn of(t: &Tenant, tiers: &hodei_core::TierWeights) -> Self {
        TenantView {
            id: t.id.to_string(),
            name: t.name.clone(),
            email: t.email.clone(),
            tier: t.tier.to_string(),
            weight: t.weight,
            effective_weight: t.effective_weight(tiers),
            status: t.status.to_string(),
            quota: QuotaOut::from(&t.quota),
            labels: t.labels.clone(),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            version: t.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub instance_name: String,
    pub pool_id: String,
    pub state: String,
    pub capabilities: Vec<String>,
    pub resources: ResourcesOut,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    /// healthy|degraded|unhealthy, judged at each heartbeat from what the worker measures of
    /// its machine (disk free where jobs write, available memory, clock skew). Unhealthy
    /// workers take no new jobs until they are healthy again.
    pub health: String,
    /// Why it is not healthy (empty when it is).
    pub health_reason: String,
    pub registered_at: String,
    pub last_heartbeat_at: String,
}

impl From<&Worker> for WorkerView {
    fn from(w: &Worker) -> Self {
        WorkerView {
            id: w.id.to_string(),
            instance_name: w.instance_name.clone(),
            pool_id: w.pool_id.to_string(),
            state: w.state.to_string(),
            capabilities: w.capabilities.clone(),
            resources: ResourcesOut { cpu_m: w.resources.cpu_m.get(), memory_mb: w.resources.memory_mb.get(), gpu: w.resources.gpu.get() },
            slots: w.slots,
            labels: w.labels.clone(),
            version: w.version.clone(),
            health: w.health.to_string(),
            health_reason: w.health_reason.clone(),
            registered_at: rfc3339(w.registered_at),
            last_heartbeat_at: rfc3339(w.last_heartbeat_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogChunkView {
    /// stdout|stderr
    pub stream: String,
    pub offset: u64,
    /// UTF-8 text (invalid bytes replaced).
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogsView {
    pub attempt: Option<u32>,
    pub chunks: Vec<LogChunkView>,
    /// Next stdout offset.
    pub next_offset: u64,
    pub next_stderr_offset: u64,
    /// The job has ended and everything was read.
    pub eof: bool,
    pub truncated: bool,
}

/// Quota fields to set; absent ones keep their value (SPEC §2.1).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaIn {
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub cpu_m: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub memory_mb: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub gpu: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub max_concurrent_jobs: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub max_queued_jobs: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaOut {
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub max_concurrent_jobs: u32,
    pub max_queued_jobs: u32,
}

impl From<&Quota> for QuotaOut {
    fn from(q: &Quota) -> Self {
        QuotaOut {
            cpu_m: q.resources.cpu_m.get(),
            memory_mb: q.resources.memory_mb.get(),
            gpu: q.resources.gpu.get(),
            max_concurrent_jobs: q.max_concurrent_jobs,
            max_queued_jobs: q.max_queued_jobs,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageOut {
    pub cpu_m: u64,
    pub memory_mb: u64,
    pub gpu: u64,
    /// scheduled + running
    pub active_jobs: u32,
    /// pending + held
    pub queued_jobs: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CeilingOut {
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub max_concurrent_jobs: u32,
}

/// usage / ceiling per dimension (0 when the ceiling is 0).
#[derive(Debug, Serialize, ToSchema)]
pub struct UtilizationOut {
    pub cpu: f64,
    pub memory: f64,
    pub gpu: f64,
    pub jobs: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BurstGrantOut {
    pub session_id: String,
    pub cpu_m: u32,
    pub memory_mb: u32,
    pub gpu: u32,
    pub concurrent_jobs: u32,
    pub expires_at: String,
}

/// `POST /tenants/{id}/burst`: what to add to the quota, and for how long. At least one
/// amount > 0; each `quota + requested ≤ quota × max_overage_percentage / 100`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstIn {
    #[schema(minimum = 0)]
    pub requested_cpu_m: Option<i64>,
    #[schema(minimum = 0)]
    pub requested_memory_mb: Option<i64>,
    #[schema(minimum = 0)]
    pub requested_gpu: Option<i64>,
    #[schema(minimum = 0)]
    pub requested_concurrent_jobs: Option<i64>,
    /// At most `burst_capacity.burst_duration_minutes` (the default).
    #[schema(minimum = 1)]
    pub duration_minutes: Option<i64>,
    #[schema(min_length = 1)]
    pub reason: String,
}

/// A burst session (SPEC §2.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct BurstView {
    pub id: String,
    pub tenant_id: String,
    /// pending_approval|active|rejected|expired|ended|revoked
    pub state: String,
    pub requested_cpu_m: u32,
    pub requested_memory_mb: u32,
    pub requested_gpu: u32,
    pub requested_concurrent_jobs: u32,
    pub duration_minutes: u32,
    pub reason: String,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub created_at: String,
    pub activated_at: Option<String>,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub cooldown_until: Option<String>,
    pub version: i64,
}

impl From<&BurstSession> for BurstView {
    fn from(b: &BurstSession) -> Self {
        BurstView {
            id: b.id.to_string(),
            tenant_id: b.tenant_id.to_string(),
            state: b.state.as_str().to_owned(),
            requested_cpu_m: b.requested.cpu_m.get(),
            requested_memory_mb: b.requested.memory_mb.get(),
            requested_gpu: b.requested.gpu.get(),
            requested_concurrent_jobs: b.requested_concurrent_jobs,
            duration_minutes: b.duration_minutes,
            reason: b.reason.clone(),
            requested_by: b.requested_by.clone(),
            decided_by: b.decided_by.clone(),
            created_at: rfc3339(b.created_at),
            activated_at: ort(b.activated_at),
            expires_at: ort(b.expires_at),
            ended_at: ort(b.ended_at),
            cooldown_until: ort(b.cooldown_until),
            version: b.version,
        }
    }
}

/// `GET /tenants/{id}/quota`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    pub tenant_id: String,
    #[serde(flatten)]
    pub quota: QuotaOut,
    pub current_usage: UsageOut,
    pub burst: Option<BurstGrantOut>,
    pub ceiling: CeilingOut,
    pub utilization: UtilizationOut,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockerView {
    pub code: String,
    pub message: String,
    /// Numbers behind the reason (quota figures, counts, tags).
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PositionView {
    /// 0-based place in the tenant's queue.
    pub in_tenant: Option<usize>,
    /// Dispatches before it in the forward run.
    pub global: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FairShareView {
    /// Decimal string (u128).
    pub start_tag: String,
    pub virtual_time: String,
    pub tenants_ahead: usize,
    pub weight: u32,
    /// Weight multiplier from the tenant's budget, clamp((1 − spent)/(1 − elapsed), 0.1, 1)
    /// (SPEC §2.3): a ratio, not money (amounts are integer micro-dollars).
    pub budget_factor: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CandidatePoolView {
    pub pool_id: String,
    pub eligible: bool,
    pub reason: String,
}

/// `GET /jobs/{id}/explain` (SPEC §4.4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainView {
    pub job_id: String,
    pub state: String,
    pub blocking_reasons: Vec<BlockerView>,
    pub position: PositionView,
    pub fair_share: Option<FairShareView>,
    pub candidate_pools: Vec<CandidatePoolView>,
    pub estimated_start_at: Option<String>,
}

/// Tag values above 2^53 lose precision in JSON numbers: give them as numbers when they fit.
fn tag_value(v: u128) -> serde_json::Value {
    match u64::try_from(v) {
        Ok(n) if n < (1 << 53) => n.into(),
        _ => v.to_string().into(),
    }
}

impl ExplainView {
    pub fn new(job: &Job, e: Option<&Explanation>, virtual_time: u128) -> Self {
        let Some(e) = e else {
            return ExplainView {
                job_id: job.id.to_string(),
                state: job.state.to_string(),
                blocking_reasons: vec![],
                position: PositionView { in_tenant: None, global: None },
                fair_share: None,
                candidate_pools: vec![],
                estimated_start_at: job.started_at.or(job.scheduled_at).map(rfc3339),
            };
        };
        ExplainView {
            job_id: job.id.to_string(),
            state: e.state.to_string(),
            blocking_reasons: e
                .blockers
                .iter()
                .map(|b| BlockerView {
                    code: b.code.to_owned(),
                    message: b.message.clone(),
                    details: b.details.iter().map(|(k, v)| ((*k).to_owned(), tag_value(*v))).collect(),
                })
                .collect(),
            position: PositionView { in_tenant: e.position_in_tenant, global: e.global_position },
            fair_share: e.fair_share.as_ref().map(|f| FairShareView {
                start_tag: f.start_tag.to_string(),
                virtual_time: virtual_time.to_string(),
                tenants_ahead: f.tenants_ahead,
                weight: f.weight,
                budget_factor: f64::from(e.budget_factor_permille) / 1000.0,
            }),
            candidate_pools: e
                .candidate_pools
                .iter()
                .map(|c| CandidatePoolView { pool_id: c.pool_id.to_string(), eligible: c.eligible, reason: c.reason.clone() })
                .collect(),
            estimated_start_at: e.estimated_start_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueTotals {
    pub pending: u64,
    pub held: u64,
    pub scheduled: u64,
    pub running: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantQueueView {
    pub tenant_id: String,
    pub weight: u32,
    pub fair_share: f64,
    pub actual_share: f64,
    pub start_tag: String,
    pub pending: u64,
    pub held: u64,
    pub running: u64,
    pub oldest_wait_ms: i64,
    /// At its own quota or concurrency limit.
    pub at_limit: bool,
    /// Waiting jobs past their SLA's at-risk threshold.
    pub at_risk: u64,
    /// Pending jobs per priority class.
    pub by_priority: BTreeMap<String, u64>,
}

/// `GET /queue` (SPEC §4.5).
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub totals: QueueTotals,
    pub by_priority: BTreeMap<String, u64>,
    pub oldest_wait_ms: i64,
    pub sla: QueueSla,
    pub virtual_time: String,
    pub tenants: Vec<TenantQueueView>,
}

/// Waiting jobs by SLA status.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueSla {
    pub at_risk: u64,
    pub critical: u64,
    pub breached_waiting: u64,
}

impl From<&QueueStatus> for QueueView {
    fn from(q: &QueueStatus) -> Self {
        QueueView {
            totals: QueueTotals { pending: q.pending, held: q.held, scheduled: q.scheduled, running: q.running },
            by_priority: q.by_priority.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            oldest_wait_ms: q.oldest_wait_ms,
            sla: QueueSla { at_risk: q.sla_at_risk, critical: q.sla_critical, breached_waiting: q.sla_breached_waiting },
            virtual_time: q.virtual_time.to_string(),
            tenants: q
                .tenants
                .iter()
                .map(|t| TenantQueueView {
                    tenant_id: t.tenant.to_string(),
                    weight: t.weight,
                    fair_share: t.fair_share,
                    actual_share: t.actual_share,
                    start_tag: t.start_tag.to_string(),
                    pending: t.pending,
                    held: t.held,
                    running: t.running + t.scheduled,
                    oldest_wait_ms: t.oldest_wait_ms,
                    at_limit: t.parked,
                    at_risk: t.at_risk,
                    by_priority: t.by_priority.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                })
                .collect(),
        }
    }
}

/// `GET /queue/tenants/{id}`: the tenant's row and its pending jobs in dispatch order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantQueueDetail {
    #[serde(flatten)]
    pub row: TenantQueueView,
    pub jobs: Vec<QueuedJobView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedJobView {
    pub job_id: String,
    pub position: usize,
    pub priority: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemItem {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostEstimate {
    /// At the expected duration.
    pub expected: i64,
    /// At the timeout.
    pub max: i64,
}

/// `POST /jobs?dry_run=true`: what would happen, with nothing stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    pub admissible: bool,
    pub would_be_state: Option<String>,
    /// Why it would not be admitted.
    pub problems: Vec<ProblemItem>,
    /// Why it would wait once admitted.
    pub blocking_reasons: Vec<BlockerView>,
    pub candidate_pools: Vec<CandidatePoolView>,
    pub estimated_start_at: Option<String>,
    pub estimated_cost_micros: CostEstimate,
    pub warnings: Vec<String>,
}

/// Outcomes of one SLA level (or all) over the window.
#[derive(Debug, Serialize, ToSchema, Default, Clone)]
pub struct SlaRow {
    pub level: String,
    pub started: u64,
    pub met: u64,
    pub breached: u64,
    /// met / started; null when nothing started.
    pub compliance_ratio: Option<f64>,
    pub wait_p50_ms: u64,
    pub wait_p95_ms: u64,
    /// Waiting now, past 70 % / 90 % / 100 % of the level's maximum wait.
    pub at_risk: u64,
    pub critical: u64,
    pub breached_waiting: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSla {
    pub tenant_id: String,
    pub levels: Vec<SlaRow>,
}

/// `GET /sla`, `GET /tenants/{id}/sla`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlaReport {
    pub window_hours: u32,
    /// Per level over every tenant (or the one asked for).
    pub levels: Vec<SlaRow>,
    pub tenants: Vec<TenantSla>,
}

/// A job that breached (`/sla/breaches`) or is at risk (`/sla/at-risk`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SlaJobView {
    pub job_id: String,
    pub tenant_id: String,
    pub level: String,
    pub status: String,
    pub state: String,
    pub max_wait_ms: u64,
    pub wait_ms: u64,
    pub breached_at: Option<String>,
    pub deadline_at: Option<String>,
    /// First reason it is not running, while it waits.
    pub dominant_blocking_reason: Option<String>,
}
