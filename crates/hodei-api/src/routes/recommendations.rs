//! Right-sizing recommendations from measured usage (SPEC §8.8): the core's rules over the
//! latest finished runs of each (tenant, job name) the caller may read.

use axum::Json;
use axum::extract::{Query, State};
use hodei_core::recommend::{self, Kind, PoolKind, PoolRecommendation, PoolSample, Recommendation, Run};
use hodei_core::{PoolId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::costs::money;
use crate::ApiState;
use crate::auth::Who;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiResult};

/// Finished runs read for one answer, at most (20 per job name).
const MAX_RUNS: u32 = 20_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendationsQuery {
    pub tenant_id: Option<String>,
    /// Only runs in this pool count.
    pub pool_id: Option<String>,
    /// job_reduce_cpu|job_increase_memory|job_drop_gpu|pool_reduce_min_size|pool_switch_to_dynamic|pool_raise_max_size.
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EvidenceView {
    pub runs: u32,
    pub ooms: u32,
    pub cpu_avg_m: u32,
    pub cpu_p95_m: u32,
    pub memory_peak_mb: u32,
    pub gpu_avg_pct: u32,
    /// When the first and the last of those runs ended.
    pub first_at: String,
    pub last_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RecommendationView {
    /// `kind:tenant:job name` — stable while the advice holds.
    pub id: String,
    pub kind: String,
    /// `tenant/job name`.
    pub target: String,
    pub tenant_id: String,
    pub job_name: String,
    /// `m` (millicores), `MiB` or `gpu`.
    pub unit: String,
    pub current: u32,
    pub suggested: u32,
    pub rationale: String,
    pub evidence: EvidenceView,
    /// Micro-units of the currency a month at the pace the job ran; negative when following
    /// the advice costs more (more memory to stop OOMs).
    pub estimated_monthly_savings_micros: i64,
    pub estimated_monthly_savings: String,
    /// 0–100: how much of the 20 runs looked at it rests on.
    pub confidence_pct: u32,
}

impl RecommendationView {
    pub fn of(r: &Recommendation, currency: &str) -> Self {
        let unit = match r.kind {
            Kind::JobReduceCpu => "m",
            Kind::JobIncreaseMemory => "MiB",
            Kind::JobDropGpu => "gpu",
        };
        RecommendationView {
            id: format!("{}:{}:{}", r.kind, r.tenant, r.job_name),
            kind: r.kind.to_string(),
            target: format!("{}/{}", r.tenant, r.job_name),
            tenant_id: r.tenant.to_string(),
            job_name: r.job_name.clone(),
            unit: unit.to_owned(),
            current: r.current,
            suggested: r.suggested,
            rationale: r.rationale.clone(),
            evidence: EvidenceView {
                runs: r.evidence.runs,
                ooms: r.evidence.ooms,
                cpu_avg_m: r.evidence.cpu_avg_m,
                cpu_p95_m: r.evidence.cpu_p95_m,
                memory_peak_mb: r.evidence.memory_peak_mb,
                gpu_avg_pct: r.evidence.gpu_avg_pct,
                first_at: rfc3339(r.evidence.first_at),
                last_at: rfc3339(r.evidence.last_at),
            },
            estimated_monthly_savings_micros: r.monthly_savings_micros,
            estimated_monthly_savings: money(r.monthly_savings_micros, currency),
            confidence_pct: r.confidence_pct,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PoolEvidenceView {
    /// Hours of the pool's metric history looked at (the last 7 days at most).
    pub hours: u32,
    pub cpu_allocated_pct: u32,
    /// Share of its worker time idle.
    pub idle_pct: u32,
    pub busy_workers_p95: u32,
    /// Share of the time it sat at its min_size.
    pub at_min_pct: u32,
    /// Share of the time it sat at its max_size, and the p95 of the longest queue wait then.
    pub at_max_pct: u32,
    pub wait_at_max_p95_s: u32,
}

/// Advice on a pool from its metric history (SPEC's pool rules over 7 days; admins only).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PoolRecommendationView {
    /// `kind:pool`.
    pub id: String,
    /// pool_reduce_min_size|pool_switch_to_dynamic|pool_raise_max_size.
    pub kind: String,
    /// `pool/<id>`.
    pub target: String,
    pub pool_id: String,
    /// `workers`: min_size now and suggested (reduce), the idle workers on average and 0
    /// (switch to dynamic), or max_size now and suggested (raise).
    pub unit: String,
    pub current: u32,
    pub suggested: u32,
    pub rationale: String,
    pub evidence: PoolEvidenceView,
    /// Micro-units a month: the worker time it would stop paying for at the pace seen
    /// (negative for a larger maximum: what the added workers would cost).
    pub estimated_monthly_savings_micros: i64,
    pub estimated_monthly_savings: String,
    /// 0–100: how much of the 7 days it rests on.
    pub confidence_pct: u32,
}

impl PoolRecommendationView {
    pub fn of(r: &PoolRecommendation, currency: &str) -> Self {
        PoolRecommendationView {
            id: format!("{}:{}", r.kind, r.pool),
            kind: r.kind.to_string(),
            target: format!("pool/{}", r.pool),
            pool_id: r.pool.to_string(),
            unit: "workers".to_owned(),
            current: r.current,
            suggested: r.suggested,
            rationale: r.rationale.clone(),
            evidence: PoolEvidenceView {
                hours: r.evidence.hours,
                cpu_allocated_pct: r.evidence.cpu_allocated_pct,
                idle_pct: r.evidence.idle_pct,
                busy_workers_p95: r.evidence.busy_workers_p95,
                at_min_pct: r.evidence.at_min_pct,
                at_max_pct: r.evidence.at_max_pct,
                wait_at_max_p95_s: r.evidence.wait_at_max_p95_s,
            },
            estimated_monthly_savings_micros: r.monthly_savings_micros,
            estimated_monthly_savings: money(r.monthly_savings_micros, currency),
            confidence_pct: r.confidence_pct,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendations {
    /// Job names' advice, the largest saving first.
    pub items: Vec<RecommendationView>,
    /// Pools' advice, the largest saving first (admins, with `metrics.history` on; none when
    /// the answer is about one tenant).
    pub pools: Vec<PoolRecommendationView>,
    /// The sum of the positive savings of both.
    pub potential_savings_micros: i64,
    pub potential_savings: String,
}

/// Either kind of advice, as the `kind` filter names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AnyKind {
    Job(Kind),
    Pool(PoolKind),
}

pub(crate) fn parse_kind(v: Option<&str>) -> ApiResult<Option<AnyKind>> {
    v.map(|k| {
        k.parse::<Kind>()
            .map(AnyKind::Job)
            .or_else(|()| k.parse::<PoolKind>().map(AnyKind::Pool))
            .map_err(|()| ApiError::field("kind", "unknown kind", format!("{}, {}", Kind::expected(), PoolKind::expected()), Some(k.to_owned())))
    })
    .transpose()
}

/// A pool's metric history from `start` to `end` as the core's samples, each covering its step
/// clipped to the period (empty without `metrics.history`).
pub(crate) async fn pool_samples(s: &ApiState, pool: &PoolId, start: Timestamp, end: Timestamp, now: Timestamp) -> ApiResult<Vec<PoolSample>> {
    let Some(settings) = s.cfg.history else { return Ok(Vec::new()) };
    let end = end.min(now);
    if end <= start {
        return Ok(Vec::new());
    }
    let (resolution_s, step_s) = settings.resolution_for(start, now);
    let step_ms = step_s as i64 * 1000;
    let q = hodei_store::HistoryQuery {
        scope: crate::history::POOL.into(),
        scope_id: pool.to_string(),
        metrics: ["busy_ratio", "size", "cpu_utilization", "queue_depth", "queue_wait_seconds"].map(String::from).to_vec(),
        resolution_s,
        start: Timestamp::from_millis(start.as_millis() - step_ms),
        end,
        step_ms,
    };
    let series = s.store.metric_history(&q).await?;
    let of = |name: &str| -> std::collections::HashMap<Timestamp, f64> {
        series.iter().find(|h| h.metric == name).map(|h| h.points.iter().copied().collect()).unwrap_or_default()
    };
    let (busy, cpu, depth, wait) = (of("busy_ratio"), of("cpu_utilization"), of("queue_depth"), of("queue_wait_seconds"));
    let mut sizes: Vec<(Timestamp, f64)> = of("size").into_iter().collect();
    sizes.sort_by_key(|(t, _)| *t);
    Ok(sizes
        .into_iter()
        .map(|(t, size)| {
            let from = t.as_millis().max(start.as_millis());
            let to = (t.as_millis() + step_ms).min(end.as_millis());
            PoolSample {
                secs: ((to - from).max(0) / 1000) as u64,
                size,
                busy_ratio: busy.get(&t).copied().unwrap_or(0.0),
                cpu_utilization: cpu.get(&t).copied().unwrap_or(0.0),
                queue_depth: depth.get(&t).copied().unwrap_or(0.0),
                queue_wait_s: wait.get(&t).copied().unwrap_or(0.0),
            }
        })
        .collect())
}

/// The rates in force now for a pool's workers: its own `cost_rates` over the global ones.
pub(crate) async fn rates_of_pool(s: &ApiState, pool: &PoolId) -> ApiResult<hodei_core::cost::Rates> {
    let global = s.current_rates();
    let id = pool.clone();
    let own = crate::read(s.control.as_ref(), move |sched, _| sched.config().pool_rates.get(&id).copied()).await?;
    Ok(own.map_or(global, |o| o.apply(global)))
}

/// The pools' advice (admins only: pools are the cluster's), of `pool` when given, from their
/// last 7 days of history, the largest saving first.
pub(crate) async fn compute_pools(
    s: &ApiState,
    who: &Who,
    pool: Option<&PoolId>,
    kind: Option<PoolKind>,
    now: Timestamp,
) -> ApiResult<Vec<PoolRecommendation>> {
    if !who.is_admin() || s.cfg.history.is_none() {
        return Ok(Vec::new());
    }
    let pools: Vec<hodei_core::Pool> = s.pools.read().map(|p| p.iter().filter(|p| pool.is_none_or(|id| *id == p.id)).cloned().collect()).unwrap_or_default();
    let start = Timestamp::from_millis(now.as_millis() - recommend::POOL_WINDOW_MS);
    let mut out = Vec::new();
    for p in &pools {
        let samples = pool_samples(s, &p.id, start, now, now).await?;
        let rates = rates_of_pool(s, &p.id).await?;
        let medium = std::time::Duration::from_millis(s.cfg.sla.max_wait_ms(hodei_core::SlaLevel::Medium));
        out.extend(recommend::for_pool(p, &samples, &rates, medium).into_iter().filter(|r| kind.is_none_or(|k| r.kind == k)));
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.monthly_savings_micros));
    Ok(out)
}

/// The recommendations for the job names of `tenant` (or of every tenant the caller reads),
/// from runs in `pool` when given, of `kind` when given, the largest saving first.
pub(crate) async fn compute(
    s: &ApiState,
    who: &Who,
    tenant: Option<&TenantId>,
    pool: Option<&PoolId>,
    kind: Option<Kind>,
    now: Timestamp,
) -> ApiResult<Vec<Recommendation>> {
    let since = Timestamp::from_millis(now.as_millis() - i64::from(s.cfg.optimization_lookback_days) * 86_400_000);
    let visible = who.visibility();
    let runs = s.store.usage_runs(since, tenant, recommend::RUNS as u32, MAX_RUNS).await?;
    let rates = s.current_rates();
    let mut out = Vec::new();
    let mut group: Vec<Run> = Vec::new();
    let mut key: Option<(TenantId, String)> = None;
    let flush = |key: &Option<(TenantId, String)>, group: &mut Vec<Run>, out: &mut Vec<Recommendation>| {
        if let Some((t, name)) = key {
            out.extend(recommend::for_job(t, name, group, s.cfg.optimization_min_runs, &rates, now));
        }
        group.clear();
    };
    for r in runs.iter().filter(|r| visible.sees(&r.tenant) && pool.is_none_or(|p| *p == r.pool)) {
        if key.as_ref().is_none_or(|(t, n)| *t != r.tenant || *n != r.job_name) {
            flush(&key, &mut group, &mut out);
            key = Some((r.tenant.clone(), r.job_name.clone()));
        }
        group.push(Run {
            requested: r.requested,
            started_at: r.started_at,
            finished_at: r.finished_at,
            oom: r.oom,
            summary: r.summary,
            gpu_measured: r.summary.gpu_samples > 0,
        });
    }
    flush(&key, &mut group, &mut out);
    out.retain(|r| kind.is_none_or(|k| r.kind == k));
    out.sort_by_key(|r| std::cmp::Reverse(r.monthly_savings_micros));
    Ok(out)
}

pub(crate) fn parse_tenant(v: Option<&str>, field: &str) -> ApiResult<Option<TenantId>> {
    v.map(|t| TenantId::parse(t).map_err(|e| ApiError::field(field, e.to_string(), "a tenant id (slug)", Some(t.to_owned())))).transpose()
}

pub(crate) fn parse_pool(v: Option<&str>, field: &str) -> ApiResult<Option<PoolId>> {
    v.map(|p| PoolId::parse(p).map_err(|e| ApiError::field(field, e.to_string(), "a pool id (slug)", Some(p.to_owned())))).transpose()
}

pub(crate) fn total_savings(recs: &[Recommendation], pools: &[PoolRecommendation]) -> i64 {
    recs.iter().map(|r| r.monthly_savings_micros.max(0)).chain(pools.iter().map(|r| r.monthly_savings_micros.max(0))).sum()
}

/// Right-sizing recommendations from the usage workers measured: for each job name with at
/// least `optimization.min_runs` finished runs in the last `optimization.lookback_days`; and,
/// for admins, for each pool from its last 7 days of metric history (a `min_size` higher than
/// its busy workers need, a static pool idle most of its worker time, a `max_size` at which
/// jobs wait past half the medium SLA).
#[utoipa::path(
    get,
    path = "/cost-optimization/recommendations",
    params(RecommendationsQuery),
    responses((status = 200, body = Recommendations), (status = 400, body = crate::error::Problem)),
    tag = "costs"
)]
pub async fn list_recommendations(State(s): State<ApiState>, who: Who, Query(q): Query<RecommendationsQuery>) -> ApiResult<Json<Recommendations>> {
    let tenant = parse_tenant(q.tenant_id.as_deref(), "tenant_id")?;
    let pool = parse_pool(q.pool_id.as_deref(), "pool_id")?;
    let kind = parse_kind(q.kind.as_deref())?;
    let now = s.clock.now();
    let recs = match kind {
        Some(AnyKind::Pool(_)) => Vec::new(),
        Some(AnyKind::Job(k)) => compute(&s, &who, tenant.as_ref(), pool.as_ref(), Some(k), now).await?,
        None => compute(&s, &who, tenant.as_ref(), pool.as_ref(), None, now).await?,
    };
    let pools = match (kind, &tenant) {
        (Some(AnyKind::Job(_)), _) | (_, Some(_)) => Vec::new(),
        (Some(AnyKind::Pool(k)), None) => compute_pools(&s, &who, pool.as_ref(), Some(k), now).await?,
        (None, None) => compute_pools(&s, &who, pool.as_ref(), None, now).await?,
    };
    let total = total_savings(&recs, &pools);
    Ok(Json(Recommendations {
        items: recs.iter().map(|r| RecommendationView::of(r, &s.cfg.currency)).collect(),
        pools: pools.iter().map(|r| PoolRecommendationView::of(r, &s.cfg.currency)).collect(),
        potential_savings_micros: total,
        potential_savings: money(total, &s.cfg.currency),
    }))
}
