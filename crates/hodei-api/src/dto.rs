//! Wire shapes of the REST API. Core types are not serializable; these mirrors are, and are
//! converted by hand.

use std::collections::BTreeMap;

use hodei_core::{Attempt, Job, JobEvent, Tenant, Timestamp, Worker};
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
    pub cpu_m: Option<i64>,
    pub memory_mb: Option<i64>,
    pub gpu: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSelectorIn {
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A job to submit (SPEC §2.7).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmit {
    pub name: Option<String>,
    /// argv; run without a shell.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub image: Option<String>,
    #[serde(default)]
    pub resources: ResourcesIn,
    pub timeout_ms: Option<i64>,
    pub expected_duration_ms: Option<i64>,
    pub max_retries: Option<i64>,
    pub retry_backoff_ms: Option<i64>,
    /// critical|high|normal|low|batch
    pub priority: Option<String>,
    /// critical|high|medium|low|best_effort
    pub sla: Option<String>,
    pub preemptible: Option<bool>,
    pub hold: Option<bool>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pool_selector: Option<PoolSelectorIn>,
    pub tenant_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmit {
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
    pub pool_selector: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        let s = &j.spec;
        JobView {
            id: j.id.to_string(),
            tenant_id: j.tenant.to_string(),
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
            pool_selector: s.pool_selector.as_ref().map(|p| p.to_string()),
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
            warnings: Vec::new(),
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
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
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
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
}

impl From<&JobEvent> for EventView {
    fn from(e: &JobEvent) -> Self {
        EventView { at: rfc3339(e.at), from: e.from.map(|s| s.to_string()), to: e.to.to_string(), actor: e.actor.as_str().to_owned(), reason: e.reason.clone() }
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
    pub id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    /// free|standard|premium|enterprise
    pub tier: Option<String>,
    pub weight: Option<i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub tier: Option<String>,
    /// A number 1–1000, or null to use the tier's weight.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub weight: Option<Option<i64>>,
    /// active|suspended
    pub status: Option<String>,
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
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.to_string(),
            name: t.name.clone(),
            email: t.email.clone(),
            tier: t.tier.to_string(),
            weight: t.weight,
            effective_weight: t.effective_weight(),
            status: t.status.to_string(),
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
