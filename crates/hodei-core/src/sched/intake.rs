//! Intake (SPEC §2.4, §2.7): tenants' policies and burst grants, admission under quota, and
//! the commands on jobs — submit, cancel, retry, hold, release.

use super::*;

impl Scheduler {
    pub fn policy(&self, tenant: &TenantId) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.cfg.default_policy)
    }

    /// The tenant's fair-queuing tags, while it has queued jobs or has had some, with its
    /// weight as set (the queue holds it × the budget factor).
    pub fn fair_share(&self, tenant: &TenantId) -> Option<crate::queue::FlowStatus> {
        self.queue.status(tenant).map(|f| crate::queue::FlowStatus { weight: self.policy(tenant).weight, ..f })
    }

    /// The per-mille factor on the tenant's fair-share weight from its budgets (1000: none).
    pub fn budget_factor(&self, tenant: &TenantId) -> u32 {
        self.budget_factor.get(tenant).copied().unwrap_or(crate::budget::FULL_WEIGHT)
    }

    /// The weight fair share works with: the tenant's × its budget factor, in thousandths
    /// (job costs are in thousandths too, so an undemoted tenant is charged as ever).
    pub(super) fn share_weight(&self, tenant: &TenantId) -> u32 {
        self.policy(tenant).weight.saturating_mul(self.budget_factor(tenant)).max(1)
    }

    /// Budget-aware fair share (SPEC §2.3): the tenant's weight counts `permille`/1000 of
    /// itself (clamped to 100..=1000) until told otherwise.
    pub fn set_budget_factor(&mut self, tenant: &TenantId, permille: u32) {
        let f = permille.clamp(100, crate::budget::FULL_WEIGHT);
        if f == crate::budget::FULL_WEIGHT {
            self.budget_factor.remove(tenant);
        } else {
            self.budget_factor.insert(tenant.clone(), f);
        }
        let w = self.share_weight(tenant);
        self.queue.set_weight(tenant, w);
    }

    pub fn virtual_time(&self) -> u128 {
        self.queue.virtual_time()
    }

    /// A tenant's pending jobs in dispatch order.
    pub fn queued_jobs<'a>(&'a self, tenant: &TenantId) -> impl Iterator<Item = &'a JobKey> + 'a {
        self.queue.jobs_of(tenant)
    }

    pub fn usage(&self, tenant: &TenantId) -> Usage {
        self.books.usage.get(tenant).copied().unwrap_or_default()
    }

    /// Waiting jobs (SLA clock running) per tenant, level and status.
    pub fn sla_waiting(&self) -> &BTreeMap<(TenantId, SlaLevel, crate::SlaStatus), u32> {
        &self.books.sla.waiting
    }

    /// A job's queue wait so far (final once its first attempt started), in ms.
    pub fn sla_wait_ms(&self, job: &Job, now: Timestamp) -> u64 {
        self.books.sla.wait_ms(job, now)
    }

    /// The instant a waiting job reaches its SLA level's maximum wait if it keeps waiting.
    pub fn sla_deadline(&self, job: &Job, now: Timestamp) -> Timestamp {
        self.books.sla.deadline(job, now)
    }

    /// Tenants with a policy or with live jobs.
    pub fn tenant_ids(&self) -> impl Iterator<Item = &TenantId> {
        let extra = self.books.usage.keys().filter(|t| !self.tenants.contains_key(*t));
        self.tenants.keys().chain(extra)
    }

    /// Sets what the scheduler knows of a tenant (an older version than the one held is
    /// ignored). Held jobs whose blocker this clears go back to pending; a suspended tenant's
    /// pending jobs are held, and released when it is active again.
    pub fn set_tenant(&mut self, tenant: &TenantId, mut policy: TenantPolicy, now: Timestamp) {
        let old = self.tenants.get(tenant);
        if old.is_some_and(|p| p.version > policy.version) {
            return;
        }
        if policy.grant.is_none() {
            // Tenant records carry no grant; it comes from the burst session (`set_burst`).
            policy.grant = old.and_then(|p| p.grant);
        }
        self.tenants.insert(tenant.clone(), policy);
        let w = self.share_weight(tenant);
        self.queue.set_weight(tenant, w);
        self.reconsider_tenant(tenant, now);
    }

    /// A tenant's burst session was opened or changed: its grant (if active) adds to the quota.
    /// Updates arrive in any order; a later session, then a later version, wins.
    pub fn set_burst(&mut self, session: &BurstSession, now: Timestamp) {
        let tenant = &session.tenant_id;
        if self.burst_stamps.get(tenant).is_some_and(|s| *s >= session.stamp()) {
            return;
        }
        self.burst_stamps.insert(tenant.clone(), session.stamp());
        if session.state == crate::BurstState::PendingApproval {
            self.burst_pending.insert(tenant.clone());
        } else {
            self.burst_pending.remove(tenant);
        }
        let mut policy = self.policy(tenant).clone();
        policy.grant = session.grant();
        self.tenants.insert(tenant.clone(), policy);
        self.reconsider_tenant(tenant, now);
    }

    /// Re-evaluates the holds of a tenant's queued jobs after its policy changed.
    fn reconsider_tenant(&mut self, tenant: &TenantId, now: Timestamp) {
        self.unpark(tenant, now);
        let mine: Vec<JobId> =
            self.jobs.values().filter(|j| j.tenant == *tenant && matches!(j.state, JobState::Pending | JobState::Held)).map(|j| j.id).collect();
        for id in mine {
            self.reconsider_hold(id, now);
        }
    }

    /// Holds or releases one queued job of a tenant whose policy changed: suspension holds
    /// pending jobs; a job alone over the ceiling (quota lowered, burst over) is held
    /// `quota_ceiling` until the quota or a burst fits it.
    pub(super) fn reconsider_hold(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let policy = self.tenants.get(&job.tenant).unwrap_or(&self.cfg.default_policy);
        let suspended = policy.suspended;
        let spent = self.budget_exhausted.contains(&job.tenant);
        let fits = !self.cfg.quota_rules.enabled || quota::fits_ceiling(policy, &job.resources(), now);
        let held_by_tenant =
            job.state == JobState::Held && matches!(job.state_reason.as_deref(), Some("tenant_suspended" | "budget_exhausted" | "quota_ceiling"));
        let reason = if suspended {
            Some("tenant_suspended")
        } else if spent {
            Some("budget_exhausted")
        } else if !fits {
            Some("quota_ceiling")
        } else {
            None
        };
        match reason {
            None if held_by_tenant => {
                move_job(job, JobState::Pending, Actor::Scheduler, Some("released"), now, &mut self.books);
                self.queue.push(&job.tenant, key_of(job), now);
                self.touch(id);
            }
            Some(reason) if job.state == JobState::Pending => {
                self.queue.remove(&job.tenant, &key_of(job));
                move_job(job, JobState::Held, Actor::Scheduler, Some(reason), now, &mut self.books);
                self.touch(id);
            }
            _ => {}
        }
    }

    /// Expected run time of a job (SPEC §2.5): its hint, else the mean of the last successful
    /// runs of (tenant, name), else the default; never more than its timeout.
    pub fn expected_duration(&self, job: &Job) -> Duration {
        let d = job.spec.expected_duration.unwrap_or_else(|| {
            self.history
                .get(&job.tenant)
                .and_then(|m| m.get(job.spec.name.as_str()))
                .and_then(Recent::mean)
                .map_or(self.cfg.default_expected_duration, Duration::from_millis)
        });
        d.min(job.spec.timeout)
    }

    /// Cost of a job in its tenant's tags: dominant share of live capacity (parts per
    /// million, per resource) × expected milliseconds.
    pub(super) fn cost(&self, job: &Job) -> u128 {
        let req = job.resources();
        let share = |r: u32, cap: u32| {
            if r == 0 {
                0
            } else if cap == 0 {
                1_000_000
            } else {
                (u128::from(r) * 1_000_000).div_ceil(u128::from(cap))
            }
        };
        let c = &self.capacity;
        let dominant = share(req.cpu_m.0, c.cpu_m.0).max(share(req.memory_mb.0, c.memory_mb.0)).max(share(req.gpu.0, c.gpu.0)).max(1);
        // In thousandths, as the weights are (see `share_weight`).
        dominant * self.expected_duration(job).as_millis().max(1) * 1000
    }

    // ---- jobs -----------------------------------------------------------------------------

    /// Decides whether a job (validated, given its id) is admitted under its tenant's quota
    /// (SPEC §2.4), without changing anything.
    pub fn admission(&self, job: &Job, now: Timestamp) -> Result<Admission, Rejection> {
        let a = quota::admit(self.policy(&job.tenant), &self.cfg.quota_rules, &self.usage(&job.tenant), &job.resources(), now)?;
        Ok(match a {
            Admission::Pending | Admission::PendingWarned(_) if self.budget_exhausted.contains(&job.tenant) => Admission::HeldBudget,
            a => a,
        })
    }

    /// Admits and accepts a newly submitted job, or refuses it by quota (nothing changes).
    pub fn submit(&mut self, mut job: Job, now: Timestamp) -> Result<Admission, Rejection> {
        let a = self.admission(&job, now)?;
        apply_admission(&mut job, &a);
        self.insert_new(job, now);
        Ok(a)
    }

    /// Submits jobs in order. `atomic`: all are admitted or none is (the errors say which).
    pub fn submit_all(&mut self, jobs: Vec<Job>, atomic: bool, now: Timestamp) -> Vec<Result<Admission, Rejection>> {
        self.submit_all_in_parts(jobs, atomic, now, usize::MAX, |_| {})
    }

    /// As `submit_all`, handing the changes so far to `part` after every `part_size` jobs (so
    /// the caller can start writing a large submit while the rest is being taken). What is
    /// handed out is gone from the next `take_changes`.
    pub fn submit_all_in_parts(
        &mut self,
        jobs: Vec<Job>,
        atomic: bool,
        now: Timestamp,
        part_size: usize,
        part: impl FnMut(Changes),
    ) -> Vec<Result<Admission, Rejection>> {
        if atomic && let Some(refused) = self.refusals(jobs.iter(), now) {
            return refused;
        }
        let n = jobs.len();
        self.take_in_parts(n, jobs.into_iter(), now, part_size, part)
    }

    /// Submits the members of `template`'s array (one job per index, each a copy of
    /// `template` with an id from `mint`), all or none, handing the changes to `part` as
    /// `submit_all_in_parts` does. The members are made only once all are admitted.
    pub fn submit_array_in_parts(
        &mut self,
        template: &Job,
        array: ArrayId,
        mut mint: impl FnMut() -> JobId,
        now: Timestamp,
        part_size: usize,
        part: impl FnMut(Changes),
    ) -> Vec<Result<Admission, Rejection>> {
        let Some(spec) = template.spec.array else { return Vec::new() };
        let n = spec.count() as usize;
        if let Some(refused) = self.refusals(std::iter::repeat_n(template, n), now) {
            return refused;
        }
        let members = spec.indices().map(|i| {
            let mut j = template.clone();
            j.id = mint();
            j.array = Some((array, i));
            j
        });
        self.take_in_parts(n, members, now, part_size, part)
    }

    /// Admission of `jobs` in order, as if each before was admitted: None when all would be.
    fn refusals<'a>(&self, jobs: impl Iterator<Item = &'a Job>, now: Timestamp) -> Option<Vec<Result<Admission, Rejection>>> {
        let mut scratch: IdMap<TenantId, Usage> = IdMap::default();
        let mut dry = Vec::with_capacity(jobs.size_hint().0);
        for j in jobs {
            let u = scratch.entry(j.tenant.clone()).or_insert_with(|| self.usage(&j.tenant));
            let a = quota::admit(self.policy(&j.tenant), &self.cfg.quota_rules, u, &j.resources(), now);
            if let Ok(a) = &a {
                let held = j.spec.hold || matches!(a, Admission::HeldCeiling(_) | Admission::HeldBudget);
                u.queued_jobs += 1;
                if !held {
                    u.pending_jobs += 1;
                    u.pending.add(&j.resources());
                }
            }
            dry.push(a);
        }
        dry.iter().any(Result::is_err).then_some(dry)
    }

    fn take_in_parts(
        &mut self,
        n: usize,
        jobs: impl Iterator<Item = Job>,
        now: Timestamp,
        part_size: usize,
        mut part: impl FnMut(Changes),
    ) -> Vec<Result<Admission, Rejection>> {
        // One growth of the job table for a large submit, not a rehash every doubling.
        self.jobs.reserve(n);
        let mut out = Vec::with_capacity(n);
        for (i, j) in jobs.enumerate() {
            out.push(self.submit(j, now));
            if (i + 1) % part_size == 0 && i + 1 < n {
                part(self.take_changes());
            }
        }
        out
    }

    fn insert_new(&mut self, mut job: Job, now: Timestamp) {
        self.intern(&mut job);
        // Held for its dependencies first; decided below, once it is in.
        let depends = !job.spec.depends_on.is_empty();
        if depends {
            job.state = JobState::Held;
            job.state_reason = Some("dependency_pending".to_owned());
        }
        self.books.events.push(JobEvent {
            job_id: job.id,
            at: now,
            from: None,
            to: job.state,
            actor: Actor::of_submitter(job.spec.submitted_by),
            reason: job.state_reason.clone(),
        });
        self.books.count(&job, job.state, true);
        self.books.sla.enter(&mut job, now);
        if job.state == JobState::Pending {
            self.queue.push(&job.tenant, key_of(&job), now);
            self.unpark(&job.tenant, now);
        }
        let id = job.id;
        self.new_jobs.insert(id);
        self.touch(id);
        self.jobs.insert(id, Box::new(job));
        if depends {
            self.watch_dependencies(id, now);
        }
    }

    /// Cancels a live job on `by`'s request.
    pub fn cancel(&mut self, id: JobId, by: Actor, now: Timestamp) -> Result<CancelOutcome, CommandError> {
        let job = self.jobs.get_mut(&id).ok_or(CommandError::NotLive)?;
        let outcome = match job.state {
            JobState::Pending | JobState::Held => {
                if job.state == JobState::Pending {
                    self.queue.remove(&job.tenant, &key_of(job));
                }
                move_job(job, JobState::Cancelled, by, Some("cancelled"), now, &mut self.books);
                job.finished_at = Some(now);
                CancelOutcome::Cancelled
            }
            JobState::Scheduled => {
                // The attempt keeps its slot until the worker confirms or is lost; the job ends now.
                move_job(job, JobState::Cancelled, by, Some("cancelled"), now, &mut self.books);
                job.finished_at = Some(now);
                job.cancel_requested_at = Some(now);
                if let Some(a) = job.current_attempt.and_then(|a| self.attempts.get(&a)) {
                    self.out.outbound.push(Outbound::Cancel { worker: a.worker_id, attempt: a.id, reason: "cancelled" });
                }
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                if job.cancel_requested_at.is_none() {
                    job.cancel_requested_at = Some(now);
                }
                if let Some(a) = job.current_attempt.and_then(|a| self.attempts.get(&a)) {
                    self.out.outbound.push(Outbound::Cancel { worker: a.worker_id, attempt: a.id, reason: "cancelled" });
                }
                CancelOutcome::Requested
            }
            JobState::Failed if job.next_retry_at.is_some() => {
                // Waiting for an automatic retry: stop retrying; the failure stands.
                self.retry_wait.remove(&(job.next_retry_at.unwrap_or_default(), id));
                job.next_retry_at = None;
                CancelOutcome::Cancelled
            }
            state => return Err(CommandError::InvalidState { state, action: "cancel" }),
        };
        self.touch(id);
        Ok(outcome)
    }

    /// Manual retry of an ended job (loaded from the store by the caller): back to `pending`
    /// with its retry budget reset.
    pub fn retry(&mut self, mut job: Job, by: Actor, now: Timestamp) -> Result<(), CommandError> {
        if let Some(live) = self.jobs.get(&job.id) {
            job = Job::clone(live);
        }
        self.intern(&mut job);
        let waiting_retry = job.state == JobState::Failed && job.next_retry_at.is_some();
        if !matches!(job.state, JobState::Failed | JobState::Cancelled | JobState::TimedOut) {
            return Err(CommandError::InvalidState { state: job.state, action: "retry" });
        }
        if waiting_retry {
            self.retry_wait.remove(&(job.next_retry_at.unwrap_or_default(), job.id));
        }
        move_job(&mut job, JobState::Pending, by, Some("manual_retry"), now, &mut self.books);
        job.retries_left = job.spec.max_retries;
        job.next_retry_at = None;
        job.cancel_requested_at = None;
        job.lost_requeues = 0;
        job.eligible_at = now;
        job.exit_code = None;
        job.failure_reason = None;
        job.finished_at = None;
        let depends = !job.spec.depends_on.is_empty();
        if depends {
            // Run again only as its dependencies allow: held for them (decided at once when
            // they have all ended).
            move_job(&mut job, JobState::Held, Actor::Scheduler, Some("dependency_pending"), now, &mut self.books);
        } else {
            self.queue.push(&job.tenant, key_of(&job), now);
        }
        self.touch(job.id);
        let id = job.id;
        self.jobs.insert(id, Box::new(job));
        if depends {
            self.watch_dependencies(id, now);
        } else {
            self.reconsider_hold(id, now);
        }
        Ok(())
    }

    /// `pending → held` (user hold).
    pub fn hold(&mut self, id: JobId, by: Actor, now: Timestamp) -> Result<(), CommandError> {
        let job = self.jobs.get_mut(&id).ok_or(CommandError::NotLive)?;
        if job.state != JobState::Pending {
            return Err(CommandError::InvalidState { state: job.state, action: "hold" });
        }
        self.queue.remove(&job.tenant, &key_of(job));
        move_job(job, JobState::Held, by, Some("user_hold"), now, &mut self.books);
        self.touch(id);
        Ok(())
    }

    /// `held → pending` (release).
    pub fn release(&mut self, id: JobId, by: Actor, now: Timestamp) -> Result<(), CommandError> {
        let job = self.jobs.get_mut(&id).ok_or(CommandError::NotLive)?;
        // A job held for its dependencies is queued when they are met, not by hand.
        if job.state == JobState::Held && job.state_reason.as_deref() == Some("dependency_pending") {
            return Err(CommandError::InvalidState { state: job.state, action: "release (it waits for its dependencies; cancel it instead)" });
        }
        if job.state != JobState::Held {
            return Err(CommandError::InvalidState { state: job.state, action: "release" });
        }
        move_job(job, JobState::Pending, by, Some("released"), now, &mut self.books);
        self.queue.push(&job.tenant, key_of(job), now);
        self.touch(id);
        // Still held by its tenant's state (suspension, an exhausted budget) if that holds.
        self.reconsider_hold(id, now);
        Ok(())
    }

    /// Whether `tenant` has spent a budget (SPEC §2.3): while it has, its new and pending jobs
    /// are held `budget_exhausted` (running ones finish); once it has not (a new period, a
    /// larger amount), they are released.
    pub fn set_budget_exhausted(&mut self, tenant: &TenantId, exhausted: bool, now: Timestamp) {
        let changed = if exhausted { self.budget_exhausted.insert(tenant.clone()) } else { self.budget_exhausted.remove(tenant) };
        if changed {
            self.reconsider_tenant(tenant, now);
        }
    }

    pub fn budget_exhausted(&self, tenant: &TenantId) -> bool {
        self.budget_exhausted.contains(tenant)
    }
}
