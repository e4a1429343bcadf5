//! Tenants CRUD and quotas (SPEC §4.3). Every change is passed on to the scheduler.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use hodei_core::{CpuMillis, Gpus, MemoryMb, Quota, Slug, Tenant, TenantId, TenantStatus, Tier};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{CeilingOut, Page, QuotaIn, QuotaOut, QuotaView, TenantCreate, TenantUpdate, TenantView, UsageOut, UtilizationOut};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;
use crate::routes::audit;
use hodei_core::Action;

fn tier(v: &str) -> ApiResult<Tier> {
    v.parse().map_err(|()| ApiError::field("/tier", "unknown tier", Tier::expected(), Some(v.to_owned())))
}

fn weight(v: i64) -> ApiResult<u32> {
    if (1..=1000).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ApiError::field("/weight", "weight is out of range", "an integer between 1 and 1000", Some(v.to_string())))
    }
}

/// Applies the fields given to a quota; each must be a non-negative integer.
fn apply_quota(q: &mut Quota, input: &QuotaIn, prefix: &str) -> ApiResult<()> {
    let num = |name: &str, v: Option<i64>| -> ApiResult<Option<u32>> {
        v.map(|v| {
            u32::try_from(v)
                .map_err(|_| ApiError::field(&format!("{prefix}/{name}"), "quota value is out of range", "a non-negative integer", Some(v.to_string())))
        })
        .transpose()
    };
    let r = &mut q.resources;
    if let Some(v) = num("cpu_m", input.cpu_m)? {
        r.cpu_m = CpuMillis(v);
    }
    if let Some(v) = num("memory_mb", input.memory_mb)? {
        r.memory_mb = MemoryMb(v);
    }
    if let Some(v) = num("gpu", input.gpu)? {
        r.gpu = Gpus(v);
    }
    if let Some(v) = num("max_concurrent_jobs", input.max_concurrent_jobs)? {
        q.max_concurrent_jobs = v;
    }
    if let Some(v) = num("max_queued_jobs", input.max_queued_jobs)? {
        q.max_queued_jobs = v;
    }
    Ok(())
}

/// The tenant `id` if the caller may do `action` in it: 404 when it does not see it (exactly as
/// for a missing tenant, decided before the store is read), 403 when its role is too weak.
pub(crate) async fn load(s: &ApiState, who: &Who, id: &str, action: Action, doing: &str) -> ApiResult<Tenant> {
    let tid = TenantId::parse(id).map_err(|_| ApiError::not_found(format!("tenant {id}")))?;
    if who.access(Action::Read, &tid) == hodei_core::Access::Invisible {
        return Err(ApiError::not_found(format!("tenant {id}")));
    }
    let t = s.store.get_tenant(&tid).await?.ok_or_else(|| ApiError::not_found(format!("tenant {id}")))?;
    crate::ctx::record("tenant", &tid);
    who.may(action, &tid, doing)?;
    Ok(t)
}

/// Create a tenant.
#[utoipa::path(post, path = "/tenants", request_body = TenantCreate, responses((status = 201, body = TenantView), (status = 400, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "tenants")]
pub async fn create_tenant(State(s): State<ApiState>, who: Who, ApiJson(body): ApiJson<TenantCreate>) -> ApiResult<(StatusCode, HeaderMap, Json<TenantView>)> {
    who.must_be_admin("creating tenants")?;
    let display = super::display_name(&body.name)?;
    let id = match &body.id {
        Some(id) => TenantId::parse(id).map_err(|e| ApiError::field("/id", e.to_string(), "a slug ^[a-z0-9][a-z0-9-]{0,62}$", Some(id.clone())))?,
        None => TenantId::from(
            Slug::from_name(&display)
                .map_err(|e| ApiError::field("/name", e.to_string(), "a name with letters or digits (id is derived from it)", Some(display.clone())))?,
        ),
    };
    let now = s.clock.now();
    let t = Tenant {
        id,
        name: display,
        email: body.email,
        tier: body.tier.as_deref().map(tier).transpose()?.unwrap_or(Tier::Standard),
        weight: body.weight.map(weight).transpose()?,
        status: TenantStatus::Active,
        quota: {
            let mut q = s.cfg.default_quota;
            if let Some(input) = &body.quota {
                apply_quota(&mut q, input, "/quota")?;
            }
            q
        },
        labels: body.labels,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    s.store.create_tenant(&t).await?;
    audit::record(&s, &who, "tenant.create", format!("tenant:{}", t.id), None, audit::view(&TenantView::of(&t, &s.cfg.tier_weights))).await;
    s.control.tenant_changed(&t).await?;
    if let Ok(pools) = s.pools.read() {
        crate::zero_series_for_tenant(&t.id, &pools);
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/tenants/{}", t.id)) {
        h.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, h, Json(TenantView::of(&t, &s.cfg.tier_weights))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    pub status: Option<String>,
    pub tier: Option<String>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List the tenants the caller may read, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/tenants",
    params(TenantQuery),
    responses((status = 200, body = Page<TenantView>), (status = 400, body = crate::error::Problem)),
    tag = "tenants"
)]
pub async fn list_tenants(State(s): State<ApiState>, who: Who, Query(q): Query<TenantQuery>) -> ApiResult<Json<Page<TenantView>>> {
    let visible = who.visibility();
    let mut tenants: Vec<_> = s
        .store
        .list_tenants()
        .await?
        .into_iter()
        .filter(|t| visible.sees(&t.id))
        .filter(|t| q.status.as_deref().is_none_or(|v| t.status.as_str() == v))
        .filter(|t| q.tier.as_deref().is_none_or(|v| t.tier.as_str() == v))
        .collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(super::page_of(&tenants, q.limit, q.cursor.as_deref(), |t| TenantView::of(t, &s.cfg.tier_weights))?))
}

/// One tenant.
#[utoipa::path(get, path = "/tenants/{id}", responses((status = 200, body = TenantView), (status = 404, body = crate::error::Problem)), tag = "tenants")]
pub async fn get_tenant(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<TenantView>> {
    Ok(Json(TenantView::of(&load(&s, &who, &id, Action::Read, "reading this tenant").await?, &s.cfg.tier_weights)))
}

/// Update any mutable field. `If-Match: "<version>"` makes it conditional.
#[utoipa::path(put, path = "/tenants/{id}", request_body = TenantUpdate, responses((status = 200, body = TenantView), (status = 400, body = crate::error::Problem), (status = 412, body = crate::error::Problem)), tag = "tenants")]
pub async fn update_tenant(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TenantUpdate>,
) -> ApiResult<Json<TenantView>> {
    let mut t = load(&s, &who, &id, Action::Administer, "changing tenants (admins only)").await?;
    let before = audit::view(&TenantView::of(&t, &s.cfg.tier_weights));
    super::if_match(&headers, t.version, "tenant")?;
    if let Some(n) = &body.name {
        t.name = super::display_name(n)?;
    }
    if let Some(e) = body.email {
        t.email = Some(e);
    }
    if let Some(v) = &body.tier {
        t.tier = tier(v)?;
    }
    if let Some(w) = body.weight {
        t.weight = w.map(weight).transpose()?;
    }
    if let Some(v) = &body.status {
        t.status = v.parse().map_err(|()| ApiError::field("/status", "unknown status", TenantStatus::expected(), Some(v.clone())))?;
    }
    if let Some(q) = &body.quota {
        apply_quota(&mut t.quota, q, "/quota")?;
    }
    if let Some(l) = body.labels {
        t.labels = l;
    }
    save(&s, &mut t).await?;
    audit::record(&s, &who, "tenant.update", format!("tenant:{}", t.id), before, audit::view(&TenantView::of(&t, &s.cfg.tier_weights))).await;
    Ok(Json(TenantView::of(&t, &s.cfg.tier_weights)))
}

/// Stores a changed tenant (next version) and tells the scheduler.
async fn save(s: &ApiState, t: &mut Tenant) -> ApiResult<()> {
    t.updated_at = s.clock.now();
    t.version += 1;
    s.store.update_tenant(t).await?;
    s.tenants.invalidate(&t.id);
    s.control.tenant_changed(t).await?;
    Ok(())
}

fn ratio(used: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { used as f64 / of as f64 }
}

pub(crate) async fn quota_view(s: &ApiState, t: &Tenant) -> ApiResult<QuotaView> {
    let tid = t.id.clone();
    let (load, ceiling) = crate::read(s.control.as_ref(), move |sched, now| {
        let load = crate::TenantLoad::of(sched, &tid);
        let ceiling = load.policy.ceiling(now);
        let grant = load.policy.active_grant(now).copied();
        ((load, grant), ceiling)
    })
    .await?;
    let ((load, grant), c) = (load, ceiling);
    let u = &load.usage;
    Ok(QuotaView {
        tenant_id: t.id.to_string(),
        quota: QuotaOut::from(&t.quota),
        current_usage: UsageOut {
            cpu_m: u.active.cpu_m,
            memory_mb: u.active.memory_mb,
            gpu: u.active.gpu,
            active_jobs: u.active_jobs,
            queued_jobs: u.queued_jobs,
        },
        burst: grant.map(|g| crate::dto::BurstGrantOut {
            session_id: g.session.to_string(),
            cpu_m: g.resources.cpu_m.get(),
            memory_mb: g.resources.memory_mb.get(),
            gpu: g.resources.gpu.get(),
            concurrent_jobs: g.concurrent_jobs,
            expires_at: crate::dto::rfc3339(g.expires_at),
        }),
        ceiling: CeilingOut {
            cpu_m: c.resources.cpu_m.get(),
            memory_mb: c.resources.memory_mb.get(),
            gpu: c.resources.gpu.get(),
            max_concurrent_jobs: c.concurrent_jobs,
        },
        utilization: UtilizationOut {
            cpu: ratio(u.active.cpu_m, c.resources.cpu_m.get().into()),
            memory: ratio(u.active.memory_mb, c.resources.memory_mb.get().into()),
            gpu: ratio(u.active.gpu, c.resources.gpu.get().into()),
            jobs: ratio(u.active_jobs.into(), c.concurrent_jobs.into()),
        },
    })
}

/// A tenant's quota, current usage, burst grant and ceiling.
#[utoipa::path(get, path = "/tenants/{id}/quota", responses((status = 200, body = QuotaView), (status = 404, body = crate::error::Problem)), tag = "tenants")]
pub async fn get_quota(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<QuotaView>> {
    let t = load(&s, &who, &id, Action::Read, "reading this quota").await?;
    Ok(Json(quota_view(&s, &t).await?))
}

/// Set quota fields (absent ones keep their value). Lowering a quota stops nothing.
#[utoipa::path(put, path = "/tenants/{id}/quota", request_body = QuotaIn, responses((status = 200, body = QuotaView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 412, body = crate::error::Problem)), tag = "tenants")]
pub async fn put_quota(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<QuotaIn>,
) -> ApiResult<Json<QuotaView>> {
    // A pi's own quota (SPEC §8.2) is bounded by a quota_limit that does not exist yet, so
    // quotas are set by admins only for now.
    let mut t = load(&s, &who, &id, Action::Administer, "setting quotas (admins only)").await?;
    let before = audit::view(&QuotaOut::from(&t.quota));
    super::if_match(&headers, t.version, "tenant")?;
    apply_quota(&mut t.quota, &body, "")?;
    save(&s, &mut t).await?;
    audit::record(&s, &who, "tenant.quota", format!("tenant:{}", t.id), before, audit::view(&QuotaOut::from(&t.quota))).await;
    Ok(Json(quota_view(&s, &t).await?))
}

/// Delete a tenant without live jobs (never `default`).
#[utoipa::path(delete, path = "/tenants/{id}", responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "tenants")]
pub async fn delete_tenant(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let t = load(&s, &who, &id, Action::Administer, "deleting tenants (admins only)").await?;
    if t.id == s.cfg.default_tenant {
        return Err(ApiError::new(ErrorCode::Conflict, "the default tenant cannot be deleted"));
    }
    let gate = s.tenant_gate.write().await;
    let live = s.store.count_live_jobs(&t.id).await?;
    if live > 0 {
        return Err(ApiError::new(ErrorCode::Conflict, format!("tenant has {live} live jobs; cancel them first")).with("live_jobs", live.into()));
    }
    s.store.delete_tenant(&t.id).await?;
    s.tenants.invalidate(&t.id);
    drop(gate);
    audit::record(&s, &who, "tenant.delete", format!("tenant:{}", t.id), audit::view(&TenantView::of(&t, &s.cfg.tier_weights)), None).await;
    Ok(StatusCode::NO_CONTENT)
}
