//! What each pool looks like to the autoscaler (SPEC §2.11): its trigger metrics, the pending
//! work it could run, and its idle workers — read from the scheduler's state in one pass over
//! the pending jobs, grouped by what placement looks at, so that many pools cost little more
//! than one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::Scheduler;
use crate::autoscale::{Demand, PendingJob, Signals};
use crate::ids::{PoolId, TenantId};
use crate::job::Job;
use crate::placement::pool_misfit;
use crate::tenant::Pool;
use crate::time::Timestamp;
use crate::units::Resources;
use crate::worker::WorkerState;

/// What decides which pools could run a pending job.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey<'a> {
    pool: Option<&'a PoolId>,
    labels: &'a BTreeMap<String, String>,
    tenant: Option<&'a TenantId>,
    req: Resources,
    image: bool,
}

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
        // Pending jobs grouped by what decides which pools could run them, each group read once:
        // its size, its oldest job and (for forecasts) its most urgent jobs.
        // The tenant matters only where a pool runs some tenants' jobs and not others'.
        let forecasting = queries.iter().any(|q| q.forecast);
        let by_tenant = queries.iter().any(|q| !q.pool.allowed_tenants.is_empty());
        let mut groups: HashMap<GroupKey<'_>, Group<'_>> = HashMap::new();
        for t in self.queue.tenants_in_turn() {
            for k in self.queue.jobs_of(t) {
                if let Some(j) = self.jobs.get(&k.id) {
                    let key = GroupKey {
                        pool: j.spec.pool_selector.as_ref(),
                        labels: &j.spec.pool_labels,
                        tenant: by_tenant.then_some(&j.tenant),
                        req: j.resources(),
                        image: j.spec.image.is_some(),
                    };
                    let g = groups.entry(key).or_insert_with(|| Group { first: j, count: 0, oldest: j.eligible_at, jobs: Vec::new() });
                    g.count += 1;
                    g.oldest = g.oldest.min(j.eligible_at);
                    if forecasting {
                        g.jobs.push(j);
                    }
                }
            }
        }
        let groups: Vec<((Resources, bool), Group<'_>, Vec<PendingJob>)> = groups
            .into_iter()
            .map(|(GroupKey { req, image, .. }, g)| {
                let mut urgent = Vec::new();
                if forecasting {
                    urgent = g.jobs.iter().map(|j| PendingJob { at_risk_at: self.at_risk_at(j, now), expected: self.expected_duration(j) }).collect();
                    keep_most_urgent(&mut urgent);
                    urgent.sort_unstable_by_key(|j| (j.at_risk_at, j.expected));
                }
                ((req, image), g, urgent)
            })
            .collect();
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
                let mut candidates: Vec<&[PendingJob]> = Vec::new();
                let mut lanes = q.pool.worker_slots;
                for ((req, _), g, urgent) in &groups {
                    if pool_misfit(q.pool, &g.first.tenant, &g.first.spec).is_some() {
                        continue;
                    }
                    v.signals.queue_depth += g.count;
                    oldest = Some(oldest.map_or(g.oldest, |o| o.min(g.oldest)));
                    if q.forecast {
                        lanes = lanes.min(fits(req, &q.pool.worker_resources));
                        candidates.push(urgent);
                    }
                }
                v.signals.queue_wait_seconds = oldest.map_or(0.0, |o| now.since(o).as_secs_f64());
                if q.forecast {
                    let pending = merge_most_urgent(&mut candidates);
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

/// Pending jobs alike for placement.
struct Group<'a> {
    first: &'a Job,
    count: u32,
    oldest: Timestamp,
    jobs: Vec<&'a Job>,
}

/// The most jobs a forecast looks at per pool: the most urgent ones (earliest at-risk point).
/// Jobs behind them in that order start later in any case; a pool whose queue is longer than
/// this grows by its policy's step per round either way.
pub const MAX_FORECAST_JOBS: usize = 1_000;

/// Keeps the `MAX_FORECAST_JOBS` earliest at-risk jobs (in no particular order).
fn keep_most_urgent(jobs: &mut Vec<PendingJob>) {
    if jobs.len() > MAX_FORECAST_JOBS {
        jobs.select_nth_unstable_by_key(MAX_FORECAST_JOBS, |j| j.at_risk_at);
        jobs.truncate(MAX_FORECAST_JOBS);
    }
}

/// The `MAX_FORECAST_JOBS` earliest at-risk jobs of lists each sorted that way, in that order.
fn merge_most_urgent(lists: &mut [&[PendingJob]]) -> Vec<PendingJob> {
    let mut out = Vec::with_capacity(lists.iter().map(|l| l.len()).sum::<usize>().min(MAX_FORECAST_JOBS));
    while out.len() < MAX_FORECAST_JOBS {
        let Some(next) = lists.iter_mut().filter(|l| !l.is_empty()).min_by_key(|l| (l[0].at_risk_at, l[0].expected)) else { break };
        out.push(next[0]);
        *next = &next[1..];
    }
    out
}

/// How many jobs of shape `req` fit in one worker of shape `has`.
fn fits(req: &Resources, has: &Resources) -> u32 {
    let per = |r: u32, h: u32| h.checked_div(r).unwrap_or(u32::MAX);
    per(req.cpu_m.0, has.cpu_m.0).min(per(req.memory_mb.0, has.memory_mb.0)).min(per(req.gpu.0, has.gpu.0))
}
