//! Costs (SPEC §2.12, §4.7): the breakdown of what attempts cost, by tenant, pool or day, read
//! from the daily rollups the ledger writes with every ended attempt (never from a scan).

use axum::Json;
use axum::extract::{Query, State};
use hodei_core::Timestamp;
use hodei_core::cost::day_of;
use hodei_store::{CostGroup, CostQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;
use crate::routes::audit;
use crate::routes::scaling::instant;
use hodei_core::cost::{RateVersion, Rates, parse_micros};

const DAY_MS: i64 = 86_400_000;
/// The longest custom period.
const MAX_DAYS: i64 = 366;

/// Micro-dollars as a decimal amount with its currency, e.g. `0.070000 USD`.
pub fn money(micros: i64, currency: &str) -> String {
    format!("{} {currency}", amount(micros))
}

/// Micro-units as a decimal amount with six decimals, e.g. `0.070000`.
fn amount(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BreakdownQuery {
    pub tenant_id: Option<String>,
    pub pool_id: Option<String>,
    /// Projects come later: refused for now.
    pub project_id: Option<String>,
    /// last_day|last_week|last_month (24 h, 7 d, 30 d back)|month_to_date (default)|custom.
    pub period: Option<String>,
    /// RFC 3339; with `period=custom` (at most 366 days).
    pub start: Option<String>,
    pub end: Option<String>,
    /// tenant (default)|pool|day|job_name (job names from the cost records, kept
    /// `cost_tracking.retention_days`, and refused where `cost_tracking.track_by_job` is off;
    /// the others from the daily rollups, kept for good).
    pub group_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostGroupView {
    /// The tenant id, the pool id, or the day (YYYY-MM-DD, UTC).
    pub key: String,
    pub cost_micros: i64,
    pub cost: String,
    pub cpu_m_seconds: i64,
    pub memory_mb_seconds: i64,
    pub gpu_seconds: i64,
    /// Attempts that ended in the period (a job retried counts once per attempt).
    pub attempts: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Breakdown {
    /// The whole UTC days the breakdown covers: the period's, widened to day boundaries.
    pub start: String,
    pub end: String,
    pub group_by: String,
    pub total_cost_micros: i64,
    pub total_cost: String,
    /// The most costly first, at most 1000.
    pub groups: Vec<CostGroupView>,
}

/// The instants a period covers, `[start, end)`; errors name `{prefix}period`, `{prefix}start`
/// and `{prefix}end` (a query's parameters, or a body's `/` fields).
pub(crate) fn period(prefix: &str, period: Option<&str>, start: Option<&str>, end: Option<&str>, now: Timestamp) -> ApiResult<(Timestamp, Timestamp)> {
    let back = |days: i64| Ok((Timestamp::from_millis(now.as_millis() - days * DAY_MS), now));
    let custom = matches!(period, Some("custom"));
    let (f_start, f_end, f_period) = (format!("{prefix}start"), format!("{prefix}end"), format!("{prefix}period"));
    if !custom && (start.is_some() || end.is_some()) {
        return Err(ApiError::field(&f_start, "start and end go with period=custom", "period=custom, or no start and end", None));
    }
    match period {
        Some("last_day") => back(1),
        Some("last_week") => back(7),
        Some("last_month") => back(30),
        None | Some("month_to_date") => {
            let day = jiff::Timestamp::from_millisecond(now.as_millis()).map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, e.to_string()))?;
            let first = day.to_zoned(jiff::tz::TimeZone::UTC).date().first_of_month();
            let start = first.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| ApiError::new(crate::error::ErrorCode::Internal, e.to_string()))?;
            Ok((Timestamp::from_millis(start.timestamp().as_millisecond()), now))
        }
        Some("custom") => {
            let s = instant(&f_start, start)?.ok_or_else(|| ApiError::field(&f_start, "period=custom needs a start", "RFC 3339", None))?;
            let e = instant(&f_end, end)?.ok_or_else(|| ApiError::field(&f_end, "period=custom needs an end", "RFC 3339", None))?;
            if e <= s || e.as_millis() - s.as_millis() > MAX_DAYS * DAY_MS {
                return Err(ApiError::field(
                    &f_end,
                    "end must be after start, at most 366 days later",
                    "an end within 366 days after start",
                    end.map(str::to_owned),
                ));
            }
            Ok((s, e))
        }
        Some(p) => Err(ApiError::field(&f_period, "unknown period", "last_day|last_week|last_month|month_to_date|custom", Some(p.to_owned()))),
    }
}

/// A breakdown by or of a pool where costs are not kept by pool (`cost_tracking.track_by_pool:
/// false`), refused naming the parameter.
pub(crate) fn not_by_pool(field: &str, value: Option<String>) -> ApiError {
    ApiError::field(field, "costs are not kept by pool on this server (cost_tracking.track_by_pool: false)", "no pool", value)
}

/// What attempts cost over a period, grouped by tenant, pool or day: sums of the daily
/// rollups (whole UTC days), within the tenants the caller may read.
#[utoipa::path(
    get,
    path = "/cost-optimization/breakdown",
    params(BreakdownQuery),
    responses((status = 200, body = Breakdown), (status = 400, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn breakdown(State(s): State<ApiState>, who: Who, Query(q): Query<BreakdownQuery>) -> ApiResult<Json<Breakdown>> {
    if q.project_id.is_some() {
        return Err(ApiError::field("project_id", "projects are not supported yet", "no project_id", q.project_id.clone()));
    }
    let (group_by, name) = match q.group_by.as_deref() {
        None | Some("tenant") => (CostGroup::Tenant, "tenant"),
        Some("pool") if !s.cfg.cost_by_pool => return Err(not_by_pool("group_by", q.group_by.clone())),
        Some("pool") => (CostGroup::Pool, "pool"),
        Some("day") => (CostGroup::Day, "day"),
        Some("job_name") if !s.cfg.cost_records => {
            return Err(ApiError::field(
                "group_by",
                "costs are not kept by job on this server (cost_tracking.track_by_job: false)",
                "tenant|pool|day",
                q.group_by.clone(),
            ));
        }
        Some("job_name") => (CostGroup::JobName, "job_name"),
        Some(g) => return Err(ApiError::field("group_by", "unknown grouping", "tenant|pool|day|job_name", Some(g.to_owned()))),
    };
    let tenant = super::recommendations::parse_tenant(q.tenant_id.as_deref(), "tenant_id")?;
    if q.pool_id.is_some() && !s.cfg.cost_by_pool {
        return Err(not_by_pool("pool_id", q.pool_id.clone()));
    }
    let pool = super::recommendations::parse_pool(q.pool_id.as_deref(), "pool_id")?;
    let (start, end) = period("", q.period.as_deref(), q.start.as_deref(), q.end.as_deref(), s.clock.now())?;
    let (from_day, to_day) = days(start, end);
    let visible = who.visibility().into_filter();
    let groups = groups(&s, &CostQuery { from_day, to_day, tenant, pool, visible, group_by }).await?;
    let currency = s.cfg.currency.as_str();
    let total: i64 = groups.iter().map(|g| g.cost_micros).sum();
    Ok(Json(Breakdown {
        start: rfc3339(Timestamp::from_millis(from_day * DAY_MS)),
        end: rfc3339(Timestamp::from_millis((to_day + 1) * DAY_MS)),
        group_by: name.to_owned(),
        total_cost_micros: total,
        total_cost: money(total, currency),
        groups,
    }))
}

/// The whole UTC days `[start, end)` touches.
pub(crate) fn days(start: Timestamp, end: Timestamp) -> (i64, i64) {
    (day_of(start), day_of(Timestamp::from_millis(end.as_millis() - 1)))
}

/// A breakdown's groups as views (days as YYYY-MM-DD).
pub(crate) async fn groups(s: &ApiState, q: &CostQuery) -> ApiResult<Vec<CostGroupView>> {
    let rows = s.store.cost_breakdown(q).await?;
    let currency = s.cfg.currency.as_str();
    let day_name = |k: &str| k.parse::<i64>().map_or_else(|_| k.to_owned(), |d| rfc3339(Timestamp::from_millis(d * DAY_MS))[..10].to_owned());
    Ok(rows
        .into_iter()
        .map(|r| CostGroupView {
            key: if q.group_by == CostGroup::Day { day_name(&r.key) } else { r.key },
            cost: money(r.cost_micros, currency),
            cost_micros: r.cost_micros,
            cpu_m_seconds: r.cpu_m_seconds,
            memory_mb_seconds: r.memory_mb_seconds,
            gpu_seconds: r.gpu_seconds,
            attempts: r.attempts,
        })
        .collect())
}

/// Rates as amounts of the currency per hour, e.g. `0.050000`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RatesView {
    pub hourly_rate_cpu: String,
    pub hourly_rate_memory_gb: String,
    pub hourly_rate_gpu: String,
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateVersionView {
    pub effective_from: String,
    #[serde(flatten)]
    pub rates: RatesView,
    /// `config` (the configuration file's rates) or `api`.
    pub source: String,
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostRates {
    /// In force now.
    pub current: RatesView,
    /// Oldest first; each in force from its instant until the next one.
    pub versions: Vec<RateVersionView>,
}

/// A new rate version, in force from now on (never for time already run). A rate left out
/// keeps its current value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesIn {
    /// Per core-hour: a non-negative decimal with at most 6 decimals, as a string or a number.
    #[schema(value_type = Option<String>)]
    pub hourly_rate_cpu: Option<serde_json::Value>,
    /// Per GiB-hour.
    #[schema(value_type = Option<String>)]
    pub hourly_rate_memory_gb: Option<serde_json::Value>,
    /// Per GPU-hour.
    #[schema(value_type = Option<String>)]
    pub hourly_rate_gpu: Option<serde_json::Value>,
}

fn rates_view(r: &Rates, currency: &str) -> RatesView {
    RatesView {
        hourly_rate_cpu: amount(r.cpu_core_hour),
        hourly_rate_memory_gb: amount(r.memory_gib_hour),
        hourly_rate_gpu: amount(r.gpu_hour),
        currency: currency.to_owned(),
    }
}

async fn cost_rates(s: &ApiState) -> ApiResult<CostRates> {
    let stored = s.store.list_rate_versions().await?;
    let versions: Vec<RateVersion> = stored.iter().map(|v| v.version).collect();
    let currency = s.cfg.currency.as_str();
    Ok(CostRates {
        current: rates_view(&hodei_core::cost::rates_at(&versions, s.clock.now()), currency),
        versions: stored
            .iter()
            .map(|v| RateVersionView {
                effective_from: rfc3339(v.version.effective_from),
                rates: rates_view(&v.version.rates, currency),
                source: v.source.clone(),
                created_by: v.created_by.clone(),
            })
            .collect(),
    })
}

/// The cost rates in force now and every version (anyone signed in: rates are not secret).
#[utoipa::path(get, path = "/cost-rates", responses((status = 200, body = CostRates)), tag = "costs")]
pub async fn get_rates(State(s): State<ApiState>, _who: Who) -> ApiResult<Json<CostRates>> {
    Ok(Json(cost_rates(&s).await?))
}

/// Add a rate version in force from now on (admins): attempts ending later are priced at it
/// for the time they run from now; what ran before keeps its rates.
#[utoipa::path(
    put,
    path = "/cost-rates",
    request_body = RatesIn,
    responses((status = 200, body = CostRates), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn put_rates(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<RatesIn>) -> ApiResult<Json<CostRates>> {
    who.must_be_admin("changing cost rates (admins only)")?;
    let now = s.clock.now();
    let current = hodei_core::cost::rates_at(&s.rates.read().map(|v| v.clone()).unwrap_or_default(), now);
    let field = |name: &str, v: &Option<serde_json::Value>, keep: i64| -> ApiResult<i64> {
        let Some(v) = v else { return Ok(keep) };
        let text = match v {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(t) => t.trim().to_owned(),
            other => other.to_string(),
        };
        parse_micros(&text)
            .ok_or_else(|| ApiError::field(&format!("/{name}"), "not an amount", "a non-negative decimal with at most 6 decimals, e.g. 0.05", Some(text)))
    };
    let rates = Rates {
        cpu_core_hour: field("hourly_rate_cpu", &body.hourly_rate_cpu, current.cpu_core_hour)?,
        memory_gib_hour: field("hourly_rate_memory_gb", &body.hourly_rate_memory_gb, current.memory_gib_hour)?,
        gpu_hour: field("hourly_rate_gpu", &body.hourly_rate_gpu, current.gpu_hour)?,
    };
    let version = RateVersion { effective_from: now, rates };
    let stored = hodei_store::StoredRates { version, source: "api".into(), created_by: who.name.clone() };
    s.store.add_rate_version(&stored).await.map_err(|e| match e {
        hodei_store::StoreError::AlreadyExists { .. } => {
            ApiError::new(ErrorCode::Conflict, "another rate version took effect at this very millisecond; try again")
        }
        e => e.into(),
    })?;
    let versions: Vec<RateVersion> = s.store.list_rate_versions().await?.into_iter().map(|v| v.version).collect();
    if let Ok(mut r) = s.rates.write() {
        r.clone_from(&versions);
    }
    s.control.rates_changed(versions).await?;
    let view = cost_rates(&s).await?;
    audit::record(&s, &who, "cost_rates.update", "cost-rates".into(), audit::view(&rates_view(&current, &s.cfg.currency)), audit::view(&view.current)).await;
    Ok(Json(view))
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn money_has_six_decimals() {
        assert_eq!(money(70_000, "USD"), "0.070000 USD");
        assert_eq!(money(12_345_678, "EUR"), "12.345678 EUR");
        assert_eq!(money(-5, "USD"), "-0.000005 USD");
    }
}
