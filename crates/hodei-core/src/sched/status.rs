//! Queue status (SPEC §4.5 `GET /queue`): totals, per-priority depth, and per-tenant shares.

use std::collections::BTreeMap;

use super::Scheduler;
use crate::ids::TenantId;
use crate::job::{JobState, Priority, SlaStatus};
use crate::time::Timestamp;
use crate::units::Resources;

#[derive(Clone, Debug, PartialEq)]
pub struct TenantQueueRow {
    pub tenant: TenantId,
    pub weight: u32,
    /// weight / Σ weights of tenants with pending or running jobs.
    pub fair_share: f64,
    /// Share of the allocated dominant resources.
    pub actual_share: f64,
    pub start_tag: u128,
    pub pending: u64,
    pub held: u64,
    pub scheduled: u64,
    pub running: u64,
    pub oldest_wait_ms: i64,
    pub parked: bool,
    /// Waiting jobs past their SLA's at-risk threshold (at_risk, critical or breached).
    pub at_risk: u64,
    /// Pending jobs per priority class.
    pub by_priority: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStatus {
    pub pending: u64,
    pub held: u64,
    pub scheduled: u64,
    pub running: u64,
    pub by_priority: BTreeMap<&'static str, u64>,
    pub oldest_wait_ms: i64,
    /// Waiting jobs by SLA status.
    pub sla_at_risk: u64,
    pub sla_critical: u64,
    pub sla_breached_waiting: u64,
    pub virtual_time: u128,
    pub tenants: Vec<TenantQueueRow>,
}

fn row(tenant: &TenantId) -> TenantQueueRow {
    TenantQueueRow {
        tenant: tenant.clone(),
        weight: 0,
        fair_share: 0.0,
        actual_share: 0.0,
        start_tag: 0,
        pending: 0,
        held: 0,
        scheduled: 0,
        running: 0,
        oldest_wait_ms: 0,
        parked: false,
        at_risk: 0,
        by_priority: BTreeMap::new(),
    }
}

impl Scheduler {
    /// Each tenant with pending or active jobs: (tenant, fair share, actual share), from the
    /// usage books alone (O(tenants)): fair = weight / Σ weights of those tenants, actual = its
    /// share of the allocated dominant resources.
    pub fn shares(&self) -> Vec<(TenantId, f64, f64)> {
        let cap = self.workers.values().filter(|w| w.state.is_live()).fold(Resources::ZERO, |a, w| a.checked_add(&w.resources).unwrap_or(a));
        let demand: Vec<(&TenantId, u64, u64)> = self
            .books
            .usage
            .iter()
            .filter(|(_, u)| u.pending_jobs + u.active_jobs > 0)
            .map(|(t, u)| (t, u64::from(self.share_weight(t)), u.active.dominant_ppm(&cap)))
            .collect();
        let total_weight: u64 = demand.iter().map(|d| d.1).sum();
        let total_used: u64 = demand.iter().map(|d| d.2).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        demand.into_iter().map(|(t, w, used)| (t.clone(), ratio(w, total_weight), ratio(used, total_used))).collect()
    }

    /// Totals and per-tenant rows. Counts come from the usage and SLA books; only pending jobs
    /// (through the queue, for their wait and class) and active ones (through their attempts)
    /// are visited — not held or retry-waiting ones.
    pub fn queue_status(&self, now: Timestamp) -> QueueStatus {
        self.queue_status_of(now, |_| true)
    }

    /// [`Self::queue_status`] of the tenants `sees` keeps: their rows, and totals over them only
    /// (what a caller who sees some tenants may know).
    pub fn queue_status_of(&self, now: Timestamp, sees: impl Fn(&TenantId) -> bool) -> QueueStatus {
        let mut st = QueueStatus { virtual_time: self.queue.virtual_time(), ..QueueStatus::default() };
        for p in Priority::ALL {
            st.by_priority.insert(p.as_str(), 0);
        }
        let mut rows: BTreeMap<&TenantId, TenantQueueRow> = BTreeMap::new();
        for (t, u) in self.books.usage.iter().filter(|(t, u)| u.queued_jobs + u.active_jobs > 0 && sees(t)) {
            let r = rows.entry(t).or_insert_with(|| row(t));
            r.held = u64::from(u.queued_jobs.saturating_sub(u.pending_jobs));
            for k in self.queue.jobs_of(t) {
                let Some(j) = self.jobs.get(&k.id) else { continue };
                r.pending += 1;
                r.oldest_wait_ms = r.oldest_wait_ms.max(now.as_millis().saturating_sub(j.eligible_at.as_millis()).max(0));
                *r.by_priority.entry(k.priority.as_str()).or_default() += 1;
                *st.by_priority.entry(k.priority.as_str()).or_default() += 1;
            }
        }
        for a in self.attempts.values() {
            let Some(j) = self.jobs.get(&a.job_id).filter(|j| j.current_attempt == Some(a.id)) else { continue };
            let Some(r) = rows.get_mut(&j.tenant) else { continue };
            match j.state {
                JobState::Scheduled => r.scheduled += 1,
                JobState::Running => r.running += 1,
                _ => {}
            }
        }
        for ((t, _, status), n) in self.books.sla.waiting.iter().filter(|((t, _, _), _)| sees(t)) {
            let n = u64::from(*n);
            match status {
                SlaStatus::AtRisk => st.sla_at_risk += n,
                SlaStatus::Critical => st.sla_critical += n,
                SlaStatus::Breached => st.sla_breached_waiting += n,
                _ => {}
            }
            if *status != SlaStatus::OnTrack
                && let Some(r) = rows.get_mut(t)
            {
                r.at_risk += n;
            }
        }
        let shares: crate::ids::IdMap<TenantId, (f64, f64)> = self.shares().into_iter().map(|(t, f, a)| (t, (f, a))).collect();
        for r in rows.values_mut() {
            r.weight = self.policy(&r.tenant).weight;
            (r.fair_share, r.actual_share) = shares.get(&r.tenant).copied().unwrap_or_default();
            if let Some(f) = self.queue.status(&r.tenant) {
                r.start_tag = f.start_tag;
                r.parked = f.parked;
            }
            st.pending += r.pending;
            st.held += r.held;
            st.scheduled += r.scheduled;
            st.running += r.running;
            st.oldest_wait_ms = st.oldest_wait_ms.max(r.oldest_wait_ms);
        }
        st.tenants = rows.into_values().collect();
        st
    }
}
