//! The Hodei simulator: drives the same pure core the server runs ([`hodei_core::sched::Scheduler`])
//! with a virtual clock, from a workload file or a recorded trace, and reports what each tenant
//! got: its share of capacity against its weighted share, its waits, SLA compliance, and
//! Jain's fairness index over the tenants. Pools with `autoscaling` are sized by the core's
//! autoscaler ([`hodei_core::autoscale::evaluate`]) as the server sizes them, and the report
//! adds what that cost: worker-seconds, scaling events, flaps and SLA breaches.
//!
//! **Architecture Invariant:** deterministic. Same workload and seed → same report, byte for
//! byte: one seeded generator per tenant, events ordered by (time, sequence), no wall clock,
//! no hash-order iteration in anything reported.

mod rng;
pub mod workload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use hodei_core::autoscale::{self, IdleExpired, Memory, PoolSize, Samples};
use hodei_core::sched::{AttemptResult, BackfillRules, Outbound, Outcome, PoolQuery, SchedConfig, Scheduler, SlaRules};
use hodei_core::spec::{JobSpec, JobSpecInput, SpecLimits};
use hodei_core::{AttemptId, Job, JobId, PoolId, Quota, Resources, TenantId, TenantPolicy, Timestamp, Worker, WorkerId, WorkerState};
use serde::Serialize;
use uuid::Uuid;

pub use rng::Rng;
pub use workload::{Arrival, Dist, Hint, TraceJob, Workload, WorkloadError};

/// What one tenant got over the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub weight: u32,
    pub submitted: u64,
    pub rejected: u64,
    pub started: u64,
    pub completed: u64,
    /// Share of allocated capacity (dominant resource × time) in the window.
    pub share: f64,
    /// Its fair share (SPEC §2.5: weight / Σ weights of the tenants with pending or running
    /// jobs), averaged over the window; 0 while it had no jobs.
    pub fair_share: f64,
    /// share / fair_share.
    pub ratio: f64,
    pub wait_p50_ms: u64,
    pub wait_p95_ms: u64,
    pub wait_max_ms: u64,
    /// Jobs started within their SLA level's maximum wait / jobs started.
    pub sla_met: u64,
    /// Most dispatches of other tenants between one of its jobs' arrival and its start.
    pub max_overtaken: u64,
    /// Longest time one of its jobs waited after the first slot freed following its arrival:
    /// the delay beyond what the queue owed it.
    pub max_delay_beyond_first_slot_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub horizon_ms: u64,
    pub window_ms: [u64; 2],
    pub tenants_total: usize,
    pub slots: u64,
    pub submitted: u64,
    pub rejected: u64,
    pub started: u64,
    pub completed: u64,
    /// Allocated dominant share × time over the window's capacity.
    pub utilization: f64,
    /// Jain's index over share / fair_share of the tenants that had jobs in the window.
    pub jain_index: f64,
    pub max_share_error: f64,
    pub sla_compliance: f64,
    /// Jobs that waited past their SLA level's maximum: started late, or still waiting past it
    /// at the horizon.
    pub sla_breaches: u64,
    /// ∫ live workers dt over the window (seconds).
    pub worker_seconds: f64,
    /// Executed scaling decisions of autoscaled pools.
    pub scale_ups: u64,
    pub scale_downs: u64,
    /// Executed decisions that reverse the previous one within the pool's longest cooldown.
    pub flaps: u64,
    pub tenants: Vec<TenantReport>,
}

/// A pool the core's autoscaler sizes.
struct Scaled {
    pool: hodei_core::Pool,
    samples: Samples,
    mem: Memory,
    interval: u64,
    delay: u64,
    /// Scale-ups whose workers have not arrived yet, and how many of them were cancelled.
    pending_up: u32,
    cancel_up: u32,
    /// Executed decisions: (instant, +1 up / -1 down).
    log: Vec<(u64, i8)>,
}

/// A timed event of an autoscaled pool.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Tick {
    Evaluate(usize),
    Up(usize),
}

/// Per job, while it is live.
struct Meta {
    tenant: u32,
    duration: u64,
    submitted: u64,
    dispatches_at_arrival: u64,
    own_at_arrival: u64,
    first_slot: u64,
    max_wait: u64,
}

#[derive(Default)]
struct Tally {
    submitted: u64,
    rejected: u64,
    started: u64,
    completed: u64,
    dispatched: u64,
    /// ppm of capacity × ms.
    alloc: u128,
    waits: Vec<u64>,
    sla_met: u64,
    max_overtaken: u64,
    max_delay: u64,
    /// ∫ weight / Σ weights of active tenants, over the window while this one was active (ms).
    fair_integral: f64,
    /// The accumulator's value when it last became active.
    active_from: f64,
}

struct TenantSim {
    id: TenantId,
    weight: u32,
    arrival: Arrival,
    shape: workload::JobShape,
    spec: JobSpec,
    rng: Rng,
    tally: Tally,
    queued: u64,
    /// Jobs pending or running: the tenant is active (has demand) while > 0.
    live: u64,
}

/// `n` jobs of a tenant arrive (`trace`: one job of the trace).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Arrive {
    tenant: u32,
    n: u64,
    trace: Option<usize>,
}

/// An attempt ends.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Done {
    started: u64,
    attempt: u128,
    worker: u128,
    tenant: u32,
}

pub struct Simulator {
    sched: Scheduler,
    tenants: Vec<TenantSim>,
    trace: Vec<TraceJob>,
    /// Arrivals and ends, each by (time, sequence). At one instant ends come first, so
    /// slots are free before the scheduling pass.
    arrivals: BinaryHeap<Reverse<(u64, u64, Arrive)>>,
    ends: BinaryHeap<Reverse<(u64, u64, Done)>>,
    /// ∫ dt / Σ weights of active tenants over the window so far, and its last instant.
    fair_acc: f64,
    fair_at: u64,
    active_weight: u64,
    seq: u64,
    next_id: u128,
    meta: HashMap<JobId, Meta>,
    capacity: Resources,
    slots: u64,
    running: u64,
    dispatches: u64,
    window: (u64, u64),
    horizon: u64,
    seed: u64,
    scaled: Vec<Scaled>,
    ticks: BinaryHeap<Reverse<(u64, u64, Tick)>>,
    /// Live workers, and ∫ of them over the window so far (worker-ms) up to `ws_at`.
    live_workers: u64,
    ws_acc: f64,
    ws_at: u64,
    draining: std::collections::BTreeSet<WorkerId>,
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms as i64)
}

fn tenant_name(group: &str, i: u32, count: u32) -> String {
    if count == 1 { group.to_owned() } else { format!("{group}{i:04}") }
}

fn spec_of(name: &str, shape: &workload::JobShape) -> Result<JobSpec, WorkloadError> {
    JobSpecInput {
        name: Some(name.to_owned()),
        command: vec!["sim".into()],
        cpu_m: Some(i64::from(shape.cpu_m)),
        memory_mb: Some(i64::from(shape.memory_mb)),
        gpu: Some(i64::from(shape.gpu)),
        timeout_ms: Some(7 * 24 * 3_600_000),
        priority: Some(shape.priority.clone()),
        sla: shape.sla.clone(),
        ..Default::default()
    }
    .validate(&SpecLimits { max_timeout: Duration::from_secs(7 * 24 * 3600), ..SpecLimits::default() }, "")
    .map_err(|e| WorkloadError::Invalid { field: format!("job of {name}"), message: format!("{e:?}") })
}

impl Simulator {
    pub fn new(w: &Workload, trace: Vec<TraceJob>) -> Result<Simulator, WorkloadError> {
        let k = &w.scheduler;
        let cfg = SchedConfig {
            assign_ack_timeout: Duration::from_secs(365 * 86_400),
            heartbeat_timeout: Duration::from_secs(365 * 86_400),
            default_expected_duration: Duration::from_millis(w.default_expected_duration_ms),
            sla: SlaRules { escalation: k.sla_escalation, ..SlaRules::default() },
            backfill: BackfillRules {
                enabled: k.backfill,
                reservation_after: Duration::from_millis(k.reservation_after_ms),
                max_reservations: k.max_reservations,
            },
            usage_half_life: Some(Duration::from_secs(k.usage_half_life_s)).filter(|d| !d.is_zero()),
            preemption: k.preemption,
            ..SchedConfig::default()
        };
        let mut sim = Simulator {
            sched: Scheduler::new(cfg),
            tenants: vec![],
            trace,
            arrivals: BinaryHeap::new(),
            ends: BinaryHeap::new(),
            fair_acc: 0.0,
            fair_at: 0,
            active_weight: 0,
            seq: 0,
            next_id: 0,
            meta: HashMap::new(),
            capacity: Resources::ZERO,
            slots: 0,
            running: 0,
            dispatches: 0,
            window: (w.warmup_s * 1000, w.horizon_s * 1000),
            horizon: w.horizon_s * 1000,
            seed: w.seed,
            scaled: vec![],
            ticks: BinaryHeap::new(),
            live_workers: 0,
            ws_acc: 0.0,
            ws_at: w.warmup_s * 1000,
            draining: Default::default(),
        };
        for p in &w.pools {
            let pool = PoolId::parse(&p.id).map_err(|e| WorkloadError::Invalid { field: "pools.id".into(), message: e.to_string() })?;
            let shape = Resources::new(p.cpu_m, p.memory_mb, p.gpu);
            for _ in 0..p.workers {
                sim.add_worker(&pool, shape, p.slots, 0);
            }
            // Capacity (for utilization and shares) is the pool at its largest.
            let most = p.autoscaling.as_ref().map_or(p.workers, |a| a.max);
            for _ in 0..most {
                sim.capacity = sim.capacity.checked_add(&shape).unwrap_or(sim.capacity);
                sim.slots += u64::from(p.slots);
            }
            if let Some(a) = &p.autoscaling {
                let policies = a.policies().map_err(|e| WorkloadError::Invalid { field: format!("pools {} autoscaling", p.id), message: e })?;
                let core = hodei_core::Pool {
                    id: pool.clone(),
                    name: p.id.clone(),
                    pool_type: if a.idle_timeout_s.is_some() { hodei_core::PoolType::Dynamic } else { hodei_core::PoolType::Static },
                    provider: "sim".into(),
                    worker_resources: shape,
                    worker_slots: p.slots,
                    min_size: a.min,
                    max_size: a.max,
                    desired_size: p.workers,
                    auto_scaling_enabled: true,
                    idle_timeout: Duration::from_secs(a.idle_timeout_s.unwrap_or(0)),
                    scaling_policies: policies,
                    allowed_tenants: Vec::new(),
                    labels: BTreeMap::new(),
                    managed_by: "sim".into(),
                    state: hodei_core::PoolState::Active,
                    state_reason: String::new(),
                    created_at: ts(0),
                    updated_at: ts(0),
                    version: 1,
                };
                let i = sim.scaled.len();
                sim.scaled.push(Scaled {
                    pool: core,
                    samples: Samples::default(),
                    mem: Memory::default(),
                    interval: a.evaluation_interval_s * 1000,
                    delay: a.provision_delay_ms,
                    pending_up: 0,
                    cancel_up: 0,
                    log: vec![],
                });
                sim.tick(0, Tick::Evaluate(i));
            }
        }
        for g in &w.tenants {
            for i in 0..g.count {
                let name = tenant_name(&g.name, i, g.count);
                let weight = if g.weights.is_empty() { g.weight } else { g.weights[i as usize % g.weights.len()] };
                sim.add_tenant(&name, weight, g.quota, g.arrival.clone(), g.job.clone())?;
            }
        }
        for (k, j) in sim.trace.clone().iter().enumerate() {
            let t = match sim.tenants.iter().position(|t| t.id.as_str() == j.tenant) {
                Some(t) => t,
                None => {
                    sim.add_tenant(&j.tenant, 2, None, Arrival::None, workload::JobShape::default())?;
                    sim.tenants.len() - 1
                }
            };
            sim.push(j.at_ms, Arrive { tenant: t as u32, n: 1, trace: Some(k) });
        }
        for t in 0..sim.tenants.len() {
            sim.first_arrivals(t as u32);
        }
        let _ = sim.sched.take_changes();
        Ok(sim)
    }

    fn tick(&mut self, at: u64, t: Tick) {
        self.seq += 1;
        self.ticks.push(Reverse((at, self.seq, t)));
    }

    /// Adds `delta` to the live workers, first counting the worker-time so far.
    fn count_workers(&mut self, now: u64, delta: i64) {
        let t = now.clamp(self.window.0, self.window.1);
        if t > self.ws_at {
            self.ws_acc += (t - self.ws_at) as f64 * self.live_workers as f64;
            self.ws_at = t;
        }
        self.live_workers = self.live_workers.saturating_add_signed(delta);
    }

    fn add_worker(&mut self, pool: &PoolId, shape: Resources, slots: u32, now: u64) {
        let id = WorkerId::from_uuid(Uuid::from_u128(self.mint()));
        let worker = Worker {
            id,
            instance_name: format!("{pool}-{id}"),
            pool_id: pool.clone(),
            state: WorkerState::Registering,
            capabilities: vec!["process".into()],
            resources: shape,
            allocated: Resources::ZERO,
            slots,
            slots_used: 0,
            labels: BTreeMap::new(),
            version: "sim".into(),
            registered_at: ts(now),
            last_heartbeat_at: ts(now),
            idle_since: None,
            connected: false,
            allowed_tenants: Vec::new(),
            health: hodei_core::worker::Health::Healthy,
            health_reason: String::new(),
        };
        self.sched.register_worker(worker, ts(now));
        let _ = self.sched.connect_worker(id, &[], vec![], ts(now));
        self.count_workers(now, 1);
    }

    /// One autoscaler evaluation of scaled pool `i`, applied at once (new workers after the
    /// provision delay; fewer: cancelled arrivals, then idle workers longest idle first, then
    /// the least busy drained).
    fn evaluate(&mut self, i: usize, now: u64) {
        let sc = &self.scaled[i];
        let forecast = sc.pool.scaling_policies.iter().any(|p| p.mode == autoscale::Mode::Forecast);
        let idle_timeout = (sc.pool.pool_type == hodei_core::PoolType::Dynamic).then_some(sc.pool.idle_timeout);
        let q = PoolQuery { pool: &sc.pool, idle_timeout, forecast, provision_delay: Duration::from_millis(sc.delay) };
        let Some(view) = self.sched.pool_views(&[q], ts(now)).pop() else { return };
        let sc = &mut self.scaled[i];
        let keep = sc.pool.scaling_policies.iter().map(|p| p.window).max().unwrap_or_default().max(Duration::from_millis(sc.interval));
        sc.samples.push(ts(now), view.signals, keep);
        let size =
            PoolSize { min: sc.pool.min_size, max: sc.pool.max_size, desired: sc.pool.desired_size, current: view.live + sc.pending_up, auto_scaling: true };
        let idle = IdleExpired(if idle_timeout.is_some() { view.idle_expired } else { 0 });
        let decision = autoscale::evaluate(size, &sc.pool.scaling_policies, &sc.samples, view.demand.as_ref(), idle, &mut sc.mem, ts(now));
        if now + sc.interval <= self.horizon {
            let next = now + sc.interval;
            self.tick(next, Tick::Evaluate(i));
        }
        let Some(d) = decision else { return };
        let sc = &mut self.scaled[i];
        sc.mem.note(&d, ts(now));
        if d.outcome != autoscale::Outcome::Executed || d.to == d.from {
            return;
        }
        sc.pool.desired_size = d.to;
        if d.to > d.from {
            sc.log.push((now, 1));
            let (n, delay) = (d.to - d.from, sc.delay);
            sc.pending_up += n;
            for _ in 0..n {
                self.tick(now + delay, Tick::Up(i));
            }
            return;
        }
        sc.log.push((now, -1));
        let mut n = d.from - d.to;
        let cancel = n.min(sc.pending_up - sc.cancel_up);
        sc.cancel_up += cancel;
        n -= cancel;
        let pool = sc.pool.id.clone();
        let mut ws: Vec<(u32, i64, WorkerId)> = self
            .sched
            .workers()
            .filter(|w| w.pool_id == pool && matches!(w.state, WorkerState::Idle | WorkerState::Busy))
            .map(|w| (w.slots_used, w.idle_since.map_or(i64::MAX, |t| t.as_millis()), w.id))
            .collect();
        ws.sort();
        for (used, _, id) in ws.into_iter().take(n as usize) {
            if used == 0 {
                self.sched.terminate_worker(id, ts(now));
                self.count_workers(now, -1);
            } else if self.sched.drain_worker(id).is_ok() {
                self.draining.insert(id);
            }
        }
    }

    /// A worker of scaled pool `i` arrives, unless its scale-up was cancelled meanwhile.
    fn worker_up(&mut self, i: usize, now: u64) {
        let sc = &mut self.scaled[i];
        sc.pending_up -= 1;
        if sc.cancel_up > 0 {
            sc.cancel_up -= 1;
            return;
        }
        let (pool, shape, slots) = (sc.pool.id.clone(), sc.pool.worker_resources, sc.pool.worker_slots);
        self.add_worker(&pool, shape, slots, now);
    }

    fn mint(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn push(&mut self, at: u64, e: Arrive) {
        self.seq += 1;
        self.arrivals.push(Reverse((at, self.seq, e)));
    }

    fn add_tenant(
        &mut self,
        name: &str,
        weight: u32,
        quota: Option<workload::QuotaSpec>,
        arrival: Arrival,
        shape: workload::JobShape,
    ) -> Result<(), WorkloadError> {
        let id = TenantId::parse(name).map_err(|e| WorkloadError::Invalid { field: format!("tenant {name}"), message: e.to_string() })?;
        let quota = match quota {
            Some(q) => {
                Quota { resources: Resources::new(q.cpu_m, q.memory_mb, q.gpu), max_concurrent_jobs: q.max_concurrent_jobs, max_queued_jobs: q.max_queued_jobs }
            }
            None => Quota { resources: Resources::new(u32::MAX, u32::MAX, u32::MAX), max_concurrent_jobs: u32::MAX, max_queued_jobs: u32::MAX },
        };
        self.sched.set_tenant(&id, TenantPolicy { weight, quota, version: 1, ..TenantPolicy::default() }, ts(0));
        let spec = spec_of(name, &shape)?;
        let rng = Rng::stream(self.seed, self.tenants.len() as u64);
        self.tenants.push(TenantSim { id, weight, arrival, shape, spec, rng, tally: Tally::default(), queued: 0, live: 0 });
        Ok(())
    }

    fn first_arrivals(&mut self, t: u32) {
        match self.tenants[t as usize].arrival.clone() {
            Arrival::Backlog { jobs, at_s } => self.push((at_s * 1000.0) as u64, Arrive { tenant: t, n: jobs, trace: None }),
            Arrival::Saturate { queued } => self.push(0, Arrive { tenant: t, n: u64::from(queued), trace: None }),
            Arrival::Poisson { per_s, start_s, .. } => {
                let gap = self.tenants[t as usize].rng.exponential(1000.0 / per_s);
                self.push((start_s * 1000.0) as u64 + gap, Arrive { tenant: t, n: 1, trace: None });
            }
            Arrival::At { s } => {
                for at in s {
                    self.push((at * 1000.0) as u64, Arrive { tenant: t, n: 1, trace: None });
                }
            }
            Arrival::None => {}
        }
    }

    /// The earliest instant a slot is free at or after `now`.
    fn first_slot(&self, now: u64) -> u64 {
        if self.running < self.slots {
            return now;
        }
        self.ends.peek().map_or(now, |Reverse((at, _, _))| *at)
    }

    fn arrive(&mut self, t: u32, n: u64, trace: Option<usize>, now: u64) {
        let first_slot = self.first_slot(now);
        for _ in 0..n {
            let ts_now = ts(now);
            let (spec, duration) = {
                let ten = &mut self.tenants[t as usize];
                match trace.map(|k| &self.trace[k]) {
                    Some(j) => {
                        let shape = workload::JobShape { cpu_m: j.cpu_m, memory_mb: j.memory_mb, priority: j.priority.clone(), ..ten.shape.clone() };
                        let mut spec = match spec_of(ten.id.as_str(), &shape) {
                            Ok(s) => s,
                            Err(_) => ten.spec.clone(),
                        };
                        spec.expected_duration = Some(Duration::from_millis(j.duration_ms));
                        (spec, j.duration_ms.max(1))
                    }
                    None => {
                        let d = ten.shape.duration.sample(&mut ten.rng);
                        let mut spec = ten.spec.clone();
                        spec.expected_duration = match ten.shape.hint {
                            Hint::Exact => Some(Duration::from_millis(d)),
                            Hint::Mean => Some(Duration::from_millis(ten.shape.duration.mean_ms())),
                            Hint::None => None,
                        };
                        (spec, d)
                    }
                }
            };
            let id = JobId::from_uuid(Uuid::from_u128(self.mint()));
            let max_wait = spec.sla.default_max_wait_ms() as u64;
            let job = Job::new(id, self.tenants[t as usize].id.clone(), spec, ts_now);
            let ten = &mut self.tenants[t as usize];
            ten.tally.submitted += 1;
            if self.sched.submit(job, ts_now).is_err() {
                ten.tally.rejected += 1;
                continue;
            }
            ten.queued += 1;
            ten.live += 1;
            let (first, own_at_arrival) = (ten.live == 1, ten.tally.dispatched);
            if first {
                self.activate(t, now, true);
            }
            let meta = Meta { tenant: t, duration, submitted: now, dispatches_at_arrival: self.dispatches, own_at_arrival, first_slot, max_wait };
            self.meta.insert(id, meta);
        }
        if let Arrival::Poisson { per_s, until_s, .. } = self.tenants[t as usize].arrival
            && trace.is_none()
        {
            let gap = self.tenants[t as usize].rng.exponential(1000.0 / per_s);
            let until = until_s.map_or(self.horizon, |u| ((u * 1000.0) as u64).min(self.horizon));
            if now + gap < until {
                self.push(now + gap, Arrive { tenant: t, n: 1, trace: None });
            }
        }
    }

    fn dominant_ppm(&self, r: &Resources) -> u128 {
        let share = |x: u32, cap: u32| if cap == 0 { 0 } else { u128::from(x) * 1_000_000 / u128::from(cap) };
        share(r.cpu_m.get(), self.capacity.cpu_m.get())
            .max(share(r.memory_mb.get(), self.capacity.memory_mb.get()))
            .max(share(r.gpu.get(), self.capacity.gpu.get()))
    }

    fn start(&mut self, job: JobId, attempt: AttemptId, worker: WorkerId, now: u64) {
        let _ = self.sched.accepted(attempt, worker, ts(now), ts(now));
        let Some(m) = self.meta.remove(&job) else { return };
        let ppm = self.sched.job(&job).map_or(0, |j| self.dominant_ppm(&j.resources()));
        self.running += 1;
        self.dispatches += 1;
        let end = now + m.duration;
        let (lo, hi) = self.window;
        let overlap = end.min(hi).saturating_sub(now.max(lo));
        let others = self.dispatches - 1 - m.dispatches_at_arrival;
        let ten = &mut self.tenants[m.tenant as usize];
        let own = ten.tally.dispatched - m.own_at_arrival;
        ten.tally.dispatched += 1;
        ten.queued -= 1;
        ten.tally.started += 1;
        ten.tally.alloc += ppm * u128::from(overlap);
        let wait = now - m.submitted;
        ten.tally.waits.push(wait);
        ten.tally.sla_met += u64::from(wait <= m.max_wait);
        ten.tally.max_overtaken = ten.tally.max_overtaken.max(others - own);
        ten.tally.max_delay = ten.tally.max_delay.max(now.saturating_sub(m.first_slot.max(m.submitted)));
        if matches!(ten.arrival, Arrival::Saturate { .. }) && now < self.horizon {
            self.push(now, Arrive { tenant: m.tenant, n: 1, trace: None });
        }
        self.seq += 1;
        self.ends.push(Reverse((
            end,
            self.seq,
            Done { started: now, attempt: attempt.as_uuid().as_u128(), worker: worker.as_uuid().as_u128(), tenant: m.tenant },
        )));
    }

    /// Runs to the horizon and reports.
    pub fn run(mut self) -> Report {
        loop {
            let next_end = self.ends.peek().map(|Reverse((at, _, _))| *at);
            let next_arrival = self.arrivals.peek().map(|Reverse((at, _, _))| *at);
            let next_tick = self.ticks.peek().map(|Reverse((at, _, _))| *at);
            let Some(now) = next_end.into_iter().chain(next_arrival).chain(next_tick).min() else { break };
            if now > self.horizon {
                break;
            }
            // Everything at this instant (ends first), then one scheduling pass.
            while self.ends.peek().is_some_and(|Reverse((at, _, _))| *at == now) {
                let Some(Reverse((_, _, d))) = self.ends.pop() else { break };
                let (a, w) = (AttemptId::from_uuid(Uuid::from_u128(d.attempt)), WorkerId::from_uuid(Uuid::from_u128(d.worker)));
                let r = AttemptResult::decided(Outcome::Succeeded, Some(0), None, ts(d.started), ts(now));
                if self.sched.finish(a, w, r, ts(now)).is_ok() {
                    self.tenants[d.tenant as usize].tally.completed += 1;
                }
                // A drained worker goes once its last job ended.
                if self.draining.contains(&w) && self.sched.worker(&w).is_none_or(|x| x.slots_used == 0) {
                    self.draining.remove(&w);
                    self.sched.terminate_worker(w, ts(now));
                    self.count_workers(now, -1);
                }
                let ten = &mut self.tenants[d.tenant as usize];
                ten.live -= 1;
                if ten.live == 0 {
                    self.activate(d.tenant, now, false);
                }
                self.running -= 1;
            }
            while self.ticks.peek().is_some_and(|Reverse((at, _, _))| *at == now) {
                let Some(Reverse((_, _, t))) = self.ticks.pop() else { break };
                match t {
                    Tick::Evaluate(i) => self.evaluate(i, now),
                    Tick::Up(i) => self.worker_up(i, now),
                }
            }
            while self.arrivals.peek().is_some_and(|Reverse((at, _, _))| *at == now) {
                let Some(Reverse((_, _, a))) = self.arrivals.pop() else { break };
                self.arrive(a.tenant, a.n, a.trace, now);
            }
            let mut next = self.next_id;
            let mut mint = || {
                next += 1;
                AttemptId::from_uuid(Uuid::from_u128(next))
            };
            self.sched.schedule(ts(now), &mut mint);
            self.next_id = next;
            let changes = self.sched.take_changes();
            for o in changes.outbound {
                if let Outbound::Assign { worker, attempt, job } = o {
                    self.start(job, attempt, worker, now);
                }
            }
            let _ = self.sched.take_changes();
        }
        self.report()
    }

    /// Advances the fair-share accumulator to `now` (clamped to the window).
    fn advance_fair(&mut self, now: u64) {
        let t = now.clamp(self.window.0, self.window.1);
        if t > self.fair_at && self.active_weight > 0 {
            self.fair_acc += (t - self.fair_at) as f64 / self.active_weight as f64;
        }
        self.fair_at = self.fair_at.max(t);
    }

    /// A tenant becomes active (its first live job) or inactive (its last one ended). Its fair
    /// share while active is weight / Σ weights of the active tenants (SPEC §2.5).
    fn activate(&mut self, t: u32, now: u64, on: bool) {
        self.advance_fair(now);
        let acc = self.fair_acc;
        let ten = &mut self.tenants[t as usize];
        if on {
            ten.tally.active_from = acc;
            self.active_weight += u64::from(ten.weight);
        } else {
            ten.tally.fair_integral += f64::from(ten.weight) * (acc - ten.tally.active_from);
            self.active_weight -= u64::from(ten.weight);
        }
    }

    fn report(mut self) -> Report {
        self.advance_fair(self.horizon);
        self.count_workers(self.horizon, 0);
        let overdue = self.meta.values().filter(|m| self.horizon.saturating_sub(m.submitted) > m.max_wait).count() as u64;
        let (mut ups, mut downs, mut flaps) = (0, 0, 0);
        for sc in &self.scaled {
            let window = sc.pool.scaling_policies.iter().map(|p| p.cooldown).max().unwrap_or_default().as_millis() as u64;
            ups += sc.log.iter().filter(|e| e.1 > 0).count() as u64;
            downs += sc.log.iter().filter(|e| e.1 < 0).count() as u64;
            flaps += sc.log.windows(2).filter(|w| w[0].1 != w[1].1 && w[1].0 - w[0].0 < window).count() as u64;
        }
        let acc = self.fair_acc;
        for t in &mut self.tenants {
            if t.live > 0 {
                t.tally.fair_integral += f64::from(t.weight) * (acc - t.tally.active_from);
            }
        }
        let window_ms = (self.window.1 - self.window.0) as f64;
        let total_alloc: u128 = self.tenants.iter().map(|t| t.tally.alloc).sum();
        let mut tenants = vec![];
        let (mut sum, mut sum_sq, mut n, mut max_err) = (0.0f64, 0.0f64, 0usize, 0.0f64);
        for t in &self.tenants {
            let share = if total_alloc == 0 { 0.0 } else { t.tally.alloc as f64 / total_alloc as f64 };
            let fair = t.tally.fair_integral / window_ms;
            let ratio = if fair > 1e-9 { share / fair } else { 0.0 };
            if fair > 1e-9 {
                sum += ratio;
                sum_sq += ratio * ratio;
                n += 1;
                max_err = max_err.max((ratio - 1.0).abs());
            }
            let mut w = t.tally.waits.clone();
            w.sort_unstable();
            let pct = |p: usize| if w.is_empty() { 0 } else { w[(w.len() - 1) * p / 100] };
            tenants.push(TenantReport {
                tenant: t.id.to_string(),
                weight: t.weight,
                submitted: t.tally.submitted,
                rejected: t.tally.rejected,
                started: t.tally.started,
                completed: t.tally.completed,
                share,
                fair_share: fair,
                ratio,
                wait_p50_ms: pct(50),
                wait_p95_ms: pct(95),
                wait_max_ms: w.last().copied().unwrap_or(0),
                sla_met: t.tally.sla_met,
                max_overtaken: t.tally.max_overtaken,
                max_delay_beyond_first_slot_ms: t.tally.max_delay,
            });
        }
        let started: u64 = tenants.iter().map(|t| t.started).sum();
        let met: u64 = tenants.iter().map(|t| t.sla_met).sum();
        Report {
            seed: self.seed,
            horizon_ms: self.horizon,
            window_ms: [self.window.0, self.window.1],
            tenants_total: tenants.len(),
            slots: self.slots,
            submitted: tenants.iter().map(|t| t.submitted).sum(),
            rejected: tenants.iter().map(|t| t.rejected).sum(),
            started,
            completed: tenants.iter().map(|t| t.completed).sum(),
            utilization: total_alloc as f64 / 1e6 / window_ms,
            jain_index: if n == 0 || sum_sq == 0.0 { 1.0 } else { sum * sum / (n as f64 * sum_sq) },
            max_share_error: max_err,
            sla_compliance: if started == 0 { 1.0 } else { met as f64 / started as f64 },
            sla_breaches: started - met + overdue,
            worker_seconds: self.ws_acc / 1000.0,
            scale_ups: ups,
            scale_downs: downs,
            flaps,
            tenants,
        }
    }
}

/// Simulates a workload (with its trace, if any).
pub fn simulate(w: &Workload, trace: Vec<TraceJob>) -> Result<Report, WorkloadError> {
    Ok(Simulator::new(w, trace)?.run())
}

impl Report {
    /// The report as text: totals, per weight the spread of share / fair share, and the
    /// tenants (all of them up to 20, else the 10 furthest from their fair share).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {}  horizon {} s  window [{} s, {} s]  slots {}",
            self.seed,
            self.horizon_ms / 1000,
            self.window_ms[0] / 1000,
            self.window_ms[1] / 1000,
            self.slots
        );
        let _ = writeln!(s, "jobs: submitted {}  rejected {}  started {}  completed {}", self.submitted, self.rejected, self.started, self.completed);
        let _ = writeln!(s, "utilization {:.4}  SLA compliance {:.4}  SLA breaches {}", self.utilization, self.sla_compliance, self.sla_breaches);
        let _ = writeln!(
            s,
            "workers: {:.0} worker-seconds  scale-ups {}  scale-downs {}  flaps {}",
            self.worker_seconds, self.scale_ups, self.scale_downs, self.flaps
        );
        let _ =
            writeln!(s, "fairness: Jain's index {:.6}  max |share/fair − 1| {:.4}  over {} tenants", self.jain_index, self.max_share_error, self.tenants_total);
        let mut by_weight: BTreeMap<u32, (usize, f64, f64)> = BTreeMap::new();
        for t in self.tenants.iter().filter(|t| t.fair_share > 0.0) {
            let e = by_weight.entry(t.weight).or_insert((0, f64::MAX, f64::MIN));
            *e = (e.0 + 1, e.1.min(t.ratio), e.2.max(t.ratio));
        }
        for (w, (n, lo, hi)) in &by_weight {
            let _ = writeln!(s, "  weight {w:>4}: {n:>5} tenants, share/fair {lo:.4} … {hi:.4}");
        }
        let mut rows: Vec<&TenantReport> = self.tenants.iter().collect();
        if rows.len() > 20 {
            rows.sort_by(|a, b| (b.ratio - 1.0).abs().total_cmp(&(a.ratio - 1.0).abs()).then(a.tenant.cmp(&b.tenant)));
            rows.truncate(10);
            let _ = writeln!(s, "the 10 tenants furthest from their fair share:");
        }
        let _ = writeln!(
            s,
            "{:<16} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>10} {:>10} {:>10} {:>8} {:>10}",
            "TENANT", "WEIGHT", "STARTED", "DONE", "REJECTED", "SHARE%", "FAIR%", "RATIO", "WAIT_P50", "WAIT_P95", "WAIT_MAX", "SLA%", "OVERTAKEN"
        );
        for t in rows {
            let sla = if t.started == 0 { 100.0 } else { t.sla_met as f64 * 100.0 / t.started as f64 };
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>9} {:>9} {:>9} {:>8.3} {:>8.3} {:>7.4} {:>10} {:>10} {:>10} {:>8.2} {:>10}",
                t.tenant,
                t.weight,
                t.started,
                t.completed,
                t.rejected,
                t.share * 100.0,
                t.fair_share * 100.0,
                t.ratio,
                t.wait_p50_ms,
                t.wait_p95_ms,
                t.wait_max_ms,
                sla,
                t.max_overtaken
            );
        }
        s
    }
}
