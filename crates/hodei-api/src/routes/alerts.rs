//! Alerts (SPEC §2.13, §4.7): what the server raised (today: budget thresholds, once per
//! threshold and period), newest first, scoped like every read; acknowledging one says someone
//! is on it (it stays until resolved).

use axum::Json;
use axum::extract::{Path, Query, State};
use hodei_core::alert::{Alert, AlertState};
use hodei_core::{Access, Action, AlertId, TenantId};
use hodei_store::AlertFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{Page, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::routes::{audit, page_limit};

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: String,
    /// budget_threshold, …
    pub kind: String,
    /// info|warning|critical.
    pub severity: String,
    pub tenant_id: Option<String>,
    /// What it is about, e.g. `budget:<id>`.
    pub scope: String,
    pub value: f64,
    pub message: String,
    /// firing|acknowledged|resolved.
    pub state: String,
    pub fired_at: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<String>,
}

impl From<&Alert> for AlertView {
    fn from(a: &Alert) -> Self {
        AlertView {
            id: a.id.to_string(),
            kind: a.kind.clone(),
            severity: a.severity.clone(),
            tenant_id: a.tenant.as_ref().map(ToString::to_string),
            scope: a.scope.clone(),
            value: a.value,
            message: a.message.clone(),
            state: a.state.to_string(),
            fired_at: rfc3339(a.fired_at),
            acknowledged_at: a.acknowledged_at.map(rfc3339),
            acknowledged_by: a.acknowledged_by.clone(),
            resolved_at: a.resolved_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    pub tenant_id: Option<String>,
    /// firing|acknowledged|resolved.
    pub state: Option<String>,
    pub kind: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Alerts of the tenants the caller may read (admins: all), newest first.
#[utoipa::path(get, path = "/alerts", params(AlertQuery), responses((status = 200, body = Page<AlertView>), (status = 400, body = crate::error::Problem)), tag = "costs")]
pub async fn list_alerts(State(s): State<ApiState>, who: Who, Query(q): Query<AlertQuery>) -> ApiResult<Json<Page<AlertView>>> {
    let limit = page_limit(q.limit)?;
    let tenant = q
        .tenant_id
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| ApiError::field("tenant_id", e.to_string(), "a tenant id (slug)", Some(t.to_owned()))))
        .transpose()?;
    let state = q
        .state
        .as_deref()
        .map(|v| v.parse::<AlertState>().map_err(|()| ApiError::field("state", "unknown state", AlertState::expected(), Some(v.to_owned()))))
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<uuid::Uuid>()
                .map(AlertId::from_uuid)
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("cursor {c:?} is not one this API returned")))
        })
        .transpose()?;
    let visible = who.visibility().into_filter();
    let alerts = s.store.list_alerts(&AlertFilter { tenant, visible, state, kind: q.kind, before, limit }).await?;
    let next_cursor = (alerts.len() == limit as usize).then(|| alerts.last().map(|a| a.id.to_string())).flatten();
    Ok(Json(Page { items: alerts.iter().map(AlertView::from).collect(), next_cursor }))
}

async fn visible(s: &ApiState, who: &Who, id: &str) -> ApiResult<Alert> {
    let found = match id.parse::<uuid::Uuid>() {
        Ok(u) => s.store.get_alert(AlertId::from_uuid(u)).await?,
        Err(_) => None,
    };
    found
        .filter(|a| match &a.tenant {
            Some(t) => who.access(Action::Read, t) != Access::Invisible,
            None => who.is_admin(),
        })
        .ok_or_else(|| ApiError::not_found(format!("alert {id}")))
}

/// One alert.
#[utoipa::path(get, path = "/alerts/{id}", responses((status = 200, body = AlertView), (status = 404, body = crate::error::Problem)), tag = "costs")]
pub async fn get_alert(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<AlertView>> {
    Ok(Json(AlertView::from(&visible(&s, &who, &id).await?)))
}

/// Acknowledge a firing alert (its tenant's PI or an admin): it stays listed until resolved.
#[utoipa::path(
    post,
    path = "/alerts/{id}/ack",
    responses((status = 200, body = AlertView), (status = 404, body = crate::error::Problem), (status = 409, description = "not firing", body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn ack_alert(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<AlertView>> {
    let a = visible(&s, &who, &id).await?;
    match &a.tenant {
        Some(t) => who.may(Action::ManageTenant, t, "acknowledging alerts (pi or admin)")?,
        None => who.must_be_admin("acknowledging alerts (admins only)")?,
    }
    if !s.store.ack_alert(a.id, &who.name, s.clock.now()).await? {
        return Err(ApiError::new(ErrorCode::InvalidState, format!("alert {id} is {}, not firing", a.state)));
    }
    audit::record(&s, &who, "alert.ack", format!("alert:{}", a.id), None, None).await;
    let a = visible(&s, &who, &id).await?;
    Ok(Json(AlertView::from(&a)))
}
