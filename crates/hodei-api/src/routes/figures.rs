//! The metrics REST reads (SPEC §4.7): a pool's figures now and averaged over a window, a
//! tenant's usage, quota use, shares, jobs, cost and SLA in one answer, and what jobs cost
//! (totals, by day, the rate and a month-end forecast) — for users without a Prometheus.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use hodei_core::cost::day_of;
use hodei_core::{Action, Timestamp};
use hodei_store::{CostGroup, CostQuery, HistoryQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::costs::money;
use super::scaling::PoolMetricsView;
use super::sla::WindowQuery;
use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::dto::{QuotaView, SlaReport};
use crate::error::{ApiError, ApiResult};
use crate::history::POOL;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PoolWindowQuery {
    /// The window the averages cover, seconds back from now (default 300, at most 86 400).
    #[param(minimum = 1, maximum = 86400)]
    pub window_s: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct PoolFigures {
    pub pool_id: String,
    pub window_s: u64,
    /// Its figures now.
    pub now: PoolMetricsView,
    /// Each figure of the metric history (size, desired_size, queue_depth, cpu_utilization,
    /// memory_utilization, busy_ratio, jobs_running) averaged over the window's samples;
    /// empty while the history is off or has no sample in the window.
    pub averages: BTreeMap<String, f64>,
}

/// A pool's figures now, and averaged over the last `window_s` from the metric history.
#[utoipa::path(
    get,
    path = "/metrics/pools/{id}",
    params(PoolWindowQuery),
    responses((status = 200, body = PoolFigures), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "metrics"
)]
pub async fn pool(State(s): State<ApiState>, _who: Who, Path(id): Path<String>, Query(q): Query<PoolWindowQuery>) -> ApiResult<Json<PoolFigures>> {
    let window_s = q.window_s.unwrap_or(300);
    if !(1..=86_400).contains(&window_s) {
        return Err(ApiError::field("window_s", "out of range", "1 to 86400 seconds", Some(window_s.to_string())));
    }
    let now = super::scaling::pool_metrics_of(&s, &id).await?;
    let mut averages = BTreeMap::new();
    if s.cfg.history.is_some() {
        let end = s.clock.now();
        let start = Timestamp::from_millis(end.as_millis() - window_s as i64 * 1000);
        // One step as long as the window, aligned to start: one average per figure.
        let found = s
            .store
            .metric_history(&HistoryQuery {
                scope: POOL.into(),
                scope_id: now.pool_id.clone(),
                metrics: Vec::new(),
                resolution_s: 0,
                start,
                end,
                step_ms: end.as_millis() + 1,
            })
            .await?;
        for series in found {
            let n = series.points.len() as f64;
            if n > 0.0 {
                averages.insert(series.metric, series.points.iter().map(|(_, v)| v).sum::<f64>() / n);
            }
        }
    }
    Ok(Json(PoolFigures { pool_id: now.pool_id.clone(), window_s, now, averages }))
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TenantJobs {
    pub pending: u32,
    /// Held (by a user, a dependency or a budget).
    pub held: u32,
    /// Placed or running.
    pub running: u32,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TenantShares {
    /// Fair-share weight in force (lowered while the tenant spends ahead of its budget).
    pub weight: u32,
    /// The share its weight entitles it to among tenants with work (0–1).
    pub fair_share: f64,
    /// The share of the cluster it uses (0–1).
    pub actual_share: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CostSoFar {
    pub currency: String,
    pub today_micros: i64,
    pub today: String,
    pub month_to_date_micros: i64,
    pub month_to_date: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantFigures {
    pub tenant_id: String,
    /// Quota, usage, burst grant and how much of the ceiling is used.
    pub quota: QuotaView,
    pub shares: TenantShares,
    pub jobs: TenantJobs,
    pub cost: CostSoFar,
    /// SLA compliance per level over `window_hours` (default `sla.compliance_window_hours`).
    pub sla: SlaReport,
}

/// One tenant's figures: usage and quota use, fair and actual share, jobs by state, cost so
/// far and SLA compliance.
#[utoipa::path(
    get,
    path = "/metrics/tenants/{id}",
    params(WindowQuery),
    responses((status = 200, body = TenantFigures), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "metrics"
)]
pub async fn tenant(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<WindowQuery>) -> ApiResult<Json<TenantFigures>> {
    let t = super::tenants::load(&s, &who, &id, Action::Read, "reading a tenant's metrics").await?;
    let quota = super::tenants::quota_view(&s, &t).await?;
    let tid = t.id.clone();
    let (shares, jobs) = crate::read(s.control.as_ref(), move |sched, _| {
        let (fair, actual) = sched.shares().into_iter().find(|(x, ..)| *x == tid).map_or((0.0, 0.0), |(_, f, a)| (f, a));
        let u = sched.usage(&tid);
        let weight = sched.policy(&tid).weight;
        (
            TenantShares { weight, fair_share: fair, actual_share: actual },
            TenantJobs { pending: u.pending_jobs, held: u.queued_jobs.saturating_sub(u.pending_jobs), running: u.active_jobs },
        )
    })
    .await?;
    let now = s.clock.now();
    let spent = spend_by_day(&s, Some(t.id.clone()), None, month_start(now), now).await?;
    let sla = super::sla::report(&s, who.visibility(), Some(t.id.clone()), q).await?.0;
    Ok(Json(TenantFigures { tenant_id: t.id.to_string(), quota, shares, jobs, cost: so_far(&s, &spent, now), sla }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CostFiguresQuery {
    /// One tenant (default: every tenant the caller sees).
    pub tenant_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DayCost {
    /// YYYY-MM-DD (UTC).
    pub day: String,
    pub cost_micros: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CostFigures {
    #[serde(flatten)]
    pub so_far: CostSoFar,
    /// This month's days with a cost, oldest first.
    pub by_day: Vec<DayCost>,
    /// Spend per hour since yesterday 00:00 UTC, micro-dollars.
    pub rate_micros_per_hour: i64,
    /// This month's spend if the rate holds to its end: month to date + rate × hours left.
    pub forecast_month_micros: i64,
    pub forecast_month: String,
}

/// What jobs cost this month (of one tenant or all the caller sees): totals, by day, the rate
/// since yesterday and the month-end forecast at that rate.
#[utoipa::path(
    get,
    path = "/metrics/costs",
    params(CostFiguresQuery),
    responses((status = 200, body = CostFigures), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "metrics"
)]
pub async fn costs(State(s): State<ApiState>, who: Who, Query(q): Query<CostFiguresQuery>) -> ApiResult<Json<CostFigures>> {
    let tenant = match q.tenant_id.as_deref() {
        Some(id) => Some(super::tenants::load(&s, &who, id, Action::Read, "reading a tenant's costs").await?.id),
        None => None,
    };
    let now = s.clock.now();
    let first = month_start(now);
    // Yesterday too, for the rate, even on the first of the month.
    let yesterday = Timestamp::from_millis((day_of(now) - 1) * DAY_MS);
    let spent = spend_by_day(&s, tenant, who.visibility().into_filter(), first.min(yesterday), now).await?;
    let so_far = so_far(&s, &spent, now);
    let today = day_of(now);
    let recent: i64 = spent.iter().filter(|(d, _)| *d >= today - 1).map(|(_, c)| c).sum();
    let hours = (now.as_millis() - yesterday.as_millis()) as f64 / 3_600_000.0;
    let rate = (recent as f64 / hours.max(1.0)).round() as i64;
    let left_hours = (month_end(now).as_millis() - now.as_millis()) as f64 / 3_600_000.0;
    let forecast = so_far.month_to_date_micros + (rate as f64 * left_hours).round() as i64;
    let currency = s.cfg.currency.clone();
    let first_day = day_of(first);
    Ok(Json(CostFigures {
        by_day: spent
            .iter()
            .filter(|(d, _)| *d >= first_day)
            .map(|(d, c)| DayCost { day: rfc3339(Timestamp::from_millis(d * DAY_MS))[..10].to_owned(), cost_micros: *c })
            .collect(),
        rate_micros_per_hour: rate,
        forecast_month_micros: forecast,
        forecast_month: money(forecast, &currency),
        so_far,
    }))
}

/// Cost per UTC day from `from` to `now`, oldest first.
async fn spend_by_day(
    s: &ApiState,
    tenant: Option<hodei_core::TenantId>,
    visible: Option<Vec<hodei_core::TenantId>>,
    from: Timestamp,
    now: Timestamp,
) -> ApiResult<Vec<(i64, i64)>> {
    let q = CostQuery { from_day: day_of(from), to_day: day_of(now), tenant, pool: None, visible, group_by: CostGroup::Day };
    let mut days: Vec<(i64, i64)> =
        s.store.cost_breakdown(&q).await?.into_iter().filter_map(|r| r.key.parse::<i64>().ok().map(|d| (d, r.cost_micros))).collect();
    days.sort_unstable();
    Ok(days)
}

fn so_far(s: &ApiState, spent: &[(i64, i64)], now: Timestamp) -> CostSoFar {
    let (today, first) = (day_of(now), day_of(month_start(now)));
    let today_micros = spent.iter().filter(|(d, _)| *d == today).map(|(_, c)| c).sum();
    let month_to_date_micros = spent.iter().filter(|(d, _)| *d >= first).map(|(_, c)| c).sum();
    let currency = s.cfg.currency.clone();
    CostSoFar { today: money(today_micros, &currency), month_to_date: money(month_to_date_micros, &currency), today_micros, month_to_date_micros, currency }
}

fn month_start(now: Timestamp) -> Timestamp {
    let date = jiff::Timestamp::from_millisecond(now.as_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_zoned(jiff::tz::TimeZone::UTC).date();
    date_ms(date.first_of_month())
}

fn month_end(now: Timestamp) -> Timestamp {
    let date = jiff::Timestamp::from_millisecond(now.as_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_zoned(jiff::tz::TimeZone::UTC).date();
    Timestamp::from_millis(date_ms(date.last_of_month()).as_millis() + DAY_MS)
}

fn date_ms(d: jiff::civil::Date) -> Timestamp {
    d.to_zoned(jiff::tz::TimeZone::UTC).map_or(Timestamp::from_millis(0), |z| Timestamp::from_millis(z.timestamp().as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_runs_from_its_first_day_to_the_next_months() {
        // 2026-02-14T12:00:00Z
        let now = Timestamp::from_millis(1_771_070_400_000);
        assert_eq!(rfc3339(month_start(now)), "2026-02-01T00:00:00.000Z");
        assert_eq!(rfc3339(month_end(now)), "2026-03-01T00:00:00.000Z");
    }
}
