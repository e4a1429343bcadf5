//! Right-sizing recommendations from measured usage (SPEC §8.8): the core's rules over the
//! latest finished runs of each (tenant, job name) the caller may read.

use axum::Json;
use axum::extract::{Query, State};
use hodei_core::recommend::{self, Kind, Recommendation, Run};
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
    /// job_reduce_cpu|job_increase_memory|job_drop_gpu.
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

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendations {
    /// The largest saving first.
    pub items: Vec<RecommendationView>,
    /// The sum of the positive savings.
    pub potential_savings_micros: i64,
    pub potential_savings: String,
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

pub(crate) fn total_savings(recs: &[Recommendation]) -> i64 {
    recs.iter().map(|r| r.monthly_savings_micros.max(0)).sum()
}

/// Right-sizing recommendations from the usage workers measured: for each job name with at
/// least `optimization.min_runs` finished runs in the last `optimization.lookback_days`.
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
    let kind =
        q.kind.as_deref().map(|k| k.parse::<Kind>().map_err(|()| ApiError::field("kind", "unknown kind", Kind::expected(), Some(k.to_owned())))).transpose()?;
    let recs = compute(&s, &who, tenant.as_ref(), pool.as_ref(), kind, s.clock.now()).await?;
    let total = total_savings(&recs);
    Ok(Json(Recommendations {
        items: recs.iter().map(|r| RecommendationView::of(r, &s.cfg.currency)).collect(),
        potential_savings_micros: total,
        potential_savings: money(total, &s.cfg.currency),
    }))
}
