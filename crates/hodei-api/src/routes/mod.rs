//! Route handlers, one module per resource.

pub mod alerts;
pub mod audit;
pub mod budgets;
pub mod burst;
pub mod costs;
pub mod figures;
pub mod history;
pub mod identity;
pub mod jobs;
pub mod logs;
pub mod observability;
pub mod pools;
pub mod queue;
pub mod recommendations;
pub mod reports;
pub mod scaling;
pub mod sla;
pub mod system;
pub mod tenants;
pub mod ui;
pub mod usage;
pub mod workers;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorCode};
use crate::{ApiConfig, ApiState};

pub fn v1(cfg: &ApiConfig) -> OpenApiRouter<ApiState> {
    // The batch route takes the larger body limit; every other route the ordinary one.
    let batch = OpenApiRouter::new().routes(routes!(jobs::submit_batch)).layer(DefaultBodyLimit::max(cfg.max_batch_body_bytes));
    OpenApiRouter::new()
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::list_attempts))
        .routes(routes!(jobs::list_events))
        .routes(routes!(usage::job_usage))
        .routes(routes!(recommendations::list_recommendations))
        .routes(routes!(reports::create_report, reports::list_reports))
        .routes(routes!(reports::get_report))
        .routes(routes!(reports::cost_reports))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::hold_job))
        .routes(routes!(jobs::release_job))
        .routes(routes!(jobs::explain_job))
        .routes(routes!(queue::get_queue))
        .routes(routes!(queue::get_tenant_queue))
        .routes(routes!(sla::get_sla))
        .routes(routes!(sla::get_tenant_sla))
        .routes(routes!(sla::breaches))
        .routes(routes!(sla::at_risk))
        .routes(routes!(costs::breakdown))
        .routes(routes!(costs::get_rates, costs::put_rates))
        .routes(routes!(budgets::create_budget, budgets::list_budgets))
        .routes(routes!(budgets::get_budget, budgets::update_budget, budgets::delete_budget))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(tenants::get_quota, tenants::put_quota))
        .routes(routes!(burst::request_burst))
        .routes(routes!(burst::list_all))
        .routes(routes!(burst::list_of_tenant))
        .routes(routes!(burst::get_session))
        .routes(routes!(burst::approve))
        .routes(routes!(burst::reject))
        .routes(routes!(burst::end))
        .routes(routes!(logs::get_logs))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant, tenants::delete_tenant))
        .routes(routes!(workers::list_workers))
        .routes(routes!(workers::get_worker))
        .routes(routes!(workers::get_pool, pools::update_pool, pools::delete_pool))
        .routes(routes!(workers::list_pools, pools::create_pool))
        .routes(routes!(workers::pool_status))
        .routes(routes!(scaling::scale))
        .routes(routes!(scaling::history))
        .routes(routes!(scaling::triggers))
        .routes(routes!(scaling::pool_metrics))
        .routes(routes!(history::historical))
        .routes(routes!(figures::pool))
        .routes(routes!(figures::tenant))
        .routes(routes!(figures::costs))
        .routes(routes!(observability::get_config, observability::put_config))
        .routes(routes!(observability::grafana_sync))
        .routes(routes!(scaling::list_policies, scaling::create_policy))
        .routes(routes!(scaling::get_policy, scaling::update_policy, scaling::delete_policy))
        .routes(routes!(workers::rotate_join_token))
        .routes(routes!(workers::drain_worker))
        .routes(routes!(identity::whoami))
        .routes(routes!(identity::create_token, identity::list_tokens))
        .routes(routes!(identity::revoke_token))
        .routes(routes!(identity::create_principal, identity::list_principals))
        .routes(routes!(identity::get_principal))
        .routes(routes!(identity::put_roles))
        .routes(routes!(audit::list))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .merge(batch)
        .fallback(not_found)
}

pub async fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}

/// Parses an opaque id from a path; anything unparsable cannot exist.
pub fn parse_id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ApiError> {
    s.parse().map_err(|_| ApiError::not_found(format!("{what} {s}")))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a list read whole (a job's attempts or events, the workers: small by
/// construction); the cursor is the position of the next item.
pub fn page_of<T, V>(all: &[T], limit: Option<i64>, cursor: Option<&str>, view: impl Fn(&T) -> V) -> Result<crate::dto::Page<V>, ApiError> {
    let limit = page_limit(limit)? as usize;
    let from = match cursor {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| ApiError::field("cursor", "bad cursor", "a cursor from next_cursor", Some(c.to_owned())))?,
    };
    let items: Vec<V> = all.iter().skip(from).take(limit).map(view).collect();
    let next = from + items.len();
    Ok(crate::dto::Page { next_cursor: (next < all.len()).then(|| next.to_string()), items })
}

/// `limit` (default 50, at most 500).
pub fn page_limit(limit: Option<i64>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n as u32),
        Some(n) => Err(ApiError::field("limit", "limit is out of range", "an integer between 1 and 500", Some(n.to_string()))),
    }
}

/// A display name (`/name`): trimmed, 1 to 200 characters.
pub(crate) fn display_name(v: &str) -> crate::error::ApiResult<String> {
    let t = v.trim();
    if t.is_empty() || t.len() > 200 {
        return Err(ApiError::field("/name", "name must not be empty", "1 to 200 characters", Some(v.to_owned())));
    }
    Ok(t.to_owned())
}

/// `If-Match: "<version>"`: 412 naming `what`'s stored version when the request's differs.
pub(crate) fn if_match(headers: &axum::http::HeaderMap, version: i64, what: &str) -> crate::error::ApiResult<()> {
    if let Some(v) = headers.get(axum::http::header::IF_MATCH).and_then(|v| v.to_str().ok())
        && v.trim_matches('"') != version.to_string()
    {
        return Err(ApiError::new(ErrorCode::PreconditionFailed, format!("{what} is at version {version}, not {v}")));
    }
    Ok(())
}
