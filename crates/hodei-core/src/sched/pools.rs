//! What each pool looks like to the autoscaler (SPEC §2.11): its trigger metrics, the pending
//! work it could run, and its idle workers — read from the scheduler's state in one pass over
//! the pending jobs, grouped by what placement looks at, so that many pools cost little more
//! than one.

use std::collections::HashMap;
use std::time::Duration;

use super::Scheduler;
use crate::autoscale::{Demand, PendingJob, Signals};
use crate::ids::PoolId;
use crate::job::Job;
use crate::placement::pool_misfit;
use crate::tenant::Pool;
use crate::time::Timestamp;
use crate::units::Resources;
use crate::worker::WorkerState;

/// A pool the autoscaler evaluates.
#[derive(Clone, Copy, Debug)]
pub struct PoolQuery<'a> {
    pub pool: &'a Pool,
    /// Dynamic pools' `idle_timeout_s`: idle workers older than it are counted as expired.
    pub idle_timeout: Option<Duration>,
    /// Whether to collect the pending jobs one by one (forecast mode needs them).
    pub forecast: bool,
    pub provision_delay: Duration,
}

/// One pool as seen now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolView {
    pub signals: Signals,
    /// Registering, idle and busy workers (draining ones are on their way out).
    pub live: u32,
    pub busy: u32,
    pub draining: u32,
    /// Idle workers idle longer than the pool's `idle_timeout_s`.
    pub idle_expired: u32,
    /// Filled for pools queried with `forecast`.
    pub demand: Option<Demand>,
}

impl Scheduler {
    /// One [`PoolView`] per query, in order.
    pub fn pool_views(&self, queries: &[PoolQuery<'_>], now: Timestamp) -> Vec<PoolView> {
        // Pending jobs grouped by what decides which pools could run them.
        let mut groups: HashMap<(Option<&PoolId>, Resources, bool), Vec<&Job>> = HashMap::new();
        for t in self.queue.tenants_in_turn() {
            for k in self.queue.jobs_of(t) {
                if let Some(j) = self.jobs.get(&k.id) {
                    groups.entry((j.spec.pool_selector.as_ref(), j.resources(), j.spec.image.is_some())).or_default().push(j);
                }
            }
        }
        queries
            .iter()
            .map(|q| {
                let mut v = PoolView::default();
                let (mut total, mut allocated) = (Resources::ZERO, Resources::ZERO);
                let mut busy_until = Vec::new();
                for w in self.workers.values().filter(|w| w.pool_id == q.pool.id) {
                    match w.state {
                        WorkerState::Idle => {
                            v.signals.idle_workers += 1;
                            if q.idle_timeout.is_some_and(|t| w.idle_since.is_some_and(|s| now.since(s) >= t)) {
                                v.idle_expired += 1;
                            }
                        }
                        WorkerState::Busy => v.busy += 1,
                        WorkerState::Draining => v.draining += 1,
                        _ => {}
                    }
                    if matches!(w.state, WorkerState::Registering | WorkerState::Idle | WorkerState::Busy) {
                        v.live += 1;
                    }
                    if matches!(w.state, WorkerState::Idle | WorkerState::Busy) {
                        total = total.checked_add(&w.resources).unwrap_or(total);
                        allocated = allocated.checked_add(&w.allocated).unwrap_or(allocated);
                        if q.forecast {
                            for a in self.attempts_on(w.id) {
                                let expected = self.jobs.get(&a.job_id).map_or(self.cfg.default_expected_duration, |j| self.expected_duration(j));
                                busy_until.push(a.started_at.unwrap_or(a.assigned_at).saturating_add(expected));
                            }
                        }
                    }
                }
                let pct = |a: u32, t: u32| if t == 0 { 0.0 } else { f64::from(a) * 100.0 / f64::from(t) };
                v.signals.cpu_utilization = pct(allocated.cpu_m.0, total.cpu_m.0);
                v.signals.memory_utilization = pct(allocated.memory_mb.0, total.memory_mb.0);
                let working = v.signals.idle_workers + v.busy;
                v.signals.busy_ratio = if working == 0 { 0.0 } else { f64::from(v.busy) / f64::from(working) };
                let mut oldest: Option<Timestamp> = None;
                let mut pending = Vec::new();
                let mut lanes = q.pool.worker_slots;
                for ((_, req, _), jobs) in &groups {
                    let Some(first) = jobs.first() else { continue };
                    if pool_misfit(q.pool, &first.spec).is_some() {
                        continue;
                    }
                    v.signals.queue_depth += jobs.len() as u32;
                    for j in jobs {
                        oldest = Some(oldest.map_or(j.eligible_at, |o| o.min(j.eligible_at)));
                    }
                    if q.forecast {
                        lanes = lanes.min(fits(req, &q.pool.worker_resources));
                        pending.extend(jobs.iter().map(|j| PendingJob { at_risk_at: self.at_risk_at(j, now), expected: self.expected_duration(j) }));
                    }
                }
                v.signals.queue_wait_seconds = oldest.map_or(0.0, |o| now.since(o).as_secs_f64());
                if q.forecast {
                    v.demand = Some(Demand { pending, busy_until, lanes_per_worker: lanes.max(1), provision_delay: q.provision_delay });
                }
                v
            })
            .collect()
    }

    /// The instant a waiting job turns SLA at-risk if it keeps waiting (in the past once it is).
    pub fn at_risk_at(&self, job: &Job, now: Timestamp) -> Timestamp {
        let rules = &self.books.sla.rules;
        let max = rules.max_wait_ms(job.spec.sla);
        let early = max - max * u64::from(rules.at_risk_pct.min(100)) / 100;
        Timestamp::from_millis(self.sla_deadline(job, now).as_millis().saturating_sub(early as i64))
    }
}

/// How many jobs of shape `req` fit in one worker of shape `has`.
fn fits(req: &Resources, has: &Resources) -> u32 {
    let per = |r: u32, h: u32| h.checked_div(r).unwrap_or(u32::MAX);
    per(req.cpu_m.0, has.cpu_m.0).min(per(req.memory_mb.0, has.memory_mb.0)).min(per(req.gpu.0, has.gpu.0))
}
