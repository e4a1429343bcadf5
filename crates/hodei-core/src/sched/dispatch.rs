//! Dispatch (SPEC §2.5, §2.6): each round takes jobs in fair-share order and places them on the
//! worker the placement chain ranks first.

use super::*;

impl Scheduler {
    /// Places as many pending jobs as fit. Tenants are offered each dispatch in fair-queuing
    /// order; a tenant dispatches its first job that its quota allows and a worker can take
    /// (so a large head job does not block smaller ones behind it). `mint` gives attempt ids.
    /// Returns how many were placed.
    pub fn schedule(&mut self, now: Timestamp, mint: &mut dyn FnMut() -> AttemptId) -> usize {
        for t in std::mem::take(&mut self.books.freed) {
            self.unpark(&t, now);
        }
        self.capacity = self
            .workers
            .values()
            .filter(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy))
            .fold(Resources::ZERO, |acc, w| acc.checked_add(&w.resources).unwrap_or(acc));
        let mut placed = self.dispatch_escalated(now, mint) + self.dispatch_reserved(now, mint);
        // Tenants with nothing a worker can take now; capacity only shrinks within one call.
        let mut stuck: IdSet<TenantId> = IdSet::default();
        let mut budget = SCAN_PER_CALL;
        while budget > 0 && !self.queue.is_empty() && self.workers.values().any(|w| w.can_take(&Resources::ZERO)) {
            let mut park = Vec::new();
            let mut to_reserve = Vec::new();
            let mut pick = None;
            for t in self.queue.tenants_in_turn() {
                if stuck.contains(t) {
                    continue;
                }
                let policy = self.tenants.get(t).unwrap_or(&self.cfg.default_policy);
                let usage = self.books.usage.get(t).copied().unwrap_or_default();
                let mut quota_blocked = true;
                for k in self.queue.next_candidates(t, SCAN_PER_TENANT) {
                    budget = budget.saturating_sub(1);
                    let Some(job) = self.jobs.get(&k.id) else { continue };
                    if self.books.array_full(job) {
                        // The array's own limit: like a quota, it parks the tenant until a job ends.
                        continue;
                    }
                    match quota::may_dispatch(policy, &self.cfg.quota_rules, &usage, &job.resources(), now) {
                        Err(b) if b.limit == Limit::MaxConcurrentJobs => break,
                        Err(_) => continue,
                        Ok(over) => {
                            quota_blocked = false;
                            if let Some(w) = self.best_worker(job, now) {
                                // Only looks that place nothing count against the budget.
                                budget += 1;
                                pick = Some((t.clone(), k.clone(), w, over));
                                break;
                            }
                            if self.may_reserve(job, now) {
                                to_reserve.push(k.id);
                            }
                        }
                    }
                }
                if pick.is_some() || budget == 0 {
                    break;
                }
                if quota_blocked {
                    park.push(t.clone());
                } else {
                    stuck.insert(t.clone());
                }
            }
            for t in &park {
                self.queue.park(t);
                self.books.sla.limit_reached(t, now);
            }
            for id in to_reserve {
                self.maybe_reserve(id, now);
            }
            let Some((tenant, key, worker, over)) = pick else { break };
            let cost = self.jobs.get(&key.id).map_or(0, |job| self.cost(job));
            self.queue.dispatch(&tenant, &key, cost, now);
            if let Some(b) = over {
                self.out.quota_violations.push((tenant, b.limit));
            }
            self.assign(key.id, worker, mint(), now);
            placed += 1;
        }
        self.preempt(now);
        placed
    }

    /// A tenant may dispatch again: back in the fair queue, its limit clock stops.
    pub(super) fn unpark(&mut self, t: &TenantId, now: Timestamp) {
        self.queue.unpark(t);
        self.books.sla.limit_left(t, now);
    }

    /// SLA escalation (SPEC §2.5): waiting jobs in `critical` or `breached` go first, by
    /// deadline, when their tenant's quota allows and a worker can take them. Their tenant's
    /// tag is charged as for any dispatch.
    fn dispatch_escalated(&mut self, now: Timestamp, mint: &mut dyn FnMut() -> AttemptId) -> usize {
        if self.books.sla.escalated.is_empty() || !self.workers.values().any(|w| w.can_take(&Resources::ZERO)) {
            return 0;
        }
        let candidates: Vec<JobId> = self.books.sla.escalated.iter().map(|(_, id)| *id).take(SCAN_PER_TENANT).collect();
        let mut placed = 0;
        // Tenants out of concurrency in this round: their other jobs are not looked at.
        let mut blocked: IdSet<TenantId> = IdSet::default();
        for id in candidates {
            let Some(job) = self.jobs.get(&id).filter(|j| j.state == JobState::Pending && !blocked.contains(&j.tenant) && !self.books.array_full(j)) else {
                continue;
            };
            let policy = self.tenants.get(&job.tenant).unwrap_or(&self.cfg.default_policy);
            let usage = self.books.usage.get(&job.tenant).copied().unwrap_or_default();
            let over = match quota::may_dispatch(policy, &self.cfg.quota_rules, &usage, &job.resources(), now) {
                Ok(over) => over,
                Err(b) => {
                    if b.limit == Limit::MaxConcurrentJobs {
                        blocked.insert(job.tenant.clone());
                    }
                    continue;
                }
            };
            let Some(worker) = self.best_worker(job, now) else { continue };
            let (tenant, key, cost) = (job.tenant.clone(), key_of(job), self.cost(job));
            self.queue.dispatch(&tenant, &key, cost, now);
            if let Some(b) = over {
                self.out.quota_violations.push((tenant, b.limit));
            }
            self.assign(id, worker, mint(), now);
            placed += 1;
        }
        placed
    }

    /// The worker for `job` now: those that pass the placement chain (and backfill's
    /// reservations), ranked by `placement::rank`.
    pub(super) fn best_worker(&self, job: &Job, now: Timestamp) -> Option<WorkerId> {
        let req = job.resources();
        self.workers
            .values()
            .filter(|w| crate::placement::fits_now(w, &job.tenant, &job.spec, &req).is_ok())
            .filter(|w| self.reserved_workers.is_empty() || self.reservation_allows(w, job, now))
            .min_by_key(|w| crate::placement::rank(w, &req))
            .map(|w| w.id)
    }

    pub(super) fn assign(&mut self, job_id: JobId, worker_id: WorkerId, attempt_id: AttemptId, now: Timestamp) {
        let (Some(job), Some(w)) = (self.jobs.get_mut(&job_id), self.workers.get_mut(&worker_id)) else {
            debug_assert!(false, "assign of unknown job or worker");
            return;
        };
        let req = job.resources();
        move_job(job, JobState::Scheduled, Actor::Scheduler, None, now, &mut self.books);
        job.attempt_count += 1;
        job.current_attempt = Some(attempt_id);
        job.scheduled_at = Some(now);
        job.pool_id = Some(w.pool_id.clone());
        job.worker_id = Some(worker_id);
        job.cancel_requested_at = None;
        let attempt = Attempt {
            id: attempt_id,
            job_id,
            number: job.attempt_count,
            worker_id,
            pool_id: w.pool_id.clone(),
            resources: req,
            state: AttemptState::Assigned,
            assigned_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            failure_reason: None,
            cpu_time_ms: 0,
            max_rss_mb: 0,
            log_bytes: 0,
            log_truncated: false,
            billed_seconds: 0,
            cost_micros: 0,
            accrued_to: None,
        };
        w.allocated = w.allocated.checked_add(&req).unwrap_or(w.resources);
        w.slots_used += 1;
        if w.state == WorkerState::Idle {
            w.state = WorkerState::Busy;
            w.idle_since = None;
        }
        self.dirty_workers.insert(worker_id);
        self.out.attempts.push(attempt.clone());
        self.insert_attempt(attempt);
        self.out.outbound.push(Outbound::Assign { worker: worker_id, attempt: attempt_id, job: job_id });
        self.touch(job_id);
    }
}
