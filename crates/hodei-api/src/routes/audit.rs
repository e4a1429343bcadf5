//! The audit log (SPEC §2.13): every admin and pi write, recorded by [`record`] after it took
//! effect, and `GET /audit` (admins) to read it.

use axum::Json;
use axum::extract::{Query, State};
use hodei_core::{AuditEntry, AuditId, Timestamp};
use hodei_store::AuditFilter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::page_limit;
use crate::ApiState;
use crate::auth::Who;
use crate::dto::{Page, rfc3339};
use crate::error::{ApiError, ApiResult};

/// Records a write that took effect. `before`/`after` are the API's views of the target, which
/// never hold a secret. A failed write is logged and counted, not returned: the change itself
/// is already durable.
pub async fn record(s: &ApiState, who: &Who, action: &str, target: String, before: Option<Value>, after: Option<Value>) {
    let e = AuditEntry {
        id: AuditId::from_uuid(Uuid::now_v7()),
        at: s.clock.now(),
        actor: who.principal,
        actor_name: who.name.clone(),
        action: action.to_owned(),
        target,
        before: before.map(|v| v.to_string()),
        after: after.map(|v| v.to_string()),
        request_id: crate::ctx::current().0,
    };
    if let Err(err) = s.store.append_audit(&e).await {
        metrics::counter!("hodei_audit_write_failures_total").increment(1);
        tracing::error!(error = %err, action, target = %e.target, "writing the audit log");
    }
}

/// Serializes a view for the log.
pub fn view(v: &impl Serialize) -> Option<Value> {
    serde_json::to_value(v).ok()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: String,
    pub actor_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub request_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The actor's principal name.
    pub actor: Option<String>,
    /// e.g. `tenant.update`, `principal.roles`, `token.revoke`.
    pub action: Option<String>,
    /// e.g. `tenant:team-a`.
    pub target: Option<String>,
    /// RFC 3339; entries at or after it.
    #[param(format = DateTime)]
    pub since: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The audit log, newest first (admin).
#[utoipa::path(get, path = "/audit", params(AuditQuery), responses((status = 200, body = Page<AuditView>), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), tag = "identity")]
pub async fn list(State(s): State<ApiState>, who: Who, Query(q): Query<AuditQuery>) -> ApiResult<Json<Page<AuditView>>> {
    who.must_be_admin("reading the audit log (admins only)")?;
    let limit = page_limit(q.limit)?;
    let since = q
        .since
        .as_deref()
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| Timestamp::from_millis(t.as_millisecond()))
                .map_err(|_| ApiError::field("since", "not a timestamp", "RFC 3339, e.g. 2026-12-03T10:00:00Z", Some(v.to_owned())))
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned()))))
        .transpose()?;
    let rows = s.store.list_audit(&AuditFilter { actor: q.actor, action: q.action, target: q.target, since, before, limit }).await?;
    let next_cursor = (rows.len() == limit as usize).then(|| rows.last().map(|e| e.id.to_string())).flatten();
    let parse = |t: &Option<String>| t.as_deref().and_then(|t| serde_json::from_str(t).ok());
    let items = rows
        .iter()
        .map(|e| AuditView {
            id: e.id.to_string(),
            at: rfc3339(e.at),
            actor_id: e.actor.to_string(),
            actor: e.actor_name.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            before: parse(&e.before),
            after: parse(&e.after),
            request_id: e.request_id.clone(),
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}
