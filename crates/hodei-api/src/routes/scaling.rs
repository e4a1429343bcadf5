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

/// The pool `id` (a destroyed one too: its history stays readable).
async fn pool(s: &ApiState, id: &str) -> ApiResult<hodei_core::Pool> {
    match PoolId::parse(id) {
        Ok(pid) => s.store.get_pool(&pid).await?.map(|(p, _)| p),
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::not_found(format!("pool {id}")))
}

/// The pool `id` for a change: 409 once it is being deleted or destroyed.
async fn live_pool(s: &ApiState, id: &str) -> ApiResult<hodei_core::Pool> {
    let p = pool(s, id).await?;
    if matches!(p.state, hodei_core::PoolState::Draining | hodei_core::PoolState::Destroying | hodei_core::PoolState::Destroyed) {
        return Err(ApiError::new(crate::error::ErrorCode::InvalidState, format!("pool {id} is {}: it cannot change any more", p.state)));
    }
    Ok(p)
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
    responses(
        (status = 202, body = ScalingEventView),
        (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "the pool is draining or being deleted", body = crate::error::Problem)
    ),
    tag = "pools"
)]
pub async fn scale(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ScaleRequest>,
) -> ApiResult<(StatusCode, Json<ScalingEventView>)> {
    who.must_be_admin("scaling pools (admins only)")?;
    let pool = live_pool(&s, &id).await?;
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

pub(crate) fn instant(field: &str, v: Option<&str>) -> ApiResult<Option<Timestamp>> {
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

/// The most scaling policies one pool may have.
const MAX_POLICIES: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// Its id is the slug of the name (`Scale up fast` → `scale-up-fast`).
    pub name: String,
    /// threshold (default) | forecast.
    pub mode: Option<String>,
    /// `<metric> <op> <number>` over cpu_utilization, memory_utilization, queue_depth,
    /// queue_wait_seconds, idle_workers, busy_ratio; required for threshold policies, refused
    /// for forecast ones.
    pub trigger: Option<String>,
    /// scale_up | scale_down.
    pub action: String,
    /// Workers added or removed at a time (1).
    pub step: Option<i64>,
    /// Seconds before the policy acts again (60 up, 120 down).
    pub cooldown_s: Option<i64>,
    /// Seconds the trigger's metric is averaged over (60; threshold policies only).
    pub window_s: Option<i64>,
    /// Shrink only when wanting this percent fewer workers (20; forecast policies only).
    pub hysteresis_pct: Option<i64>,
    pub enabled: Option<bool>,
}

pub(crate) fn policy_from(body: &PolicyIn) -> ApiResult<autoscale::Policy> {
    use autoscale::{Direction, Mode, Trigger};
    let id = autoscale::policy_id(&body.name).ok_or_else(|| {
        ApiError::field("/name", "name has no letter or digit to make an id of", "a name such as \"scale up on queue\"", Some(body.name.clone()))
    })?;
    let mode = match body.mode.as_deref() {
        None => Mode::Threshold,
        Some(m) => m.parse::<Mode>().map_err(|_| ApiError::field("/mode", "unknown mode", Mode::expected(), Some(m.to_owned())))?,
    };
    let trigger = match (mode, body.trigger.as_deref()) {
        (Mode::Threshold, None) => {
            return Err(ApiError::field("/trigger", "a threshold policy needs a trigger", "<metric> <op> <number>, e.g. queue_depth > 5", None));
        }
        (Mode::Threshold, Some(t)) => Some(Trigger::parse(t).map_err(|e| {
            ApiError::field(
                "/trigger",
                format!("at position {}: expected {}, found {}", e.position, e.expected, e.found),
                e.expected.clone(),
                Some(t.to_owned()),
            )
        })?),
        (Mode::Forecast, Some(t)) => {
            return Err(ApiError::field("/trigger", "forecast policies size the pool from its queue and take no trigger", "no trigger", Some(t.to_owned())));
        }
        (Mode::Forecast, None) => None,
    };
    let direction =
        body.action.parse::<Direction>().map_err(|_| ApiError::field("/action", "unknown action", Direction::expected(), Some(body.action.clone())))?;
    let int = |field: &str, v: Option<i64>, default: u64, lo: i64, hi: i64| -> ApiResult<u64> {
        match v {
            None => Ok(default),
            Some(n) if (lo..=hi).contains(&n) => Ok(n as u64),
            Some(n) => Err(ApiError::field(field, format!("{} is out of range", &field[1..]), format!("an integer from {lo} to {hi}"), Some(n.to_string()))),
        }
    };
    if mode == Mode::Threshold && body.hysteresis_pct.is_some() {
        return Err(ApiError::field("/hysteresis_pct", "only forecast policies use it", "no hysteresis_pct on a threshold policy", None));
    }
    if mode == Mode::Forecast && body.window_s.is_some() {
        return Err(ApiError::field("/window_s", "only threshold policies use it", "no window_s on a forecast policy", None));
    }
    let default_cooldown = if direction == Direction::ScaleUp { 60 } else { 120 };
    Ok(autoscale::Policy {
        id,
        name: body.name.trim().to_owned(),
        mode,
        trigger,
        direction,
        step: int("/step", body.step, 1, 1, 10_000)? as u32,
        cooldown: std::time::Duration::from_secs(int("/cooldown_s", body.cooldown_s, default_cooldown, 0, 86_400)?),
        window: std::time::Duration::from_secs(int("/window_s", body.window_s, 60, 0, 86_400)?),
        hysteresis_pct: int("/hysteresis_pct", body.hysteresis_pct, 20, 0, 100)? as u32,
        enabled: body.enabled.unwrap_or(true),
    })
}

/// The pool for a change of its policies: 409 when the configuration file manages it.
async fn api_pool(s: &ApiState, id: &str) -> ApiResult<hodei_core::Pool> {
    let p = live_pool(s, id).await?;
    if p.managed_by == "config" {
        return Err(ApiError::new(
            crate::error::ErrorCode::Conflict,
            format!("pool {id} is set in the configuration file: change its scaling_policies there and restart"),
        ));
    }
    Ok(p)
}

async fn save(s: &ApiState, mut p: hodei_core::Pool) -> ApiResult<()> {
    p.updated_at = s.clock.now();
    s.store.upsert_pool(&p, None).await?;
    s.pools_changed.notify_one();
    Ok(())
}

/// A pool's scaling policies.
#[utoipa::path(get, path = "/pools/{id}/scaling/policies", responses((status = 200, body = Page<PolicyView>), (status = 404, body = crate::error::Problem)), tag = "pools")]
pub async fn list_policies(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Page<PolicyView>>> {
    let p = pool(&s, &id).await?;
    Ok(Json(Page { items: p.scaling_policies.iter().map(policy_view).collect(), next_cursor: None }))
}

/// Add a scaling policy to a pool created through the API (admins).
#[utoipa::path(
    post,
    path = "/pools/{id}/scaling/policies",
    request_body = PolicyIn,
    responses((status = 201, body = PolicyView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn create_policy(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PolicyIn>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    who.must_be_admin("changing scaling policies (admins only)")?;
    let mut p = api_pool(&s, &id).await?;
    let policy = policy_from(&body)?;
    if p.scaling_policies.iter().any(|x| x.id == policy.id) {
        return Err(ApiError::new(crate::error::ErrorCode::Conflict, format!("pool {id} has a policy {} already", policy.id)));
    }
    if p.scaling_policies.len() >= MAX_POLICIES {
        return Err(ApiError::new(crate::error::ErrorCode::InvalidState, format!("pool {id} has {MAX_POLICIES} policies, the most it may have")));
    }
    let view = policy_view(&policy);
    p.scaling_policies.push(policy);
    let target = format!("pool:{}/policy:{}", p.id, view.id);
    save(&s, p).await?;
    audit::record(&s, &who, "pool.policy.create", target, None, audit::view(&view)).await;
    Ok((StatusCode::CREATED, Json(view)))
}

fn find(p: &hodei_core::Pool, pid: &str) -> ApiResult<usize> {
    p.scaling_policies.iter().position(|x| x.id == pid).ok_or_else(|| ApiError::not_found(format!("policy {pid} of pool {}", p.id)))
}

/// One scaling policy.
#[utoipa::path(get, path = "/pools/{id}/scaling/policies/{pid}", responses((status = 200, body = PolicyView), (status = 404, body = crate::error::Problem)), tag = "pools")]
pub async fn get_policy(State(s): State<ApiState>, Path((id, pid)): Path<(String, String)>) -> ApiResult<Json<PolicyView>> {
    let p = pool(&s, &id).await?;
    Ok(Json(policy_view(&p.scaling_policies[find(&p, &pid)?])))
}

/// Replace a scaling policy (admins); its name may not change its id.
#[utoipa::path(
    put,
    path = "/pools/{id}/scaling/policies/{pid}",
    request_body = PolicyIn,
    responses((status = 200, body = PolicyView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn update_policy(
    State(s): State<ApiState>,
    who: Who,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<PolicyIn>,
) -> ApiResult<Json<PolicyView>> {
    who.must_be_admin("changing scaling policies (admins only)")?;
    let mut p = api_pool(&s, &id).await?;
    let i = find(&p, &pid)?;
    let policy = policy_from(&body)?;
    if policy.id != pid {
        return Err(ApiError::field(
            "/name",
            format!("the name gives the id {}, not {pid}", policy.id),
            format!("a name whose slug is {pid}"),
            Some(body.name.clone()),
        ));
    }
    let before = audit::view(&policy_view(&p.scaling_policies[i]));
    let view = policy_view(&policy);
    p.scaling_policies[i] = policy;
    let target = format!("pool:{}/policy:{pid}", p.id);
    save(&s, p).await?;
    audit::record(&s, &who, "pool.policy.update", target, before, audit::view(&view)).await;
    Ok(Json(view))
}

/// Remove a scaling policy (admins).
#[utoipa::path(
    delete,
    path = "/pools/{id}/scaling/policies/{pid}",
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn delete_policy(State(s): State<ApiState>, who: Who, Path((id, pid)): Path<(String, String)>) -> ApiResult<StatusCode> {
    who.must_be_admin("changing scaling policies (admins only)")?;
    let mut p = api_pool(&s, &id).await?;
    let i = find(&p, &pid)?;
    let before = audit::view(&policy_view(&p.scaling_policies.remove(i)));
    let target = format!("pool:{}/policy:{pid}", p.id);
    save(&s, p).await?;
    audit::record(&s, &who, "pool.policy.delete", target, before, None).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct PoolMetricsView {
    pub pool_id: String,
    /// Allocated / offered cpu of its idle and busy workers, percent.
    pub cpu_utilization: f64,
    pub memory_utilization: f64,
    pub gpu_utilization_pct: f64,
    /// Pending jobs this pool could run, and the longest wait among them.
    pub queue_depth: u32,
    pub queue_wait_seconds: f64,
    pub idle_workers: u32,
    pub busy_workers: u32,
    /// busy / (idle + busy), 0 to 1.
    pub busy_ratio: f64,
    /// What its idle and busy workers offer, and what running attempts hold of it.
    pub capacity: crate::dto::ResourcesOut,
    pub allocated: crate::dto::ResourcesOut,
    pub jobs_running: u32,
    /// 95th percentile of assigned → started over the attempts running now, ms (absent
    /// without running attempts).
    pub allocation_latency_p95_ms: Option<u64>,
    /// What its capacity costs per hour at the default rates, micro-dollars.
    pub cost_rate_micros_per_hour: i64,
    /// Of the attempts running now, the share that found a worker already there when their
    /// job was submitted (a warm worker) rather than one started later; absent without any.
    pub worker_reuse_ratio: Option<f64>,
}

/// A pool's figures now (SPEC §4.6): its trigger metrics and what its workers offer and run.
#[utoipa::path(get, path = "/pools/{id}/metrics", responses((status = 200, body = PoolMetricsView), (status = 404, body = crate::error::Problem)), tag = "pools")]
pub async fn pool_metrics(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<PoolMetricsView>> {
    pool_metrics_of(&s, &id).await.map(Json)
}

/// The pool `id`'s figures now.
pub(crate) async fn pool_metrics_of(s: &ApiState, id: &str) -> ApiResult<PoolMetricsView> {
    let pool = pool(s, id).await?;
    // The pool's own `cost_rates` over the global ones.
    let rates = super::recommendations::rates_of_pool(s, &pool.id).await?;
    let p = pool.clone();
    let view = crate::read(s.control.as_ref(), move |sched, now| {
        let q = PoolQuery { pool: &p, idle_timeout: None, forecast: false, provision_delay: std::time::Duration::ZERO };
        let v = sched.pool_views(&[q], now).pop().unwrap_or_default();
        let (mut capacity, mut allocated) = (hodei_core::Resources::ZERO, hodei_core::Resources::ZERO);
        let (mut latencies, mut warm, mut running) = (Vec::new(), 0u32, 0u32);
        for w in sched.workers().filter(|w| w.pool_id == p.id && matches!(w.state, hodei_core::WorkerState::Idle | hodei_core::WorkerState::Busy)) {
            capacity = capacity.checked_add(&w.resources).unwrap_or(capacity);
            allocated = allocated.checked_add(&w.allocated).unwrap_or(allocated);
            for a in sched.attempts_on(w.id).filter(|a| a.state == hodei_core::AttemptState::Running) {
                running += 1;
                if let Some(started) = a.started_at {
                    latencies.push(started.since(a.assigned_at).as_millis() as u64);
                }
                let submitted = sched.job(&a.job_id).map_or(a.assigned_at, |j| j.submitted_at);
                warm += u32::from(w.registered_at <= submitted);
            }
        }
        latencies.sort_unstable();
        let p95 = (!latencies.is_empty()).then(|| latencies[(latencies.len() - 1) * 95 / 100]);
        (v, capacity, allocated, running, p95, warm)
    })
    .await?;
    let (v, capacity, allocated, running, p95, warm) = view;
    let out = |r: hodei_core::Resources| crate::dto::ResourcesOut { cpu_m: r.cpu_m.get(), memory_mb: r.memory_mb.get(), gpu: r.gpu.get() };
    let pct = |a: u32, t: u32| if t == 0 { 0.0 } else { f64::from(a) * 100.0 / f64::from(t) };
    Ok(PoolMetricsView {
        pool_id: pool.id.to_string(),
        cpu_utilization: v.signals.cpu_utilization,
        memory_utilization: v.signals.memory_utilization,
        gpu_utilization_pct: pct(allocated.gpu.get(), capacity.gpu.get()),
        queue_depth: v.signals.queue_depth,
        queue_wait_seconds: v.signals.queue_wait_seconds,
        idle_workers: v.signals.idle_workers,
        busy_workers: v.busy,
        busy_ratio: v.signals.busy_ratio,
        capacity: out(capacity),
        allocated: out(allocated),
        jobs_running: running,
        allocation_latency_p95_ms: p95,
        cost_rate_micros_per_hour: hodei_core::cost::cost_micros(3600, &capacity, &rates),
        worker_reuse_ratio: (running > 0).then(|| f64::from(warm) / f64::from(running)),
    })
}
