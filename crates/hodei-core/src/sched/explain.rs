//! "Why is my job not running, and when will it?" (SPEC §4.4 `explain`, ETA).
//!
//! Reasons are read off the same state and the same checks that dispatch uses. The ETA runs
//! the scheduler forward on a copy of its state with expected durations and no arrivals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use super::{Outcome, Scheduler, key_of};
use crate::ids::{AttemptId, JobId, PoolId};
use crate::job::{Job, JobState};
use crate::queue::FlowStatus;
use crate::quota::{self, Breach};
use crate::sched::AttemptResult;
use crate::time::Timestamp;

/// Most simulated job ends for one estimate.
const MAX_SIM_EVENTS: usize = 200_000;
/// Above this many live jobs the copy an estimate needs is too large; no ETA is given.
pub const MAX_SIM_JOBS: usize = 250_000;

/// One reason a job is not running (SPEC §4.4 blocking reasons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub code: &'static str,
    pub message: String,
    /// Numbers behind it (quota figures, counts, tags).
    pub details: BTreeMap<&'static str, u128>,
}

impl Blocker {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Blocker { code, message: message.into(), details: BTreeMap::new() }
    }

    fn with(mut self, key: &'static str, v: impl Into<u128>) -> Self {
        self.details.insert(key, v.into());
        self
    }

    fn quota(code: &'static str, b: &Breach) -> Self {
        Blocker::new(code, format!("tenant at its quota — {b}"))
            .with("quota", b.quota)
            .with("ceiling", b.ceiling)
            .with("usage", b.usage)
            .with("requested", b.requested)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidatePool {
    pub pool_id: PoolId,
    pub eligible: bool,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub state: JobState,
    pub blockers: Vec<Blocker>,
    /// 0-based place in its tenant's queue (pending jobs).
    pub position_in_tenant: Option<usize>,
    /// Dispatches before it in the forward run (pending jobs with an ETA).
    pub global_position: Option<usize>,
    pub fair_share: Option<FlowStatus>,
    /// The per-mille factor on its tenant's weight from budget-aware fair share (1000: none).
    pub budget_factor_permille: u32,
    pub candidate_pools: Vec<CandidatePool>,
    pub estimated_start_at: Option<Timestamp>,
}

impl Scheduler {
    /// Explains a live job; `None` when the scheduler does not hold it (ended or unknown).
    pub fn explain(&self, id: JobId, now: Timestamp, horizon: Duration) -> Option<Explanation> {
        let job = self.jobs.get(&id)?;
        let mut blockers = Vec::new();
        let mut position_in_tenant = None;
        let mut fair_share = None;
        match job.state {
            JobState::Pending => {
                self.pending_blockers(job, now, &mut blockers);
                position_in_tenant = self.queue.position_in_tenant(&job.tenant, &key_of(job));
                fair_share = self.fair_share(&job.tenant);
            }
            JobState::Held => {
                blockers.push(self.hold_blocker(job, now));
                if job.state_reason.as_deref() == Some("quota_ceiling") {
                    self.burst_blocker(job, &mut blockers);
                }
            }
            JobState::Failed if job.next_retry_at.is_some() => {
                let at = job.next_retry_at.unwrap_or(now);
                blockers.push(Blocker::new("retry_backoff", format!("retrying after a failure in {} ms", at.as_millis() - now.as_millis())));
            }
            _ => {}
        }
        let (estimated_start_at, global_position) = match job.state {
            JobState::Scheduled | JobState::Running => (job.scheduled_at, Some(0)),
            JobState::Pending | JobState::Failed if self.jobs.len() <= MAX_SIM_JOBS => self.estimate_start(id, now, horizon).unzip(),
            _ => (None, None),
        };
        Some(Explanation {
            state: job.state,
            blockers,
            position_in_tenant,
            global_position,
            fair_share,
            budget_factor_permille: self.budget_factor(&job.tenant),
            candidate_pools: self.candidate_pools(job),
            estimated_start_at,
        })
    }

    /// The first reason a live job is not running (what `explain` lists first), without the
    /// ETA run.
    pub fn blocking_reason(&self, id: JobId, now: Timestamp) -> Option<&'static str> {
        let job = self.jobs.get(&id)?;
        match job.state {
            JobState::Pending => {
                let mut b = Vec::new();
                self.pending_blockers(job, now, &mut b);
                b.first().map(|b| b.code)
            }
            JobState::Held => Some(self.hold_blocker(job, now).code),
            _ => None,
        }
    }

    /// A burst session that would lift a quota blocker waits for approval.
    fn burst_blocker(&self, job: &Job, out: &mut Vec<Blocker>) {
        if self.burst_pending.contains(&job.tenant) {
            out.push(Blocker::new("burst_pending_approval", "the tenant's burst session waits for an admin's approval"));
        }
    }

    fn hold_blocker(&self, job: &Job, now: Timestamp) -> Blocker {
        match job.state_reason.as_deref() {
            Some("quota_ceiling") => {
                let p = self.policy(&job.tenant);
                let b = quota::may_dispatch(p, &self.cfg.quota_rules, &Default::default(), &job.resources(), now).err();
                match b {
                    Some(b) => Blocker::quota("quota_ceiling", &b),
                    None => Blocker::new("quota_ceiling", "held until the tenant's quota or a burst session fits it"),
                }
            }
            Some("tenant_suspended") => Blocker::new("tenant_suspended", "the tenant is suspended"),
            Some("budget_exhausted") => Blocker::new("budget_exhausted", "the tenant's budget is spent; it waits for a new period or a larger budget"),
            Some("dependency_pending") => {
                let waits: Vec<String> = self.pending_dependencies(job.id).iter().map(|d| format!("{} ({})", d.job, d.condition)).collect();
                Blocker::new("dependency_pending", format!("waits for {}", if waits.is_empty() { "its dependencies".to_owned() } else { waits.join(", ") }))
                    .with("dependencies_waiting", waits.len() as u128)
            }
            _ => Blocker::new("user_hold", "held by a user; release it to queue it"),
        }
    }

    fn pending_blockers(&self, job: &Job, now: Timestamp, out: &mut Vec<Blocker>) {
        let req = job.resources();
        let policy = self.policy(&job.tenant);
        let usage = self.usage(&job.tenant);
        if self.books.array_full(job) {
            let max = job.spec.array.and_then(|a| a.max_parallel).unwrap_or(0);
            out.push(Blocker::new("array_max_parallel", format!("its array job already runs {max} jobs (max_parallel)")).with("max_parallel", u128::from(max)));
        }
        if let Err(b) = quota::may_dispatch(policy, &self.cfg.quota_rules, &usage, &req, now) {
            out.push(Blocker::quota(b.limit.blocking_code(), &b));
            self.burst_blocker(job, out);
        }
        // The placement chain over the live workers: the furthest any of them gets.
        let nearest =
            self.workers.values().filter(|w| w.state.is_live()).map(|w| crate::placement::fits_now(w, &job.tenant, &job.spec, &req)).max_by_key(|r| match r {
                Ok(()) => (1, None),
                Err(u) => (0, Some(*u)),
            });
        match nearest {
            None | Some(Err(crate::placement::Unfit::NotSelected)) => {
                out.push(Blocker::new("no_matching_pool", "no live worker is in the pool the job selects"));
            }
            Some(Err(u)) if !u.is_temporary() => {
                out.push(Blocker::new("no_matching_pool", format!("no live worker could ever run it: the nearest is {u} ({req} needed)")));
            }
            Some(Err(u)) => out.push(match self.reservations.get(&job.id) {
                Some(r) => Blocker::new("no_capacity", format!("worker {} is reserved for it, expected to have room at {}", r.worker, r.free_at))
                    .with("reserved_free_at_ms", r.free_at.as_millis().max(0) as u128),
                None => Blocker::new("no_capacity", format!("every worker that could run it is busy: the nearest has {u} ({req} needed)")),
            }),
            Some(Ok(())) => {
                if self.best_worker(job, now).is_none() {
                    out.push(Blocker::new("reserved_for_other_job", "the workers with room are reserved for jobs that waited longer (backfill)"));
                }
            }
        }
        if let Some(st) = self.queue.status(&job.tenant)
            && st.tenants_ahead > 0
        {
            out.push(
                Blocker::new("fair_share", format!("{} tenants ahead with lower virtual time", st.tenants_ahead))
                    .with("tenants_ahead", st.tenants_ahead as u128)
                    .with("start_tag", st.start_tag)
                    .with("virtual_time", self.queue.virtual_time()),
            );
        }
        if let Some((higher, same)) = self.queue.ahead_in_tenant(&job.tenant, &key_of(job)) {
            if higher > 0 {
                out.push(
                    Blocker::new("lower_priority", format!("{higher} jobs of the same tenant with a higher priority go first"))
                        .with("jobs_ahead", higher as u128),
                );
            }
            if same > 0 {
                out.push(
                    Blocker::new("queue_order", format!("{same} jobs of the same tenant and priority were queued before it")).with("jobs_ahead", same as u128),
                );
            }
        }
    }

    fn candidate_pools(&self, job: &Job) -> Vec<CandidatePool> {
        let req = job.resources();
        // Per pool, the furthest one of its live workers gets along the placement chain.
        let mut pools: BTreeMap<&PoolId, Result<(), crate::placement::Unfit>> = BTreeMap::new();
        for w in self.workers.values().filter(|w| w.state.is_live()) {
            let r = crate::placement::fits_now(w, &job.tenant, &job.spec, &req);
            let e = pools.entry(&w.pool_id).or_insert(r);
            if r.is_ok() || e.is_err_and(|u| r.is_err_and(|v| v > u)) {
                *e = r;
            }
        }
        pools
            .into_iter()
            .map(|(p, r)| {
                let (eligible, reason) = match r {
                    Ok(()) => (true, "a worker has room now".to_owned()),
                    Err(u) if u.is_temporary() => (true, format!("workers could run it but are busy (nearest: {u})")),
                    Err(crate::placement::Unfit::NotSelected) => (false, "not the pool the job selects".to_owned()),
                    Err(u) => (false, format!("no worker of this pool could ever run it: {u} ({req} needed)")),
                };
                CandidatePool { pool_id: p.clone(), eligible, reason }
            })
            .collect()
    }

    /// When the job would start if every running job took its expected duration and nothing
    /// else arrived, within `horizon`; and how many dispatches come before it.
    pub fn estimate_start(&self, id: JobId, now: Timestamp, horizon: Duration) -> Option<(Timestamp, usize)> {
        let mut sim = self.clone();
        let _ = sim.take_changes();
        let end = now.saturating_add(horizon);
        let mut n: u128 = 0;
        let mut mint = || {
            n += 1;
            AttemptId::from_uuid(Uuid::from_u128(n))
        };
        // Running attempts by expected end.
        let mut ends: BTreeSet<(Timestamp, AttemptId)> = BTreeSet::new();
        let expected_end = |sim: &Scheduler, a: &crate::job::Attempt, t: Timestamp| {
            let started = a.started_at.unwrap_or(a.assigned_at);
            match sim.jobs.get(&a.job_id) {
                Some(j) if j.current_attempt == Some(a.id) => started.saturating_add(sim.expected_duration(j)).max(t),
                _ => t,
            }
        };
        for a in sim.attempts.values() {
            ends.insert((expected_end(&sim, a, now), a.id));
        }
        let mut t = now;
        let mut dispatched = 0usize;
        for _ in 0..MAX_SIM_EVENTS {
            if sim.jobs.get(&id)?.state == JobState::Failed {
                let at = sim.jobs.get(&id)?.next_retry_at?;
                if ends.first().is_none_or(|(e, _)| *e >= at) {
                    t = t.max(at);
                    sim.tick(t);
                }
            }
            sim.schedule(t, &mut mint);
            let changes = sim.take_changes();
            for a in changes.attempts.iter().filter(|a| a.state == crate::job::AttemptState::Assigned) {
                if a.job_id == id {
                    return Some((t, dispatched));
                }
                dispatched += 1;
                ends.insert((expected_end(&sim, a, t), a.id));
            }
            let (at, aid) = ends.pop_first()?;
            if at > end {
                return None;
            }
            t = at;
            let Some(a) = sim.attempts.get(&aid) else { continue };
            let (worker, started) = (a.worker_id, a.started_at.unwrap_or(a.assigned_at));
            let r = AttemptResult::decided(Outcome::Succeeded, Some(0), None, started, t);
            let _ = sim.finish(aid, worker, r, t);
        }
        None
    }
}
