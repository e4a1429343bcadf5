//! Pools created through the API (SPEC §4.6): create, update, delete. Their workers join by
//! themselves with the pool's join token (provider `external`) or are started by the server on
//! its own machine (`local`), kept at the pool's desired size by the autoscaler. Pools of the
//! configuration file answer 409 here: they change there.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use hodei_core::{Pool, PoolId, PoolState, PoolType, Resources, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Who;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;
use crate::routes::audit;
use crate::routes::workers::{PoolView, pool_view};

/// The most workers a pool may have (SPEC §2.10).
const MAX_POOL_SIZE: i64 = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    /// Millicores one worker offers.
    pub cpu_m: i64,
    /// MiB one worker offers.
    pub memory_mb: i64,
    #[serde(default)]
    pub gpu: i64,
    /// Jobs one worker runs at once.
    pub slots: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    /// A slug: lowercase letters, digits and dashes. Not reusable after a delete.
    pub id: String,
    pub name: Option<String>,
    /// `static` (default: kept at min_size at least, idle workers kept) or `dynamic` (idle
    /// workers above min_size dropped after idle_timeout_s).
    #[serde(rename = "type")]
    pub pool_type: Option<String>,
    /// `external` (default): workers join with the pool's join token; `local`: the server
    /// starts them on its machine.
    pub provider: Option<String>,
    /// The shape of one worker, against which jobs are checked at submit.
    pub worker_template: TemplateIn,
    pub min_size: Option<i64>,
    pub max_size: Option<i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether its scaling policies act (false).
    pub auto_scaling_enabled: Option<bool>,
    /// Dynamic pools drop workers idle this long (300 s), down to min_size.
    pub idle_timeout_s: Option<i64>,
    #[serde(default)]
    pub scaling_policies: Vec<crate::routes::scaling::PolicyIn>,
    /// Existing tenants whose jobs it runs; empty or absent: every tenant's.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdate {
    pub name: Option<String>,
    pub min_size: Option<i64>,
    pub max_size: Option<i64>,
    pub labels: Option<BTreeMap<String, String>>,
    /// Whether its scaling policies act.
    pub auto_scaling_enabled: Option<bool>,
    /// Dynamic pools drop workers idle this long (seconds), down to min_size.
    pub idle_timeout_s: Option<i64>,
    /// Existing tenants whose jobs it runs from now on; empty: every tenant's. Jobs running
    /// there keep running.
    pub allowed_tenants: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct PoolCreated {
    #[serde(flatten)]
    pub pool: PoolView,
    /// Shown once: workers register with it (`hodei worker --pool ID`, `HODEI_JOIN_TOKEN`).
    pub join_token: String,
}

fn int_in(field: &str, v: i64, lo: i64, hi: i64, what: &str) -> ApiResult<u32> {
    if (lo..=hi).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ApiError::field(field, format!("{what} is out of range"), format!("an integer from {lo} to {hi}"), Some(v.to_string())))
    }
}

fn sizes(min: u32, max: u32) -> ApiResult<()> {
    if min > max {
        return Err(ApiError::field("/min_size", "min_size is above max_size", format!("at most max_size ({max})"), Some(min.to_string())));
    }
    Ok(())
}

/// `allowed_tenants`: each an existing tenant.
async fn tenants_in(s: &ApiState, ids: &[String]) -> ApiResult<Vec<TenantId>> {
    let mut out: Vec<TenantId> = Vec::with_capacity(ids.len());
    for (i, raw) in ids.iter().enumerate() {
        let field = format!("/allowed_tenants/{i}");
        let id = TenantId::parse(raw).map_err(|e| ApiError::field(&field, e.to_string(), "a tenant id (slug)", Some(raw.clone())))?;
        if s.tenants.get(s.store.as_ref(), &id).await?.is_none() {
            return Err(ApiError::field(&field, "no tenant of that id exists", "an existing tenant's id", Some(raw.clone())));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Tells the scheduler whose jobs the pool runs and which labels its workers carry.
async fn placement_changed(s: &ApiState, pool: &Pool) -> ApiResult<()> {
    s.control.pool_changed(pool).await.map_err(ApiError::from)
}

/// The pool `id` as stored, for a change through the API: 404 when there is none (or it was
/// deleted), 409 when the configuration file manages it.
async fn managed(s: &ApiState, id: &str) -> ApiResult<Pool> {
    let pool = match PoolId::parse(id) {
        Ok(pid) => s.store.get_pool(&pid).await?.map(|(p, _)| p),
        Err(_) => None,
    }
    .filter(|p| p.state != PoolState::Destroyed)
    .ok_or_else(|| ApiError::not_found(format!("pool {id}")))?;
    if pool.managed_by == "config" {
        return Err(ApiError::new(ErrorCode::Conflict, format!("pool {id} is set in the configuration file: change it there and restart")));
    }
    Ok(pool)
}

/// Replaces the pool in the list the submit check reads (removes it when `keep` is false).
fn remember(s: &ApiState, pool: &Pool, keep: bool) {
    if let Ok(mut pools) = s.pools.write() {
        pools.retain(|p| p.id != pool.id);
        if keep {
            pools.push(pool.clone());
        }
    }
}

/// Create a pool (admins). Its join token is in the answer, once.
#[utoipa::path(
    post,
    path = "/pools",
    request_body = PoolCreate,
    responses(
        (status = 201, body = PoolCreated),
        (status = 400, body = crate::error::Problem),
        (status = 409, description = "a pool with this id exists or existed", body = crate::error::Problem)
    ),
    tag = "pools"
)]
pub async fn create_pool(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<PoolCreate>) -> ApiResult<(StatusCode, HeaderMap, Json<PoolCreated>)> {
    who.must_be_admin("creating pools (admins only)")?;
    let id =
        PoolId::parse(&body.id).map_err(|e| ApiError::field("/id", e.to_string(), "a slug: lowercase letters, digits and dashes", Some(body.id.clone())))?;
    let pool_type = match body.pool_type.as_deref() {
        None | Some("static") => PoolType::Static,
        Some("dynamic") => PoolType::Dynamic,
        Some(t) => return Err(ApiError::field("/type", "unknown pool type", "static|dynamic", Some(t.to_owned()))),
    };
    let provider = match body.provider.as_deref() {
        None | Some("external") => "external",
        Some("local") => "local",
        Some(p) => {
            return Err(ApiError::field("/provider", "this provider cannot be used yet", "external|local", Some(p.to_owned())));
        }
    };
    let mut policies: Vec<hodei_core::autoscale::Policy> = Vec::new();
    for (i, p) in body.scaling_policies.iter().enumerate() {
        let policy = crate::routes::scaling::policy_from(p).map_err(|e| e.under(&format!("/scaling_policies/{i}")))?;
        if policies.iter().any(|x| x.id == policy.id) {
            return Err(ApiError::field(
                &format!("/scaling_policies/{i}/name"),
                "two policies have this id",
                "names with distinct slugs",
                Some(p.name.clone()),
            ));
        }
        policies.push(policy);
    }
    if pool_type == PoolType::Static && body.idle_timeout_s.is_some() {
        return Err(ApiError::field("/idle_timeout_s", "only dynamic pools drop idle workers", "type dynamic, or no idle_timeout_s", None));
    }
    let idle_timeout =
        std::time::Duration::from_secs(u64::from(int_in("/idle_timeout_s", body.idle_timeout_s.unwrap_or(300), 0, 30 * 86_400, "idle_timeout_s")?));
    let t = &body.worker_template;
    let resources = Resources::new(
        int_in("/worker_template/cpu_m", t.cpu_m, 1, 10_000_000, "cpu_m")?,
        int_in("/worker_template/memory_mb", t.memory_mb, 1, 1 << 30, "memory_mb")?,
        int_in("/worker_template/gpu", t.gpu, 0, 1024, "gpu")?,
    );
    let slots = int_in("/worker_template/slots", t.slots, 1, 10_000, "slots")?;
    let min_size = int_in("/min_size", body.min_size.unwrap_or(0), 0, MAX_POOL_SIZE, "min_size")?;
    let max_size = int_in("/max_size", body.max_size.unwrap_or(MAX_POOL_SIZE), 0, MAX_POOL_SIZE, "max_size")?;
    sizes(min_size, max_size)?;
    let allowed_tenants = tenants_in(&s, &body.allowed_tenants).await?;
    let now = s.clock.now();
    let pool = Pool {
        name: body.name.as_deref().map(super::display_name).transpose()?.unwrap_or_else(|| id.to_string()),
        id,
        pool_type,
        provider: provider.into(),
        worker_resources: resources,
        worker_slots: slots,
        min_size,
        max_size,
        desired_size: min_size,
        auto_scaling_enabled: body.auto_scaling_enabled.unwrap_or(false),
        idle_timeout,
        scaling_policies: policies,
        allowed_tenants,
        labels: body.labels,
        managed_by: "api".into(),
        // Workers that join by themselves may come at any time; the server's own are started
        // now (the autoscaler moves the pool on once they are live).
        state: if provider == "external" { PoolState::Active } else { PoolState::Initializing },
        state_reason: if provider == "external" { String::new() } else { "starting its workers".into() },
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let join_token = crate::auth::new_secret().map_err(|e| ApiError::new(ErrorCode::Internal, format!("drawing a join token: {e}")))?;
    s.store.create_pool(&pool, &crate::auth::secret_hash(&join_token)).await?;
    if pool.provider == "local" {
        s.join_tokens.keep(&pool, &join_token).await?;
    }
    placement_changed(&s, &pool).await?;
    remember(&s, &pool, true);
    s.pools_changed.notify_one();
    crate::zero_series_for_pool(&pool, &s.cfg.default_tenant, s.cfg.cost_by_pool);
    let view = pool_view(&pool);
    audit::record(&s, &who, "pool.create", format!("pool:{}", pool.id), None, audit::view(&view)).await;
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/pools/{}", pool.id)) {
        h.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, h, Json(PoolCreated { pool: view, join_token })))
}

/// Change a pool created through the API (admins): name, sizes, labels. `If-Match:
/// "<version>"` makes it conditional.
#[utoipa::path(
    put,
    path = "/pools/{id}",
    request_body = PoolUpdate,
    responses(
        (status = 200, body = PoolView),
        (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "the configuration file manages this pool", body = crate::error::Problem),
        (status = 412, body = crate::error::Problem)
    ),
    tag = "pools"
)]
pub async fn update_pool(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PoolUpdate>,
) -> ApiResult<Json<PoolView>> {
    who.must_be_admin("changing pools (admins only)")?;
    let mut pool = managed(&s, &id).await?;
    super::if_match(&headers, pool.version, "pool")?;
    let before = audit::view(&pool_view(&pool));
    if let Some(n) = &body.name {
        pool.name = super::display_name(n)?;
    }
    if let Some(v) = body.min_size {
        pool.min_size = int_in("/min_size", v, 0, MAX_POOL_SIZE, "min_size")?;
    }
    if let Some(v) = body.max_size {
        pool.max_size = int_in("/max_size", v, 0, MAX_POOL_SIZE, "max_size")?;
    }
    sizes(pool.min_size, pool.max_size)?;
    if let Some(l) = body.labels {
        pool.labels = l;
    }
    if let Some(on) = body.auto_scaling_enabled {
        pool.auto_scaling_enabled = on;
    }
    if body.idle_timeout_s.is_some() && pool.pool_type == PoolType::Static {
        return Err(ApiError::field("/idle_timeout_s", "only dynamic pools drop idle workers", "no idle_timeout_s for a static pool", None));
    }
    if let Some(t) = body.idle_timeout_s {
        pool.idle_timeout = std::time::Duration::from_secs(u64::from(int_in("/idle_timeout_s", t, 0, 30 * 86_400, "idle_timeout_s")?));
    }
    if let Some(ts) = &body.allowed_tenants {
        pool.allowed_tenants = tenants_in(&s, ts).await?;
    }
    pool.updated_at = s.clock.now();
    s.store.upsert_pool(&pool, None).await?;
    placement_changed(&s, &pool).await?;
    // New bounds or policies: the autoscaler brings the size within them now.
    s.pools_changed.notify_one();
    let pool = managed(&s, &id).await?;
    remember(&s, &pool, true);
    let view = pool_view(&pool);
    audit::record(&s, &who, "pool.update", format!("pool:{}", pool.id), before, audit::view(&view)).await;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Cancel the jobs that select the pool and drain its workers; the pool is `draining` (202)
    /// until none is left, then `destroyed`.
    pub force: Option<bool>,
}

/// Delete a pool created through the API (admins), once no worker of it is live or offline
/// (drain them first) and no job that has not ended selects it — or, with `?force=true`, at
/// once: its jobs are cancelled, its workers drained (their running jobs end as cancelled), and
/// it is `destroyed` when none is left. Its join token stops registering workers; the id is
/// not reused.
#[utoipa::path(
    delete,
    path = "/pools/{id}",
    params(DeleteQuery),
    responses(
        (status = 202, description = "forced: draining", body = PoolView),
        (status = 204),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "the configuration file manages this pool, or it still has workers or jobs", body = crate::error::Problem)
    ),
    tag = "pools"
)]
pub async fn delete_pool(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<DeleteQuery>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    who.must_be_admin("deleting pools (admins only)")?;
    let mut pool = managed(&s, &id).await?;
    if pool.state == PoolState::Draining {
        return Ok((StatusCode::ACCEPTED, Json(pool_view(&pool))).into_response());
    }
    if q.force == Some(true) {
        return Ok(force_delete(&s, &who, pool).await?.into_response());
    }
    let pid = pool.id.clone();
    let (workers, waiting) = crate::read(s.control.as_ref(), move |sched, _| {
        let workers = sched.workers().filter(|w| w.pool_id == pid && w.state != hodei_core::WorkerState::Terminated).count();
        let waiting = sched.jobs().filter(|j| j.spec.pool_selector.as_ref() == Some(&pid)).count();
        (workers, waiting)
    })
    .await?;
    if waiting > 0 {
        return Err(ApiError::new(ErrorCode::InvalidState, format!("{waiting} jobs not ended select pool {id}: cancel them or let them end first"))
            .with("jobs", waiting.into()));
    }
    if workers > 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("pool {id} still has {workers} workers (live or offline): drain them first (hodei workers drain ID)"),
        )
        .with("workers", workers.into()));
    }
    let before = audit::view(&pool_view(&pool));
    pool.state = PoolState::Destroyed;
    pool.updated_at = s.clock.now();
    // No token matches an empty hash: nothing registers with the old one any more.
    s.store.upsert_pool(&pool, Some("")).await?;
    remember(&s, &pool, false);
    audit::record(&s, &who, "pool.delete", format!("pool:{}", pool.id), before, None).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE ?force`: no new job selects the pool, those that did are cancelled, and the
/// autoscaler drains its workers and marks it destroyed once none is left.
async fn force_delete(s: &ApiState, who: &Who, mut pool: Pool) -> ApiResult<(StatusCode, Json<PoolView>)> {
    let before = audit::view(&pool_view(&pool));
    remember(s, &pool, false);
    // No new worker joins a pool on its way out (those registered keep their sessions).
    s.store.set_pool_join_token(&pool.id, "").await?;
    let pid = pool.id.clone();
    let jobs =
        crate::read(s.control.as_ref(), move |sched, _| sched.jobs().filter(|j| j.spec.pool_selector.as_ref() == Some(&pid)).map(|j| j.id).collect::<Vec<_>>())
            .await?;
    for j in jobs {
        // One that ended meanwhile is left as it ended.
        let _ = s.control.cancel(j, who.principal).await;
    }
    let now = s.clock.now();
    let reason = format!("deleted with force by {}: draining its workers", who.name);
    pool.state = PoolState::Draining;
    pool.state_reason = reason.clone();
    pool.min_size = 0;
    pool.updated_at = now;
    s.store.upsert_pool(&pool, None).await?;
    let decision = hodei_core::autoscale::Decision {
        source: hodei_core::autoscale::Source::Lifecycle,
        policy_id: None,
        trigger: None,
        observed: None,
        from: pool.desired_size,
        to: 0,
        outcome: hodei_core::autoscale::Outcome::Executed,
        reason,
    };
    s.store.set_pool_size(&pool.id, 0, PoolState::Draining, &decision.reason).await?;
    let event = hodei_core::autoscale::Event { id: 0, pool_id: pool.id.clone(), at: now, decision, actor: Some(who.name.clone()) };
    s.store.record_scaling_event(&event).await?;
    s.pools_changed.notify_one();
    let pool = managed(s, pool.id.as_str()).await?;
    let view = pool_view(&pool);
    audit::record(s, who, "pool.delete", format!("pool:{}", pool.id), before, audit::view(&view)).await;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
