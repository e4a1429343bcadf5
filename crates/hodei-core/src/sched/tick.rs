//! Time (SPEC §3.1): retry backoffs ending, leases expiring, assignments unacknowledged,
//! SLA levels escalating — and when the next of these is due.

use super::*;

impl Scheduler {
    /// Applies every time-driven decision due at `now`: due retries, ack timeouts, expired
    /// worker leases, and the timeout and cancel backstops for workers that stopped answering.
    pub fn tick(&mut self, now: Timestamp) {
        if let Some(cutoff) = self.idempotency.expire(now) {
            self.out.idempotency_expired_before = Some(cutoff);
        }
        match self.next_accrual {
            None => self.next_accrual = Some(now.saturating_add(self.cfg.accrual_interval)),
            Some(at) if at <= now => {
                self.accrue(now);
                self.next_accrual = Some(now.saturating_add(self.cfg.accrual_interval));
            }
            Some(_) => {}
        }
        for id in self.books.sla.due(now) {
            if let Some(job) = self.jobs.get_mut(&id)
                && self.books.sla.reevaluate(job, now)
            {
                self.touch(id);
            }
        }

        while let Some(&(at, id)) = self.retry_wait.first() {
            if at > now {
                break;
            }
            self.retry_wait.pop_first();
            if let Some(job) = self.jobs.get_mut(&id)
                && job.state == JobState::Failed
                && job.next_retry_at == Some(at)
            {
                move_job(job, JobState::Pending, Actor::Scheduler, Some("retry"), now, &mut self.books);
                job.next_retry_at = None;
                job.exit_code = None;
                job.finished_at = None;
                job.worker_id = None;
                self.queue.push(&job.tenant, key_of(job), now);
                let spent = self.budget_exhausted.contains(&job.tenant);
                self.touch(id);
                if spent {
                    self.reconsider_hold(id, now);
                }
            }
        }

        let ack = self.cfg.assign_ack_timeout;
        let unacked: Vec<AttemptId> = self
            .attempts
            .values()
            .filter(|a| a.state == AttemptState::Assigned && a.assigned_at.saturating_add(ack) <= now)
            .filter(|a| self.workers.get(&a.worker_id).is_none_or(|w| w.connected))
            .map(|a| a.id)
            .collect();
        for aid in unacked {
            self.lose_attempt(aid, FailureReason::AckTimeout, now);
        }

        let hb = self.cfg.heartbeat_timeout;
        let expired: Vec<WorkerId> =
            self.workers.values().filter(|w| w.state.is_live() && w.last_heartbeat_at.saturating_add(hb) <= now).map(|w| w.id).collect();
        for wid in expired {
            let mine = self.attempt_ids_on(wid);
            for aid in mine {
                self.lose_attempt(aid, FailureReason::WorkerLost, now);
            }
            if let Some(w) = self.workers.get_mut(&wid) {
                w.state = WorkerState::Offline;
                w.connected = false;
                w.idle_since = None;
                self.dirty_workers.insert(wid);
            }
        }

        let gc = self.cfg.gc_after;
        let gone: Vec<WorkerId> =
            self.workers.values().filter(|w| w.state == WorkerState::Offline && w.last_heartbeat_at.saturating_add(gc) <= now).map(|w| w.id).collect();
        for wid in gone {
            self.terminate_worker(wid, now);
        }

        // Backstops: a worker that still heartbeats but never reports the end of a job.
        let slack = self.cfg.kill_grace + hb;
        let overdue: Vec<(AttemptId, bool)> = self
            .attempts
            .values()
            .filter(|a| a.state == AttemptState::Running)
            .filter_map(|a| {
                let job = self.jobs.get(&a.job_id).filter(|j| j.current_attempt == Some(a.id) && j.state == JobState::Running)?;
                let started = a.started_at?;
                if let Some(c) = job.cancel_requested_at
                    && c.saturating_add(slack) <= now
                {
                    return Some((a.id, true));
                }
                (started.saturating_add(job.spec.timeout + slack) <= now).then_some((a.id, false))
            })
            .collect();
        for (aid, cancelled) in overdue {
            let Some(a) = self.attempts.get(&aid) else { continue };
            let (worker, started) = (a.worker_id, a.started_at.unwrap_or(now));
            self.out.outbound.push(Outbound::Cancel { worker, attempt: aid, reason: if cancelled { "cancelled" } else { "timeout" } });
            let outcome = if cancelled { Outcome::Cancelled } else { Outcome::TimedOut };
            let reason = if cancelled { FailureReason::Cancelled } else { FailureReason::Timeout };
            let r = AttemptResult::decided(outcome, None, Some(reason), started, now);
            let _ = self.finish(aid, worker, r, now);
            // `finish` queued an Ack for a result the worker never sent; drop it.
            if let Some(Outbound::Ack { .. }) = self.out.outbound.last() {
                self.out.outbound.pop();
            }
        }
    }

    /// Earliest instant at which [`Scheduler::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let retry = self.retry_wait.first().map(|(at, _)| *at);
        retry.into_iter().chain(self.books.sla.next_due()).min()
    }

    /// Bills every running attempt for its time so far (`accrual_interval`): its cost records
    /// and rollups are written now, so budgets and breakdowns count it before it ends.
    pub fn accrue(&mut self, now: Timestamp) {
        let running: Vec<AttemptId> = self.attempts.values().filter(|a| a.state == AttemptState::Running && a.started_at.is_some()).map(|a| a.id).collect();
        for id in running {
            let Some(mut a) = self.attempts.get(&id).cloned() else { continue };
            let before = a.billed_seconds;
            self.bill_part(&mut a, now);
            if a.billed_seconds != before || a.accrued_to != self.attempts.get(&id).and_then(|x| x.accrued_to) {
                self.out.attempts.push(a.clone());
                if let Some(x) = self.attempts.get_mut(&id) {
                    *x = a;
                }
            }
        }
    }
}
