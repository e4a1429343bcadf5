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

/// Dominant share of `r` in `cap`, in parts per million.
fn dominant_ppm(r: &Resources, cap: &Resources) -> u64 {
    let share = |a: u32, c: u32| if c == 0 { 0 } else { u64::from(a) * 1_000_000 / u64::from(c) };
    share(r.cpu_m.0, cap.cpu_m.0).max(share(r.memory_mb.0, cap.memory_mb.0)).max(share(r.gpu.0, cap.gpu.0))
}

impl Scheduler {
    /// One pass over the live jobs.
    pub fn queue_status(&self, now: Timestamp) -> QueueStatus {
        let mut st = QueueStatus { virtual_time: self.queue.virtual_time(), ..QueueStatus::default() };
        for p in Priority::ALL {
            st.by_priority.insert(p.as_str(), 0);
        }
        let mut rows: BTreeMap<&TenantId, TenantQueueRow> = BTreeMap::new();
        for j in self.jobs.values() {
            let row = rows.entry(&j.tenant).or_insert_with(|| TenantQueueRow {
                tenant: j.tenant.clone(),
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
            });
            if matches!(j.state, JobState::Pending | JobState::Scheduled) && j.sla.wait_ms.is_none() {
                match j.sla.status {
                    SlaStatus::AtRisk => st.sla_at_risk += 1,
                    SlaStatus::Critical => st.sla_critical += 1,
                    SlaStatus::Breached => st.sla_breached_waiting += 1,
                    _ => {}
                }
                row.at_risk += u64::from(j.sla.status != SlaStatus::OnTrack);
            }
            match j.state {
                JobState::Pending => {
                    let wait = now.as_millis().saturating_sub(j.eligible_at.as_millis()).max(0);
                    row.pending += 1;
                    row.oldest_wait_ms = row.oldest_wait_ms.max(wait);
                    st.pending += 1;
                    st.oldest_wait_ms = st.oldest_wait_ms.max(wait);
                    *st.by_priority.entry(j.spec.priority.as_str()).or_default() += 1;
                    *row.by_priority.entry(j.spec.priority.as_str()).or_default() += 1;
                }
                JobState::Held => {
                    row.held += 1;
                    st.held += 1;
                }
                JobState::Scheduled => {
                    row.scheduled += 1;
                    st.scheduled += 1;
                }
                JobState::Running => {
                    row.running += 1;
                    st.running += 1;
                }
                _ => {}
            }
        }
        let cap = self.workers.values().filter(|w| w.state.is_live()).fold(Resources::ZERO, |a, w| a.checked_add(&w.resources).unwrap_or(a));
        let demand: Vec<TenantId> = rows.values().filter(|r| r.pending + r.scheduled + r.running > 0).map(|r| r.tenant.clone()).collect();
        let total_weight: u64 = demand.iter().map(|t| u64::from(self.policy(t).weight)).sum();
        let used: BTreeMap<TenantId, u64> = rows.keys().map(|t| ((*t).clone(), dominant_ppm(&self.usage(t).active, &cap))).collect();
        let total_used: u64 = used.values().sum();
        for row in rows.values_mut() {
            let t = row.tenant.clone();
            row.weight = self.policy(&t).weight;
            if total_weight > 0 && demand.contains(&t) {
                row.fair_share = f64::from(row.weight) / total_weight as f64;
            }
            if total_used > 0 {
                row.actual_share = used.get(&t).copied().unwrap_or(0) as f64 / total_used as f64;
            }
            if let Some(f) = self.queue.status(&t) {
                row.start_tag = f.start_tag;
                row.parked = f.parked;
            }
        }
        st.tenants = rows.into_values().collect();
        st
    }
}
