//! The engine: the one task that owns the core [`Scheduler`] and writes job state.
//!
//! Every trigger of work is a [`Command`] in one channel. The loop takes everything queued
//! (group commit: many submits and worker reports per transaction), lets the core decide,
//! persists the resulting [`Changes`] in one transaction, and only then answers callers and
//! sends assignments to workers. If the store refuses a batch, the callers get an error and
//! the core is rebuilt from the store, so memory never runs ahead of what is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hodei_api::{Admitted, ArrayAdmitted, Clock, Control, ControlError, Idempotent, IdempotentCall, Inspector};
use hodei_core::idempotency::{IdempotencyRecord, Lookup, Submitted};
use hodei_core::ids::PrincipalId;
use hodei_core::job::Actor;
use hodei_core::sched::{
    AttemptResult, CancelOutcome, Changes, CommandError, DrainError, Fenced, Outbound, PoolPlacement, SchedConfig, Scheduler, UnknownWorker,
};
use hodei_core::{
    ArrayId, AttemptId, AttemptState, BurstSession, BurstState, Job, JobId, JobState, PoolId, Tenant, TenantId, TenantPolicy, TierWeights, Timestamp, Worker,
    WorkerId, WorkerState,
};
use hodei_proto::v1 as pb;
use hodei_store::logs::Logs;
use hodei_store::{BurstFilter, Store, StoreError};

use crate::gauges::Gauges;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most commands folded into one transaction.
const MAX_BATCH: usize = 8192;
/// A submit larger than this is handed to the store in parts of this many jobs, written while
/// the scheduler takes the rest (one transaction all the same).
const SUBMIT_PART: usize = 8192;

pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A stream to one connected worker; `conn` tells a reconnect from a stale disconnect.
#[derive(Clone)]
pub struct WorkerConn {
    pub conn: u64,
    pub tx: mpsc::Sender<pb::ServerMessage>,
}

/// Messages waiting to go out on one worker's job stream. A worker that stops reading its
/// stream misses what comes after, like one that went away: the ack timeout requeues an
/// assignment, the timeout backstop ends a job whose cancel was missed, a result whose ack was
/// missed is sent again.
pub const PER_WORKER_QUEUED: usize = 4096;

impl WorkerConn {
    /// Queues `msg` for the worker; false when its queue is full (or its stream is gone).
    pub fn offer(&self, msg: pb::ServerMessage) -> bool {
        self.tx.try_send(msg).is_ok()
    }
}

pub enum Command {
    Submit {
        jobs: Vec<Job>,
        atomic: bool,
        key: Option<IdempotentCall>,
        /// The stored outcome of ended jobs these depend on.
        ended: Vec<(JobId, JobState)>,
        reply: Reply<Idempotent<Vec<Admitted>>>,
    },
    SubmitArray {
        template: Box<Job>,
        array: ArrayId,
        key: Option<IdempotentCall>,
        /// The stored outcome of ended jobs its members depend on.
        ended: Vec<(JobId, JobState)>,
        reply: Reply<Idempotent<ArrayAdmitted>>,
    },
    Tenant {
        id: TenantId,
        policy: TenantPolicy,
        reply: Reply<()>,
    },
    Burst {
        session: Box<BurstSession>,
        reply: Reply<()>,
    },
    Pool {
        id: PoolId,
        placement: PoolPlacement,
        reply: Reply<()>,
    },
    Rates {
        versions: Vec<hodei_core::cost::RateVersion>,
        reply: Reply<()>,
    },
    Budget {
        tenant: TenantId,
        exhausted: bool,
        /// Per-mille factor on its fair-share weight (1000: none).
        factor: u32,
        reply: Reply<()>,
    },
    Inspect(Inspector),
    Cancel {
        id: JobId,
        by: Actor,
        reply: Reply<CancelOutcome>,
    },
    Retry {
        job: Box<Job>,
        by: Actor,
        reply: Reply<()>,
    },
    Hold {
        id: JobId,
        by: Actor,
        reply: Reply<()>,
    },
    Drain {
        worker: WorkerId,
        reply: Reply<()>,
    },
    Release {
        id: JobId,
        by: Actor,
        reply: Reply<()>,
    },
    /// Retention is about to delete the jobs that ended before `before`: from this step on a
    /// manual retry of one is refused as if it were gone (answered once the step is durable).
    RetentionHorizon {
        before: Timestamp,
        reply: Reply<()>,
    },
    Register {
        worker: Box<Worker>,
    },
    Connect {
        id: WorkerId,
        conn: WorkerConn,
        running: Vec<AttemptId>,
        results: Vec<(AttemptId, AttemptResult)>,
        /// The attempts the worker holds once connected: the only ones it may send output for.
        reply: oneshot::Sender<Result<Vec<AttemptId>, UnknownWorker>>,
    },
    Disconnect {
        id: WorkerId,
        conn: u64,
    },
    Heartbeat {
        id: WorkerId,
        running: Vec<AttemptId>,
        node: Option<hodei_core::worker::NodeReport>,
        reply: oneshot::Sender<Result<Vec<AttemptId>, UnknownWorker>>,
    },
    Deregister {
        id: WorkerId,
    },
    Accepted {
        worker: WorkerId,
        attempt: AttemptId,
        started_at: Timestamp,
    },
    Rejected {
        worker: WorkerId,
        attempt: AttemptId,
    },
    Finished {
        worker: WorkerId,
        attempt: AttemptId,
        result: Box<AttemptResult>,
    },
}

/// What the engine needs besides the store.
pub struct EngineConfig {
    pub sched: SchedConfig,
    pub tick: Duration,
    pub kill_grace: Duration,
    pub max_log_bytes: u64,
    pub tier_weights: TierWeights,
    /// The built-in pool's workers found running at start (their agents outlive a server
    /// crash); stored workers of that pool not among them died and are terminated at once.
    pub local_workers: Option<LocalWorkers>,
}

/// The pools whose workers the server starts itself, and the instance names (`<pool>-<n>`)
/// of their agents that are running.
#[derive(Clone, Debug)]
pub struct LocalWorkers {
    pub pools: std::collections::HashSet<hodei_core::PoolId>,
    pub running: std::collections::HashSet<String>,
}

impl LocalWorkers {
    /// A worker the server started (named `<pool>-<n>`) whose agent is not running.
    fn is_gone(&self, w: &hodei_core::Worker) -> bool {
        self.pools.contains(&w.pool_id)
            && w.instance_name
                .strip_prefix(w.pool_id.as_str())
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && !self.running.contains(&w.instance_name)
    }
}

/// Handle used by the API and the gRPC service.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    progress: Arc<Progress>,
}

/// When the engine last finished a round (it runs one at least every `tick`): how far behind
/// it is shows as `hodei_scheduler_loop_lag_seconds`, and grows while it is stalled.
pub struct Progress {
    start: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress { start: Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    fn stepped(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last finished round.
    pub fn lag(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl EngineHandle {
    /// Queues a command without waiting: `Busy` when the queue is full (an API request is
    /// answered 503 with `Retry-After` rather than queued without bound).
    pub fn send(&self, c: Command) -> Result<(), ControlError> {
        self.tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Busy,
            mpsc::error::TrySendError::Closed(_) => ControlError::Stopped,
        })
    }

    /// Queues a command, waiting for room: what a worker reports is never dropped, and a
    /// worker whose reports cannot be queued waits (its gRPC stream stops being read).
    pub async fn deliver(&self, c: Command) -> Result<(), ControlError> {
        self.tx.send(c).await.map_err(|_| ControlError::Stopped)
    }

    /// Workers with an open job stream.
    pub fn connected_workers(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// [`EngineHandle::ask`] for the server's own background tasks: waits for room in the
    /// queue instead of being refused as busy.
    async fn ask_waiting<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.deliver(make(reply)).await?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }
}

impl EngineHandle {
    /// Drains a worker (for the server's own tasks: waits for room in the queue).
    pub async fn drain(&self, worker: WorkerId) -> Result<(), ControlError> {
        self.ask_waiting(|reply| Command::Drain { worker, reply }).await
    }

    /// Reads something off the scheduler's state (for the server's own tasks).
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&hodei_core::sched::Scheduler, Timestamp) -> T + Send + 'static) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.deliver(Command::Inspect(Box::new(move |s, now| {
            let _ = tx.send(f(s, now));
        })))
        .await?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    pub async fn submit(
        &self,
        jobs: Vec<Job>,
        atomic: bool,
        key: Option<IdempotentCall>,
        ended: Vec<(JobId, JobState)>,
    ) -> Result<Idempotent<Vec<Admitted>>, ControlError> {
        self.ask(|reply| Command::Submit { jobs, atomic, key, ended, reply }).await
    }

    /// Whether `tenant` has spent a budget: its new and pending jobs are held while it has.
    /// Where the tenant stands with its budgets: spent (its jobs are held), and the factor on
    /// its fair-share weight while it spends ahead of the pace.
    pub async fn budget(&self, tenant: TenantId, exhausted: bool, factor: u32) -> Result<(), ControlError> {
        self.ask_waiting(|reply| Command::Budget { tenant, exhausted, factor, reply }).await
    }

    pub async fn burst_changed(&self, session: BurstSession) -> Result<(), ControlError> {
        self.ask_waiting(|reply| Command::Burst { session: Box::new(session), reply }).await
    }

    pub async fn cancel(&self, id: JobId, by: Actor) -> Result<CancelOutcome, ControlError> {
        self.ask(|reply| Command::Cancel { id, by, reply }).await
    }

    pub async fn hold(&self, id: JobId, by: Actor) -> Result<(), ControlError> {
        self.ask(|reply| Command::Hold { id, by, reply }).await
    }

    pub async fn release(&self, id: JobId, by: Actor) -> Result<(), ControlError> {
        self.ask(|reply| Command::Release { id, by, reply }).await
    }

    /// Answers once retries of jobs that ended before `before` are refused (durably ordered
    /// before whatever retention deletes next).
    pub async fn retention_horizon(&self, before: Timestamp) -> Result<(), ControlError> {
        self.ask_waiting(|reply| Command::RetentionHorizon { before, reply }).await
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// How far behind the scheduler loop is (see [`Progress`]).
    pub fn loop_lag(&self) -> Duration {
        self.progress.lag()
    }
}

/// The answer to a keyed submit that repeats an earlier call (its record) or reuses its key
/// for another request (a conflict); None: a new call.
fn earlier_call<T>(s: &Scheduler, key: Option<&IdempotentCall>, now: Timestamp) -> Option<Result<Idempotent<T>, ControlError>> {
    let k = key?;
    match s.idempotency_lookup(&k.tenant, &k.request, now) {
        Lookup::New => None,
        Lookup::Replay(r) => Some(Ok(Idempotent::Replayed(r))),
        Lookup::Conflict(_) => Some(Err(ControlError::IdempotencyConflict { key: k.request.key.clone() })),
    }
}

fn record(k: IdempotentCall, submitted: Submitted, now: Timestamp) -> IdempotencyRecord {
    IdempotencyRecord { tenant: k.tenant, key: k.request.key, fingerprint: k.request.fingerprint, submitted, created_at: now }
}

fn command_error(e: CommandError) -> ControlError {
    match e {
        CommandError::NotLive => ControlError::NotFound,
        CommandError::InvalidState { state, action } => ControlError::InvalidState { state, action },
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    logs: Arc<Logs>,
    cfg: EngineConfig,
    sched: Scheduler,
    conns: HashMap<WorkerId, WorkerConn>,
    rx: mpsc::Receiver<Command>,
    running: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    progress: Arc<Progress>,
    gauges: Gauges,
    last_scan: Option<Timestamp>,
    /// Parts of this step's changes already handed to the store (see `Store::stage`), committed
    /// by the step's `apply`.
    staged: Vec<Arc<Changes>>,
    /// A batch failed to commit and the core could not be reloaded yet: it holds decisions the
    /// store does not, so nothing is scheduled until [`Engine::recover`] has reloaded it.
    stale: bool,
    /// Jobs that ended before this may be deleted by retention at any moment (see
    /// [`Command::RetentionHorizon`]).
    retention_horizon: Option<Timestamp>,
}

/// A reply and what it will say once the batch is durable.
type Answer<T> = (Reply<T>, Result<T, ControlError>);

/// Answers to send once the batch is durable.
#[derive(Default)]
struct Replies {
    /// Reads of the scheduler's state, run once this step's changes are committed (or, after a
    /// failed commit, on the state reloaded from the store), so they never show an uncommitted job.
    inspect: Vec<hodei_api::Inspector>,
    unit: Vec<Reply<()>>,
    cancel: Vec<(Reply<CancelOutcome>, CancelOutcome)>,
    submit: Vec<Answer<Idempotent<Vec<Admitted>>>>,
    arrays: Vec<Answer<Idempotent<ArrayAdmitted>>>,
}

impl Replies {
    fn ok(self) {
        for r in self.unit {
            let _ = r.send(Ok(()));
        }
        for (r, o) in self.cancel {
            let _ = r.send(Ok(o));
        }
        for (r, a) in self.submit {
            let _ = r.send(a);
        }
        for (r, a) in self.arrays {
            let _ = r.send(a);
        }
    }

    fn fail(self, e: &StoreError) {
        let err = || ControlError::Store(store_failure(e));
        for r in self.unit {
            let _ = r.send(Err(err()));
        }
        for (r, _) in self.cancel {
            let _ = r.send(Err(err()));
        }
        for (r, _) in self.submit {
            let _ = r.send(Err(err()));
        }
        for (r, _) in self.arrays {
            let _ = r.send(Err(err()));
        }
    }
}

/// The error every caller of a failed batch gets: the store was unreachable (503) or refused it.
fn store_failure(e: &StoreError) -> StoreError {
    if e.is_unavailable() {
        StoreError::WriteUnavailable { doing: "committing a batch", detail: e.to_string() }
    } else {
        StoreError::Corrupt { doing: "committing a batch", detail: e.to_string() }
    }
}

/// Commands the engine's queue holds before new API requests are refused as busy and workers'
/// reports wait. It drains the whole queue every round, so this is far more than a round takes.
pub const COMMANDS_QUEUED: usize = 65_536;

/// Longest pause between two attempts to reload the core from an unreachable store.
const RECOVER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Worker reports kept while the store is unavailable, at most. A worker's heartbeat replaces
/// its previous one, so time alone does not fill this; at the bound the engine stops reading
/// its queue, which fills in turn: API calls are then refused as busy at once and workers'
/// reports wait for room, however long the outage.
const KEPT_WHILE_STALLED: usize = COMMANDS_QUEUED;

/// What workers reported while the store was unavailable, in order, for the first step after
/// the reload.
#[derive(Default)]
struct Kept {
    commands: Vec<Command>,
    /// Where each worker's heartbeat is in `commands`.
    heartbeats: HashMap<WorkerId, usize>,
}

impl Kept {
    fn push(&mut self, c: Command) {
        if let Command::Heartbeat { id, .. } = &c
            && let Some(&at) = self.heartbeats.get(id)
        {
            // The newer heartbeat takes the older one's place (what it says is newer; the lease
            // is renewed the same), and the older one's caller hears that nothing is stale.
            if let Command::Heartbeat { reply, .. } = std::mem::replace(&mut self.commands[at], c) {
                let _ = reply.send(Ok(Vec::new()));
            }
            return;
        }
        if let Command::Heartbeat { id, .. } = &c {
            self.heartbeats.insert(*id, self.commands.len());
        }
        self.commands.push(c);
    }

    fn is_full(&self) -> bool {
        self.commands.len() >= KEPT_WHILE_STALLED
    }
}

impl Engine {
    /// Builds the engine from what the store holds (restart recovery).
    pub async fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, logs: Arc<Logs>, cfg: EngineConfig) -> Result<(Engine, EngineHandle), StoreError> {
        let (tx, rx) = mpsc::channel(COMMANDS_QUEUED);
        let running = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Progress::new());
        let sched = Scheduler::new(cfg.sched.clone());
        let mut engine = Engine {
            store,
            clock,
            logs,
            cfg,
            sched,
            conns: HashMap::new(),
            rx,
            running: running.clone(),
            connected: connected.clone(),
            progress: progress.clone(),
            gauges: Gauges::default(),
            last_scan: None,
            staged: Vec::new(),
            stale: false,
            retention_horizon: None,
        };
        engine.rebuild().await?;
        engine.terminate_gone_local_workers().await?;
        // Ready to take commands (they queue until `run` polls them); cleared when the loop ends.
        running.store(true, Ordering::Relaxed);
        engine.progress.stepped();
        Ok((engine, EngineHandle { tx, running, connected, progress }))
    }

    /// Replaces the core's state with the store's. Workers with open streams stay connected,
    /// assumed to still run what the store says they run.
    async fn rebuild(&mut self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let live = self.store.load_live().await?;
        let read = started.elapsed();
        let now = self.clock.now();
        let mut sched = Scheduler::new(self.cfg.sched.clone());
        for t in self.store.list_tenants().await? {
            sched.set_tenant(&t.id, t.policy(&self.cfg.tier_weights), now);
        }
        let open = BurstFilter { states: vec![BurstState::Active], limit: u32::MAX, ..BurstFilter::default() };
        for b in self.store.list_bursts(&open).await? {
            sched.set_burst(&b, now);
        }
        let pools = self.store.list_pools().await?;
        for p in &pools {
            sched.set_pool_placement(&p.id, p.into());
        }
        for w in live.workers {
            sched.restore_worker(w, now);
        }
        // Labels the pools gained while these workers were away.
        for p in &pools {
            sched.set_pool_placement(&p.id, p.into());
        }
        for a in &live.attempts {
            sched.restore_attempt(a.clone());
        }
        sched.reserve_jobs(live.jobs.len());
        for j in live.jobs {
            sched.restore_job(j, now);
        }
        for r in live.idempotency {
            sched.restore_idempotency(r);
        }
        // Only attempts the store has as running are known to be on their worker; an assignment
        // that was never confirmed is treated as lost (requeued; fencing ignores a late Accepted).
        for id in self.conns.keys() {
            let running: Vec<AttemptId> = live.attempts.iter().filter(|a| a.worker_id == *id && a.state == AttemptState::Running).map(|a| a.id).collect();
            let _ = sched.connect_worker(*id, &running, vec![], now);
        }
        let _ = sched.take_changes();
        // Jobs held for their dependencies wait again; those decided while the server was away
        // (their dependency's outcome is in the store) are queued or cancelled now.
        let mut ended = Vec::new();
        for id in sched.dependencies_to_look_up() {
            if let Some(j) = self.store.get_job(id).await?
                && j.is_terminal()
            {
                ended.push((id, j.state));
            }
        }
        sched.note_ended(&ended);
        sched.resume_dependencies(now);
        let decided = sched.take_changes();
        if !decided.is_empty() {
            self.store.apply(Arc::new(decided)).await?;
        }
        let restored = started.elapsed();
        self.gauges = Gauges::load(sched.jobs());
        self.gauges.workers(sched.workers());
        tracing::info!(
            jobs = sched.jobs().count(),
            workers = sched.workers().count(),
            attempts = sched.attempts().count(),
            read_ms = read.as_millis() as u64,
            restore_ms = (restored - read).as_millis() as u64,
            gauges_ms = (started.elapsed() - restored).as_millis() as u64,
            "scheduler state loaded from the store"
        );
        self.sched = sched;
        Ok(())
    }

    /// Stored workers of the built-in pool whose agents are not running died with the machine
    /// or on their own: their jobs are requeued now instead of after their lease expires.
    async fn terminate_gone_local_workers(&mut self) -> Result<(), StoreError> {
        let Some(local) = &self.cfg.local_workers else { return Ok(()) };
        let now = self.clock.now();
        let gone: Vec<WorkerId> = self.sched.workers().filter(|w| local.is_gone(w)).map(|w| w.id).collect();
        if gone.is_empty() {
            return Ok(());
        }
        for id in &gone {
            self.sched.terminate_worker(*id, now);
        }
        let mut changes = self.sched.take_changes();
        self.name_costs(&mut changes).await;
        let changes = Arc::new(changes);
        self.store.apply(changes.clone()).await?;
        self.gauges.apply(&changes);
        tracing::info!(workers = gone.len(), requeued = changes.jobs.len(), "built-in workers whose agents are gone were terminated; their jobs were requeued");
        Ok(())
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Command> = Vec::new();
        loop {
            if self.stale {
                match self.recover().await {
                    Some(kept) => batch = kept,
                    None => break,
                }
            }
            let mut ticked = false;
            tokio::select! {
                c = self.rx.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
                _ = tick.tick() => ticked = true,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.step(std::mem::take(&mut batch), ticked).await;
            self.progress.stepped();
        }
        self.running.store(false, Ordering::Relaxed);
    }

    /// One round: apply commands, tick if due, schedule, persist, then reply and send.
    pub async fn step(&mut self, mut batch: Vec<Command>, ticked: bool) {
        let started = Instant::now();
        // A retried job the core does not hold has ended, and its row is the truth only as of
        // the last commit: the API's copy was read before this step and may predate a run that
        // ended since. Every earlier batch is committed, so the row read now is current.
        for c in &mut batch {
            if let Command::Retry { job, .. } = c
                && self.sched.job(&job.id).is_none()
                && let Ok(Some(fresh)) = self.store.get_job(job.id).await
            {
                **job = fresh;
            }
        }
        let now = self.clock.now();
        let mut replies = Replies::default();
        for c in batch {
            self.handle(c, now, &mut replies);
        }
        let inspects = std::mem::take(&mut replies.inspect);
        self.commit_step(replies, ticked, started, now).await;
        if !self.stale {
            for f in inspects {
                f(&self.sched, now);
            }
        }
        self.connected.store(self.conns.len(), Ordering::Relaxed);
    }

    /// The rest of a round: tick if due, schedule, persist, then reply and send.
    async fn commit_step(&mut self, replies: Replies, ticked: bool, started: Instant, now: Timestamp) {
        if ticked {
            self.check_leadership().await;
            self.sched.tick(now);
            // Gauges that need a scan of live jobs, at most every 5 s (never on the submit path).
            if self.last_scan.is_none_or(|t| now.since(t) >= Duration::from_secs(5)) {
                self.last_scan = Some(now);
                // Pending jobs through the queue and running ones through their attempts: held
                // and ended-but-live jobs (the bulk after a large held batch) are not visited.
                let s = &self.sched;
                let pending = s.tenant_ids().flat_map(|t| s.queued_jobs(t)).filter_map(|k| s.job(&k.id));
                let running = s.attempts().filter(|a| a.state == AttemptState::Running).filter_map(|a| s.job(&a.job_id));
                self.gauges.scan(pending.chain(running), now);
                self.gauges.sla(self.sched.sla_waiting());
                self.gauges.tenants(&self.sched, now);
            }
        }
        let mut mint = || AttemptId::from_uuid(Uuid::now_v7());
        let placed = self.sched.schedule(now, &mut mint);
        let mut changes = self.sched.take_changes();
        self.name_costs(&mut changes).await;
        let changes = Arc::new(changes);
        if placed > 0 {
            metrics::histogram!("hodei_scheduling_latency_seconds").record(started.elapsed().as_secs_f64() / placed as f64);
        }
        if changes.is_empty() && self.staged.is_empty() {
            replies.ok();
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let db = Instant::now();
        tracing::debug!(new_jobs = changes.new_jobs.len(), jobs = changes.jobs.len(), "committing");
        match self.store.apply(changes.clone()).await {
            Ok(()) => {
                metrics::histogram!("hodei_db_query_duration_seconds", "op" => "apply").record(db.elapsed().as_secs_f64());
                tracing::debug!(store_ms = db.elapsed().as_millis() as u64, "committed");
                replies.ok();
                for c in staged.iter().chain([&changes]) {
                    self.record_metrics(c);
                    self.dispatch(c);
                }
                // Followers of a job's output also watch its state.
                self.logs.jobs_changed(staged.iter().chain([&changes]).flat_map(|c| c.new_jobs.iter().chain(&c.jobs)).map(|j| j.id));
            }
            Err(e @ StoreError::LeadershipLost { .. }) => {
                replies.fail(&e);
                lost_leadership(&e);
            }
            Err(e) => {
                metrics::counter!("hodei_db_errors_total", "op" => "apply").increment(1);
                tracing::error!(error = ?e, "persisting a scheduler batch failed; reloading state from the store");
                replies.fail(&e);
                if let Err(e) = self.rebuild().await {
                    tracing::error!(error = ?e, "reloading from the store failed; scheduling stops until it succeeds");
                    self.stale = true;
                }
            }
        }
    }

    /// The tenant and name of a priced attempt whose job the scheduler no longer holds (it
    /// ended while the attempt ran on), from the store; a cost record needs them.
    async fn name_costs(&self, c: &mut Changes) {
        for cost in c.costs.iter_mut().filter(|c| c.tenant.is_none()) {
            match self.store.get_job(cost.job_id).await {
                Ok(Some(j)) => (cost.tenant, cost.job_name) = (Some(j.tenant), Some(j.spec.name.clone())),
                Ok(None) => tracing::warn!(job = %cost.job_id, attempt = %cost.attempt_id, "an attempt of an unknown job is not billed"),
                Err(e) => tracing::warn!(job = %cost.job_id, error = %e, "cannot name the tenant of an attempt's cost; it is not billed"),
            }
        }
    }

    /// Every tick: this server must still be the only one scheduling its database. If the
    /// scheduler lock had to be taken again (its session was lost), another server may have
    /// written meanwhile, so the core is reloaded.
    async fn check_leadership(&mut self) {
        // `hodei_scheduler_leader`: 1 while this server holds the scheduler lock, as checked now.
        let leader = metrics::gauge!("hodei_scheduler_leader");
        match self.store.hold_scheduler_lock().await {
            Ok(false) => leader.set(1.0),
            Ok(true) => {
                leader.set(1.0);
                tracing::warn!("the scheduler lock was lost and taken again; reloading state from the store");
                if let Err(e) = self.rebuild().await {
                    tracing::error!(error = ?e, "reloading from the store failed; scheduling stops until it succeeds");
                    self.stale = true;
                }
            }
            Err(e @ StoreError::LeadershipLost { .. }) => {
                leader.set(0.0);
                lost_leadership(&e)
            }
            // An unreachable store shows in the next batch, and is recovered from there.
            Err(e) => tracing::debug!(error = %e, "cannot check the scheduler lock"),
        }
    }

    /// Reloads the core from the store, retrying with backoff until it succeeds. Meanwhile
    /// `/ready` says the scheduler is stalled, API commands are refused at once as the store
    /// being unavailable (nothing they asked for can be stored), and what workers report is kept,
    /// in order, for the first step after the reload. `None` when the channel closed.
    async fn recover(&mut self) -> Option<Vec<Command>> {
        self.running.store(false, Ordering::Relaxed);
        let mut kept = Kept::default();
        let mut wait = Duration::from_millis(100);
        loop {
            // A short probe first: a reload against a store that is down waits out its
            // connection timeout, and API calls would wait with it.
            let reachable = tokio::time::timeout(wait.max(Duration::from_millis(500)), self.store.ping()).await.is_ok_and(|r| r.is_ok());
            let reloaded = match reachable {
                true => self.rebuild().await,
                false => Err(StoreError::WriteUnavailable { doing: "reloading the scheduler", detail: "the store does not answer".into() }),
            };
            match reloaded {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the store is still unavailable; scheduling is stopped"),
            }
            let pause = tokio::time::sleep(wait);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    c = self.rx.recv(), if !kept.is_full() => match c {
                        Some(c) => {
                            if let Some(c) = refuse_while_stale(c) {
                                kept.push(c);
                            }
                        }
                        None => return None,
                    },
                    _ = &mut pause => break,
                }
            }
            wait = (wait * 2).min(RECOVER_BACKOFF_MAX);
        }
        tracing::info!(kept = kept.commands.len(), "the scheduler is reloaded from the store; scheduling resumes");
        self.stale = false;
        self.running.store(true, Ordering::Relaxed);
        Some(kept.commands)
    }

    fn handle(&mut self, c: Command, now: Timestamp, replies: &mut Replies) {
        let s = &mut self.sched;
        match c {
            Command::Submit { jobs, atomic, key, ended, reply } => {
                if let Some(answer) = earlier_call(s, key.as_ref(), now) {
                    replies.submit.push((reply, answer));
                    return;
                }
                s.note_ended(&ended);
                let ids: Vec<JobId> = key.as_ref().map(|_| jobs.iter().map(|j| j.id).collect()).unwrap_or_default();
                let (store, staged) = (&self.store, &mut self.staged);
                let admitted = s.submit_all_in_parts(jobs, atomic, now, SUBMIT_PART, |part| {
                    let part = Arc::new(part);
                    store.stage(part.clone());
                    staged.push(part);
                });
                if let Some(k) = key
                    && admitted.iter().any(Result::is_ok)
                {
                    let stored = ids.into_iter().zip(&admitted).map(|(id, a)| a.is_ok().then_some(id)).collect();
                    s.remember_idempotency(record(k, Submitted::Jobs(stored), now));
                }
                replies.submit.push((reply, Ok(Idempotent::New(admitted))));
            }
            Command::SubmitArray { template, array, key, ended, reply } => {
                if let Some(answer) = earlier_call(s, key.as_ref(), now) {
                    replies.arrays.push((reply, answer));
                    return;
                }
                s.note_ended(&ended);
                let (store, staged) = (&self.store, &mut self.staged);
                let mut ids: Option<(JobId, JobId)> = None;
                let mint = || {
                    let id = JobId::from_uuid(Uuid::now_v7());
                    ids = Some((ids.map_or(id, |(first, _)| first), id));
                    id
                };
                let admitted = s.submit_array_in_parts(&template, array, mint, now, SUBMIT_PART, |part| {
                    let part = Arc::new(part);
                    store.stage(part.clone());
                    staged.push(part);
                });
                if let (Some(k), Some((first, last))) = (key, ids) {
                    let count = admitted.len() as u32;
                    s.remember_idempotency(record(k, Submitted::Array { array, first, last, count }, now));
                }
                replies.arrays.push((reply, Ok(Idempotent::New(ArrayAdmitted { admitted, ids }))));
            }
            Command::Tenant { id, policy, reply } => {
                s.set_tenant(&id, policy, now);
                replies.unit.push(reply);
            }
            Command::Burst { session, reply } => {
                s.set_burst(&session, now);
                replies.unit.push(reply);
            }
            Command::Pool { id, placement, reply } => {
                s.set_pool_placement(&id, placement);
                replies.unit.push(reply);
            }
            Command::Budget { tenant, exhausted, factor, reply } => {
                s.set_budget_exhausted(&tenant, exhausted, now);
                if s.budget_factor(&tenant) != factor {
                    s.set_budget_factor(&tenant, factor);
                }
                replies.unit.push(reply);
            }
            Command::Rates { versions, reply } => {
                // Kept for a rebuild from the store too.
                self.cfg.sched.rates.clone_from(&versions);
                self.sched.set_rates(versions);
                replies.unit.push(reply);
            }
            Command::Inspect(f) => replies.inspect.push(f),
            Command::Cancel { id, by, reply } => match s.cancel(id, by, now) {
                Ok(o) => replies.cancel.push((reply, o)),
                Err(e) => {
                    let _ = reply.send(Err(command_error(e)));
                }
            },
            Command::Retry { job, reply, .. }
                if s.job(&job.id).is_none() && job.finished_at.zip(self.retention_horizon).is_some_and(|(ended, horizon)| ended < horizon) =>
            {
                let _ = reply.send(Err(ControlError::NotFound));
            }
            Command::RetentionHorizon { before, reply } => {
                self.retention_horizon = self.retention_horizon.max(Some(before));
                replies.unit.push(reply);
            }
            Command::Retry { job, by, reply } => match s.retry(*job, by, now) {
                Ok(()) => replies.unit.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(command_error(e)));
                }
            },
            Command::Drain { worker, reply } => match s.drain_worker(worker) {
                Ok(()) => replies.unit.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(match e {
                        DrainError::Unknown => ControlError::WorkerNotFound,
                        DrainError::NotLive(state) => ControlError::WorkerState(state),
                    }));
                }
            },
            Command::Hold { id, by, reply } => match s.hold(id, by, now) {
                Ok(()) => replies.unit.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(command_error(e)));
                }
            },
            Command::Release { id, by, reply } => match s.release(id, by, now) {
                Ok(()) => replies.unit.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(command_error(e)));
                }
            },
            Command::Register { worker } => s.register_worker(*worker, now),
            Command::Connect { id, conn, running, results, reply } => {
                let r = s.connect_worker(id, &running, results, now).map(|()| s.attempts().filter(|a| a.worker_id == id).map(|a| a.id).collect());
                if r.is_ok() {
                    self.conns.insert(id, conn);
                }
                let _ = reply.send(r);
            }
            Command::Disconnect { id, conn } => {
                if self.conns.get(&id).is_some_and(|c| c.conn == conn) {
                    self.conns.remove(&id);
                    s.disconnect_worker(id);
                }
            }
            Command::Heartbeat { id, running, node, reply } => {
                let _ = reply.send(s.heartbeat(id, &running, node.as_ref(), now));
            }
            Command::Deregister { id } => {
                self.conns.remove(&id);
                s.terminate_worker(id, now);
            }
            Command::Accepted { worker, attempt, started_at } => {
                if let Err(f) = s.accepted(attempt, worker, started_at, now) {
                    ignored("accepted", worker, attempt, f);
                }
            }
            Command::Rejected { worker, attempt } => {
                if let Err(f) = s.rejected(attempt, worker, now) {
                    ignored("rejected", worker, attempt, f);
                }
            }
            Command::Finished { worker, attempt, result } => {
                if let Err(f) = s.finish(attempt, worker, *result, now) {
                    ignored("result", worker, attempt, f);
                }
            }
        }
    }

    fn record_metrics(&mut self, c: &Changes) {
        // Every transition, with the ids to follow one job from its request (whose span names
        // the same `job_id`) through its attempts.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let jobs: hodei_core::ids::IdMap<JobId, &Job> = c.jobs.iter().chain(&c.new_jobs).map(|j| (j.id, j)).collect();
            for e in &c.events {
                let Some(j) = jobs.get(&e.job_id) else { continue };
                let attempt = j.current_attempt.map(|a| a.to_string()).unwrap_or_default();
                let from = e.from.map(|s| s.as_str()).unwrap_or("");
                tracing::debug!(job_id = %j.id, tenant = %j.tenant, attempt_id = %attempt, from, to = e.to.as_str(), reason = e.reason.as_deref().unwrap_or(""), "job");
            }
        }
        let by_id: hodei_core::ids::IdMap<JobId, &Job> =
            if c.events.iter().any(|e| e.from.is_some()) { c.jobs.iter().chain(&c.new_jobs).map(|j| (j.id, j)).collect() } else { Default::default() };
        let pool_of = |j: &Job| j.pool_id.as_ref().map(|p| p.to_string()).unwrap_or_default();
        for e in &c.events {
            let (Some(from), Some(j)) = (e.from, by_id.get(&e.job_id)) else { continue };
            match e.to {
                JobState::Pending if matches!(from, JobState::Scheduled | JobState::Running) => {
                    let reason = e.reason.clone().unwrap_or_default();
                    metrics::counter!("hodei_jobs_requeued_total", "pool" => pool_of(j), "reason" => reason).increment(1);
                }
                s if s.is_final_like() && !j.is_terminal() => {
                    metrics::counter!("hodei_jobs_retried_total", "tenant" => j.tenant.to_string()).increment(1);
                }
                s if s.is_final_like() => {
                    let pool = pool_of(j);
                    metrics::counter!("hodei_jobs_completed_total", "tenant" => j.tenant.to_string(), "pool" => pool.clone(), "state" => s.as_str())
                        .increment(1);
                    if let Some(rt) = j.run_time_ms() {
                        metrics::histogram!("hodei_job_run_duration_seconds", "pool" => pool, "state" => s.as_str()).record(rt as f64 / 1000.0);
                    }
                }
                _ => {}
            }
        }
        for (tenant, level) in &c.sla_breaches {
            metrics::counter!("hodei_sla_breaches_total", "tenant" => tenant.to_string(), "level" => level.as_str()).increment(1);
        }
        for (tenant, limit) in &c.quota_violations {
            metrics::counter!("hodei_quota_violations_total", "tenant" => tenant.to_string(), "resource" => limit.as_str()).increment(1);
        }
        for cost in &c.costs {
            let micros = u64::try_from(cost.cost_micros()).unwrap_or(0);
            if let Some(t) = &cost.tenant {
                metrics::counter!("hodei_tenant_cost_micros_total", "tenant" => t.to_string()).increment(micros);
            }
            if cost.by_pool {
                metrics::counter!("hodei_pool_cost_micros_total", "pool" => cost.pool_id.to_string()).increment(micros);
            }
        }
        for w in c.workers.iter().filter(|w| w.state == WorkerState::Offline) {
            metrics::counter!("hodei_workers_lost_total", "pool" => w.pool_id.to_string()).increment(1);
        }
        for j in &c.jobs {
            if j.state == JobState::Running
                && let (Some(start), Some(sched)) = (j.started_at, j.scheduled_at)
            {
                let pool = j.pool_id.as_ref().map(|p| p.to_string()).unwrap_or_default();
                metrics::histogram!("hodei_worker_allocation_latency_seconds", "pool" => pool.clone()).record(start.since(sched).as_secs_f64());
                metrics::histogram!("hodei_dispatch_latency_seconds", "pool" => pool).record(start.since(j.eligible_at).as_secs_f64());
                metrics::histogram!("hodei_queue_wait_seconds", "tenant" => j.tenant.to_string(), "priority" => j.spec.priority.as_str())
                    .record(start.since(j.eligible_at).as_secs_f64());
            }
        }
        // Every placement of the batch, also of jobs submitted or gone on to run (or end) in it.
        let mut scheduled: std::collections::HashSet<_> = c.events.iter().filter(|e| e.to == JobState::Scheduled).map(|e| e.job_id).collect();
        for j in c.new_jobs.iter().chain(&c.jobs).filter(|j| scheduled.remove(&j.id)) {
            let pool = j.pool_id.as_ref().map(|p| p.to_string()).unwrap_or_default();
            metrics::counter!("hodei_jobs_scheduled_total", "tenant" => j.tenant.to_string(), "pool" => pool).increment(1);
        }
        self.gauges.apply(c);
        if !c.workers.is_empty() {
            self.gauges.workers(self.sched.workers());
        }
    }

    /// Sends what the committed batch decided. A worker that went away misses its message;
    /// the ack timeout or its lease expiry takes care of that.
    fn dispatch(&mut self, c: &Changes) {
        for o in &c.outbound {
            let (worker, msg) = match o {
                Outbound::Assign { worker, attempt, job } => {
                    let Some(j) = self.sched.job(job) else { continue };
                    let Some(a) = self.sched.attempt(attempt) else { continue };
                    tracing::debug!(job_id = %j.id, tenant = %j.tenant, attempt_id = %attempt, %worker, "sending assignment");
                    (*worker, pb::server_message::Msg::Assign(assign_message(j, a.id, a.number, self.cfg.kill_grace, self.cfg.max_log_bytes)))
                }
                Outbound::Cancel { worker, attempt, reason } => (
                    *worker,
                    pb::server_message::Msg::Cancel(pb::CancelJob {
                        attempt_id: attempt.to_string(),
                        reason: (*reason).to_owned(),
                        grace_ms: self.cfg.kill_grace.as_millis() as u64,
                    }),
                ),
                Outbound::Ack { worker, attempt } => (*worker, pb::server_message::Msg::Ack(pb::ResultAck { attempt_id: attempt.to_string() })),
                Outbound::Drained { worker } => {
                    tracing::info!(%worker, "worker drained; it stops");
                    (*worker, pb::server_message::Msg::Drained(pb::Drained {}))
                }
            };
            if let Some(conn) = self.conns.get(&worker)
                && !conn.offer(pb::ServerMessage { msg: Some(msg) })
            {
                tracing::warn!(%worker, "a worker's job stream is full or gone; the message is dropped and recovered by timeouts");
            }
        }
    }
}

/// Another server took over this database's scheduler: this one must not decide anything more.
/// It exits at once — as after a kill -9, which every part survives: its workers reconnect to
/// the server that took over, and what it had in memory is in the store already.
fn lost_leadership(e: &StoreError) -> ! {
    tracing::error!(error = %e, "this server no longer holds the scheduler lock; exiting");
    eprintln!("error: {e}; exiting");
    std::process::exit(3)
}

/// A worker's report the core fenced off. A stale one (a retry overtook it, the job ended) is
/// normal; one for another worker's attempt is a worker speaking for someone else's job, so it
/// is counted as refused, like a log chunk the job stream refuses.
fn ignored(kind: &'static str, worker: WorkerId, attempt: AttemptId, f: Fenced) {
    if f == Fenced::WrongWorker {
        metrics::counter!("hodei_worker_messages_refused_total", "kind" => kind).increment(1);
        tracing::warn!(%attempt, %worker, kind, "refused a report for another worker's attempt");
    } else {
        tracing::debug!(%attempt, %worker, kind, reason = %f, "ignored a stale report");
    }
}

/// While the core is stale: an API command is answered now with the store's unavailability
/// (a reader of scheduler state, `Inspect`, is dropped, which its caller sees as the scheduler
/// not running); a worker's report is returned, to be applied once the core is reloaded.
fn refuse_while_stale(c: Command) -> Option<Command> {
    let down = || ControlError::Store(StoreError::WriteUnavailable { doing: "scheduling", detail: "the store is unavailable; retry later".into() });
    match c {
        Command::Submit { reply, .. } => drop(reply.send(Err(down()))),
        Command::SubmitArray { reply, .. } => drop(reply.send(Err(down()))),
        Command::Tenant { reply, .. }
        | Command::Burst { reply, .. }
        | Command::Pool { reply, .. }
        | Command::Rates { reply, .. }
        | Command::Retry { reply, .. } => drop(reply.send(Err(down()))),
        Command::Hold { reply, .. } | Command::Release { reply, .. } => drop(reply.send(Err(down()))),
        Command::Drain { reply, .. } => drop(reply.send(Err(down()))),
        Command::Cancel { reply, .. } => drop(reply.send(Err(down()))),
        Command::Inspect(_) => {}
        worker => return Some(worker),
    }
    None
}

/// The AssignJob message for an attempt, with the `HODEI_*` environment of SPEC §5.
pub fn assign_message(j: &Job, attempt: AttemptId, number: u32, kill_grace: Duration, max_log_bytes: u64) -> pb::AssignJob {
    let s = &j.spec;
    let mut env = s.env.clone().into_iter().collect::<HashMap<_, _>>();
    env.insert("HODEI_JOB_ID".into(), j.id.to_string());
    env.insert("HODEI_ATTEMPT_ID".into(), attempt.to_string());
    env.insert("HODEI_ATTEMPT_NUMBER".into(), number.to_string());
    env.insert("HODEI_TENANT_ID".into(), j.tenant.to_string());
    env.insert("HODEI_CPU_M".into(), s.resources.cpu_m.get().to_string());
    env.insert("HODEI_MEMORY_MB".into(), s.resources.memory_mb.get().to_string());
    env.insert("HODEI_GPUS".into(), s.resources.gpu.get().to_string());
    if let Some((_, index)) = j.array {
        env.insert("HODEI_ARRAY_INDEX".into(), index.to_string());
    }
    pb::AssignJob {
        attempt_id: attempt.to_string(),
        job_id: j.id.to_string(),
        attempt_number: number,
        argv: s.command.clone(),
        env,
        working_dir: s.working_dir.clone().unwrap_or_default(),
        image: s.image.clone().unwrap_or_default(),
        resources: Some(pb::Resources { cpu_m: s.resources.cpu_m.get(), memory_mb: s.resources.memory_mb.get(), gpu: s.resources.gpu.get() }),
        timeout_ms: s.timeout.as_millis() as u64,
        kill_grace_ms: kill_grace.as_millis() as u64,
        max_log_bytes,
    }
}

/// The API's view of the engine: job commands plus a store read for retries of ended jobs.
pub struct ControlPlane {
    pub tier_weights: TierWeights,
    pub engine: EngineHandle,
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Control for ControlPlane {
    async fn submit(
        &self,
        jobs: Vec<Job>,
        atomic: bool,
        key: Option<IdempotentCall>,
        ended: Vec<(JobId, JobState)>,
    ) -> Result<Idempotent<Vec<Admitted>>, ControlError> {
        self.engine.submit(jobs, atomic, key, ended).await
    }

    async fn submit_array(
        &self,
        template: Job,
        array: ArrayId,
        key: Option<IdempotentCall>,
        ended: Vec<(JobId, JobState)>,
    ) -> Result<Idempotent<ArrayAdmitted>, ControlError> {
        self.engine.ask(|reply| Command::SubmitArray { template: Box::new(template), array, key, ended, reply }).await
    }

    async fn tenant_changed(&self, t: &Tenant) -> Result<(), ControlError> {
        let (id, policy) = (t.id.clone(), t.policy(&self.tier_weights));
        // The tenant is already stored: the engine must hear of it, so this waits for room.
        self.engine.ask_waiting(|reply| Command::Tenant { id, policy, reply }).await
    }

    async fn burst_changed(&self, b: &BurstSession) -> Result<(), ControlError> {
        self.engine.burst_changed(b.clone()).await
    }

    async fn rates_changed(&self, versions: Vec<hodei_core::cost::RateVersion>) -> Result<(), ControlError> {
        self.engine.ask_waiting(|reply| Command::Rates { versions, reply }).await
    }

    async fn pool_changed(&self, p: &hodei_core::Pool) -> Result<(), ControlError> {
        let (id, placement) = (p.id.clone(), PoolPlacement::from(p));
        self.engine.ask_waiting(|reply| Command::Pool { id, placement, reply }).await
    }

    async fn inspect(&self, f: Inspector) -> Result<(), ControlError> {
        self.engine.send(Command::Inspect(f))
    }

    async fn cancel(&self, id: JobId, by: PrincipalId) -> Result<CancelOutcome, ControlError> {
        match self.engine.cancel(id, Actor::Principal(by)).await {
            Err(ControlError::NotFound) => match self.store.get_job(id).await? {
                Some(j) => Err(ControlError::InvalidState { state: j.state, action: "cancel" }),
                None => Err(ControlError::NotFound),
            },
            r => r,
        }
    }

    async fn retry(&self, id: JobId, by: PrincipalId) -> Result<(), ControlError> {
        let job = self.store.get_job(id).await?.ok_or(ControlError::NotFound)?;
        self.engine.ask(|reply| Command::Retry { job: Box::new(job), by: Actor::Principal(by), reply }).await
    }

    async fn hold(&self, id: JobId, by: PrincipalId) -> Result<(), ControlError> {
        self.with_state_error(id, "hold", self.engine.hold(id, Actor::Principal(by)).await).await
    }

    async fn release(&self, id: JobId, by: PrincipalId) -> Result<(), ControlError> {
        self.with_state_error(id, "release", self.engine.release(id, Actor::Principal(by)).await).await
    }

    async fn drain_worker(&self, id: WorkerId) -> Result<(), ControlError> {
        self.engine.ask(|reply| Command::Drain { worker: id, reply }).await
    }

    fn is_running(&self) -> bool {
        self.engine.is_running()
    }

    fn loop_lag(&self) -> Duration {
        self.engine.loop_lag()
    }
}

impl ControlPlane {
    /// A job the engine does not hold has ended: say so with its state.
    async fn with_state_error(&self, id: JobId, action: &'static str, r: Result<(), ControlError>) -> Result<(), ControlError> {
        match r {
            Err(ControlError::NotFound) => match self.store.get_job(id).await? {
                Some(j) => Err(ControlError::InvalidState { state: j.state, action }),
                None => Err(ControlError::NotFound),
            },
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(capacity: usize) -> (EngineHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity);
        let h = EngineHandle { tx, running: Arc::default(), connected: Arc::default(), progress: Arc::new(Progress::new()) };
        (h, rx)
    }

    #[test]
    fn a_worker_stream_queue_is_bounded() {
        let (tx, mut rx) = mpsc::channel(PER_WORKER_QUEUED);
        let conn = WorkerConn { conn: 1, tx };
        for _ in 0..PER_WORKER_QUEUED {
            assert!(conn.offer(pb::ServerMessage::default()));
        }
        assert!(!conn.offer(pb::ServerMessage::default()), "a worker that does not read gets nothing more queued");
        assert!(rx.try_recv().is_ok());
        assert!(conn.offer(pb::ServerMessage::default()), "room again once it reads");
    }

    /// A full queue refuses API requests at once (503 with Retry-After) and makes workers'
    /// reports wait for room; nothing is queued beyond the bound.
    #[tokio::test]
    async fn a_full_command_queue_pushes_back() {
        let (h, mut rx) = handle(1);
        let id = JobId::from_uuid(Uuid::now_v7());
        h.send(Command::Deregister { id: WorkerId::from_uuid(Uuid::now_v7()) }).unwrap();
        assert!(matches!(h.hold(id, Actor::Api).await, Err(ControlError::Busy)));
        let resp = axum::response::IntoResponse::into_response(hodei_api::ApiError::from(ControlError::Busy));
        assert_eq!((resp.status().as_u16(), resp.headers().get("retry-after").and_then(|v| v.to_str().ok())), (503, Some("1")));
        // A worker's report waits until the engine takes a command, then goes in.
        let worker = h.clone();
        let report = tokio::spawn(async move { worker.deliver(Command::Deregister { id: WorkerId::from_uuid(Uuid::now_v7()) }).await });
        tokio::task::yield_now().await;
        assert!(!report.is_finished(), "no room yet");
        assert!(rx.recv().await.is_some());
        report.await.unwrap().unwrap();
        assert!(matches!(rx.recv().await, Some(Command::Deregister { .. })));
    }

    /// While the store is down, a worker's newer heartbeat replaces its older one in place (whose
    /// caller is answered), so heartbeats alone never grow what is kept; other reports are
    /// kept in order up to the bound.
    #[test]
    fn reports_kept_while_stalled_are_bounded() {
        let heartbeat = |id| {
            let (reply, rx) = oneshot::channel();
            (Command::Heartbeat { id, running: vec![], node: None, reply }, rx)
        };
        let (a, b) = (WorkerId::from_uuid(Uuid::now_v7()), WorkerId::from_uuid(Uuid::now_v7()));
        let mut kept = Kept::default();
        let (first, mut first_rx) = heartbeat(a);
        kept.push(first);
        kept.push(Command::Deregister { id: b });
        let mut waiting = Vec::new();
        for _ in 0..1000 {
            let (c, rx) = heartbeat(a);
            kept.push(c);
            waiting.push(rx);
        }
        let (other, _other_rx) = heartbeat(b);
        kept.push(other);
        assert_eq!(kept.commands.len(), 3, "one heartbeat per worker");
        assert!(matches!(first_rx.try_recv(), Ok(Ok(stale)) if stale.is_empty()), "the replaced caller hears nothing is stale");
        assert!(waiting[..999].iter_mut().all(|rx| matches!(rx.try_recv(), Ok(Ok(_)))));
        assert!(waiting[999].try_recv().is_err(), "the newest heartbeat waits for the step");
        assert!(
            matches!(&kept.commands[..], [Command::Heartbeat { id, .. }, Command::Deregister { .. }, Command::Heartbeat { id: other, .. }] if *id == a && *other == b)
        );
        while !kept.is_full() {
            kept.push(Command::Deregister { id: b });
        }
        assert_eq!(kept.commands.len(), KEPT_WHILE_STALLED);
    }
}
