//! Cost reports (SPEC §2.12, §4.7): a period's cost over a scope, broken down by tenant, pool
//! and day, its most costly jobs, a forecast to the month's end and the recommendations of the
//! moment — made once, stored as made, and listed newest first.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use hodei_core::{TenantId, Timestamp, Visibility};
use hodei_store::{CostGroup, CostQuery, StoredReport};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::costs::{CostGroupView, days, groups, money, period};
use super::recommendations::{
    PoolRecommendationView, RecommendationView, compute, compute_pools, parse_pool, parse_tenant, pool_samples, rates_of_pool, total_savings,
};
use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;

/// Jobs listed in a report's `top_jobs`.
const TOP_JOBS: u32 = 10;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportIn {
    /// last_day|last_week|last_month (24 h, 7 d, 30 d back)|month_to_date (default)|custom.
    pub period: Option<String>,
    /// RFC 3339, with `period: custom` (at most 366 days).
    pub start: Option<String>,
    pub end: Option<String>,
    /// The tenant reported on; without it, every tenant the caller reads (a caller who reads
    /// several tenants but not all names one).
    pub tenant_id: Option<String>,
    pub pool_id: Option<String>,
    /// Projects come later: refused for now.
    pub project_id: Option<String>,
    /// Default true.
    pub include_recommendations: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopJobView {
    pub job_id: String,
    pub name: String,
    pub tenant_id: String,
    pub cost_micros: i64,
    pub cost: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportBreakdown {
    pub by_tenant: Vec<CostGroupView>,
    /// Empty where costs are not kept by pool (`cost_tracking.track_by_pool: false`).
    pub by_pool: Vec<CostGroupView>,
    pub by_day: Vec<CostGroupView>,
}

/// A cost report as made. Amounts in micro-units of `currency`, each with its formatted twin.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostReport {
    pub id: String,
    pub created_by: String,
    pub created_at: String,
    pub period: String,
    /// The whole UTC days covered (the period widened to day boundaries).
    pub start: String,
    pub end: String,
    pub tenant_id: Option<String>,
    pub pool_id: Option<String>,
    pub currency: String,
    pub total_cost_micros: i64,
    pub total_cost: String,
    pub breakdown: ReportBreakdown,
    /// The most costly jobs of the period, from the cost records still kept
    /// (`cost_tracking.retention_days`; none where `cost_tracking.track_by_job` is off).
    pub top_jobs: Vec<TopJobView>,
    /// This month's cost so far plus the last 7 days' daily average for each day left.
    pub forecast_period_end_micros: i64,
    pub forecast_period_end: String,
    pub recommendations: Vec<RecommendationView>,
    /// The pools' advice (reports made by admins about every tenant; absent in reports made
    /// before pools were advised on).
    #[serde(default)]
    #[schema(required = false)]
    pub pool_recommendations: Vec<PoolRecommendationView>,
    /// Of both kinds of advice.
    pub potential_savings_micros: i64,
    pub potential_savings: String,
    /// What the workers of the pools reported on (one with `pool_id`) cost while idle in the
    /// period: live workers × the share of their slots not busy × the period they were so, from
    /// the metric history, at the rates in force now. Absent in a tenant's report (idle
    /// capacity is the cluster's) and without `metrics.history`; the history starts when it
    /// was turned on.
    pub idle_cost_micros: Option<i64>,
    pub idle_cost: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportsQuery {
    pub tenant_id: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportPage {
    /// Newest first.
    #[schema(value_type = Vec<CostReport>)]
    pub items: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// The sum of a scope's cost over whole days.
async fn spent(s: &ApiState, q: &CostQuery, from_day: i64, to_day: i64) -> ApiResult<i64> {
    let rows = s.store.cost_breakdown(&CostQuery { from_day, to_day, group_by: CostGroup::Tenant, ..q.clone() }).await?;
    Ok(rows.iter().map(|r| r.cost_micros).sum())
}

/// This month's cost so far plus, for each day left in it, the last 7 days' daily average.
/// What the pools' idle workers cost over [start, end), from the metric history (see
/// `CostReport::idle_cost_micros`).
async fn idle_cost(s: &ApiState, pool: Option<&hodei_core::PoolId>, start: Timestamp, end: Timestamp, now: Timestamp) -> ApiResult<Option<i64>> {
    if s.cfg.history.is_none() {
        return Ok(None);
    }
    let pools: Vec<hodei_core::Pool> = s.pools.read().map(|p| p.iter().filter(|p| pool.is_none_or(|id| *id == p.id)).cloned().collect()).unwrap_or_default();
    let mut total = 0i64;
    for p in pools {
        let rates = rates_of_pool(s, &p.id).await?;
        let samples: Vec<(u64, f64, f64)> = pool_samples(s, &p.id, start, end, now).await?.iter().map(|x| (x.secs, x.size, x.busy_ratio)).collect();
        total = total.saturating_add(hodei_core::cost::idle_micros(&samples, &p.worker_resources, &rates));
    }
    Ok(Some(total))
}

async fn forecast(s: &ApiState, q: &CostQuery, now: Timestamp) -> ApiResult<i64> {
    let today = now.as_millis().div_euclid(DAY_MS);
    let (first, last) = hodei_core::budget::period_days(hodei_core::budget::Period::Monthly, now);
    let month = spent(s, q, first, today).await?;
    let week = spent(s, q, today - 6, today).await?;
    // Today is part of both: the days left are those after it, and what is left of today.
    let left_ms = (last + 1) * DAY_MS - now.as_millis();
    Ok(month + (i128::from(week) * i128::from(left_ms) / i128::from(7 * DAY_MS)) as i64)
}

/// Make a cost report over a period and scope (it is stored, and listed with the others).
#[utoipa::path(
    post,
    path = "/cost-optimization/reports",
    request_body = ReportIn,
    responses((status = 201, body = CostReport), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn create_report(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<ReportIn>) -> ApiResult<(StatusCode, HeaderMap, Json<CostReport>)> {
    if body.project_id.is_some() {
        return Err(ApiError::field("/project_id", "projects are not supported yet", "no project_id", body.project_id.clone()));
    }
    let now = s.clock.now();
    let visible = who.visibility();
    let mut tenant = parse_tenant(body.tenant_id.as_deref(), "/tenant_id")?;
    if let Some(t) = &tenant
        && (!visible.sees(t) || s.tenants.get(s.store.as_ref(), t).await?.is_none())
    {
        return Err(ApiError::not_found(format!("tenant {t}")));
    }
    if tenant.is_none()
        && let Visibility::Tenants(ts) = &visible
    {
        match ts.as_slice() {
            [only] => tenant = Some(only.clone()),
            _ => return Err(ApiError::field("/tenant_id", "you read several tenants: name the one reported on", "one of your tenants", None)),
        }
    }
    if body.pool_id.is_some() && !s.cfg.cost_by_pool {
        return Err(super::costs::not_by_pool("/pool_id", body.pool_id.clone()));
    }
    let pool = parse_pool(body.pool_id.as_deref(), "/pool_id")?;
    let period_name = body.period.clone().unwrap_or_else(|| "month_to_date".to_owned());
    let (start, end) = period("/", Some(&period_name), body.start.as_deref(), body.end.as_deref(), now)?;
    let (from_day, to_day) = days(start, end);
    let q = CostQuery { from_day, to_day, tenant: tenant.clone(), pool: pool.clone(), visible: visible.clone().into_filter(), group_by: CostGroup::Tenant };
    let by_tenant = groups(&s, &q).await?;
    // Not kept by pool: the rollups' pool is empty, there is nothing to break down.
    let by_pool = if s.cfg.cost_by_pool { groups(&s, &CostQuery { group_by: CostGroup::Pool, ..q.clone() }).await? } else { Vec::new() };
    let by_day = groups(&s, &CostQuery { group_by: CostGroup::Day, ..q.clone() }).await?;
    let total: i64 = by_tenant.iter().map(|g| g.cost_micros).sum();
    let currency = s.cfg.currency.clone();
    let top_jobs = s
        .store
        .top_cost_jobs(&q, TOP_JOBS)
        .await?
        .into_iter()
        .map(|j| TopJobView {
            job_id: j.job_id.to_string(),
            name: j.job_name,
            tenant_id: j.tenant.to_string(),
            cost: money(j.cost_micros, &currency),
            cost_micros: j.cost_micros,
        })
        .collect();
    let forecast = forecast(&s, &q, now).await?;
    let recs = match body.include_recommendations {
        Some(false) => Vec::new(),
        _ => compute(&s, &who, tenant.as_ref(), pool.as_ref(), None, now).await?,
    };
    let pool_recs = match (body.include_recommendations, &tenant) {
        (Some(false), _) | (_, Some(_)) => Vec::new(),
        _ => compute_pools(&s, &who, pool.as_ref(), None, now).await?,
    };
    let savings = total_savings(&recs, &pool_recs);
    let idle = match tenant {
        Some(_) => None,
        None => idle_cost(&s, pool.as_ref(), start, end, now).await?,
    };
    let id = Uuid::now_v7();
    let report = CostReport {
        id: id.to_string(),
        created_by: who.name.clone(),
        created_at: rfc3339(now),
        period: period_name,
        start: rfc3339(Timestamp::from_millis(from_day * DAY_MS)),
        end: rfc3339(Timestamp::from_millis((to_day + 1) * DAY_MS)),
        tenant_id: tenant.as_ref().map(ToString::to_string),
        pool_id: pool.as_ref().map(ToString::to_string),
        total_cost_micros: total,
        total_cost: money(total, &currency),
        breakdown: ReportBreakdown { by_tenant, by_pool, by_day },
        top_jobs,
        forecast_period_end_micros: forecast,
        forecast_period_end: money(forecast, &currency),
        recommendations: recs.iter().map(|r| RecommendationView::of(r, &currency)).collect(),
        pool_recommendations: pool_recs.iter().map(|r| PoolRecommendationView::of(r, &currency)).collect(),
        potential_savings_micros: savings,
        potential_savings: money(savings, &currency),
        idle_cost_micros: idle,
        idle_cost: idle.map(|m| money(m, &currency)),
        currency,
    };
    let body = serde_json::to_string(&report).map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, e.to_string()))?;
    s.store.put_cost_report(&StoredReport { id, tenant, created_by: who.name.clone(), created_at: now, body }).await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("/api/v1/cost-optimization/reports/{id}").parse() {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, Json(report)))
}

fn parse_report(r: &StoredReport) -> ApiResult<serde_json::Value> {
    serde_json::from_str(&r.body).map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, format!("stored report {}: {e}", r.id)))
}

/// Whether the caller reads this report: an admin all, others those of their tenants.
fn readable(who: &Who, r: &StoredReport) -> bool {
    match (&r.tenant, who.visibility()) {
        (_, Visibility::All) => true,
        (Some(t), v) => v.sees(t),
        (None, _) => false,
    }
}

/// One cost report, as made.
#[utoipa::path(
    get,
    path = "/cost-optimization/reports/{id}",
    responses((status = 200, body = CostReport), (status = 404, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn get_report(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let found = match Uuid::parse_str(&id) {
        Ok(u) => s.store.get_cost_report(u).await?,
        Err(_) => None,
    };
    match found {
        Some(r) if readable(&who, &r) => Ok(Json(parse_report(&r)?)),
        _ => Err(ApiError::not_found(format!("cost report {id}"))),
    }
}

async fn list(s: &ApiState, who: &Who, q: &ReportsQuery) -> ApiResult<ReportPage> {
    let tenant: Option<TenantId> = parse_tenant(q.tenant_id.as_deref(), "tenant_id")?;
    let limit = match q.limit {
        None => 20,
        Some(n @ 1..=100) => n,
        Some(n) => return Err(ApiError::field("limit", "limit out of range", "1 to 100", Some(n.to_string()))),
    };
    let before = q
        .cursor
        .as_deref()
        .map(|c| Uuid::parse_str(c).map_err(|_| ApiError::field("cursor", "not a cursor this list gave", "a next_cursor", Some(c.to_owned()))))
        .transpose()?;
    let visible = who.visibility().into_filter();
    let rows = s.store.list_cost_reports(tenant.as_ref(), visible.as_deref(), before, limit).await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    Ok(ReportPage { items: rows.iter().map(parse_report).collect::<ApiResult<_>>()?, next_cursor })
}

/// Cost reports, newest first: every one the caller reads, or one tenant's.
#[utoipa::path(
    get,
    path = "/cost-optimization/reports",
    params(ReportsQuery),
    responses((status = 200, body = ReportPage), (status = 400, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn list_reports(State(s): State<ApiState>, who: Who, Query(q): Query<ReportsQuery>) -> ApiResult<Json<ReportPage>> {
    Ok(Json(list(&s, &who, &q).await?))
}

/// A tenant's cost reports (`?tenant_id`), newest first — the same list as
/// `GET /cost-optimization/reports`.
#[utoipa::path(
    get,
    path = "/cost-reports",
    params(ReportsQuery),
    responses((status = 200, body = ReportPage), (status = 400, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn cost_reports(State(s): State<ApiState>, who: Who, Query(q): Query<ReportsQuery>) -> ApiResult<Json<ReportPage>> {
    Ok(Json(list(&s, &who, &q).await?))
}
