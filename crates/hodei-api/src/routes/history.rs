//! `GET /metrics/historical` (SPEC §4.7): the server's own figures over time, from the samples
//! it stores (`metrics.history`), so a user without a Prometheus still gets history.

use axum::Json;
use axum::extract::{Query, State};
use hodei_core::Timestamp;
use hodei_store::HistoryQuery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::history::{CLUSTER, MAX_POINTS, POOL, TENANT, names};
use hodei_core::Action;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoricalQuery {
    /// A pool's figures (size, desired_size, queue_depth, queue_wait_seconds, cpu_utilization,
    /// memory_utilization, busy_ratio, jobs_running).
    pub pool_id: Option<String>,
    /// A tenant's figures (cpu_m, memory_mb, gpu, fair_share, actual_share, jobs_pending,
    /// jobs_running, cost_micros). Without `pool_id` or `tenant_id`: the cluster's
    /// (jobs_pending, jobs_running, workers).
    pub tenant_id: Option<String>,
    /// Only these figures, comma-separated (default: all of the scope's).
    pub metric: Option<String>,
    /// RFC 3339; default: an hour before `end`.
    pub start: Option<String>,
    /// RFC 3339; default: now.
    pub end: Option<String>,
    /// Seconds per point, each the average of the samples in it; default: the samples'
    /// spacing, or more to stay within 11 000 points in all.
    pub step_s: Option<u64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoricalSeries {
    pub metric: String,
    /// `[unix seconds, value]`, oldest first; a step without a sample has no point.
    #[schema(value_type = Vec<Vec<f64>>)]
    pub points: Vec<(i64, f64)>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoricalView {
    /// `cluster`, `pool` or `tenant`.
    pub scope: String,
    /// The pool's or tenant's id (absent for the cluster).
    pub scope_id: Option<String>,
    pub start: String,
    pub end: String,
    pub step_s: u64,
    /// The samples read: 0 raw (the last day), 300 five-minute averages (the last week), 3600
    /// hourly averages (older).
    pub resolution_s: u32,
    pub series: Vec<HistoricalSeries>,
}

fn instant(field: &str, v: &str) -> ApiResult<Timestamp> {
    v.parse::<jiff::Timestamp>()
        .map(|t| Timestamp::from_millis(t.as_millisecond()))
        .map_err(|_| ApiError::field(field, "not a timestamp", "RFC 3339, e.g. 2026-12-03T10:00:00Z", Some(v.to_owned())))
}

/// The server's figures over time, per pool, tenant or the whole cluster, from its own stored
/// samples: raw for a day, 5-minute averages for a week, hourly ones for
/// `metrics.history.retention_days`. At most 11 000 points per answer.
#[utoipa::path(
    get,
    path = "/metrics/historical",
    params(HistoricalQuery),
    responses((status = 200, body = HistoricalView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    tag = "metrics"
)]
pub async fn historical(State(s): State<ApiState>, who: Who, Query(q): Query<HistoricalQuery>) -> ApiResult<Json<HistoricalView>> {
    let Some(settings) = s.cfg.history else {
        return Err(ApiError::new(ErrorCode::Conflict, "the metric history is off (metrics.history.enabled: false)"));
    };
    let (scope, scope_id) = match (&q.pool_id, &q.tenant_id) {
        (Some(_), Some(_)) => return Err(ApiError::field("tenant_id", "give pool_id or tenant_id, not both", "one scope", None)),
        (Some(p), None) => {
            let id = hodei_core::PoolId::parse(p).map_err(|_| ApiError::not_found(format!("pool {p}")))?;
            s.store.get_pool(&id).await?.ok_or_else(|| ApiError::not_found(format!("pool {p}")))?;
            (POOL, id.to_string())
        }
        (None, Some(t)) => (TENANT, super::tenants::load(&s, &who, t, Action::Read, "reading a tenant's metrics").await?.id.to_string()),
        (None, None) => (CLUSTER, String::new()),
    };
    let known: Vec<&str> = names(scope).collect();
    let metrics: Vec<String> = match q.metric.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(|m| m.trim().to_owned()).collect(),
    };
    if let Some(bad) = metrics.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(ApiError::field("metric", format!("no {scope} figure {bad:?}"), format!("one of {}", known.join(", ")), Some(bad.clone())));
    }
    let now = s.clock.now();
    let end = q.end.as_deref().map(|v| instant("end", v)).transpose()?.unwrap_or(now);
    let start = q.start.as_deref().map(|v| instant("start", v)).transpose()?.unwrap_or(Timestamp::from_millis(end.as_millis() - 3_600_000));
    if start >= end {
        return Err(ApiError::field("start", "must be before end", "an instant before end", q.start.clone()));
    }
    let (resolution_s, spacing_s) = settings.resolution_for(start, now);
    let range_s = end.since(start).as_secs().max(1);
    let series = if metrics.is_empty() { known.len() } else { metrics.len() } as u64;
    // Steps are aligned to the epoch, so a series has up to one point more than range / step.
    let points = |step: u64| series * (range_s / step + 1);
    let least = range_s.saturating_mul(series).div_ceil(MAX_POINTS as u64 - series).max(spacing_s);
    let step_s = match q.step_s {
        Some(0) => return Err(ApiError::field("step_s", "must be at least 1", "a positive number of seconds", Some("0".into()))),
        Some(step) if points(step) > MAX_POINTS as u64 => {
            return Err(ApiError::field(
                "step_s",
                format!("{series} series of {range_s} s at {step} s per point exceed {MAX_POINTS} points"),
                format!("at least {least}"),
                Some(step.to_string()),
            ));
        }
        // A step longer than the range gives one point, as the range itself does.
        Some(step) => step.min(range_s.max(spacing_s)),
        None => least,
    };
    let found = s
        .store
        .metric_history(&HistoryQuery { scope: scope.into(), scope_id: scope_id.clone(), metrics, resolution_s, start, end, step_ms: step_s as i64 * 1000 })
        .await?;
    Ok(Json(HistoricalView {
        scope: scope.into(),
        scope_id: (scope != CLUSTER).then_some(scope_id),
        start: rfc3339(start),
        end: rfc3339(end),
        step_s,
        resolution_s,
        series: found
            .into_iter()
            .map(|h| HistoricalSeries { metric: h.metric, points: h.points.into_iter().map(|(t, v)| (t.as_millis() / 1000, v)).collect() })
            .collect(),
    }))
}
