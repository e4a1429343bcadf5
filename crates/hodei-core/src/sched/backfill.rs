//! Backfill with reservations (SPEC §2.5): a job that fits no worker now does not block smaller
//! ones behind it, but once it has waited `reservation_after` it reserves the worker where it
//! fits earliest. Others may use that worker only if they fit beside the reserved job or are
//! expected to end before it could start; when the worker has room, the reserved job goes first.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{Scheduler, key_of};
use crate::ids::{AttemptId, JobId, WorkerId};
use crate::job::{Job, JobState};
use crate::quota;
use crate::time::Timestamp;
use crate::units::Resources;
use crate::worker::Worker;

/// `scheduler.backfill`, `reservation_after_ms`, `max_reservations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackfillRules {
    pub enabled: bool,
    pub reservation_after: Duration,
    pub max_reservations: usize,
}

impl Default for BackfillRules {
    fn default() -> Self {
        BackfillRules { enabled: true, reservation_after: Duration::from_secs(30), max_reservations: 16 }
    }
}

/// A worker held for a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub job: JobId,
    pub worker: WorkerId,
    pub req: Resources,
    /// When the worker is expected to have room for the job (refreshed every round).
    pub free_at: Timestamp,
}

/// When a worker would have room for `req` (and a slot), given the expected ends of what it runs.
fn free_at(w: &Worker, running: &[(Timestamp, Resources)], req: &Resources, now: Timestamp) -> Option<Timestamp> {
    if !w.could_ever_take(req) {
        return None;
    }
    let mut room = w.room();
    if w.slots_used < w.slots && req.fits_in(&room) {
        return Some(now);
    }
    let mut ends: Vec<&(Timestamp, Resources)> = running.iter().collect();
    ends.sort_by_key(|(at, _)| *at);
    // Every end frees a slot; room is what decides.
    for (at, r) in ends {
        room = room.checked_add(r).unwrap_or(room);
        if req.fits_in(&room) {
            return Some((*at).max(now));
        }
    }
    None
}

impl Scheduler {
    /// Expected end of each attempt, grouped by worker: of every worker, or of `only` those
    /// (whose attempts alone are visited).
    fn expected_ends(&self, only: Option<&BTreeMap<WorkerId, JobId>>) -> HashMap<WorkerId, Vec<(Timestamp, Resources)>> {
        let mut m: HashMap<WorkerId, Vec<(Timestamp, Resources)>> = HashMap::new();
        let attempts: Box<dyn Iterator<Item = &crate::job::Attempt>> = match only {
            Some(o) => Box::new(o.keys().flat_map(|w| self.attempts_on(*w))),
            None => Box::new(self.attempts.values()),
        };
        for a in attempts {
            let start = a.started_at.unwrap_or(a.assigned_at);
            let end = self.jobs.get(&a.job_id).map_or(start, |j| start.saturating_add(self.expected_duration(j)));
            m.entry(a.worker_id).or_default().push((end, a.resources));
        }
        m
    }

    /// Drops reservations whose job no longer waits or whose worker is gone, refreshes when
    /// each reserved worker is expected to have room, and dispatches reserved jobs that fit now.
    pub(super) fn dispatch_reserved(&mut self, now: Timestamp, mint: &mut dyn FnMut() -> AttemptId) -> usize {
        if self.reservations.is_empty() {
            return 0;
        }
        let jobs = &self.jobs;
        let workers = &self.workers;
        self.reservations
            .retain(|id, r| jobs.get(id).is_some_and(|j| j.state == JobState::Pending) && workers.get(&r.worker).is_some_and(|w| w.state.is_live()));
        self.reserved_workers = self.reservations.iter().map(|(id, r)| (r.worker, *id)).collect();
        let ends = self.expected_ends(Some(&self.reserved_workers));
        let mut due = Vec::new();
        for (id, r) in self.reservations.iter_mut() {
            let Some(w) = self.workers.get(&r.worker) else { continue };
            r.free_at = free_at(w, ends.get(&r.worker).map_or(&[], Vec::as_slice), &r.req, now).unwrap_or(r.free_at);
            if w.can_take(&r.req) {
                due.push(*id);
            }
        }
        let mut placed = 0;
        for id in due {
            let Some(job) = self.jobs.get(&id).filter(|j| !self.books.array_full(j)) else { continue };
            let policy = self.tenants.get(&job.tenant).unwrap_or(&self.cfg.default_policy);
            let usage = self.books.usage.get(&job.tenant).copied().unwrap_or_default();
            let Ok(over) = quota::may_dispatch(policy, &self.cfg.quota_rules, &usage, &job.resources(), now) else { continue };
            let Some(r) = self.reservations.remove(&id) else { continue };
            self.reserved_workers.remove(&r.worker);
            let (tenant, key, cost) = (job.tenant.clone(), key_of(job), self.cost(job));
            self.queue.dispatch(&tenant, &key, cost, now);
            if let Some(b) = over {
                self.out.quota_violations.push((tenant, b.limit));
            }
            self.assign(id, r.worker, mint(), now);
            placed += 1;
        }
        placed
    }

    /// A job that fits no worker now: reserve the worker where it fits earliest, once it has
    /// waited long enough and while reservations are left.
    pub(super) fn may_reserve(&self, job: &Job, now: Timestamp) -> bool {
        let rules = &self.cfg.backfill;
        rules.enabled
            && self.reservations.len() < rules.max_reservations
            && job.eligible_at.saturating_add(rules.reservation_after) <= now
            && !self.reservations.contains_key(&job.id)
    }

    pub(super) fn maybe_reserve(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get(&id).filter(|j| self.may_reserve(j, now)) else { return };
        let req = job.resources();
        let candidates: BTreeMap<WorkerId, JobId> = self
            .workers
            .values()
            .filter(|w| crate::placement::accepting(w) && crate::placement::ever_fits(w, &job.tenant, &job.spec, &req).is_ok())
            .filter(|w| !self.reserved_workers.contains_key(&w.id))
            .map(|w| (w.id, id))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let ends = self.expected_ends(Some(&candidates));
        let best = candidates
            .keys()
            .filter_map(|wid| {
                let w = self.workers.get(wid)?;
                free_at(w, ends.get(wid).map_or(&[], Vec::as_slice), &req, now).map(|at| (at, *wid))
            })
            .min();
        if let Some((free_at, worker)) = best {
            self.reservations.insert(id, Reservation { job: id, worker, req, free_at });
            self.reserved_workers.insert(worker, id);
        }
    }

    /// Whether `job` may use worker `w` despite a reservation on it: it is the reserved job,
    /// fits beside it, or is expected to end before the reserved job could start.
    pub(super) fn reservation_allows(&self, w: &Worker, job: &Job, now: Timestamp) -> bool {
        let Some(r) = self.reserved_workers.get(&w.id).and_then(|id| self.reservations.get(id)) else { return true };
        if r.job == job.id {
            return true;
        }
        let beside = w.slots.saturating_sub(w.slots_used) >= 2 && job.resources().checked_add(&r.req).is_some_and(|both| both.fits_in(&w.room()));
        beside || now.saturating_add(self.expected_duration(job)) <= r.free_at
    }

    /// The reservations held now.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }
}
