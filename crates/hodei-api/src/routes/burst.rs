//! Burst sessions (SPEC §2.2, §4.3). The rules are the core's; this module validates input,
//! stores the session (the store refuses a second open one per tenant) and passes the grant
//! on to the scheduler.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hodei_core::burst::{self, BurstError, BurstRequest};
use hodei_core::{BurstId, BurstSession, BurstState, Resources, TenantId};
use hodei_store::{BurstFilter, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{BurstIn, BurstView, Page};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::json::ApiJson;
use crate::routes::audit;
use crate::routes::{page_limit, parse_id};
use hodei_core::Action;

impl From<BurstError> for ApiError {
    fn from(e: BurstError) -> Self {
        match e {
            BurstError::Disabled => ApiError::new(ErrorCode::BurstUnavailable, e.to_string()),
            BurstError::Invalid { field, expected } => ApiError::field(&format!("/{field}"), "requested burst is out of range", expected, None),
            BurstError::Unavailable { reason, retry_after } => {
                let e = ApiError::new(ErrorCode::BurstUnavailable, reason);
                match retry_after {
                    Some(d) => e.with("retry_after_s", d.as_secs().max(1).into()),
                    None => e,
                }
            }
            BurstError::InvalidState { state, action } => {
                ApiError::new(ErrorCode::InvalidState, format!("burst session is {state}; {action} is not allowed")).with("state", state.as_str().into())
            }
        }
    }
}

fn amount(field: &str, v: Option<i64>) -> ApiResult<u32> {
    match v {
        None => Ok(0),
        Some(n) => u32::try_from(n).map_err(|_| ApiError::field(&format!("/{field}"), "must be a non-negative integer", "an integer ≥ 0", Some(n.to_string()))),
    }
}

/// Request burst capacity: active at once, or `pending_approval` when approval is required.
#[utoipa::path(post, path = "/tenants/{id}/burst", request_body = BurstIn, responses((status = 201, body = BurstView), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "burst")]
pub async fn request_burst(
    State(s): State<ApiState>,
    who: Who,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BurstIn>,
) -> ApiResult<(StatusCode, Json<BurstView>)> {
    let t = crate::routes::tenants::load(&s, &who, &id, Action::ManageTenant, "requesting burst capacity (pi or admin)").await?;
    let duration_minutes = body
        .duration_minutes
        .map(|n| u32::try_from(n).map_err(|_| ApiError::field("/duration_minutes", "must be a positive integer", "an integer ≥ 1", Some(n.to_string()))))
        .transpose()?;
    let req = BurstRequest {
        resources: Resources::new(
            amount("requested_cpu_m", body.requested_cpu_m)?,
            amount("requested_memory_mb", body.requested_memory_mb)?,
            amount("requested_gpu", body.requested_gpu)?,
        ),
        concurrent_jobs: amount("requested_concurrent_jobs", body.requested_concurrent_jobs)?,
        duration_minutes,
        reason: body.reason,
        requested_by: who.name.clone(),
    };
    // The newest sessions tell whether one is open and when the last cooldown ends.
    let history = s.store.list_bursts(&BurstFilter { tenant: Some(t.id.clone()), limit: 8, ..BurstFilter::default() }).await?;
    let now = s.clock.now();
    let session = burst::open(&s.cfg.burst, &t.id, &t.quota, &history, req, BurstId::from_uuid(uuid::Uuid::now_v7()), now)?;
    match s.store.create_burst(&session).await {
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::new(ErrorCode::BurstUnavailable, format!("tenant {} already has an open burst session", t.id)));
        }
        r => r?,
    }
    s.control.burst_changed(&session).await?;
    audit::record(&s, &who, "burst.request", format!("burst:{}", session.id), None, audit::view(&BurstView::from(&session))).await;
    Ok((StatusCode::CREATED, Json(BurstView::from(&session))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BurstQuery {
    /// pending_approval|active|rejected|expired|ended|revoked (comma-separated)
    #[param(pattern = "^(pending_approval|active|rejected|expired|ended|revoked)(,(pending_approval|active|rejected|expired|ended|revoked))*$")]
    pub state: Option<String>,
    pub tenant_id: Option<String>,
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

async fn list(s: &ApiState, who: &Who, tenant: Option<TenantId>, q: BurstQuery) -> ApiResult<Json<Page<BurstView>>> {
    let states = match q.state.as_deref() {
        None | Some("") => vec![],
        Some(v) => v
            .split(',')
            .map(|x| x.trim().parse().map_err(|()| ApiError::field("state", "unknown burst state", BurstState::expected(), Some(x.to_owned()))))
            .collect::<ApiResult<_>>()?,
    };
    let limit = page_limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned()))))
        .transpose()?;
    let visible = who.visibility().into_filter();
    let f = BurstFilter { tenant, visible, states, before, limit: limit + 1 };
    let mut rows = s.store.list_bursts(&f).await?;
    let next_cursor = (rows.len() > limit as usize).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|b| b.id.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items: rows.iter().map(BurstView::from).collect(), next_cursor }))
}

/// All burst sessions, newest first.
#[utoipa::path(get, path = "/burst/sessions", params(BurstQuery), responses((status = 200, body = Page<BurstView>), (status = 400, body = crate::error::Problem)), tag = "burst")]
pub async fn list_all(State(s): State<ApiState>, who: Who, Query(q): Query<BurstQuery>) -> ApiResult<Json<Page<BurstView>>> {
    let tenant = match q.tenant_id.as_deref() {
        None => None,
        Some(t) => Some(TenantId::parse(t).map_err(|e| ApiError::field("tenant_id", e.to_string(), "a tenant id", Some(t.to_owned())))?),
    };
    list(&s, &who, tenant, q).await
}

/// A tenant's burst sessions, newest first.
#[utoipa::path(get, path = "/tenants/{id}/burst/sessions", params(BurstQuery), responses((status = 200, body = Page<BurstView>), (status = 404, body = crate::error::Problem)), tag = "burst")]
pub async fn list_of_tenant(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<BurstQuery>) -> ApiResult<Json<Page<BurstView>>> {
    let t = crate::routes::tenants::load(&s, &who, &id, Action::Read, "reading burst sessions").await?;
    list(&s, &who, Some(t.id), q).await
}

/// A session of a tenant the caller sees, if its role allows `action` there.
async fn load(s: &ApiState, who: &Who, tenant: &str, sid: &str, action: Action, doing: &str) -> ApiResult<BurstSession> {
    let t = crate::routes::tenants::load(s, who, tenant, Action::Read, doing).await?;
    let id: BurstId = parse_id("burst session", sid)?;
    match s.store.get_burst(id).await? {
        Some(b) if b.tenant_id == t.id => {
            who.may(action, &t.id, doing)?;
            Ok(b)
        }
        _ => Err(ApiError::not_found(format!("burst session {sid} of tenant {tenant}"))),
    }
}

/// One burst session.
#[utoipa::path(get, path = "/tenants/{id}/burst/sessions/{sid}", responses((status = 200, body = BurstView), (status = 404, body = crate::error::Problem)), tag = "burst")]
pub async fn get_session(State(s): State<ApiState>, who: Who, Path((id, sid)): Path<(String, String)>) -> ApiResult<Json<BurstView>> {
    Ok(Json(BurstView::from(&load(&s, &who, &id, &sid, Action::Read, "reading burst sessions").await?)))
}

/// Applies a decision to a session, stores it (version-checked) and tells the scheduler.
async fn decide(
    s: &ApiState,
    who: &Who,
    (id, sid): (&str, &str),
    (action, doing, verb): (Action, &str, &str),
    f: impl FnOnce(&mut BurstSession) -> Result<(), BurstError>,
) -> ApiResult<Json<BurstView>> {
    let mut b = load(s, who, id, sid, action, doing).await?;
    let before = audit::view(&BurstView::from(&b));
    f(&mut b)?;
    s.store.update_burst(&b).await?;
    audit::record(s, who, verb, format!("burst:{}", b.id), before, audit::view(&BurstView::from(&b))).await;
    s.control.burst_changed(&b).await?;
    Ok(Json(BurstView::from(&b)))
}

/// Approve a pending request (admin); it is active from now for its duration.
#[utoipa::path(post, path = "/tenants/{id}/burst/sessions/{sid}/approve", responses((status = 200, body = BurstView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "burst")]
pub async fn approve(State(s): State<ApiState>, who: Who, Path((id, sid)): Path<(String, String)>) -> ApiResult<Json<BurstView>> {
    let now = s.clock.now();
    decide(&s, &who, (&id, &sid), (Action::Administer, "approving burst requests (admins only)", "burst.approve"), |b| b.approve(&who.name, now)).await
}

/// Reject a pending request (admin); no cooldown.
#[utoipa::path(post, path = "/tenants/{id}/burst/sessions/{sid}/reject", responses((status = 200, body = BurstView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "burst")]
pub async fn reject(State(s): State<ApiState>, who: Who, Path((id, sid)): Path<(String, String)>) -> ApiResult<Json<BurstView>> {
    let now = s.clock.now();
    decide(&s, &who, (&id, &sid), (Action::Administer, "rejecting burst requests (admins only)", "burst.reject"), |b| b.reject(&who.name, now)).await
}

/// End an active session early (cooldown starts now), or withdraw a pending request.
#[utoipa::path(post, path = "/tenants/{id}/burst/sessions/{sid}/end", responses((status = 200, body = BurstView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), tag = "burst")]
pub async fn end(State(s): State<ApiState>, who: Who, Path((id, sid)): Path<(String, String)>) -> ApiResult<Json<BurstView>> {
    let now = s.clock.now();
    let rules = s.cfg.burst;
    decide(&s, &who, (&id, &sid), (Action::ManageTenant, "ending burst sessions (pi or admin)", "burst.end"), |b| b.end(&who.name, &rules, now)).await
}
