//! What a job's attempts used (SPEC §8.7): the series workers measured, at most 720 points per
//! attempt, and the summary of each attempt that ended.

use axum::Json;
use axum::extract::{Path, Query, State};
use hodei_core::usage::{Point, Summary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult};

/// An ended attempt's usage.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageSummaryView {
    /// Samples taken while it ran: a job shorter than the sampling interval has none, and its
    /// figures come from the process accounting alone.
    pub samples: u32,
    /// Cpu time over run time, in millicores (exact).
    pub cpu_avg_m: u32,
    pub cpu_p95_m: u32,
    pub cpu_peak_m: u32,
    pub memory_avg_mb: u32,
    pub memory_p95_mb: u32,
    /// The largest resident memory sampled or accounted.
    pub memory_peak_mb: u32,
    /// Over the samples that measured the GPUs (`gpu_samples`; 0: GPU use unknown — the worker
    /// has no `nvidia-smi`).
    pub gpu_avg_pct: u32,
    pub gpu_samples: u32,
    pub cpu_time_ms: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

impl From<&Summary> for UsageSummaryView {
    fn from(s: &Summary) -> Self {
        UsageSummaryView {
            samples: s.samples,
            cpu_avg_m: s.cpu_avg_m,
            cpu_p95_m: s.cpu_p95_m,
            cpu_peak_m: s.cpu_peak_m,
            memory_avg_mb: s.memory_avg_mb,
            memory_p95_mb: s.memory_p95_mb,
            memory_peak_mb: s.memory_peak_mb,
            gpu_avg_pct: s.gpu_avg_pct,
            gpu_samples: s.gpu_samples,
            cpu_time_ms: s.cpu_time_ms,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
        }
    }
}

/// One point: the samples of one step, cpu and GPU averaged, memory at its peak, IO as the
/// cumulative count at the step's end.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePointView {
    pub at: String,
    pub samples: u32,
    pub cpu_m: u32,
    pub memory_mb: u32,
    /// Average over its samples that measured the GPUs (`gpu_samples`).
    pub gpu_pct: u32,
    pub gpu_memory_mb: u32,
    pub gpu_samples: u32,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

impl From<&Point> for UsagePointView {
    fn from(p: &Point) -> Self {
        UsagePointView {
            at: rfc3339(p.at),
            samples: p.samples,
            cpu_m: p.cpu_m,
            memory_mb: p.rss_mb,
            gpu_pct: p.gpu_pct,
            gpu_memory_mb: p.gpu_memory_mb,
            gpu_samples: p.gpu_samples,
            io_read_bytes: p.io_read_bytes,
            io_write_bytes: p.io_write_bytes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptUsageView {
    pub attempt_id: String,
    pub number: u32,
    pub state: String,
    /// What it asked for: cpu in millicores, memory in MiB.
    pub requested_cpu_m: u32,
    pub requested_memory_mb: u32,
    pub requested_gpu: u32,
    /// The span of one point in milliseconds; 0 while each sample is its own point.
    pub step_ms: u64,
    pub points: Vec<UsagePointView>,
    /// Present once the attempt ended.
    pub summary: Option<UsageSummaryView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobUsageView {
    pub job_id: String,
    /// Oldest attempt first; those that never started have no usage and are left out.
    pub attempts: Vec<AttemptUsageView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this attempt (its number, 1 for the first).
    pub attempt: Option<u32>,
}

/// What the job's attempts used: samples every `workers.usage_sample_interval_ms` while they
/// run (written every 2 s), and a summary once each ended.
#[utoipa::path(
    get,
    path = "/jobs/{id}/usage",
    params(UsageQuery),
    responses((status = 200, body = JobUsageView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "jobs"
)]
pub async fn job_usage(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<UsageQuery>) -> ApiResult<Json<JobUsageView>> {
    let job = super::jobs::load(&s, &who, &id).await?;
    let mut attempts = s.store.list_attempts(job.id).await?;
    attempts.retain(|a| a.started_at.is_some());
    if let Some(n) = q.attempt {
        attempts.retain(|a| a.number == n);
        if attempts.is_empty() {
            return Err(ApiError::field(
                "attempt",
                format!("job {id} has no attempt {n} that started"),
                "the number of an attempt that started",
                Some(n.to_string()),
            ));
        }
    }
    let mut usage = s.store.attempt_usage(&attempts.iter().map(|a| a.id).collect::<Vec<_>>()).await?;
    let views = attempts
        .iter()
        .map(|a| {
            let u = usage.iter().position(|u| u.attempt == a.id).map(|i| usage.swap_remove(i));
            AttemptUsageView {
                attempt_id: a.id.to_string(),
                number: a.number,
                state: a.state.as_str().to_owned(),
                requested_cpu_m: a.resources.cpu_m.0,
                requested_memory_mb: a.resources.memory_mb.0,
                requested_gpu: a.resources.gpu.0,
                step_ms: u.as_ref().map_or(0, |u| u.series.step_ms),
                points: u.as_ref().map(|u| u.series.points.iter().map(UsagePointView::from).collect()).unwrap_or_default(),
                summary: u.as_ref().and_then(|u| u.summary.as_ref()).map(UsageSummaryView::from),
            }
        })
        .collect();
    Ok(Json(JobUsageView { job_id: job.id.to_string(), attempts: views }))
}
