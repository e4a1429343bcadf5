//! The scheduler: live jobs, workers and attempts, and every decision about them —
//! assign, requeue, time out, retry. Effects come back as [`Changes`] for the server to
//! persist (in one transaction) and then carry out (send to workers).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::burst::BurstSession;
use crate::idempotency::{IdempotencyIndex, IdempotencyRecord, IdempotencyRequest, Lookup};
use crate::ids::{ArrayId, AttemptId, BurstId, IdMap, IdSet, JobId, PoolId, TenantId, WorkerId};
use crate::job::{Actor, Attempt, AttemptState, FailureReason, Job, JobEvent, JobState, SlaLevel};
use crate::queue::{JobKey, Queue};
use crate::quota::{self, Admission, Limit, QuotaRules, Rejection, TenantPolicy, Usage};
use crate::sla_tally::SlaOutcome;
use crate::time::Timestamp;
use crate::units::{Resources, Totals};
use crate::worker::{Worker, WorkerState};

mod backfill;
mod explain;
mod pools;
mod preempt;
mod sla;
mod status;
pub use backfill::{BackfillRules, Reservation};
pub use explain::{Blocker, CandidatePool, Explanation, MAX_SIM_JOBS};
pub use pools::{MAX_FORECAST_JOBS, PoolQuery, PoolView};
pub use sla::SlaRules;
pub use status::{QueueStatus, TenantQueueRow};

/// How many jobs of one tenant are looked at per dispatch when the head does not fit anywhere.
const SCAN_PER_TENANT: usize = 64;
/// Most candidate jobs looked at without placing them in one [`Scheduler::schedule`] call.
const SCAN_PER_CALL: usize = 16_384;
/// Successful runs remembered per (tenant, job name) for the expected duration.
const DURATION_HISTORY: usize = 20;
/// Bound on the (tenant, job name) pairs remembered.
const DURATION_KEYS: usize = 100_000;

#[derive(Clone, Debug)]
pub struct SchedConfig {
    pub assign_ack_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub max_lost_requeues: u32,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub kill_grace: Duration,
    /// An offline worker that has not come back for this long is terminated (forgotten).
    pub gc_after: Duration,
    /// Expected run time of a job that gives none and has no history.
    pub default_expected_duration: Duration,
    pub quota_rules: QuotaRules,
    /// Policy of a tenant the server has not described (it should always have).
    pub default_policy: TenantPolicy,
    pub sla: SlaRules,
    pub backfill: BackfillRules,
    /// `scheduler.fair_share.usage_half_life_s`: decayed usage delays a tenant that used much
    /// recently when it becomes backlogged (`None`: off).
    pub usage_half_life: Option<Duration>,
    /// `scheduler.preemption.enabled`.
    pub preemption: bool,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            assign_ack_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(10),
            max_lost_requeues: 3,
            retry_backoff: Duration::from_secs(10),
            retry_backoff_max: Duration::from_secs(600),
            kill_grace: Duration::from_secs(10),
            gc_after: Duration::from_secs(3600),
            default_expected_duration: Duration::from_secs(60),
            quota_rules: QuotaRules::default(),
            default_policy: TenantPolicy::default(),
            sla: SlaRules::default(),
            backfill: BackfillRules::default(),
            usage_half_life: None,
            preemption: false,
        }
    }
}

/// A message the server must send to a worker once the changes are durable.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    Assign {
        worker: WorkerId,
        attempt: AttemptId,
        job: JobId,
    },
    Cancel {
        worker: WorkerId,
        attempt: AttemptId,
        reason: &'static str,
    },
    Ack {
        worker: WorkerId,
        attempt: AttemptId,
    },
    /// The worker was drained and is terminated: its agent stops.
    Drained {
        worker: WorkerId,
    },
}

/// Why a worker cannot be drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainError {
    Unknown,
    /// Offline or terminated: it runs nothing the scheduler could wait for.
    NotLive(WorkerState),
}

/// Everything a batch of decisions changed.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Jobs first seen in this batch (latest snapshot).
    pub new_jobs: Vec<Job>,
    /// Existing jobs that changed (latest snapshot).
    pub jobs: Vec<Job>,
    pub attempts: Vec<Attempt>,
    pub workers: Vec<Worker>,
    pub events: Vec<JobEvent>,
    pub outbound: Vec<Outbound>,
    /// Dispatches over quota that `warn` allowed (`hodei_quota_violations_total`).
    pub quota_violations: Vec<(TenantId, Limit)>,
    /// Jobs whose queue wait passed their SLA level's maximum (`hodei_sla_breaches_total`).
    pub sla_breaches: Vec<(TenantId, SlaLevel)>,
    /// SLA outcomes decided in this batch, added to the stored compliance counts with it.
    pub sla_outcomes: Vec<SlaOutcome>,
    /// Idempotency keys of this batch's submits, stored with their jobs.
    pub idempotency: Vec<IdempotencyRecord>,
    /// Idempotency records created before this instant are forgotten (delete them).
    pub idempotency_expired_before: Option<Timestamp>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.new_jobs.is_empty()
            && self.jobs.is_empty()
            && self.attempts.is_empty()
            && self.workers.is_empty()
            && self.events.is_empty()
            && self.outbound.is_empty()
            && self.quota_violations.is_empty()
            && self.sla_breaches.is_empty()
            && self.sla_outcomes.is_empty()
            && self.idempotency.is_empty()
            && self.idempotency_expired_before.is_none()
    }
}

/// How an attempt ended, as the worker reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub cpu_time_ms: u64,
    pub max_rss_mb: u64,
    pub log_bytes: u64,
    pub log_truncated: bool,
}

impl AttemptResult {
    /// A result the scheduler decides itself (a backstop, a simulated end): no usage figures.
    pub fn decided(outcome: Outcome, exit_code: Option<i32>, failure_reason: Option<FailureReason>, started_at: Timestamp, finished_at: Timestamp) -> Self {
        AttemptResult {
            outcome,
            exit_code,
            signal: None,
            failure_reason,
            started_at,
            finished_at,
            cpu_time_ms: 0,
            max_rss_mb: 0,
            log_bytes: 0,
            log_truncated: false,
        }
    }
}

/// Why a worker message did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("unknown or already finished attempt")]
    UnknownAttempt,
    #[error("attempt belongs to another worker")]
    WrongWorker,
    #[error("attempt is no longer the job's current one")]
    NotCurrent,
    #[error("attempt is not in a state that allows this message")]
    BadState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown worker")]
pub struct UnknownWorker;

/// Outcome of a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job is `cancelled` now.
    Cancelled,
    /// The job is running: its worker was told to kill it; it ends `cancelled` when confirmed.
    Requested,
}

/// A requested move the state machine does not allow (409 `invalid_state`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("job is not live in the scheduler")]
    NotLive,
    #[error("job is {state}; {action} is not allowed")]
    InvalidState { state: JobState, action: &'static str },
}

/// Per-tenant accounting that every job transition updates, with the transition's event.
#[derive(Debug, Default, Clone)]
struct Books {
    events: Vec<JobEvent>,
    usage: IdMap<TenantId, Usage>,
    /// Tenants whose active usage went down since the last dispatch round (to unpark).
    freed: IdSet<TenantId>,
    /// Scheduled or running jobs of each array job with a `max_parallel`.
    array_active: IdMap<ArrayId, u32>,
    sla: sla::SlaBook,
}

impl Books {
    /// Adds (`add`) or removes a job in `state` from its tenant's usage.
    fn count(&mut self, job: &Job, state: JobState, add: bool) {
        self.moved(job, (!add).then_some(state), add.then_some(state));
    }

    /// Moves a job in its tenant's usage from `from` to `to` (either may be none): one lookup.
    fn moved(&mut self, job: &Job, from: Option<JobState>, to: Option<JobState>) {
        let res = job.resources();
        if !self.usage.contains_key(&job.tenant) {
            self.usage.insert(job.tenant.clone(), Usage::default());
        }
        let Some(u) = self.usage.get_mut(&job.tenant) else { return };
        let mut freed = false;
        for (state, add) in [(from, false), (to, true)] {
            let Some(state) = state else { continue };
            let jobs = |n: &mut u32| *n = if add { *n + 1 } else { n.saturating_sub(1) };
            let amount = |t: &mut Totals| if add { t.add(&res) } else { t.sub(&res) };
            match state {
                JobState::Scheduled | JobState::Running => {
                    amount(&mut u.active);
                    jobs(&mut u.active_jobs);
                    // Active usage went down (not scheduled → running).
                    freed |= !add && !to.is_some_and(JobState::is_active);
                }
                JobState::Pending => {
                    amount(&mut u.pending);
                    jobs(&mut u.pending_jobs);
                    jobs(&mut u.queued_jobs);
                }
                JobState::Held => jobs(&mut u.queued_jobs),
                _ => {}
            }
        }
        if freed {
            self.freed.insert(job.tenant.clone());
        }
        if let Some((array, _)) = job.array
            && job.spec.array.is_some_and(|a| a.max_parallel.is_some())
        {
            let active = |s: Option<JobState>| s.is_some_and(JobState::is_active);
            match (active(from), active(to)) {
                (false, true) => *self.array_active.entry(array).or_default() += 1,
                (true, false) => {
                    if let Some(n) = self.array_active.get_mut(&array) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.array_active.remove(&array);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The job belongs to an array job already running `max_parallel` jobs.
    fn array_full(&self, job: &Job) -> bool {
        match (job.array, job.spec.array.and_then(|a| a.max_parallel)) {
            (Some((array, _)), Some(max)) => self.array_active.get(&array).is_some_and(|n| *n >= max),
            _ => false,
        }
    }
}

/// Recent successful run times of one (tenant, job name).
#[derive(Debug, Default, Clone)]
struct Recent {
    runs: VecDeque<u64>,
    sum: u64,
}

impl Recent {
    fn record(&mut self, ms: u64) {
        if self.runs.len() == DURATION_HISTORY
            && let Some(old) = self.runs.pop_front()
        {
            self.sum -= old;
        }
        self.runs.push_back(ms);
        self.sum += ms;
    }

    fn mean(&self) -> Option<u64> {
        (!self.runs.is_empty()).then(|| self.sum / self.runs.len() as u64)
    }
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: SchedConfig,
    /// Boxed: a job is ~330 bytes, and a hash table of a million entries has two million
    /// buckets, so inline jobs cost ~700 bytes each in the table alone.
    jobs: IdMap<JobId, Box<Job>>,
    queue: Queue,
    tenants: IdMap<TenantId, TenantPolicy>,
    /// Newest burst session update seen per tenant (session id, version).
    burst_stamps: IdMap<TenantId, (BurstId, i64)>,
    /// Tenants whose newest burst session waits for an admin's approval.
    burst_pending: IdSet<TenantId>,
    books: Books,
    /// Recent successful runs per tenant and job name.
    history: IdMap<TenantId, HashMap<String, Recent>>,
    history_keys: usize,
    /// Total resources of live workers, for the dominant share in a job's cost.
    capacity: Resources,
    retry_wait: BTreeSet<(Timestamp, JobId)>,
    workers: BTreeMap<WorkerId, Worker>,
    /// What the scheduler was told of each pool's placement: its `allowed_tenants` (copied onto
    /// its workers) and its labels (merged into theirs).
    pool_placement: BTreeMap<PoolId, PoolPlacement>,
    /// Attempts holding a slot: assigned or running, including ones fenced off from their job
    /// (cancelled while scheduled) until their worker reports or is lost.
    attempts: IdMap<AttemptId, Attempt>,
    /// The same attempts by worker, so that what one worker runs is found without visiting
    /// every attempt (10 000 running on a few workers). Changed only by `insert_attempt` and
    /// `remove_attempt`.
    on_worker: BTreeMap<WorkerId, IdSet<AttemptId>>,
    new_jobs: IdSet<JobId>,
    dirty_jobs: Vec<JobId>,
    dirty_set: IdSet<JobId>,
    dirty_workers: BTreeSet<WorkerId>,
    /// Backfill reservations by job, and the job holding each reserved worker.
    reservations: BTreeMap<JobId, Reservation>,
    reserved_workers: BTreeMap<WorkerId, JobId>,
    /// Attempts told to stop to make room for a higher-priority job.
    preempting: IdSet<AttemptId>,
    /// Idempotency keys of stored submits, younger than their TTL.
    idempotency: IdempotencyIndex,
    out: Changes,
}

/// A pool's part in placement, as [`Scheduler::set_pool_placement`] is told it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPlacement {
    /// Empty: every tenant's jobs.
    pub allowed_tenants: Vec<TenantId>,
    pub labels: BTreeMap<String, String>,
}

impl From<&crate::tenant::Pool> for PoolPlacement {
    fn from(p: &crate::tenant::Pool) -> Self {
        PoolPlacement { allowed_tenants: p.allowed_tenants.clone(), labels: p.labels.clone() }
    }
}

fn key_of(job: &Job) -> JobKey {
    JobKey {
        priority: job.spec.priority,
        deadline: job.eligible_at.saturating_add(Duration::from_millis(job.spec.sla.default_max_wait_ms() as u64)),
        submitted_at: job.submitted_at,
        id: job.id,
    }
}

fn move_job(job: &mut Job, to: JobState, actor: Actor, reason: Option<&str>, now: Timestamp, books: &mut Books) {
    debug_assert!(job.state.can_become(to), "illegal job transition {} → {to}", job.state);
    books.events.push(JobEvent { job_id: job.id, at: now, from: Some(job.state), to, actor, reason: reason.map(str::to_owned) });
    books.moved(job, Some(job.state), Some(to));
    books.sla.before_move(job, to, now);
    let from = job.state;
    job.state = to;
    job.state_reason = reason.map(str::to_owned);
    books.sla.after_move(job, from, now);
}

/// Sets a newly submitted job's state from its admission.
pub fn apply_admission(job: &mut Job, a: &Admission) {
    match a {
        Admission::Pending => {}
        Admission::PendingWarned(_) => job.warnings.push("quota_exceeded".to_owned()),
        Admission::HeldCeiling(_) if job.state == JobState::Pending => {
            job.state = JobState::Held;
            job.state_reason = Some("quota_ceiling".to_owned());
        }
        Admission::HeldCeiling(_) => {}
    }
}

impl Scheduler {
    pub fn new(cfg: SchedConfig) -> Self {
        let sla = sla::SlaBook::new(cfg.sla);
        let mut queue = Queue::default();
        queue.set_half_life(cfg.usage_half_life);
        Scheduler {
            cfg,
            jobs: IdMap::default(),
            queue,
            tenants: IdMap::default(),
            burst_stamps: IdMap::default(),
            burst_pending: IdSet::default(),
            books: Books { sla, ..Books::default() },
            history: IdMap::default(),
            history_keys: 0,
            capacity: Resources::ZERO,
            retry_wait: BTreeSet::new(),
            workers: BTreeMap::new(),
            pool_placement: BTreeMap::new(),
            attempts: IdMap::default(),
            on_worker: BTreeMap::new(),
            new_jobs: IdSet::default(),
            dirty_jobs: Vec::new(),
            dirty_set: IdSet::default(),
            dirty_workers: BTreeSet::new(),
            reservations: BTreeMap::new(),
            reserved_workers: BTreeMap::new(),
            preempting: IdSet::default(),
            idempotency: IdempotencyIndex::default(),
            out: Changes::default(),
        }
    }

    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id).map(|j| &**j)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values().map(|j| &**j)
    }

    pub fn worker(&self, id: &WorkerId) -> Option<&Worker> {
        self.workers.get(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn attempt(&self, id: &AttemptId) -> Option<&Attempt> {
        self.attempts.get(id)
    }

    pub fn attempts(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.values()
    }

    /// The attempts holding a slot of one worker.
    pub fn attempts_on(&self, worker: WorkerId) -> impl Iterator<Item = &Attempt> {
        self.on_worker.get(&worker).into_iter().flatten().filter_map(|a| self.attempts.get(a))
    }

    fn attempt_ids_on(&self, worker: WorkerId) -> Vec<AttemptId> {
        self.on_worker.get(&worker).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    fn insert_attempt(&mut self, attempt: Attempt) {
        self.on_worker.entry(attempt.worker_id).or_default().insert(attempt.id);
        self.attempts.insert(attempt.id, attempt);
    }

    fn remove_attempt(&mut self, id: &AttemptId) -> Option<Attempt> {
        let a = self.attempts.remove(id)?;
        if let Some(set) = self.on_worker.get_mut(&a.worker_id) {
            set.remove(id);
            if set.is_empty() {
                self.on_worker.remove(&a.worker_id);
            }
        }
        Some(a)
    }

    pub fn live_jobs(&self) -> usize {
        self.jobs.len()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Points a job entering the scheduler at the tenant id the books already hold, so a
    /// tenant's jobs share one copy of its name (less memory, and a name that stays in cache
    /// for the many lookups a dispatch makes by tenant).
    fn intern(&self, job: &mut Job) {
        if let Some((t, _)) = self.books.usage.get_key_value(&job.tenant) {
            job.tenant = t.clone();
        }
    }

    fn touch(&mut self, id: JobId) {
        if self.dirty_set.insert(id) {
            self.dirty_jobs.push(id);
        }
    }

    // ---- recovery -------------------------------------------------------------------------

    /// Makes room for `n` more jobs at once (start-up loads them one by one).
    pub fn reserve_jobs(&mut self, n: usize) {
        self.jobs.reserve(n);
    }

    /// An idempotency record from the store (restart recovery); an expired one is dropped at
    /// the next tick.
    pub fn restore_idempotency(&mut self, r: IdempotencyRecord) {
        self.idempotency.insert(r);
    }

    /// What is remembered of `req` for `tenant` (see [`crate::idempotency`]).
    pub fn idempotency_lookup(&self, tenant: &TenantId, req: &IdempotencyRequest, now: Timestamp) -> Lookup {
        self.idempotency.lookup(tenant, req, now)
    }

    /// Remembers a submit's key; the record is stored with this batch's changes.
    pub fn remember_idempotency(&mut self, r: IdempotencyRecord) {
        self.idempotency.insert(r.clone());
        self.out.idempotency.push(r);
    }

    /// Loads a stored live job at start-up. Records no change.
    pub fn restore_job(&mut self, mut job: Job, now: Timestamp) {
        self.intern(&mut job);
        self.books.count(&job, job.state, true);
        self.books.sla.enter(&mut job, now);
        match job.state {
            JobState::Pending => self.queue.push(&job.tenant, key_of(&job), now),
            JobState::Failed => {
                if let Some(at) = job.next_retry_at {
                    self.retry_wait.insert((at, job.id));
                }
            }
            _ => {}
        }
        self.jobs.insert(job.id, Box::new(job));
    }

    /// Loads a stored worker at start-up. Until it reconnects it is offline-in-waiting:
    /// its lease counts from `now`, so its attempts are lost if it never comes back.
    pub fn restore_worker(&mut self, mut worker: Worker, now: Timestamp) {
        worker.allowed_tenants = self.pool_placement.get(&worker.pool_id).map(|p| p.allowed_tenants.clone()).unwrap_or_default();
        worker.connected = false;
        worker.last_heartbeat_at = now;
        worker.allocated = crate::units::Resources::ZERO;
        worker.slots_used = 0;
        self.workers.insert(worker.id, worker);
    }

    /// Loads a stored live attempt at start-up, after its worker.
    pub fn restore_attempt(&mut self, attempt: Attempt) {
        if let Some(w) = self.workers.get_mut(&attempt.worker_id) {
            w.allocated = w.allocated.checked_add(&attempt.resources).unwrap_or(w.resources);
            w.slots_used += 1;
        }
        self.insert_attempt(attempt);
    }

    // ---- jobs -----------------------------------------------------------------------------

    // ---- tenants --------------------------------------------------------------------------

    pub fn policy(&self, tenant: &TenantId) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.cfg.default_policy)
    }

    /// The tenant's fair-queuing tags, while it has queued jobs or has had some.
    pub fn fair_share(&self, tenant: &TenantId) -> Option<crate::queue::FlowStatus> {
        self.queue.status(tenant)
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
        self.queue.set_weight(tenant, policy.weight);
        self.tenants.insert(tenant.clone(), policy);
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
    fn reconsider_hold(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let policy = self.tenants.get(&job.tenant).unwrap_or(&self.cfg.default_policy);
        let suspended = policy.suspended;
        let fits = !self.cfg.quota_rules.enabled || quota::fits_ceiling(policy, &job.resources(), now);
        let held_by_tenant = job.state == JobState::Held && matches!(job.state_reason.as_deref(), Some("tenant_suspended" | "quota_ceiling"));
        if held_by_tenant && !suspended && fits {
            move_job(job, JobState::Pending, Actor::Scheduler, Some("released"), now, &mut self.books);
            self.queue.push(&job.tenant, key_of(job), now);
            self.touch(id);
        } else if job.state == JobState::Pending && (suspended || !fits) {
            self.queue.remove(&job.tenant, &key_of(job));
            let reason = if suspended { "tenant_suspended" } else { "quota_ceiling" };
            move_job(job, JobState::Held, Actor::Scheduler, Some(reason), now, &mut self.books);
            self.touch(id);
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
    fn cost(&self, job: &Job) -> u128 {
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
        dominant * self.expected_duration(job).as_millis().max(1)
    }

    // ---- jobs -----------------------------------------------------------------------------

    /// Decides whether a job (validated, given its id) is admitted under its tenant's quota
    /// (SPEC §2.4), without changing anything.
    pub fn admission(&self, job: &Job, now: Timestamp) -> Result<Admission, Rejection> {
        quota::admit(self.policy(&job.tenant), &self.cfg.quota_rules, &self.usage(&job.tenant), &job.resources(), now)
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
                let held = j.spec.hold || matches!(a, Admission::HeldCeiling(_));
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
        self.new_jobs.insert(job.id);
        self.touch(job.id);
        self.jobs.insert(job.id, Box::new(job));
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
        self.queue.push(&job.tenant, key_of(&job), now);
        self.touch(job.id);
        self.jobs.insert(job.id, Box::new(job));
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
        if job.state != JobState::Held {
            return Err(CommandError::InvalidState { state: job.state, action: "release" });
        }
        move_job(job, JobState::Pending, by, Some("released"), now, &mut self.books);
        self.queue.push(&job.tenant, key_of(job), now);
        self.touch(id);
        Ok(())
    }

    // ---- workers --------------------------------------------------------------------------

    /// What placement reads of `pool` from now on: whose jobs its workers run (empty: every
    /// tenant's) and the labels they carry besides their own (the pool's value wins; a label
    /// the pool drops is dropped from its workers). Jobs already running there keep running.
    pub fn set_pool_placement(&mut self, pool: &PoolId, placement: PoolPlacement) {
        let old = self.pool_placement.insert(pool.clone(), placement.clone()).unwrap_or_default();
        for w in self.workers.values_mut().filter(|w| w.pool_id == *pool) {
            w.allowed_tenants.clone_from(&placement.allowed_tenants);
            for k in old.labels.keys().filter(|k| !placement.labels.contains_key(*k)) {
                w.labels.remove(k);
            }
            w.labels.extend(placement.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// A worker registered (or re-registered under a new id).
    pub fn register_worker(&mut self, mut worker: Worker, now: Timestamp) {
        worker.allowed_tenants = self.pool_placement.get(&worker.pool_id).map(|p| p.allowed_tenants.clone()).unwrap_or_default();
        worker.state = WorkerState::Registering;
        worker.connected = false;
        worker.allocated = crate::units::Resources::ZERO;
        worker.slots_used = 0;
        worker.last_heartbeat_at = now;
        worker.registered_at = now;
        self.dirty_workers.insert(worker.id);
        self.workers.insert(worker.id, worker);
    }

    /// A worker opened its job stream (first time or after a reconnect) and said which
    /// attempts it is running and which results it has not had acknowledged.
    /// Reconciles (SPEC §5.7): results are applied, attempts it no longer knows are lost,
    /// attempts it runs that are not current are cancelled.
    pub fn connect_worker(
        &mut self,
        id: WorkerId,
        running: &[AttemptId],
        results: Vec<(AttemptId, AttemptResult)>,
        now: Timestamp,
    ) -> Result<(), UnknownWorker> {
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        if w.state == WorkerState::Terminated {
            return Err(UnknownWorker);
        }
        w.connected = true;
        w.last_heartbeat_at = now;
        self.dirty_workers.insert(id);
        for (aid, r) in results {
            let _ = self.finish(aid, id, r, now);
        }
        let running: HashSet<AttemptId> = running.iter().copied().collect();
        let mine = self.attempt_ids_on(id);
        for aid in &mine {
            if !running.contains(aid) {
                self.lose_attempt(*aid, FailureReason::WorkerLost, now);
            }
        }
        for aid in running {
            match self.attempts.get(&aid) {
                Some(a) if a.worker_id == id => {
                    // Its Accepted was lost with the old stream: it runs, so it was accepted.
                    if a.state == AttemptState::Assigned {
                        let _ = self.accepted(aid, id, now, now);
                    }
                }
                _ => self.out.outbound.push(Outbound::Cancel { worker: id, attempt: aid, reason: "stale" }),
            }
        }
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        let to = if w.slots_used == 0 { WorkerState::Idle } else { WorkerState::Busy };
        if w.state != to && w.state != WorkerState::Draining {
            if to == WorkerState::Idle {
                w.idle_since = Some(now);
            }
            w.state = to;
        }
        Ok(())
    }

    /// The job stream closed. The lease still runs: attempts are lost only when it expires.
    pub fn disconnect_worker(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.connected = false;
        }
    }

    /// Renews a worker's lease. Returns attempts it reports that it should not be running.
    /// `node`: what it measured of its machine, which decides its health.
    pub fn heartbeat(
        &mut self,
        id: WorkerId,
        running: &[AttemptId],
        node: Option<&crate::worker::NodeReport>,
        now: Timestamp,
    ) -> Result<Vec<AttemptId>, UnknownWorker> {
        let w = self.workers.get_mut(&id).ok_or(UnknownWorker)?;
        if !w.state.is_live() {
            return Err(UnknownWorker);
        }
        w.last_heartbeat_at = now;
        if let Some(r) = node {
            (w.health, w.health_reason) = crate::worker::assess(r, now);
        }
        // Persisted (batched with everything else), so readers see a live heartbeat.
        self.dirty_workers.insert(id);
        Ok(running.iter().copied().filter(|a| self.attempts.get(a).is_none_or(|x| x.worker_id != id)).collect())
    }

    /// Drains a worker (SPEC §3.2): it takes no new attempts, its running ones finish, and once
    /// it has none it is terminated and told to stop ([`Outbound::Drained`]). Draining a
    /// draining worker changes nothing.
    pub fn drain_worker(&mut self, id: WorkerId) -> Result<(), DrainError> {
        let w = self.workers.get_mut(&id).ok_or(DrainError::Unknown)?;
        match w.state {
            WorkerState::Draining => return Ok(()),
            WorkerState::Idle | WorkerState::Busy => w.state = WorkerState::Draining,
            // Registered without a job stream yet: nothing to wait for.
            WorkerState::Registering => {}
            s => return Err(DrainError::NotLive(s)),
        }
        self.dirty_workers.insert(id);
        if w.slots_used == 0 {
            self.drained(id);
        }
        Ok(())
    }

    /// A drained worker with nothing left to run is terminated and told to stop.
    fn drained(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Terminated;
            w.connected = false;
            self.dirty_workers.insert(id);
            self.out.outbound.push(Outbound::Drained { worker: id });
        }
    }

    /// The worker leaves for good (deregistered). Its attempts are lost.
    pub fn terminate_worker(&mut self, id: WorkerId, now: Timestamp) {
        let mine = self.attempt_ids_on(id);
        for aid in mine {
            self.lose_attempt(aid, FailureReason::WorkerLost, now);
        }
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Terminated;
            w.connected = false;
            self.dirty_workers.insert(id);
        }
    }

    fn release_slot(&mut self, attempt: &Attempt, now: Timestamp) {
        self.preempting.remove(&attempt.id);
        let mut drained = false;
        if let Some(w) = self.workers.get_mut(&attempt.worker_id) {
            w.allocated = w.allocated.saturating_sub(&attempt.resources);
            w.slots_used = w.slots_used.saturating_sub(1);
            if w.slots_used == 0 && w.state == WorkerState::Busy {
                w.state = WorkerState::Idle;
                w.idle_since = Some(now);
            }
            drained = w.slots_used == 0 && w.state == WorkerState::Draining;
            self.dirty_workers.insert(w.id);
        }
        if drained {
            self.drained(attempt.worker_id);
        }
    }

    // ---- dispatch -------------------------------------------------------------------------

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
    fn unpark(&mut self, t: &TenantId, now: Timestamp) {
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
    fn best_worker(&self, job: &Job, now: Timestamp) -> Option<WorkerId> {
        let req = job.resources();
        self.workers
            .values()
            .filter(|w| crate::placement::fits_now(w, &job.tenant, &job.spec, &req).is_ok())
            .filter(|w| self.reserved_workers.is_empty() || self.reservation_allows(w, job, now))
            .min_by_key(|w| crate::placement::rank(w, &req))
            .map(|w| w.id)
    }

    fn assign(&mut self, job_id: JobId, worker_id: WorkerId, attempt_id: AttemptId, now: Timestamp) {
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

    // ---- worker reports -------------------------------------------------------------------

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

    fn lose_attempt(&mut self, aid: AttemptId, reason: FailureReason, now: Timestamp) {
        self.end_attempt_without_result(aid, AttemptState::Lost, reason, now);
    }

    // ---- time -----------------------------------------------------------------------------

    /// Applies every time-driven decision due at `now`: due retries, ack timeouts, expired
    /// worker leases, and the timeout and cancel backstops for workers that stopped answering.
    pub fn tick(&mut self, now: Timestamp) {
        if let Some(cutoff) = self.idempotency.expire(now) {
            self.out.idempotency_expired_before = Some(cutoff);
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
                self.touch(id);
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

    // ---- output ---------------------------------------------------------------------------

    /// Takes what changed since the last call. Ended jobs leave memory here: from now on the
    /// store alone holds them.
    pub fn take_changes(&mut self) -> Changes {
        let mut out = std::mem::take(&mut self.out);
        out.events = std::mem::take(&mut self.books.events);
        out.sla_breaches = std::mem::take(&mut self.books.sla.breaches);
        out.sla_outcomes = std::mem::take(&mut self.books.sla.outcomes);
        // Keys are removed one by one: `clear` costs the sets' capacity, which a large batch
        // leaves high, on every later call.
        for id in self.dirty_jobs.drain(..) {
            self.dirty_set.remove(&id);
            let is_new = self.new_jobs.remove(&id);
            let Some(job) = self.jobs.get(&id) else { continue };
            // An ended job leaves memory: it moves into the changes instead of being copied.
            let snapshot = match job.is_terminal() {
                true => self.jobs.remove(&id).map(|b| *b),
                false => Some(Job::clone(job)),
            };
            let Some(snapshot) = snapshot else { continue };
            if is_new {
                out.new_jobs.push(snapshot);
            } else {
                out.jobs.push(snapshot);
            }
        }
        if self.dirty_set.capacity() > 4096 && self.dirty_set.is_empty() {
            self.dirty_set.shrink_to(1024);
            self.new_jobs.shrink_to(1024);
        }
        for id in std::mem::take(&mut self.dirty_workers) {
            if let Some(w) = self.workers.get(&id) {
                out.workers.push(w.clone());
                if w.state == WorkerState::Terminated {
                    self.workers.remove(&id);
                }
            }
        }
        out
    }
}

/// After a failure: retry after a doubling backoff while retries are left, else the failure is final.
fn schedule_retry(job: &mut Job, (base, max): (Duration, Duration), now: Timestamp, wait: &mut BTreeSet<(Timestamp, JobId)>) {
    if job.retries_left == 0 {
        job.next_retry_at = None;
        return;
    }
    let used = job.spec.max_retries - job.retries_left;
    job.retries_left -= 1;
    let base = job.spec.retry_backoff.unwrap_or(base);
    let delay = base.saturating_mul(1u32 << used.min(20)).min(max);
    let at = now.saturating_add(delay);
    job.next_retry_at = Some(at);
    wait.insert((at, job.id));
}

#[cfg(test)]
mod tests;
