//! Workers and pools (read side), draining a worker, and pool join-token rotation.

use axum::Json;
use axum::extract::{Path, Query, State};
use hodei_core::autoscale::Direction;
use serde::Deserialize;
use utoipa::IntoParams;

use hodei_core::{PoolId, WorkerId, WorkerState};
use hodei_store::WorkerFilter;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{Page, WorkerView};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WorkerQuery {
    pub pool_id: Option<String>,
    /// Comma-separated states (registering, idle, busy, draining, offline, terminated).
    pub state: Option<String>,
    /// A label selector, terms comma-separated, all of which hold: `k=v`, `k!=v` (also workers
    /// without `k`), `k`, `!k`. E.g. `zone=eu,disk=ssd`.
    pub label: Option<String>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// List workers, newest first.
#[utoipa::path(get, path = "/workers", params(WorkerQuery), responses((status = 200, body = Page<WorkerView>), (status = 400, body = crate::error::Problem)), tag = "workers")]
pub async fn list_workers(State(s): State<ApiState>, who: Who, Query(q): Query<WorkerQuery>) -> ApiResult<Json<Page<WorkerView>>> {
    who.must_be_admin("listing workers (admins only)")?;
    let limit = super::page_limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned()))))
        .transpose()?;
    let labels = hodei_store::LabelTerm::parse_selector(q.label.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::field("label", e, "a label selector: comma-separated k=v, k!=v, k or !k", q.label.clone()))?;
    // A pool id or state that cannot exist matches no worker.
    let empty = || Ok(Json(Page { items: Vec::new(), next_cursor: None }));
    let pool = match q.pool_id.as_deref().map(PoolId::parse) {
        Some(Err(_)) => return empty(),
        p => p.transpose().ok().flatten(),
    };
    // Comma-separated states; one that cannot exist matches nothing, like an unknown pool.
    let states: Vec<WorkerState> = q.state.as_deref().unwrap_or("").split(',').filter(|v| !v.is_empty()).filter_map(|v| v.parse().ok()).collect();
    if q.state.as_deref().is_some_and(|v| !v.is_empty()) && states.is_empty() {
        return empty();
    }
    let mut rows = s.store.list_workers(&WorkerFilter { pool, states, labels, before, limit: limit + 1 }).await?;
    let next_cursor = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|w| w.id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: rows.iter().map(WorkerView::from).collect(), next_cursor }))
}

/// One worker.
#[utoipa::path(get, path = "/workers/{id}", responses((status = 200, body = WorkerView), (status = 404, body = crate::error::Problem)), tag = "workers")]
pub async fn get_worker(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<WorkerView>> {
    who.must_be_admin("reading workers (admins only)")?;
    let found = match id.parse::<WorkerId>() {
        Ok(w) => s.store.get_worker(w).await?,
        Err(_) => None,
    };
    found.map(|w| Json(WorkerView::from(&w))).ok_or_else(|| ApiError::not_found(format!("worker {id}")))
}

/// Drain a worker (admins): it takes no new jobs, its running jobs finish, then it is
/// terminated and its agent stops. 202 with the worker as it is now (`draining`, or
/// `terminated` when it ran nothing).
#[utoipa::path(
    post,
    path = "/workers/{id}/drain",
    responses(
        (status = 202, body = WorkerView),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "the worker is offline or terminated", body = crate::error::Problem)
    ),
    tag = "workers"
)]
pub async fn drain_worker(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult<(axum::http::StatusCode, Json<WorkerView>)> {
    who.must_be_admin("draining workers (admins only)")?;
    no_body(body).await?;
    let worker = id.parse::<WorkerId>().map_err(|_| ApiError::not_found(format!("worker {id}")))?;
    match s.control.drain_worker(worker).await {
        Ok(()) => {}
        // The scheduler forgets terminated workers; the store still has them.
        Err(crate::ControlError::WorkerNotFound) => {
            return Err(match s.store.get_worker(worker).await? {
                Some(w) => crate::ControlError::WorkerState(w.state).into(),
                None => ApiError::not_found(format!("worker {id}")),
            });
        }
        Err(e) => return Err(e.into()),
    }
    crate::routes::audit::record(&s, &who, "worker.drain", format!("worker:{worker}"), None, None).await;
    let w = s.store.get_worker(worker).await?.ok_or_else(|| ApiError::not_found(format!("worker {id}")))?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(WorkerView::from(&w))))
}

/// Refuses a body with anything in it: the request takes no parameters, and a field that would
/// be ignored is refused instead.
async fn no_body(body: axum::body::Body) -> ApiResult<()> {
    let body = axum::body::to_bytes(body, 64).await.unwrap_or_else(|_| axum::body::Bytes::from_static(b"x"));
    if !matches!(std::str::from_utf8(&body).map(str::trim), Ok("" | "{}")) {
        return Err(ApiError::field("/", "this request takes no body", "no body, or {}", None));
    }
    Ok(())
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    pub provider: String,
    pub worker_template: crate::dto::ResourcesOut,
    pub worker_slots: u32,
    pub min_size: u32,
    pub max_size: u32,
    /// The size the server keeps the pool at now (the autoscaler's or manual scaling's target).
    pub desired_size: u32,
    pub auto_scaling_enabled: bool,
    /// Dynamic pools drop workers idle this long, down to min_size.
    pub idle_timeout_s: u64,
    pub scaling_policies: Vec<crate::routes::scaling::PolicyView>,
    /// Labels its workers carry (besides their own), matched by jobs' `pool_selector.labels`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The tenants whose jobs it runs; empty: every tenant's.
    pub allowed_tenants: Vec<String>,
    pub managed_by: String,
    pub state: String,
    /// Why it is in its state (empty when nothing needs saying).
    pub state_reason: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

pub(crate) fn pool_view(p: &hodei_core::Pool) -> PoolView {
    PoolView {
        id: p.id.to_string(),
        name: p.name.clone(),
        pool_type: p.pool_type.to_string(),
        provider: p.provider.clone(),
        worker_template: crate::dto::ResourcesOut {
            cpu_m: p.worker_resources.cpu_m.get(),
            memory_mb: p.worker_resources.memory_mb.get(),
            gpu: p.worker_resources.gpu.get(),
        },
        worker_slots: p.worker_slots,
        min_size: p.min_size,
        max_size: p.max_size,
        desired_size: p.desired_size,
        auto_scaling_enabled: p.auto_scaling_enabled,
        idle_timeout_s: p.idle_timeout.as_secs(),
        scaling_policies: p.scaling_policies.iter().map(crate::routes::scaling::policy_view).collect(),
        labels: p.labels.clone(),
        allowed_tenants: p.allowed_tenants.iter().map(ToString::to_string).collect(),
        managed_by: p.managed_by.clone(),
        state: p.state.to_string(),
        state_reason: p.state_reason.clone(),
        created_at: crate::dto::rfc3339(p.created_at),
        updated_at: crate::dto::rfc3339(p.updated_at),
        version: p.version,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PoolQuery {
    /// static|dynamic.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub pool_type: Option<String>,
    /// A pool state (active, destroyed, …).
    pub state: Option<String>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List pools (a pool per configured or created one: the list is bounded by configuration).
#[utoipa::path(get, path = "/pools", params(PoolQuery), responses((status = 200, body = Page<PoolView>), (status = 400, body = crate::error::Problem)), tag = "pools")]
pub async fn list_pools(State(s): State<ApiState>, Query(q): Query<PoolQuery>) -> ApiResult<Json<Page<PoolView>>> {
    let mut pools: Vec<_> = s
        .store
        .list_pools()
        .await?
        .into_iter()
        .filter(|p| q.pool_type.as_deref().is_none_or(|t| p.pool_type.as_str() == t) && q.state.as_deref().is_none_or(|st| p.state.as_str() == st))
        .collect();
    pools.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(super::page_of(&pools, q.limit, q.cursor.as_deref(), pool_view)?))
}

async fn find_pool(s: &ApiState, id: &str) -> ApiResult<hodei_core::Pool> {
    match PoolId::parse(id) {
        Ok(pid) => s.store.get_pool(&pid).await?.map(|(p, _)| p),
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::not_found(format!("pool {id}")))
}

/// One pool.
#[utoipa::path(get, path = "/pools/{id}", responses((status = 200, body = PoolView), (status = 404, body = crate::error::Problem)), tag = "pools")]
pub async fn get_pool(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<PoolView>> {
    Ok(Json(pool_view(&find_pool(&s, &id).await?)))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CooldownUntil {
    pub up: Option<String>,
    pub down: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PoolStatusView {
    pub pool_id: String,
    pub state: String,
    /// Live workers (registering, idle, busy, draining; offline ones until they come back or
    /// are collected).
    pub current_size: u32,
    /// The size the server keeps the pool at (its autoscaler's or manual scaling's target). For
    /// a pool whose workers join by themselves it is advisory.
    pub desired_size: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub state_reason: String,
    /// When scale-up and scale-down policies may act again (RFC 3339; absent when they may now).
    pub cooldown_until: CooldownUntil,
    /// The pool's latest scaling decision.
    pub last_event: Option<crate::routes::scaling::ScalingEventView>,
    /// Workers of the pool by state, as the scheduler holds them now (terminated ones are not
    /// counted).
    pub workers_by_state: std::collections::BTreeMap<String, u32>,
    /// Job slots of the pool's idle and busy workers, and how many run an attempt.
    pub slots: u32,
    pub slots_used: u32,
}

/// A pool's size and workers now.
#[utoipa::path(
    get,
    path = "/pools/{id}/status",
    responses((status = 200, body = PoolStatusView), (status = 404, body = crate::error::Problem)),
    tag = "pools"
)]
pub async fn pool_status(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<PoolStatusView>> {
    let pool = find_pool(&s, &id).await?;
    let pid = pool.id.clone();
    let (by_state, slots, used) = crate::read(s.control.as_ref(), move |sched, _| {
        let mut by_state = std::collections::BTreeMap::<String, u32>::new();
        let (mut slots, mut used) = (0, 0);
        for w in sched.workers().filter(|w| w.pool_id == pid && w.state != WorkerState::Terminated) {
            *by_state.entry(w.state.to_string()).or_default() += 1;
            if matches!(w.state, WorkerState::Idle | WorkerState::Busy) {
                slots += w.slots;
                used += w.slots_used;
            }
        }
        (by_state, slots, used)
    })
    .await?;
    let now = s.clock.now();
    let mem = crate::routes::scaling::memory(&s, &pool.id).await?;
    let last = s
        .store
        .list_scaling_events(&hodei_store::ScalingEventFilter { pool: pool.id.clone(), since: None, until: None, outcome: None, before: None, limit: 1 })
        .await?;
    // The longest cooldown of the enabled policies of each direction.
    let until = |d: Direction| {
        pool.scaling_policies
            .iter()
            .filter(|p| p.enabled && p.direction == d)
            .map(|p| hodei_core::autoscale::cooldown_remaining(p, &mem, now))
            .max()
            .filter(|r| !r.is_zero())
            .map(|r| crate::dto::rfc3339(now.saturating_add(r)))
    };
    Ok(Json(PoolStatusView {
        pool_id: pool.id.to_string(),
        state: pool.state.to_string(),
        current_size: by_state.iter().filter(|(s, _)| s.as_str() != "offline").map(|(_, n)| n).sum(),
        desired_size: pool.desired_size,
        min_size: pool.min_size,
        max_size: pool.max_size,
        state_reason: pool.state_reason.clone(),
        cooldown_until: CooldownUntil { up: until(Direction::ScaleUp), down: until(Direction::ScaleDown) },
        last_event: last.first().map(crate::routes::scaling::event_view),
        workers_by_state: by_state,
        slots,
        slots_used: used,
    }))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JoinTokenView {
    pub pool_id: String,
    /// The new join token, shown once: workers registering from now on need it.
    pub join_token: String,
}

/// Rotate a pool's join token (admins). The old token stops registering workers at once;
/// workers already registered keep running.
#[utoipa::path(
    post,
    path = "/pools/{id}/join-token",
    responses(
        (status = 200, body = JoinTokenView),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "the configuration file sets this pool's token", body = crate::error::Problem)
    ),
    tag = "pools"
)]
pub async fn rotate_join_token(State(s): State<ApiState>, who: Who, Path(id): Path<String>, body: axum::body::Body) -> ApiResult<Json<JoinTokenView>> {
    who.must_be_admin("rotating a pool's join token (admins only)")?;
    no_body(body).await?;
    let pool = match hodei_core::PoolId::parse(&id) {
        Ok(pid) => s.store.get_pool(&pid).await?.map(|(p, _)| p),
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::not_found(format!("pool {id}")))?;
    let join_token = s.join_tokens.rotate(&pool).await?;
    // The log names the rotation, never the token.
    crate::routes::audit::record(&s, &who, "pool.join_token.rotate", format!("pool:{}", pool.id), None, None).await;
    Ok(Json(JoinTokenView { pool_id: pool.id.to_string(), join_token }))
}
