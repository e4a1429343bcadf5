//! Opt-in preemption (SPEC §2.5, `scheduler.preemption.enabled`): a waiting `critical` or
//! `high` job that its quota allows but no worker can take may evict running `preemptible`
//! jobs of a lower priority class — of tenants over their fair share first, youngest first —
//! on the one worker where the fewest evictions make room. The evicted attempts end
//! `preempted` when their worker confirms the kill; their jobs go back to `pending` without
//! using a retry. The waiting job holds a reservation on that worker, so the room it paid for
//! is not taken by anyone else.

use std::cmp::Reverse;

use super::Scheduler;
use super::backfill::Reservation;
use crate::ids::{AttemptId, IdSet, JobId, TenantId, WorkerId};
use crate::job::{Job, JobState, Priority};
use crate::quota;
use crate::sched::Outbound;
use crate::time::Timestamp;
use crate::units::Resources;

/// Most waiting jobs looked at for preemption per scheduling round.
const WAITERS_PER_ROUND: usize = 8;

impl Scheduler {
    /// The tenants using more than their weighted share of the allocated capacity.
    fn over_share(&self) -> IdSet<TenantId> {
        let cap = &self.capacity;
        let active = || self.books.usage.iter().filter(|(_, u)| u.active_jobs > 0 || u.queued_jobs > 0);
        let (mut total_w, mut total_used) = (0u64, 0u64);
        for (id, u) in active() {
            total_w += u64::from(self.share_weight(id));
            total_used += u.active.dominant_ppm(cap);
        }
        // used / total_used > w / total_w, in integers.
        active()
            .filter(|(id, u)| u128::from(u.active.dominant_ppm(cap)) * u128::from(total_w) > u128::from(self.share_weight(id)) * u128::from(total_used))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Finds waiting high-priority jobs that no worker can take and evicts what makes room.
    pub(super) fn preempt(&mut self, now: Timestamp) {
        if !self.cfg.preemption || self.queue.is_empty() {
            return;
        }
        let waiters: Vec<JobId> = self
            .queue
            .tenants_in_turn()
            .flat_map(|t| self.queue.next_candidates(t, 1))
            .filter(|k| matches!(k.priority, Priority::Critical | Priority::High))
            .map(|k| k.id)
            .filter(|id| !self.reservations.contains_key(id))
            .take(WAITERS_PER_ROUND)
            .collect();
        let mut over_share = None;
        for id in waiters {
            let Some(job) = self.jobs.get(&id).filter(|j| j.state == JobState::Pending) else { continue };
            let policy = self.tenants.get(&job.tenant).unwrap_or(&self.cfg.default_policy);
            let usage = self.books.usage.get(&job.tenant).copied().unwrap_or_default();
            if quota::may_dispatch(policy, &self.cfg.quota_rules, &usage, &job.resources(), now).is_err()
                || self.books.array_full(job)
                || self.best_worker(job, now).is_some()
            {
                continue;
            }
            let (req, class) = (job.resources(), job.spec.priority);
            let over = over_share.get_or_insert_with(|| self.over_share());
            let Some((worker, victims)) = self.victims(job, &req, class, over) else { continue };
            for aid in &victims {
                self.preempting.insert(*aid);
                self.out.outbound.push(Outbound::Cancel { worker, attempt: *aid, reason: "preempted" });
            }
            // The room being freed is the waiting job's.
            if let Some(old) = self.reserved_workers.insert(worker, id) {
                self.reservations.remove(&old);
            }
            self.reservations.insert(id, Reservation { job: id, worker, req, free_at: now });
        }
    }

    /// The worker where evicting the fewest lower-class preemptible jobs makes room for `req`,
    /// and those jobs' attempts (tenants in `over_share` first, then youngest first). Each
    /// worker's own attempts are visited, so one search reads every attempt once.
    fn victims(&self, job: &Job, req: &Resources, class: Priority, over_share: &IdSet<TenantId>) -> Option<(WorkerId, Vec<AttemptId>)> {
        let mut best: Option<(usize, WorkerId, Vec<AttemptId>)> = None;
        for w in self.workers.values().filter(|w| crate::placement::accepting(w) && crate::placement::ever_fits(w, &job.tenant, &job.spec, req).is_ok()) {
            if self.reserved_workers.contains_key(&w.id) {
                continue;
            }
            let mut evictable: Vec<(bool, Reverse<Timestamp>, AttemptId, Resources)> = self
                .attempts_on(w.id)
                .filter(|a| a.state == crate::job::AttemptState::Running && !self.preempting.contains(&a.id))
                .filter_map(|a| {
                    let j = self.jobs.get(&a.job_id).filter(|j| j.state == JobState::Running && j.current_attempt == Some(a.id))?;
                    (j.spec.preemptible && j.spec.priority > class && j.cancel_requested_at.is_none())
                        .then(|| (!over_share.contains(&j.tenant), Reverse(a.started_at.unwrap_or(a.assigned_at)), a.id, a.resources))
                })
                .collect();
            evictable.sort_by_key(|(over, young, id, _)| (*over, *young, *id));
            let mut room = w.room();
            let mut slots = w.slots.saturating_sub(w.slots_used);
            let mut chosen = Vec::new();
            for (_, _, aid, r) in evictable {
                if slots > 0 && req.fits_in(&room) {
                    break;
                }
                room = room.checked_add(&r).unwrap_or(room);
                slots += 1;
                chosen.push(aid);
            }
            if slots > 0 && req.fits_in(&room) && !chosen.is_empty() && best.as_ref().is_none_or(|b| chosen.len() < b.0) {
                best = Some((chosen.len(), w.id, chosen));
            }
        }
        best.map(|(_, w, v)| (w, v))
    }
}
