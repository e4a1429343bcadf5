//! What workers report (SPEC §5): an attempt accepted, rejected or finished, fenced against
//! stale attempts, and what follows — retries, SLA outcomes, learned durations.

use super::*;

impl Scheduler {
    fn current_job_of(&self, attempt: &Attempt) -> Option<JobId> {
        let job = self.jobs.get(&attempt.job_id)?;
        (job.current_attempt == Some(attempt.id) && job.state.is_active()).then_some(job.id)
    }

    /// The worker started the attempt.
    pub fn accepted(&mut self, aid: AttemptId, worker: WorkerId, started_at: Timestamp, now: Timestamp) -> Result<(), Fenced> {
        let a = self.attempts.get_mut(&aid).ok_or(Fenced::UnknownAttempt)?;
        if a.worker_id != worker {
            return Err(Fenced::WrongWorker);
        }
        if a.state != AttemptState::Assigned {
            return Err(Fenced::BadState);
        }
        a.state = AttemptState::Running;
        a.started_at = Some(started_at);
        self.out.attempts.push(a.clone());
        let a = a.clone();
        let Some(job_id) = self.current_job_of(&a) else {
            self.out.outbound.push(Outbound::Cancel { worker, attempt: aid, reason: "stale" });
            return Err(Fenced::NotCurrent);
        };
        let job = self.jobs.get_mut(&job_id).ok_or(Fenced::NotCurrent)?;
        if job.state == JobState::Scheduled {
            move_job(job, JobState::Running, Actor::Worker, None, now, &mut self.books);
            job.started_at = Some(started_at);
        }
        self.touch(job_id);
        let _ = now;
        Ok(())
    }

    /// The worker refused the attempt: the job goes back to pending (counted as a lost requeue).
    pub fn rejected(&mut self, aid: AttemptId, worker: WorkerId, now: Timestamp) -> Result<(), Fenced> {
        let a = self.attempts.get(&aid).ok_or(Fenced::UnknownAttempt)?;
        if a.worker_id != worker {
            return Err(Fenced::WrongWorker);
        }
        if a.state != AttemptState::Assigned {
            return Err(Fenced::BadState);
        }
        self.end_attempt_without_result(aid, AttemptState::Rejected, FailureReason::Rejected, now);
        Ok(())
    }

    /// The worker reported how the attempt ended. Always acknowledged, even when fenced,
    /// so the worker stops re-sending it.
    pub fn finish(&mut self, aid: AttemptId, worker: WorkerId, r: AttemptResult, now: Timestamp) -> Result<(), Fenced> {
        self.out.outbound.push(Outbound::Ack { worker, attempt: aid });
        let a = self.attempts.get(&aid).ok_or(Fenced::UnknownAttempt)?;
        if a.worker_id != worker {
            return Err(Fenced::WrongWorker);
        }
        let mut a = self.remove_attempt(&aid).ok_or(Fenced::UnknownAttempt)?;
        // Stopped to make room for a higher-priority job (unless a user cancelled it meanwhile).
        let preempted =
            self.preempting.contains(&aid) && r.outcome == Outcome::Cancelled && self.jobs.get(&a.job_id).is_some_and(|j| j.cancel_requested_at.is_none());
        self.release_slot(&a, now);
        let to = match r.outcome {
            _ if preempted => AttemptState::Preempted,
            Outcome::Succeeded => AttemptState::Succeeded,
            Outcome::Failed => AttemptState::Failed,
            Outcome::TimedOut => AttemptState::TimedOut,
            Outcome::Cancelled => AttemptState::Cancelled,
        };
        a.started_at = a.started_at.or(Some(r.started_at));
        a.state = to;
        a.finished_at = Some(r.finished_at);
        a.exit_code = r.exit_code;
        a.signal = r.signal;
        a.failure_reason = if preempted { Some(FailureReason::Preempted) } else { r.failure_reason };
        a.cpu_time_ms = r.cpu_time_ms;
        a.max_rss_mb = r.max_rss_mb;
        a.log_bytes = r.log_bytes;
        a.log_truncated = r.log_truncated;
        self.bill(&mut a, r.finished_at);
        self.out.attempts.push(a.clone());
        if r.outcome == Outcome::Succeeded
            && let Some(job) = self.jobs.get(&a.job_id)
        {
            let ms = r.finished_at.since(r.started_at).as_millis() as u64;
            if let Some(recent) = self.history.get_mut(&job.tenant).and_then(|m| m.get_mut(job.spec.name.as_str())) {
                recent.record(ms);
            } else {
                if self.history_keys >= DURATION_KEYS {
                    self.history.clear();
                    self.history_keys = 0;
                }
                self.history_keys += 1;
                self.history.entry(job.tenant.clone()).or_default().entry(job.spec.name.clone()).or_default().record(ms);
            }
        }

        let Some(job_id) = self.current_job_of(&a) else { return Err(Fenced::NotCurrent) };
        let cfg_backoff = (self.cfg.retry_backoff, self.cfg.retry_backoff_max);
        let job = self.jobs.get_mut(&job_id).ok_or(Fenced::NotCurrent)?;
        let ev = &mut self.books;
        if job.state == JobState::Scheduled {
            move_job(job, JobState::Running, Actor::Worker, None, r.started_at, ev);
            job.started_at = Some(r.started_at);
        }
        job.log_truncated |= r.log_truncated;
        if preempted {
            // Back in the queue, its retries untouched.
            move_job(job, JobState::Pending, Actor::Scheduler, Some("preempted"), now, ev);
            job.current_attempt = None;
            job.worker_id = None;
            self.queue.push(&job.tenant, key_of(job), now);
            self.touch(job_id);
            return Ok(());
        }
        job.exit_code = r.exit_code;
        job.finished_at = Some(r.finished_at);
        match r.outcome {
            Outcome::Succeeded => move_job(job, JobState::Succeeded, Actor::Worker, None, now, ev),
            Outcome::TimedOut => {
                job.failure_reason = Some(FailureReason::Timeout);
                move_job(job, JobState::TimedOut, Actor::Worker, Some("timeout"), now, ev);
            }
            Outcome::Cancelled => {
                job.failure_reason = Some(FailureReason::Cancelled);
                move_job(job, JobState::Cancelled, Actor::Worker, Some("cancelled"), now, ev);
            }
            Outcome::Failed => {
                let reason = r.failure_reason.unwrap_or(FailureReason::NonzeroExit);
                job.failure_reason = Some(reason);
                move_job(job, JobState::Failed, Actor::Worker, Some(reason.as_str()), now, ev);
                schedule_retry(job, cfg_backoff, now, &mut self.retry_wait);
            }
        }
        self.touch(job_id);
        Ok(())
    }

    /// Ends a live attempt that will never report (lost, ack timeout, rejected) and requeues its job.
    fn end_attempt_without_result(&mut self, aid: AttemptId, state: AttemptState, reason: FailureReason, now: Timestamp) {
        let Some(mut a) = self.remove_attempt(&aid) else { return };
        self.release_slot(&a, now);
        debug_assert!(a.state.can_become(state), "illegal attempt transition {} → {state}", a.state);
        a.state = state;
        a.finished_at = Some(now);
        a.failure_reason = Some(reason);
        // A lost attempt is billed up to its worker's last sign of life.
        let end = self.workers.get(&a.worker_id).map_or(now, |w| w.last_heartbeat_at.min(now));
        self.bill(&mut a, end);
        self.out.attempts.push(a.clone());
        let Some(job_id) = self.current_job_of(&a) else { return };
        let max_requeues = self.cfg.max_lost_requeues;
        let backoff = (self.cfg.retry_backoff, self.cfg.retry_backoff_max);
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        if job.lost_requeues < max_requeues {
            job.lost_requeues += 1;
            move_job(job, JobState::Pending, Actor::Scheduler, Some(reason.as_str()), now, &mut self.books);
            job.worker_id = None;
            self.queue.push(&job.tenant, key_of(job), now);
        } else {
            // Requeues used up (SPEC §3.1 `running → failed`; a job still `scheduled` fails the same way).
            job.failure_reason = Some(reason);
            move_job(job, JobState::Failed, Actor::Scheduler, Some(reason.as_str()), now, &mut self.books);
            schedule_retry(job, backoff, now, &mut self.retry_wait);
            job.finished_at = Some(now);
        }
        self.touch(job_id);
    }

    /// Prices an ended attempt that started (one that never started is free) from where its
    /// accrual stopped (or its start) to `end`, at the rate versions in force.
    fn bill(&mut self, a: &mut Attempt, end: Timestamp) {
        self.bill_part(a, end);
    }

    /// Bills `a`'s time from where it was billed up to `to` (nothing if that is not later).
    pub(super) fn bill_part(&mut self, a: &mut Attempt, to: Timestamp) {
        let Some(start) = a.started_at else { return };
        let from = a.accrued_to.unwrap_or(start);
        if a.accrued_to.is_some() && to <= from {
            return;
        }
        let job = self.jobs.get(&a.job_id);
        let own;
        let versions = match self.cfg.pool_rates.get(&a.pool_id) {
            Some(o) => {
                own = o.versions(&self.cfg.rates);
                own.as_slice()
            }
            None => self.cfg.rates.as_slice(),
        };
        let cost = AttemptCost {
            attempt_id: a.id,
            job_id: a.job_id,
            tenant: job.map(|j| j.tenant.clone()),
            job_name: job.map(|j| j.spec.name.clone()),
            pool_id: a.pool_id.clone(),
            resources: a.resources,
            segments: crate::cost::price_part(start, from, to.max(from), &a.resources, versions),
            keep_record: self.cfg.keep_cost_records,
            by_pool: self.cfg.cost_by_pool,
        };
        a.billed_seconds += cost.billed_seconds();
        a.cost_micros += cost.cost_micros();
        a.accrued_to = Some(to.max(from));
        self.out.costs.push(cost);
    }

    pub(super) fn lose_attempt(&mut self, aid: AttemptId, reason: FailureReason, now: Timestamp) {
        self.end_attempt_without_result(aid, AttemptState::Lost, reason, now);
    }
}
