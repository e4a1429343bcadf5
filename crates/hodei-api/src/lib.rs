//! The REST API of Hodei Jobs (SPEC §4): `router(state) -> Router`.
//!
//! **API Boundary:** the HTTP contract. **Architecture Invariant:** no SQL and no scheduling
//! here: input is validated through core, reads go to the [`Store`], and every change to a
//! job goes through [`Control`] (the server's engine), which commits before answering.

pub mod auth;
mod ctx;
pub mod dto;
pub mod error;
pub mod exposition;
pub mod history;
mod json;
pub mod metrics_catalog;
pub mod rate;
mod routes;
pub use routes::observability::{GrafanaSettings, ObservabilityView, push_dashboards};
pub mod snapshot;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use hodei_core::idempotency::{IdempotencyRecord, IdempotencyRequest};
use hodei_core::queue::FlowStatus;
use hodei_core::sched::{CancelOutcome, Scheduler};
use hodei_core::spec::SpecLimits;
use hodei_core::{Admission, Job, JobId, JobState, Pool, Quota, Rejection, Tenant, TenantId, TenantPolicy, Timestamp, Usage};
use hodei_store::logs::Logs;
use hodei_store::{Store, StoreError};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, ErrorCode};
pub use routes::budgets::{spent as budget_spent, verdict as budget_verdict};
pub use routes::sla::compliance as sla_compliance;
pub use routes::system::metrics as routes_metrics;

/// Wall time, as the server reads it. Tests pass a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("job not found")]
    NotFound,
    #[error("job is {state}; {action} is not allowed")]
    InvalidState { state: JobState, action: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler is not running")]
    Stopped,
    /// The engine's command queue is full: it is behind, and the caller should come back.
    #[error("the scheduler is busy")]
    Busy,
    #[error("Idempotency-Key {key:?} was used with another request")]
    IdempotencyConflict { key: String },
    #[error("worker not found")]
    WorkerNotFound,
    #[error("worker is {0}")]
    WorkerState(hodei_core::WorkerState),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound => ApiError::not_found("job"),
            ControlError::InvalidState { state, action } => {
                ApiError::new(ErrorCode::InvalidState, format!("job is {state}; {action} is not allowed")).with("state", state.as_str().into())
            }
            ControlError::Store(s) => s.into(),
            ControlError::Stopped => ApiError::new(ErrorCode::Unavailable, "the scheduler is starting or stopping; retry"),
            ControlError::Busy => ApiError::new(ErrorCode::Unavailable, "the scheduler is behind on its queue of requests; retry after a second")
                .with("retry_after_s", 1u64.into()),
            ControlError::IdempotencyConflict { key } => ApiError::new(
                ErrorCode::Conflict,
                format!("Idempotency-Key {key:?} was used within the last 24 h with another request (method, path or body); use a new key"),
            ),
            ControlError::WorkerNotFound => ApiError::not_found("worker"),
            ControlError::WorkerState(state) => {
                ApiError::new(ErrorCode::InvalidState, format!("worker is {state}; only a live worker (registering, idle or busy) can be drained"))
                    .with("state", state.as_str().into())
            }
        }
    }
}

/// A tenant as the scheduler holds it now.
#[derive(Clone, Debug)]
pub struct TenantLoad {
    pub policy: TenantPolicy,
    pub usage: Usage,
    pub fair_share: Option<FlowStatus>,
}

/// Per-job answer to a submit: admitted (and how) or refused by quota.
pub type Admitted = Result<Admission, Rejection>;

/// The answer to an array submit: one per member, and the ids minted for them (None when
/// the array was refused and nothing was stored).
#[derive(Debug)]
pub struct ArrayAdmitted {
    pub admitted: Vec<Admitted>,
    pub ids: Option<(JobId, JobId)>,
}

/// The `Idempotency-Key` of a submit, scoped to the tenant of the request.
#[derive(Clone, Debug)]
pub struct IdempotentCall {
    pub tenant: TenantId,
    pub request: IdempotencyRequest,
}

/// A submit's outcome, or what an earlier call with the same key and request stored.
#[derive(Debug)]
pub enum Idempotent<T> {
    New(T),
    Replayed(Arc<IdempotencyRecord>),
}

/// Changes to jobs, carried out by the engine. Each call returns once the change is durable.
#[async_trait]
pub trait Control: Send + Sync {
    /// Admits and stores jobs. `atomic`: when any is refused, none is stored. With a key, a
    /// repeat of an earlier call is answered from its record (nothing new is stored) and a
    /// different request under the key is `IdempotencyConflict`; the record of a call that
    /// stored anything is stored with its jobs. `ended`: the stored outcome of ended jobs the
    /// submitted ones depend on.
    async fn submit(
        &self,
        jobs: Vec<Job>,
        atomic: bool,
        key: Option<IdempotentCall>,
        ended: Vec<(JobId, hodei_core::JobState)>,
    ) -> Result<Idempotent<Vec<Admitted>>, ControlError>;
    /// Admits and stores the members of `template`'s array (ids minted by the engine), all or
    /// none; `key` as for `submit`.
    async fn submit_array(
        &self,
        template: Job,
        array: hodei_core::ArrayId,
        key: Option<IdempotentCall>,
        ended: Vec<(JobId, hodei_core::JobState)>,
    ) -> Result<Idempotent<ArrayAdmitted>, ControlError>;
    /// `by`: the principal whose request it is, recorded as the transition's actor.
    async fn cancel(&self, id: JobId, by: hodei_core::ids::PrincipalId) -> Result<CancelOutcome, ControlError>;
    async fn retry(&self, id: JobId, by: hodei_core::ids::PrincipalId) -> Result<(), ControlError>;
    async fn hold(&self, id: JobId, by: hodei_core::ids::PrincipalId) -> Result<(), ControlError>;
    async fn release(&self, id: JobId, by: hodei_core::ids::PrincipalId) -> Result<(), ControlError>;
    /// Drains a worker: no new attempts; once its running ones end it is terminated and its
    /// agent stops. Answers once the drain is stored.
    async fn drain_worker(&self, id: hodei_core::WorkerId) -> Result<(), ControlError>;
    /// The scheduler loop is alive.
    fn is_running(&self) -> bool;
    /// Time since the scheduler loop last finished a round (it runs one at least every tick).
    fn loop_lag(&self) -> std::time::Duration;
    /// Tells the scheduler a tenant was created or changed (weight, quota, status).
    async fn tenant_changed(&self, t: &Tenant) -> Result<(), ControlError>;
    /// Tells the scheduler a burst session was opened or changed (its grant, if active).
    async fn burst_changed(&self, b: &hodei_core::BurstSession) -> Result<(), ControlError>;
    /// Tells the scheduler a pool was created or changed (its tenants and labels).
    async fn pool_changed(&self, p: &Pool) -> Result<(), ControlError>;
    /// Tells the scheduler the rate versions attempts are priced at from now on.
    async fn rates_changed(&self, versions: Vec<hodei_core::cost::RateVersion>) -> Result<(), ControlError>;
    /// Runs `f` on the scheduler's current state, between two of its steps (read-only).
    async fn inspect(&self, f: Inspector) -> Result<(), ControlError>;
}

/// Pool join tokens (SPEC §10), kept by the server: in `{data_dir}/pool-<id>.token` unless the
/// configuration file sets one.
#[async_trait]
pub trait JoinTokens: Send + Sync {
    /// Draws a new join token for `pool` and makes it the only one a worker can register with
    /// from now on (workers already registered keep their sessions). Returns it, once.
    async fn rotate(&self, pool: &Pool) -> Result<String, ApiError>;
    /// Keeps a new pool's join token where the server's own agents of a `local` pool read it.
    async fn keep(&self, pool: &Pool, token: &str) -> Result<(), ApiError>;
}

/// A read of the scheduler's state; see [`read`].
pub type Inspector = Box<dyn FnOnce(&Scheduler, Timestamp) + Send>;

/// Reads something off the scheduler's current state.
pub async fn read<T: Send + 'static>(control: &dyn Control, f: impl FnOnce(&Scheduler, Timestamp) -> T + Send + 'static) -> Result<T, ControlError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    control
        .inspect(Box::new(move |s, now| {
            let _ = tx.send(f(s, now));
        }))
        .await?;
    rx.await.map_err(|_| ControlError::Stopped)
}

impl TenantLoad {
    pub fn of(s: &Scheduler, id: &TenantId) -> TenantLoad {
        TenantLoad { policy: s.policy(id).clone(), usage: s.usage(id), fair_share: s.fair_share(id) }
    }
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `metrics.history`, when on.
    pub history: Option<history::HistorySettings>,
    /// `observability.grafana`, when enabled.
    pub grafana: Option<routes::observability::GrafanaSettings>,
    /// What `GET /observability/config` shows.
    pub observability: routes::observability::ObservabilityView,
    pub limits: SpecLimits,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub max_batch_size: usize,
    pub default_tenant: TenantId,
    /// Quota of a tenant created without one (`multi_tenancy.default_tenant_quota`).
    pub default_quota: Quota,
    /// How far ahead `explain` runs the scheduler for an ETA (`scheduler.eta_horizon_ms`).
    pub eta_horizon: std::time::Duration,
    /// `burst_capacity`.
    pub burst: hodei_core::BurstRules,
    /// `multi_tenancy.tier_weights`.
    pub tier_weights: hodei_core::TierWeights,
    /// `sla` (maximum waits, thresholds, window).
    pub sla: hodei_core::sched::SlaRules,
    pub sla_window_hours: u32,
    /// Default cost rates (`cost_tracking.hourly_rate_*`), for estimates.
    pub rates: hodei_core::cost::Rates,
    /// `cost_tracking.currency`: the unit amounts are shown in (they are kept in micro-units).
    pub currency: String,
    /// `cost_tracking.track_by_job`: off, no cost records are kept, so nothing is broken down
    /// by job (a breakdown by job name is refused; reports list no top jobs).
    pub cost_records: bool,
    /// `cost_tracking.track_by_pool`: off, costs are not kept by pool (a breakdown by or of a
    /// pool is refused; `hodei_pool_cost_micros_total` is not exported).
    pub cost_by_pool: bool,
    /// The configuration's `budgets` section: off, budgets are refused (409); the defaults of a
    /// new budget.
    pub budgets_enabled: bool,
    pub budget_on_exhausted: hodei_core::budget::OnExhausted,
    pub budget_thresholds_pct: Vec<u32>,
    /// The configuration's `optimization` section: how far back and how many runs at least
    /// the recommendations rest on.
    pub optimization_lookback_days: u32,
    pub optimization_min_runs: u32,
    /// The bootstrap admin's bearer token (`auth.admin_token` or the data dir's `admin.token`);
    /// `None` turns auth off (loopback only).
    pub admin_token: Option<String>,
    /// The worker gRPC listener, probed by `/ready` (`None`: not served by this process).
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// `auth.token_default_ttl_days`: expiry of a token created without `expires_in_days`.
    pub token_default_ttl_days: Option<u32>,
    /// `server.request_timeout_ms`: how long a request may take to be answered (a stream, once
    /// started, is not cut).
    pub request_timeout: std::time::Duration,
    /// `metrics.prometheus.bearer_token`: what a scrape of `/metrics` must present, if set.
    pub metrics_bearer_token: Option<String>,
    pub version: String,
}

pub struct Inner {
    /// The cost rate versions in force (the scheduler prices with the same).
    pub rates: RwLock<Vec<hodei_core::cost::RateVersion>>,
    pub store: Arc<dyn Store>,
    pub control: Arc<dyn Control>,
    pub logs: Arc<Logs>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Option<exposition::Exporter>,
    /// Pools as configured; read to refuse jobs that no pool could ever run.
    pub pools: RwLock<Vec<Pool>>,
    /// Wakes the autoscaler when a pool's size or policies change through the API.
    pub pools_changed: Arc<tokio::sync::Notify>,
    /// Wakes the budget watcher when a budget changes through the API.
    pub budgets_changed: Arc<tokio::sync::Notify>,
    /// Tenants that spent a budget whose `on_exhausted` is `reject`: why their submits are 402.
    pub budget_refusals: RwLock<std::collections::HashMap<TenantId, String>>,
    /// Tenants read on every submit; this process's tenant writes invalidate it.
    pub tenants: TenantCache,
    /// Submits hold it shared from their tenant check to their commit, a tenant's deletion
    /// exclusively from its live-job count to the cache's invalidation: no submit can land in a
    /// tenant between the count that allowed its deletion and the deletion.
    pub tenant_gate: tokio::sync::RwLock<()>,
    /// The bootstrap admin principal: who the admin token (or `auth.mode: none`) is.
    pub admin: Arc<hodei_core::Caller>,
    pub join_tokens: Arc<dyn JoinTokens>,
    /// Flips to true when the server begins to stop: log streams end so connections can drain.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Requests with a body over `limits.max_body_bytes` (batches) read at once; see
    /// [`bound_large_bodies`].
    pub large_bodies: tokio::sync::Semaphore,
    /// API tokens recently seen (see [`auth`]).
    pub token_cache: auth::TokenCache,
    /// Shared copies of the scheduler for explain and dry runs (see [`snapshot`]).
    pub snapshots: snapshot::Snapshots,
    /// `limits.submit_rate_per_tenant`: per-tenant token buckets.
    pub submit_rate: rate::SubmitRate,
    pub cfg: ApiConfig,
    pub started: Instant,
}

#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl Inner {
    /// The cost rates in force now (estimates use them).
    pub fn current_rates(&self) -> hodei_core::cost::Rates {
        self.rates.read().map_or(self.cfg.rates, |v| hodei_core::cost::rates_at(&v, self.clock.now()))
    }
}

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Hodei Jobs", description = "Multi-tenant job orchestration. Errors are RFC 9457 problem+json with a stable `code`."),
    components(schemas(error::Problem, dto::ArraySubmitted)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Every `/api/v1` operation takes `Authorization: Bearer <token>` (the admin token or an API
/// token), so Swagger UI's "Authorize" works.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let scheme = Http::builder().scheme(HttpAuthScheme::Bearer).description(Some("the admin token or an API token (hodei_…)")).build();
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Recently read tenants, for one second: submits need the tenant's status on every call.
#[derive(Default)]
pub struct TenantCache {
    map: std::sync::Mutex<std::collections::HashMap<TenantId, (Tenant, Instant)>>,
}

impl TenantCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(1);

    pub async fn get(&self, store: &dyn Store, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        if let Some((t, at)) = self.map.lock().ok().and_then(|m| m.get(id).cloned())
            && at.elapsed() < Self::TTL
        {
            return Ok(Some(t));
        }
        let t = store.get_tenant(id).await?;
        if let (Some(t), Ok(mut m)) = (&t, self.map.lock()) {
            m.insert(id.clone(), (t.clone(), Instant::now()));
        }
        Ok(t)
    }

    pub fn invalidate(&self, id: &TenantId) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(id);
        }
    }
}

/// The whole HTTP surface: `/api/v1/*`, `/health`, `/ready`, `/metrics`, `/api/openapi.json`, `/api/docs`, `/ui/`.
pub fn router(state: ApiState) -> Router {
    let (v1, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", routes::v1(&state.cfg)).split_for_parts();
    document_errors(&mut openapi);
    let v1 = v1.layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .merge(v1)
        .merge(routes::system::router())
        .merge(routes::ui::router())
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.cfg.max_batch_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), bound_large_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), request_timeout))
        .layer(middleware::from_fn(empty_query_values_are_absent))
        .layer(middleware::from_fn(error::problems_only))
        .layer(middleware::from_fn(http_metrics))
        .layer(middleware::from_fn(ctx::request_context))
        .with_state(state)
}

/// `?cursor=&state=running` is `?state=running`: an empty query value (what an HTML form or a
/// script with an unset variable sends) means the parameter was left out, never "match the
/// empty string" — no filter, cursor or option of this API has a meaningful empty value.
async fn empty_query_values_are_absent(mut req: Request, next: Next) -> Response {
    let empty = |p: &str| p.is_empty() || p.split_once('=').is_some_and(|(_, v)| v.is_empty());
    if let Some(q) = req.uri().query().filter(|q| q.split('&').any(empty))
        && let Some(pq) = req.uri().path_and_query()
    {
        let kept: Vec<&str> = q.split('&').filter(|p| !empty(p)).collect();
        let path = pq.path();
        let rebuilt = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = rebuilt.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// How many requests with a large body (over `limits.max_body_bytes`, or of unknown length)
/// are read and parsed at once; the others wait for a turn, within `server.request_timeout_ms`.
pub const LARGE_BODIES_AT_ONCE: usize = 2;

/// A batch body is read whole and parsed before it is stored, so its memory is several times
/// its size: reading a bounded number at once keeps concurrent large batches from taking the
/// machine's memory, and the heap they used is given back to the OS after each.
async fn bound_large_bodies(axum::extract::State(s): axum::extract::State<ApiState>, req: Request, next: Next) -> Response {
    let length = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let has_body = matches!(*req.method(), axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH);
    if !has_body || length.is_some_and(|n| n <= s.cfg.max_body_bytes as u64) {
        return next.run(req).await;
    }
    let Ok(_turn) = s.large_bodies.acquire().await else { return next.run(req).await };
    let resp = next.run(req).await;
    // glibc keeps freed arenas for reuse; hand the pages of a large parse back.
    tokio::task::spawn_blocking(|| unsafe {
        libc::malloc_trim(0);
    });
    resp
}

/// `server.request_timeout_ms`: a request not answered in time gets 503 `unavailable` (what it
/// changed, if it got that far, stands: an acknowledged write is never undone by a timeout).
async fn request_timeout(axum::extract::State(s): axum::extract::State<ApiState>, req: Request, next: Next) -> Response {
    let limit = s.cfg.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            ErrorCode::Unavailable,
            format!("the request was not answered within server.request_timeout_ms ({} ms); retry later", limit.as_millis()),
        )),
    }
}

/// Exports a tenant's job series at zero (SPEC §10: known tenants never show "no data").
/// Series by tenant and pool are exported for the first pool only (and each pool exports them
/// for the default tenant): a sum by tenant or by pool never comes out empty, while an idle
/// cluster of 1,000 tenants and 50 pools exports thousands of series, not hundreds of thousands.
pub fn zero_series_for_tenant(tenant: &TenantId, pools: &[Pool]) {
    use hodei_core::Priority;
    for p in Priority::ALL {
        metrics::counter!("hodei_jobs_submitted_total", "tenant" => tenant.to_string(), "priority" => p.as_str()).increment(0);
        for state in ["pending", "held"] {
            metrics::gauge!("hodei_jobs_queued", "tenant" => tenant.to_string(), "priority" => p.as_str(), "state" => state).increment(0.0);
        }
    }
    if let Some(pool) = pools.first() {
        zero_series_for_tenant_in_pool(tenant, pool);
    }
    for code in ["quota_exceeded", "rate_limited"] {
        metrics::counter!("hodei_submissions_rejected_total", "tenant" => tenant.to_string(), "code" => code).increment(0);
    }
    for limit in hodei_core::quota::Limit::ALL {
        metrics::counter!("hodei_quota_violations_total", "tenant" => tenant.to_string(), "resource" => limit.as_str()).increment(0);
    }
    for name in ["hodei_jobs_retried_total", "hodei_tenant_cost_micros_total"] {
        metrics::counter!(name, "tenant" => tenant.to_string()).increment(0);
    }
    metrics::gauge!("hodei_budget_utilization_ratio", "tenant" => tenant.to_string(), "project" => "").increment(0.0);
    metrics::gauge!("hodei_budget_fair_share_factor", "tenant" => tenant.to_string()).set(1.0);
    let _registered = metrics::histogram!("hodei_queue_wait_seconds", "tenant" => tenant.to_string(), "priority" => "normal");
    for name in [
        "hodei_tenant_cpu_m",
        "hodei_tenant_memory_mb",
        "hodei_tenant_gpu",
        "hodei_tenant_fair_share",
        "hodei_tenant_actual_share",
        "hodei_tenant_burst_active",
        "hodei_tenant_burst_utilization_ratio",
        "hodei_queue_oldest_wait_seconds",
    ] {
        metrics::gauge!(name, "tenant" => tenant.to_string()).increment(0.0);
    }
    for resource in ["cpu", "memory", "gpu", "jobs"] {
        metrics::gauge!("hodei_tenant_quota_utilization", "tenant" => tenant.to_string(), "resource" => resource).increment(0.0);
    }
    for level in hodei_core::SlaLevel::ALL {
        metrics::counter!("hodei_sla_breaches_total", "tenant" => tenant.to_string(), "level" => level.as_str()).increment(0);
        // Nothing started in the window is full compliance; the SLA task then keeps it current.
        metrics::gauge!("hodei_sla_compliance_ratio", "tenant" => tenant.to_string(), "level" => level.as_str()).set(1.0);
        for status in [hodei_core::SlaStatus::AtRisk, hodei_core::SlaStatus::Critical] {
            metrics::gauge!("hodei_sla_jobs", "tenant" => tenant.to_string(), "level" => level.as_str(), "status" => status.as_str()).increment(0.0);
        }
    }
}

fn zero_series_for_tenant_in_pool(tenant: &TenantId, pool: &Pool) {
    let pool = pool.id.to_string();
    metrics::gauge!("hodei_jobs_running", "tenant" => tenant.to_string(), "pool" => pool.clone()).increment(0.0);
    metrics::counter!("hodei_jobs_scheduled_total", "tenant" => tenant.to_string(), "pool" => pool.clone()).increment(0);
    for state in ["succeeded", "failed"] {
        metrics::counter!("hodei_jobs_completed_total", "tenant" => tenant.to_string(), "pool" => pool.clone(), "state" => state).increment(0);
    }
}

/// Exports a pool's series at zero (its series by tenant and pool for `default_tenant`); its
/// cost counter only where costs are kept by pool (`cost_by_pool`).
pub fn zero_series_for_pool(pool: &Pool, default_tenant: &TenantId, cost_by_pool: bool) {
    zero_series_for_tenant_in_pool(default_tenant, pool);
    metrics::gauge!("hodei_pool_size", "pool" => pool.id.to_string()).increment(0.0);
    metrics::gauge!("hodei_pool_min_size", "pool" => pool.id.to_string()).set(f64::from(pool.min_size));
    metrics::gauge!("hodei_pool_max_size", "pool" => pool.id.to_string()).set(f64::from(pool.max_size));
    metrics::gauge!("hodei_pool_desired_size", "pool" => pool.id.to_string()).set(f64::from(pool.desired_size));
    for g in [
        "hodei_pool_queue_depth",
        "hodei_pool_queue_wait_seconds",
        "hodei_pool_cpu_utilization_ratio",
        "hodei_pool_memory_utilization_ratio",
        "hodei_pool_busy_ratio",
    ] {
        metrics::gauge!(g, "pool" => pool.id.to_string()).increment(0.0);
    }
    for s in hodei_core::PoolState::ALL {
        metrics::gauge!("hodei_pool_state", "pool" => pool.id.to_string(), "state" => s.as_str()).set(if *s == pool.state { 1.0 } else { 0.0 });
    }
    for name in ["hodei_workers_unhealthy", "hodei_jobs_overdue"] {
        metrics::gauge!(name, "pool" => pool.id.to_string()).increment(0.0);
    }
    for name in ["hodei_workers_lost_total", "hodei_pool_provisioning_failures_total"] {
        metrics::counter!(name, "pool" => pool.id.to_string()).increment(0);
    }
    if cost_by_pool {
        metrics::counter!("hodei_pool_cost_micros_total", "pool" => pool.id.to_string()).increment(0);
    }
    for state in ["idle", "busy", "offline"] {
        metrics::gauge!("hodei_workers", "pool" => pool.id.to_string(), "state" => state).increment(0.0);
    }
    metrics::counter!("hodei_jobs_requeued_total", "pool" => pool.id.to_string(), "reason" => "worker_lost").increment(0);
    for name in ["hodei_dispatch_latency_seconds", "hodei_worker_allocation_latency_seconds"] {
        let _registered = metrics::histogram!(name, "pool" => pool.id.to_string());
    }
    let _registered = metrics::histogram!("hodei_job_run_duration_seconds", "pool" => pool.id.to_string(), "state" => "succeeded");
    // Failures too: HodeiAutoscalerFailures watches their increase, which a series born at 1 hides.
    for (action, decision) in [("scale_up", "executed"), ("scale_down", "executed"), ("scale_up", "failed"), ("scale_down", "failed")] {
        metrics::counter!("hodei_autoscaler_decisions_total", "pool" => pool.id.to_string(), "action" => action, "decision" => decision).increment(0);
    }
}

/// The OpenAPI document, for `xtask openapi` and its staleness test.
pub fn openapi_json(cfg: &ApiConfig) -> String {
    let (_, mut openapi) = OpenApiRouter::<ApiState>::with_openapi(ApiDoc::openapi()).nest("/api/v1", routes::v1(cfg)).split_for_parts();
    document_errors(&mut openapi);
    openapi.to_pretty_json().unwrap_or_default()
}

/// Documents the error answers every `/api/v1` operation can give, besides those its handler
/// names: all as `application/problem+json` with the `Problem` schema.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, RefOr, Response};
    const PROBLEM: &str = "application/problem+json";
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1") {
            continue;
        }
        let has_id = path.contains('{');
        for op in [item.get.as_mut(), item.put.as_mut(), item.post.as_mut(), item.delete.as_mut(), item.patch.as_mut()].into_iter().flatten() {
            for (status, r) in op.responses.responses.iter_mut() {
                // An answer that documents both keeps its JSON body (a non-atomic batch's 400).
                if let (true, RefOr::T(r)) = (status.starts_with('4') || status.starts_with('5'), r)
                    && !r.content.contains_key(PROBLEM)
                    && let Some(c) = r.content.shift_remove("application/json")
                {
                    r.content.insert(PROBLEM.into(), c);
                }
            }
            let with_body = op.request_body.is_some();
            let mut add = |status: &str, why: &str| {
                op.responses.responses.entry(status.into()).or_insert_with(|| {
                    let mut r = Response::new(why);
                    r.content.insert(PROBLEM.into(), RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))));
                    RefOr::T(r)
                });
            };
            add("400", "a malformed path, query string or body, or a field out of range (`errors` names it)");
            add("401", "no token, or one that is invalid, expired or revoked");
            add("403", "the caller's roles do not allow it");
            if has_id {
                add("404", "no such resource, or one the caller cannot see");
            }
            if with_body {
                add("413", "the body is over limits.max_body_bytes");
                add("415", "the body is not application/json");
            }
            add("500", "a bug in the server (the answer carries a request id to report)");
            add("503", "the database cannot be reached, the server is stopping, or server.request_timeout_ms passed");
        }
    }
}

async fn http_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    // The access log, at debug: in the request's span, so with who asked and about what.
    tracing::debug!(status = %status, route = %route, ms = started.elapsed().as_millis() as u64, "answered");
    metrics::counter!("hodei_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("hodei_http_request_duration_seconds", "method" => method, "route" => route).record(started.elapsed().as_secs_f64());
    resp
}
