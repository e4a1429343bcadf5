//! Queue status (SPEC §4.5): totals, depth per class, and each tenant's fair share.

use axum::Json;
use axum::extract::{Path, State};
use hodei_core::TenantId;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{QueueView, QueuedJobView, TenantQueueDetail, TenantQueueView};
use crate::error::{ApiError, ApiResult};
use hodei_core::Action;

/// Most pending jobs listed by `GET /queue/tenants/{id}`.
const MAX_LISTED: usize = 1000;

/// The whole queue.
#[utoipa::path(get, path = "/queue", responses((status = 200, body = QueueView)), tag = "queue")]
pub async fn get_queue(State(s): State<ApiState>, who: Who) -> ApiResult<Json<QueueView>> {
    let visible = who.visibility();
    let q = crate::read(s.control.as_ref(), move |sched, now| sched.queue_status_of(now, |t| visible.sees(t))).await?;
    Ok(Json(QueueView::from(&q)))
}

/// One tenant's row and its first pending jobs in dispatch order.
#[utoipa::path(get, path = "/queue/tenants/{id}", responses((status = 200, body = TenantQueueDetail), (status = 404, body = crate::error::Problem)), tag = "queue")]
pub async fn get_tenant_queue(State(s): State<ApiState>, who: Who, Path(id): Path<String>) -> ApiResult<Json<TenantQueueDetail>> {
    let t = super::tenants::load(&s, &who, &id, Action::Read, "reading this queue").await?;
    let tid: TenantId = t.id.clone();
    let (q, jobs) = crate::read(s.control.as_ref(), move |sched, now| {
        let jobs: Vec<QueuedJobView> = sched
            .queued_jobs(&tid)
            .take(MAX_LISTED)
            .enumerate()
            .map(|(i, k)| QueuedJobView { job_id: k.id.to_string(), position: i, priority: k.priority.to_string() })
            .collect();
        (sched.queue_status_of(now, |x| *x == tid), jobs)
    })
    .await?;
    let view = QueueView::from(&q);
    let row = view.tenants.into_iter().find(|r| r.tenant_id == t.id.as_str()).unwrap_or_else(|| TenantQueueView {
        tenant_id: t.id.to_string(),
        weight: t.effective_weight(&s.cfg.tier_weights),
        fair_share: 0.0,
        actual_share: 0.0,
        start_tag: "0".into(),
        pending: 0,
        held: 0,
        running: 0,
        oldest_wait_ms: 0,
        at_limit: false,
        at_risk: 0,
        by_priority: Default::default(),
    });
    if jobs.is_empty() && row.pending > 0 {
        return Err(ApiError::not_found(format!("queue of tenant {id}")));
    }
    Ok(Json(TenantQueueDetail { row, jobs }))
}
