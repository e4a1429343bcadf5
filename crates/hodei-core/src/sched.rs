//! The scheduler: live jobs, workers and attempts, and every decision about them —
//! assign, requeue, time out, retry. Effects come back as [`Changes`] for the server to
//! persist (in one transaction) and then carry out (send to workers).
//!
//! Here: the state, recovery at start and the output. One `impl Scheduler` per concern:
//! `intake` (tenants, admission, job commands), `workers` (registration, heartbeats, drain),
//! `dispatch` (the scheduling round and placement), `reports` (what workers report),
//! `tick` (what time brings), and beside them `backfill`, `preempt`, `sla`, `explain`,
//! `status` and `pools` (what the autoscaler reads).

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
mod deps;
mod dispatch;
mod explain;
mod intake;
mod pools;
mod preempt;
mod reports;
mod sla;
mod status;
mod tick;
mod workers;
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
    /// The rate versions attempts are priced at (`cost_tracking.hourly_rate_*`); none: the
    /// default rates.
    pub rates: Vec<crate::cost::RateVersion>,
    /// Pools with rates of their own (`resource_pools.pools[].cost_rates`).
    pub pool_rates: BTreeMap<PoolId, crate::cost::RateOverride>,
    /// `cost_tracking.accrual_interval_s`: running attempts are billed this often, so what they
    /// cost counts (in budgets, breakdowns) before they end.
    pub accrual_interval: Duration,
    /// `cost_tracking.track_by_job`: keep each priced stretch as a cost record (per job, with
    /// its name and rates) beside the daily rollups it adds to. Off: rollups only.
    pub keep_cost_records: bool,
    /// `cost_tracking.track_by_pool`: the ledger names the pool an attempt ran in. Off: its
    /// records and rollups leave the pool out (an empty pool key).
    pub cost_by_pool: bool,
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
            rates: Vec::new(),
            pool_rates: BTreeMap::new(),
            accrual_interval: Duration::from_secs(60),
            keep_cost_records: true,
            cost_by_pool: true,
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
    /// What the attempts that ended in this batch cost, stored with them.
    pub costs: Vec<AttemptCost>,
}

/// The priced run of one ended attempt (SPEC §2.12): its stretches, each a cost record.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptCost {
    pub attempt_id: AttemptId,
    pub job_id: JobId,
    /// The job's tenant and name when the scheduler still holds the job (the store has both).
    pub tenant: Option<TenantId>,
    pub job_name: Option<String>,
    pub pool_id: PoolId,
    pub resources: Resources,
    pub segments: Vec<crate::cost::Segment>,
    /// Store its segments as cost records too (`SchedConfig::keep_cost_records`); the daily
    /// rollups get them either way.
    pub keep_record: bool,
    /// Name `pool_id` in its records and rollups (`SchedConfig::cost_by_pool`); else the
    /// ledger keeps no pool for it.
    pub by_pool: bool,
}

impl AttemptCost {
    pub fn cost_micros(&self) -> i64 {
        self.segments.iter().map(|s| s.cost_micros).sum()
    }

    pub fn billed_seconds(&self) -> u64 {
        self.segments.iter().map(|s| s.billed_seconds).sum()
    }
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
            && self.costs.is_empty()
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
    /// Tenants that have spent a budget: their new and pending jobs are held.
    budget_exhausted: IdSet<TenantId>,
    /// Budget-aware fair share: tenants spending ahead of their budget's pace, with the
    /// per-mille factor on their weight (absent: 1000, no demotion).
    budget_factor: IdMap<TenantId, u32>,
    /// When running attempts are next billed for their time so far.
    next_accrual: Option<Timestamp>,
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
    /// Jobs held for their dependencies, and the outcomes of recently ended jobs.
    deps: deps::Deps,
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
        Admission::HeldBudget if job.state == JobState::Pending => {
            job.state = JobState::Held;
            job.state_reason = Some("budget_exhausted".to_owned());
        }
        Admission::HeldBudget => {}
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
            budget_exhausted: IdSet::default(),
            budget_factor: IdMap::default(),
            next_accrual: None,
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
            deps: deps::Deps::default(),
            out: Changes::default(),
        }
    }

    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// The rate versions attempts ending from now on are priced at.
    pub fn set_rates(&mut self, versions: Vec<crate::cost::RateVersion>) {
        self.cfg.rates = versions;
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

    // ---- output ---------------------------------------------------------------------------

    /// Takes what changed since the last call. Ended jobs leave memory here: from now on the
    /// store alone holds them.
    pub fn take_changes(&mut self) -> Changes {
        self.settle_dependencies();
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
