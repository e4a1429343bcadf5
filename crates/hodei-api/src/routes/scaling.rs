//! Scaling a pool (SPEC §4.6): manual scale, the history of every decision, and the current
//! value of each policy's trigger. The autoscaler of the server decides and records; these
//! routes read what it recorded and add manual decisions to the same history.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hodei_core::autoscale::{self, Decision, Event, Memory, Outcome, Source};
use hodei_core::sched::PoolQuery;
use hodei_core::{PoolId, Timestamp};
use hodei_store::ScalingEventFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Who;
use crate::dto::Page;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::routes::{audit, page_limit};

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    /// threshold|forecast.
    pub mode: String,
    /// `<metric> <op> <number>` (threshold policies).
    pub trigger: Option<String>,
    /// scale_up|scale_down.
    pub action: String,
    pub step: u32,
    pub cooldown_s: u64,
    pub window_s: u64,
    pub hysteresis_pct: u32,
    pub enabled: bool,
}

pub(crate) fn policy_view(p: &autoscale::Policy) -> PolicyView {
    PolicyView {
        id: p.id.clone(),
        name: p.name.clone(),
        mode: p.mode.to_string(),
        trigger: p.trigger.as_ref().map(|t| t.to_string()),
        action: p.direction.to_string(),
        step: p.step,
        cooldown_s: p.cooldown.as_secs(),
        window_s: p.window.as_secs(),
        hysteresis_pct: p.hysteresis_pct,
        enabled: p.enabled,
    }
}

#[derive(Serialize, ToSchema)]
pub struct ScalingEventView {
    pub id: String,
    pub pool_id: String,
    pub at: String,
    /// policy|manual|min_size|replacement|idle_reaper|lifecycle.
    pub source: String,
    pub policy_id: Option<String>,
    pub trigger: Option<String>,
    pub observed_value: Option<f64>,
    pub from_size: u32,
    pub to_size: u32,
    /// executed|suppressed_cooldown|clamped|failed.
    pub decision: String,
    pub reason: String,
    pub actor: Option<String>,
}

pub(crate) fn event_view(e: &Event) -> ScalingEventView {
    let d = &e.decision;
    ScalingEventView {
        id: e.id.to_string(),
        pool_id: e.pool_id.to_string(),
        at: crate::dto::rfc3339(e.at),
        source: d.source.to_string(),
        policy_id: d.policy_id.clone(),
        trigger: d.trigger.clone(),
        observed_value: d.observed,
        from_size: d.from,
        to_size: d.to,
        decision: d.outcome.to_string(),
        reason: d.reason.clone(),
        actor: e.actor.clone(),
    }
}

async fn pool(s: &ApiState, id: &str) -> ApiResult<hodei_core::Pool> {
    match PoolId::parse(id) {
        Ok(pid) => s.store.get_pool(&pid).await?.map(|(p, _)| p),
        Err(_) => None,
    }
    .filter(|p| p.state != hodei_core::PoolState::Destroyed)
    .ok_or_else(|| ApiError::not_found(format!("pool {id}")))
}

/// The pool's recent executed decisions, for cooldowns.
pub(crate) async fn memory(s: &ApiState, pool: &PoolId) -> ApiResult<Memory> {
    let f = ScalingEventFilter { pool: pool.clone(), since: None, until: None, outcome: Some(Outcome::Executed), before: None, limit: 50 };
    Ok(Memory::from_events(&s.store.list_scaling_events(&f).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The size to keep the pool at, within its min_size and max_size.
    pub target_size: i64,
    /// Why, recorded in the pool's history.
    pub reason: Option<String>,
}

/// Set a pool's desired size by hand (admins). The server brings local pools to it at once;
/// policies go on acting afterwards (their cooldowns count from this change).
#[utoipa::path(
    post,
    path = "/pools/{id}/scale",
    request_body = ScaleRequest,
    responses((status = 202, body = ScalingEventView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn scale(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScaleRequest>,
) -> ApiResult<(StatusCode, Json<ScalingEventView>)> {
    who.must_be_admin("scaling pools (admins only)")?;
    let pool = pool(&s, &id).await?;
    let (min, max) = (i64::from(pool.min_size), i64::from(pool.max_size));
    if !(min..=max).contains(&body.target_size) {
        return Err(ApiError::field(
            "/target_size",
            format!("target_size is outside the pool's bounds ({min}..={max})"),
            format!("an integer from min_size ({min}) to max_size ({max})"),
            Some(body.target_size.to_string()),
        ));
    }
    let reason = match body.reason.as_deref().map(str::trim) {
        Some(r) if r.len() > 500 => return Err(ApiError::field("/reason", "reason is too long", "at most 500 characters", None)),
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => "scaled by hand".to_owned(),
    };
    let to = body.target_size as u32;
    let now = s.clock.now();
    let decision =
        Decision { source: Source::Manual, policy_id: None, trigger: None, observed: None, from: pool.desired_size, to, outcome: Outcome::Executed, reason };
    let mut event = Event { id: 0, pool_id: pool.id.clone(), at: now, decision, actor: Some(who.name.clone()) };
    event.id = s.store.record_scaling_event(&event).await?;
    s.store.set_pool_size(&pool.id, to, pool.state, &pool.state_reason).await?;
    s.pools_changed.notify_one();
    let view = event_view(&event);
    audit::record(&s, &who, "pool.scale", format!("pool:{}", pool.id), None, audit::view(&view)).await;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// RFC 3339: events at or after.
    pub since: Option<String>,
    /// RFC 3339: events before.
    pub until: Option<String>,
    /// executed|suppressed_cooldown|clamped|failed.
    pub decision: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn instant(field: &str, v: Option<&str>) -> ApiResult<Option<Timestamp>> {
    v.map(|v| {
        v.parse::<jiff::Timestamp>()
            .map(|t| Timestamp::from_millis(t.as_millisecond()))
            .map_err(|_| ApiError::field(field, "not a timestamp", "RFC 3339, e.g. 2026-12-03T10:00:00Z", Some(v.to_owned())))
    })
    .transpose()
}

/// A pool's scaling history, newest first: every decision, executed or skipped, with its
/// trigger, observed value and reason.
#[utoipa::path(
    get,
    path = "/pools/{id}/scaling/history",
    params(HistoryQuery),
    responses((status = 200, body = Page<ScalingEventView>), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn history(State(s): State<ApiState>, Path(id): Path<String>, Query(q): Query<HistoryQuery>) -> ApiResult<Json<Page<ScalingEventView>>> {
    let pool = pool(&s, &id).await?;
    let limit = page_limit(q.limit)?;
    let outcome = q
        .decision
        .as_deref()
        .map(|d| d.parse::<Outcome>().map_err(|_| ApiError::field("decision", "unknown decision", Outcome::expected(), Some(d.to_owned()))))
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned()))))
        .transpose()?;
    let f = ScalingEventFilter {
        pool: pool.id,
        since: instant("since", q.since.as_deref())?,
        until: instant("until", q.until.as_deref())?,
        outcome,
        before,
        limit: limit + 1,
    };
    let mut rows = s.store.list_scaling_events(&f).await?;
    let next_cursor = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|e| e.id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: rows.iter().map(event_view).collect(), next_cursor }))
}

#[derive(Serialize, ToSchema)]
pub struct TriggerView {
    pub policy_id: String,
    pub trigger: Option<String>,
    /// The trigger's metric now (forecast policies: the workers the queue needs).
    pub value: f64,
    pub condition_met: bool,
    pub cooldown_remaining_s: u64,
}

/// Each policy's trigger as of now: the metric's current value, whether the condition holds
/// and how long its cooldown still runs. (The autoscaler averages over each policy's window;
/// this is the instant value.)
#[utoipa::path(
    get,
    path = "/pools/{id}/scaling/triggers",
    responses((status = 200, body = Vec<TriggerView>), (status = 404, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn triggers(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Vec<TriggerView>>> {
    let pool = pool(&s, &id).await?;
    let mem = memory(&s, &pool.id).await?;
    let p = pool.clone();
    let (view, now) = crate::read(s.control.as_ref(), move |sched, now| {
        let forecast = p.scaling_policies.iter().any(|x| x.mode == autoscale::Mode::Forecast);
        let q = PoolQuery { pool: &p, idle_timeout: None, forecast, provision_delay: std::time::Duration::from_secs(1) };
        (sched.pool_views(&[q], now).pop().unwrap_or_default(), now)
    })
    .await?;
    let size = autoscale::PoolSize { min: pool.min_size, max: pool.max_size, desired: pool.desired_size, current: view.live, auto_scaling: true };
    let rows = pool
        .scaling_policies
        .iter()
        .map(|p| {
            let (value, met) = match (&p.trigger, &view.demand) {
                (Some(t), _) => {
                    let v = view.signals.get(t.metric);
                    (v, t.op.holds(v, t.threshold))
                }
                (None, Some(d)) => {
                    let need = autoscale::forecast_size(size, d, now);
                    (f64::from(need), need != pool.desired_size)
                }
                (None, None) => (0.0, false),
            };
            TriggerView {
                policy_id: p.id.clone(),
                trigger: p.trigger.as_ref().map(|t| t.to_string()),
                value,
                condition_met: met,
                cooldown_remaining_s: autoscale::cooldown_remaining(p, &mem, now).as_secs_f64().ceil() as u64,
            }
        })
        .collect();
    Ok(Json(rows))
}
