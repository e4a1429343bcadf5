//! SLA reports (SPEC §4.5): compliance per level and tenant over a window (from the store),
//! breaches, and the waiting jobs at risk now (from the scheduler).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use hodei_core::sched::{Scheduler, SlaRules};
use hodei_core::sla_tally::{SlaCount, SlaTally, window_start};
use hodei_core::{Job, JobState, SlaLevel, SlaStatus, TenantId, Timestamp};
use hodei_store::BreachFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Who;
use crate::dto::{Page, SlaJobView, SlaReport, SlaRow, TenantSla, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::routes::page_limit;
use hodei_core::{Action, Visibility};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// Default `sla.compliance_window_hours` (24).
    #[param(minimum = 1, maximum = 2160)]
    pub window_hours: Option<i64>,
}

fn row(t: SlaTally, level: &str, waiting: [u64; 3]) -> SlaRow {
    SlaRow {
        level: level.to_owned(),
        started: t.started(),
        met: t.met,
        breached: t.breached,
        compliance_ratio: t.compliance(),
        wait_p50_ms: t.wait_percentile(50),
        wait_p95_ms: t.wait_percentile(95),
        at_risk: waiting[0],
        critical: waiting[1],
        breached_waiting: waiting[2],
    }
}

/// Started and met jobs per tenant and level: what `/sla` and the `hodei_sla_compliance_ratio`
/// gauge show.
pub fn compliance(counts: &[SlaCount]) -> BTreeMap<(TenantId, SlaLevel), (u64, u64)> {
    let mut m: BTreeMap<(TenantId, SlaLevel), (u64, u64)> = BTreeMap::new();
    for c in counts {
        let e = m.entry((c.tenant.clone(), c.level)).or_default();
        e.0 += c.n;
        if c.met {
            e.1 += c.n;
        }
    }
    m
}

type Waiting = BTreeMap<(TenantId, SlaLevel, SlaStatus), u32>;

fn waiting_of(w: &Waiting, tenant: Option<&TenantId>, level: Option<SlaLevel>) -> [u64; 3] {
    let mut out = [0u64; 3];
    for ((t, l, st), n) in w {
        if tenant.is_some_and(|x| x != t) || level.is_some_and(|x| x != *l) {
            continue;
        }
        let i = match st {
            SlaStatus::AtRisk => 0,
            SlaStatus::Critical => 1,
            SlaStatus::Breached => 2,
            _ => continue,
        };
        out[i] += u64::from(*n);
    }
    out
}

pub(crate) async fn report(s: &ApiState, visible: Visibility, tenant: Option<TenantId>, q: WindowQuery) -> ApiResult<Json<SlaReport>> {
    let hours = match q.window_hours {
        None => i64::from(s.cfg.sla_window_hours),
        Some(h) if (1..=24 * 90).contains(&h) => h,
        Some(h) => return Err(ApiError::field("window_hours", "window is out of range", "an integer between 1 and 2160", Some(h.to_string()))),
    };
    let since = window_start(s.clock.now(), hours as u32);
    let mut counts = s.store.sla_counts(since, tenant.as_ref()).await?;
    counts.retain(|c| visible.sees(&c.tenant));
    let mut waiting: Waiting = crate::read(s.control.as_ref(), |sched, _| sched.sla_waiting().clone()).await?;
    waiting.retain(|(t, _, _), _| visible.sees(t));
    let mut by_level: BTreeMap<SlaLevel, SlaTally> = BTreeMap::new();
    let mut by_tenant: BTreeMap<TenantId, BTreeMap<SlaLevel, SlaTally>> = BTreeMap::new();
    for c in &counts {
        by_level.entry(c.level).or_default().add(c);
        by_tenant.entry(c.tenant.clone()).or_default().entry(c.level).or_default().add(c);
    }
    for (t, _, _) in waiting.keys() {
        if tenant.as_ref().is_none_or(|x| x == t) {
            by_tenant.entry(t.clone()).or_default();
        }
    }
    let t = tenant.as_ref();
    let levels = SlaLevel::ALL.iter().map(|l| row(by_level.remove(l).unwrap_or_default(), l.as_str(), waiting_of(&waiting, t, Some(*l)))).collect();
    let tenants = by_tenant
        .into_iter()
        .map(|(id, mut m)| TenantSla {
            levels: SlaLevel::ALL
                .iter()
                .filter_map(|l| {
                    let w = waiting_of(&waiting, Some(&id), Some(*l));
                    let acc = m.remove(l);
                    (acc.is_some() || w != [0; 3]).then(|| row(acc.unwrap_or_default(), l.as_str(), w))
                })
                .collect(),
            tenant_id: id.to_string(),
        })
        .collect();
    Ok(Json(SlaReport { window_hours: hours as u32, levels, tenants }))
}

/// SLA compliance per level and tenant over a window, and the jobs waiting at risk now.
#[utoipa::path(get, path = "/sla", params(WindowQuery), responses((status = 200, body = SlaReport), (status = 400, body = crate::error::Problem)), tag = "sla")]
pub async fn get_sla(State(s): State<ApiState>, who: Who, Query(q): Query<WindowQuery>) -> ApiResult<Json<SlaReport>> {
    report(&s, who.visibility(), None, q).await
}

/// One tenant's SLA compliance per level.
#[utoipa::path(get, path = "/tenants/{id}/sla", params(WindowQuery), responses((status = 200, body = SlaReport), (status = 404, body = crate::error::Problem)), tag = "sla")]
pub async fn get_tenant_sla(State(s): State<ApiState>, who: Who, Path(id): Path<String>, Query(q): Query<WindowQuery>) -> ApiResult<Json<SlaReport>> {
    let t = super::tenants::load(&s, &who, &id, Action::Read, "reading SLA reports").await?;
    report(&s, who.visibility(), Some(t.id), q).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SlaJobsQuery {
    pub tenant_id: Option<String>,
    /// critical|high|medium|low|best_effort
    #[param(pattern = "^(critical|high|medium|low|best_effort)$")]
    pub level: Option<String>,
    /// RFC 3339; breaches at or after it.
    #[param(format = DateTime)]
    pub since: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

struct Filter {
    tenant: Option<TenantId>,
    level: Option<SlaLevel>,
    since: Option<Timestamp>,
    limit: u32,
}

fn filter(q: &SlaJobsQuery) -> ApiResult<Filter> {
    let tenant = q
        .tenant_id
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| ApiError::field("tenant_id", e.to_string(), "a tenant id", Some(t.to_owned()))))
        .transpose()?;
    let level = q
        .level
        .as_deref()
        .map(|l| l.parse::<SlaLevel>().map_err(|()| ApiError::field("level", "unknown SLA level", SlaLevel::expected(), Some(l.to_owned()))))
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| Timestamp::from_millis(t.as_millisecond()))
                .map_err(|_| ApiError::field("since", "not a timestamp", "RFC 3339, e.g. 2026-11-23T10:00:00Z", Some(v.to_owned())))
        })
        .transpose()?;
    Ok(Filter { tenant, level, since, limit: page_limit(q.limit)? })
}

fn sla_job_view(sched: &Scheduler, j: &Job, rules: &SlaRules, now: Timestamp, deadline: Option<Timestamp>) -> SlaJobView {
    SlaJobView {
        job_id: j.id.to_string(),
        tenant_id: j.tenant.to_string(),
        level: j.spec.sla.to_string(),
        status: j.sla.status.to_string(),
        state: j.state.to_string(),
        max_wait_ms: rules.max_wait_ms(j.spec.sla),
        wait_ms: sched.sla_wait_ms(j, now),
        breached_at: j.sla.breached_at.map(rfc3339),
        deadline_at: deadline.map(rfc3339),
        dominant_blocking_reason: sched.blocking_reason(j.id, now).map(str::to_owned),
    }
}

/// Jobs that breached their SLA, most recent first.
#[utoipa::path(get, path = "/sla/breaches", params(SlaJobsQuery), responses((status = 200, body = Page<SlaJobView>), (status = 400, body = crate::error::Problem)), tag = "sla")]
pub async fn breaches(State(s): State<ApiState>, who: Who, Query(q): Query<SlaJobsQuery>) -> ApiResult<Json<Page<SlaJobView>>> {
    let f = filter(&q)?;
    let visible = who.visibility().into_filter();
    let jobs = s.store.sla_breaches(&BreachFilter { tenant: f.tenant, visible, level: f.level, since: f.since, limit: f.limit }).await?;
    let rules = s.cfg.sla;
    let items = crate::read(s.control.as_ref(), move |sched, now| {
        jobs.iter()
            .map(|stored| {
                // A job still waiting is read live: its wait grows and it has a blocking reason.
                match sched.job(&stored.id) {
                    Some(live) => sla_job_view(sched, live, &rules, now, None),
                    None => SlaJobView { wait_ms: stored.sla.wait_ms.unwrap_or(stored.sla.waited_ms), ..sla_job_view(sched, stored, &rules, now, None) },
                }
            })
            .collect()
    })
    .await?;
    Ok(Json(Page { items, next_cursor: None }))
}

/// Waiting jobs past their at-risk threshold, nearest deadline first.
#[utoipa::path(get, path = "/sla/at-risk", params(SlaJobsQuery), responses((status = 200, body = Page<SlaJobView>), (status = 400, body = crate::error::Problem)), tag = "sla")]
pub async fn at_risk(State(s): State<ApiState>, who: Who, Query(q): Query<SlaJobsQuery>) -> ApiResult<Json<Page<SlaJobView>>> {
    let f = filter(&q)?;
    let visible = who.visibility();
    let rules: SlaRules = s.cfg.sla;
    let items = crate::read(s.control.as_ref(), move |sched, now| {
        let mut rows: Vec<(Timestamp, SlaJobView)> = sched
            .jobs()
            .filter(|j| matches!(j.state, JobState::Pending | JobState::Scheduled) && j.sla.wait_ms.is_none())
            .filter(|j| j.sla.status != SlaStatus::OnTrack)
            .filter(|j| visible.sees(&j.tenant) && f.tenant.as_ref().is_none_or(|t| *t == j.tenant) && f.level.is_none_or(|l| l == j.spec.sla))
            .map(|j| {
                let deadline = sched.sla_deadline(j, now);
                (deadline, sla_job_view(sched, j, &rules, now, Some(deadline)))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.job_id.cmp(&b.1.job_id)));
        rows.into_iter().take(f.limit as usize).map(|(_, v)| v).collect()
    })
    .await?;
    Ok(Json(Page { items, next_cursor: None }))
}
