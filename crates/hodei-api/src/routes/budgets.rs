//! Budgets (SPEC §2.3, §4.7): per tenant, an amount per period. What is spent is the sum of
//! the tenant's daily cost rollups over the period's UTC days; at 100 % the tenant's new and
//! pending jobs are held (`hold`) or its submits refused with 402 (`reject`) — running jobs are
//! never stopped. The server's budget watcher applies that within seconds of the spend.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use hodei_core::budget::{Budget, BudgetState, OnExhausted, Period, day_start, period_days, state, valid_thresholds};
use hodei_core::cost::parse_micros;
use hodei_core::{Action, BudgetId, TenantId, Timestamp};
use hodei_store::{CostGroup, CostQuery, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{Page, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;
use crate::routes::audit;
use crate::routes::costs::money;

/// What `b`'s tenant has spent in the period that contains `now`, and that period's days.
pub async fn spent(store: &dyn Store, b: &Budget, now: Timestamp) -> Result<(i64, i64, i64), hodei_store::StoreError> {
    let (from_day, to_day) = period_days(b.period, now);
    let q = CostQuery { from_day, to_day, tenant: Some(b.tenant.clone()), pool: None, visible: None, group_by: CostGroup::Tenant };
    let rows = store.cost_breakdown(&q).await?;
    Ok((rows.iter().map(|r| r.cost_micros).sum(), from_day, to_day))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    pub id: String,
    pub tenant_id: String,
    /// The project the budget is for; null: the whole tenant (projects come later, so always
    /// null for now).
    pub project_id: Option<String>,
    pub amount_micros: i64,
    pub amount: String,
    /// daily|weekly (Monday to Sunday)|monthly|total, in UTC.
    pub period: String,
    pub thresholds_pct: Vec<u32>,
    /// hold|reject.
    pub on_exhausted: String,
    /// What the tenant's ended attempts cost in the current period.
    pub spent_micros: i64,
    pub spent: String,
    pub utilization_ratio: f64,
    /// ok|warning|critical|exhausted.
    pub state: String,
    pub period_start: String,
    /// Exclusive; none for `total`.
    pub period_end: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

async fn view(s: &ApiState, b: &Budget) -> ApiResult<BudgetView> {
    let (spent_micros, first, last) = spent(s.store.as_ref(), b, s.clock.now()).await?;
    let currency = s.cfg.currency.as_str();
    Ok(BudgetView {
        id: b.id.to_string(),
        tenant_id: b.tenant.to_string(),
        project_id: None,
        amount_micros: b.amount_micros,
        amount: money(b.amount_micros, currency),
        period: b.period.to_string(),
        thresholds_pct: b.thresholds_pct.clone(),
        on_exhausted: b.on_exhausted.to_string(),
        spent_micros,
        spent: money(spent_micros, currency),
        utilization_ratio: spent_micros as f64 / b.amount_micros as f64,
        state: state(b, spent_micros).to_string(),
        period_start: rfc3339(day_start(first)),
        period_end: (b.period != Period::Total).then(|| rfc3339(day_start(last + 1))),
        created_at: rfc3339(b.created_at),
        updated_at: rfc3339(b.updated_at),
        version: b.version,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetIn {
    pub tenant_id: String,
    /// A project's budget instead of the tenant's: projects are not supported yet, so only
    /// null (or absent) is accepted.
    pub project_id: Option<String>,
    /// A positive decimal amount of the currency with at most 6 decimals, e.g. "250.00".
    pub amount: String,
    /// daily|weekly|monthly (default)|total.
    pub period: Option<String>,
    /// Ascending percentages from 1 to 100 (default 80, 90, 100).
    pub thresholds_pct: Option<Vec<u32>>,
    /// hold (default)|reject.
    pub on_exhausted: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetUpdate {
    pub amount: Option<String>,
    pub period: Option<String>,
    pub thresholds_pct: Option<Vec<u32>>,
    pub on_exhausted: Option<String>,
}

fn amount(v: &str) -> ApiResult<i64> {
    parse_micros(v.trim())
        .filter(|&m| m > 0)
        .ok_or_else(|| ApiError::field("/amount", "not a positive amount", "a positive decimal with at most 6 decimals, e.g. 250.00", Some(v.to_owned())))
}

fn period(v: &str) -> ApiResult<Period> {
    v.parse().map_err(|()| ApiError::field("/period", "unknown period", Period::expected(), Some(v.to_owned())))
}

fn on_exhausted(v: &str) -> ApiResult<OnExhausted> {
    v.parse().map_err(|()| ApiError::field("/on_exhausted", "unknown action", OnExhausted::expected(), Some(v.to_owned())))
}

fn thresholds(t: Vec<u32>) -> ApiResult<Vec<u32>> {
    if valid_thresholds(&t) {
        Ok(t)
    } else {
        Err(ApiError::field("/thresholds_pct", "bad thresholds", "1 to 10 ascending percentages from 1 to 100", Some(format!("{t:?}"))))
    }
}

/// A budget the caller may see (else 404, as if it did not exist).
async fn visible(s: &ApiState, who: &Who, id: &str) -> ApiResult<Budget> {
    let found = match id.parse::<Uuid>() {
        Ok(u) => s.store.get_budget(BudgetId::from_uuid(u)).await?,
        Err(_) => None,
    };
    found.filter(|b| who.access(Action::Read, &b.tenant) != hodei_core::Access::Invisible).ok_or_else(|| ApiError::not_found(format!("budget {id}")))
}

/// Create a budget for a tenant (its PI or an admin). 201 with what is spent already.
#[utoipa::path(
    post,
    path = "/budgets",
    request_body = BudgetIn,
    responses((status = 201, body = BudgetView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn create_budget(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<BudgetIn>) -> ApiResult<(StatusCode, HeaderMap, Json<BudgetView>)> {
    let tenant =
        TenantId::parse(&body.tenant_id).map_err(|e| ApiError::field("/tenant_id", e.to_string(), "a tenant id (slug)", Some(body.tenant_id.clone())))?;
    if who.access(Action::Read, &tenant) == hodei_core::Access::Invisible || s.tenants.get(s.store.as_ref(), &tenant).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {tenant}")));
    }
    who.may(Action::ManageTenant, &tenant, "setting budgets (pi or admin)")?;
    if body.project_id.is_some() {
        return Err(ApiError::field("/project_id", "projects are not supported yet", "null: a budget for the whole tenant", body.project_id.clone()));
    }
    if !s.cfg.budgets_enabled {
        return Err(ApiError::new(ErrorCode::Conflict, "budgets are turned off on this server (budgets.enabled: false)"));
    }
    let now = s.clock.now();
    let b = Budget {
        id: BudgetId::from_uuid(Uuid::now_v7()),
        tenant,
        amount_micros: amount(&body.amount)?,
        period: body.period.as_deref().map(period).transpose()?.unwrap_or(Period::Monthly),
        thresholds_pct: thresholds(body.thresholds_pct.unwrap_or_else(|| s.cfg.budget_thresholds_pct.clone()))?,
        on_exhausted: body.on_exhausted.as_deref().map(on_exhausted).transpose()?.unwrap_or(s.cfg.budget_on_exhausted),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    s.store.create_budget(&b).await?;
    s.budgets_changed.notify_one();
    let v = view(&s, &b).await?;
    audit::record(&s, &who, "budget.create", format!("budget:{}", b.id), None, audit::view(&v)).await;
    let mut h = HeaderMap::new();
    if let Ok(l) = HeaderValue::from_str(&format!("/api/v1/budgets/{}", b.id)) {
        h.insert(header::LOCATION, l);
    }
    Ok((StatusCode::CREATED, h, Json(v)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BudgetQuery {
    pub tenant_id: Option<String>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Budgets of the tenants the caller may read, oldest first, with what each has spent.
#[utoipa::path(get, path = "/budgets", params(BudgetQuery), responses((status = 200, body = Page<BudgetView>), (status = 400, body = crate::error::Problem)), tag = "costs")]
pub async fn list_budgets(State(s): State<ApiState>, who: Who, Query(q): Query<BudgetQuery>) -> ApiResult<Json<Page<BudgetView>>> {
    let tenant = q
        .tenant_id
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| ApiError::field("tenant_id", e.to_string(), "a tenant id (slug)", Some(t.to_owned()))))
        .transpose()?;
    let visible = who.visibility().into_filter();
    let budgets = s.store.list_budgets(tenant.as_ref(), visible.as_deref()).await?;
    // The page first, then what each of its budgets has spent (a read per budget).
    let page = super::page_of(&budgets, q.limit, q.cursor.as_deref(), Clone::clone)?;
    let mut items = Vec::with_capacity(page.items.len());
    for b in &page.items {
        items.push(view(&s, b).await?);
    }
    Ok(Json(Page { items, next_cursor: page.next_cursor }))
}

/// One budget.
#[utoipa::path(get, path = "/budgets/{id}", responses((status = 200, body = BudgetView), (status = 404, body = crate::error::Problem)), tag = "costs")]
pub async fn get_budget(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<BudgetView>> {
    let b = visible(&s, &who, &id).await?;
    Ok(Json(view(&s, &b).await?))
}

/// Change a budget (its tenant's PI or an admin); `If-Match: "<version>"` makes it
/// conditional. A larger amount or a later period releases held jobs within seconds.
#[utoipa::path(
    put,
    path = "/budgets/{id}",
    request_body = BudgetUpdate,
    responses((status = 200, body = BudgetView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn update_budget(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BudgetUpdate>,
) -> ApiResult<Json<BudgetView>> {
    let mut b = visible(&s, &who, &id).await?;
    who.may(Action::ManageTenant, &b.tenant, "changing budgets (pi or admin)")?;
    super::if_match(&headers, b.version, "budget")?;
    let before = audit::view(&view(&s, &b).await?);
    if let Some(a) = &body.amount {
        b.amount_micros = amount(a)?;
    }
    if let Some(p) = &body.period {
        b.period = period(p)?;
    }
    if let Some(t) = body.thresholds_pct {
        b.thresholds_pct = thresholds(t)?;
    }
    if let Some(o) = &body.on_exhausted {
        b.on_exhausted = on_exhausted(o)?;
    }
    b.updated_at = s.clock.now();
    b.version += 1;
    s.store.update_budget(&b).await?;
    s.budgets_changed.notify_one();
    let v = view(&s, &b).await?;
    audit::record(&s, &who, "budget.update", format!("budget:{}", b.id), before, audit::view(&v)).await;
    Ok(Json(v))
}

/// Delete a budget (its tenant's PI or an admin): jobs it held are released within seconds.
#[utoipa::path(delete, path = "/budgets/{id}", responses((status = 204), (status = 404, body = crate::error::Problem)), tag = "costs")]
pub async fn delete_budget(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let b = visible(&s, &who, &id).await?;
    who.may(Action::ManageTenant, &b.tenant, "deleting budgets (pi or admin)")?;
    if !s.store.delete_budget(b.id).await? {
        return Err(ApiError::not_found(format!("budget {id}")));
    }
    s.store.resolve_alerts(&format!("budget:{}", b.id), &[], s.clock.now()).await?;
    s.budgets_changed.notify_one();
    audit::record(&s, &who, "budget.delete", format!("budget:{}", b.id), None, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's budgets decide: exhausted (any at 100 %) and, if so, whether submits are
/// refused (any exhausted one says `reject`) — with the message a refusal gives.
pub fn verdict(budgets: &[(&Budget, i64)]) -> Option<(bool, String)> {
    let spent: Vec<&(&Budget, i64)> = budgets.iter().filter(|(b, s)| state(b, *s) == BudgetState::Exhausted).collect();
    let (b, s) = spent.iter().find(|(b, _)| b.on_exhausted == OnExhausted::Reject).or(spent.first())?;
    let reject = b.on_exhausted == OnExhausted::Reject;
    Some((reject, format!("tenant {} has spent its {} budget ({} of {} micro-units)", b.tenant, b.period, s, b.amount_micros)))
}
