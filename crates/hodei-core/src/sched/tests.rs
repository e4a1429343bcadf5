use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::burst::{BurstRequest, BurstRules, BurstSession};
use crate::ids::{PoolId, TenantId};
use crate::job::{Priority, SlaStatus};
use crate::quota::{Admission, Limit, Quota, QuotaRules, TenantPolicy, Usage};
use crate::spec::{JobSpecInput, SpecLimits};
use crate::units::Resources;

struct Ids(u128);

impl Ids {
    fn next(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u128(self.0)
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn job(ids: &mut Ids, tenant: &str, cpu_m: i64, max_retries: i64, now: i64) -> Job {
    let spec = JobSpecInput { command: vec!["true".into()], cpu_m: Some(cpu_m), memory_mb: Some(64), max_retries: Some(max_retries), ..Default::default() }
        .validate(&SpecLimits::default(), "")
        .unwrap();
    Job::new(JobId::from_uuid(ids.next()), TenantId::parse(tenant).unwrap(), spec, ts(now))
}

fn worker(ids: &mut Ids, slots: u32, cpu_m: u32) -> Worker {
    Worker {
        id: WorkerId::from_uuid(ids.next()),
        instance_name: "w".into(),
        pool_id: PoolId::parse("local").unwrap(),
        state: WorkerState::Registering,
        capabilities: vec!["process".into()],
        resources: Resources::new(cpu_m, 4096, 0),
        allocated: Resources::ZERO,
        slots,
        slots_used: 0,
        labels: BTreeMap::new(),
        version: "test".into(),
        registered_at: ts(0),
        last_heartbeat_at: ts(0),
        idle_since: None,
        connected: false,
        allowed_tenants: Vec::new(),
        health: crate::worker::Health::Healthy,
        health_reason: String::new(),
    }
}

fn connected_worker(s: &mut Scheduler, ids: &mut Ids, slots: u32, cpu_m: u32, now: i64) -> WorkerId {
    let w = worker(ids, slots, cpu_m);
    let id = w.id;
    s.register_worker(w, ts(now));
    s.connect_worker(id, &[], vec![], ts(now)).unwrap();
    id
}

fn result(outcome: Outcome, exit: i32, at: i64) -> AttemptResult {
    AttemptResult {
        outcome,
        exit_code: Some(exit),
        signal: None,
        failure_reason: (outcome == Outcome::Failed).then_some(FailureReason::NonzeroExit),
        started_at: ts(at),
        finished_at: ts(at),
        cpu_time_ms: 0,
        max_rss_mb: 0,
        log_bytes: 0,
        log_truncated: false,
    }
}

fn schedule(s: &mut Scheduler, ids: &mut Ids, now: i64) -> Vec<(WorkerId, AttemptId, JobId)> {
    let mut mint = || AttemptId::from_uuid(ids.next());
    s.schedule(ts(now), &mut mint);
    s.take_changes()
        .outbound
        .into_iter()
        .filter_map(|o| match o {
            Outbound::Assign { worker, attempt, job } => Some((worker, attempt, job)),
            _ => None,
        })
        .collect()
}

fn states(ch: &Changes) -> Vec<(JobState, JobState)> {
    ch.events.iter().map(|e| (e.from.unwrap_or(e.to), e.to)).collect()
}

#[test]
fn a_pending_job_is_assigned_to_a_free_worker_and_runs_to_success() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 250, 0, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let assigned = schedule(&mut s, &mut ids, 1);
    assert_eq!(assigned.len(), 1);
    let (_, aid, _) = assigned[0];
    s.accepted(aid, w, ts(2), ts(2)).unwrap();
    s.finish(aid, w, result(Outcome::Succeeded, 0, 3), ts(3)).unwrap();
    let ch = s.take_changes();
    assert_eq!(ch.jobs.last().unwrap().state, JobState::Succeeded);
    assert_eq!(states(&ch), [(JobState::Scheduled, JobState::Running), (JobState::Running, JobState::Succeeded)]);
    assert!(s.job(&jid).is_none(), "ended jobs leave memory");
    assert_eq!(s.worker(&w).unwrap().slots_used, 0);
    assert_eq!(s.worker(&w).unwrap().state, WorkerState::Idle);
}

#[test]
fn slots_are_never_oversubscribed() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    connected_worker(&mut s, &mut ids, 2, 100_000, 0);
    for _ in 0..5 {
        let j = job(&mut ids, "a", 1, 0, 0);
        s.submit(j, ts(0)).unwrap();
    }
    assert_eq!(schedule(&mut s, &mut ids, 1).len(), 2);
    assert_eq!(schedule(&mut s, &mut ids, 2).len(), 0);
    assert_eq!(s.queue_len(), 3);
}

#[test]
fn a_job_too_big_for_the_free_room_waits_while_smaller_ones_go() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    connected_worker(&mut s, &mut ids, 4, 1000, 0);
    let big = job(&mut ids, "a", 2000, 0, 0);
    let small = job(&mut ids, "a", 500, 0, 1);
    let small_id = small.id;
    s.submit(big, ts(0)).unwrap();
    s.submit(small, ts(1)).unwrap();
    let assigned = schedule(&mut s, &mut ids, 2);
    assert_eq!(assigned.iter().map(|a| a.2).collect::<Vec<_>>(), [small_id]);
}

#[test]
fn tenants_take_turns() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    for i in 0..4 {
        let j = job(&mut ids, "flood", 1, 0, i);
        s.submit(j, ts(i)).unwrap();
    }
    let light = job(&mut ids, "light", 1, 0, 10);
    let light_id = light.id;
    s.submit(light, ts(10)).unwrap();
    let assigned = schedule(&mut s, &mut ids, 11);
    assert!(assigned.iter().any(|a| a.2 == light_id), "the light tenant got one of the four slots");
}

#[test]
fn a_failed_job_with_retries_is_retried_after_its_backoff() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 1, 1, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    s.finish(aid, w, result(Outcome::Failed, 3, 2), ts(2)).unwrap();
    let ch = s.take_changes();
    let failed = ch.jobs.last().unwrap();
    assert_eq!((failed.state, failed.retries_left, failed.next_retry_at), (JobState::Failed, 0, Some(ts(10_002))));
    s.heartbeat(w, &[], None, ts(9_000)).unwrap();
    s.tick(ts(10_001));
    assert_eq!(s.job(&jid).unwrap().state, JobState::Failed);
    s.tick(ts(10_002));
    assert_eq!(s.job(&jid).unwrap().state, JobState::Pending);
    let (_, aid2, _) = schedule(&mut s, &mut ids, 10_003)[0];
    assert_eq!(s.job(&jid).unwrap().attempt_count, 2);
    s.finish(aid2, w, result(Outcome::Failed, 3, 10_004), ts(10_004)).unwrap();
    let ch = s.take_changes();
    let last = ch.jobs.last().unwrap();
    assert!(last.is_terminal(), "no retries left: the failure is final");
}

#[test]
fn a_result_for_a_stale_attempt_is_ignored_but_acknowledged() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 1, 0, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    // The worker never acknowledges: the attempt is lost and the job requeued.
    s.tick(ts(10_000));
    assert_eq!(s.job(&jid).unwrap().state, JobState::Pending);
    s.take_changes();
    let late = s.finish(aid, w, result(Outcome::Succeeded, 0, 10_001), ts(10_001));
    assert_eq!(late, Err(Fenced::UnknownAttempt));
    let ch = s.take_changes();
    assert_eq!(ch.outbound, [Outbound::Ack { worker: w, attempt: aid }]);
    assert!(ch.jobs.is_empty());
}

#[test]
fn a_lost_worker_requeues_its_jobs_until_requeues_are_used_up() {
    let cfg = SchedConfig { max_lost_requeues: 1, ..Default::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    let j = job(&mut ids, "a", 1, 0, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let mut now = 0;
    for round in 0..2 {
        let w = connected_worker(&mut s, &mut ids, 1, 1000, now);
        let (_, aid, _) = schedule(&mut s, &mut ids, now)[0];
        s.accepted(aid, w, ts(now), ts(now)).unwrap();
        now += 10_000;
        s.tick(ts(now));
        assert_eq!(s.worker(&w).unwrap().state, WorkerState::Offline);
        let expected = if round == 0 { JobState::Pending } else { JobState::Failed };
        let ch = s.take_changes();
        let snap = ch.jobs.iter().rev().find(|x| x.id == jid).unwrap();
        assert_eq!(snap.state, expected, "round {round}");
    }
}

#[test]
fn cancelling_a_running_job_asks_the_worker_and_ends_on_its_confirmation() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 1, 0, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    assert_eq!(s.cancel(jid, Actor::Api, ts(2)), Ok(CancelOutcome::Requested));
    let ch = s.take_changes();
    assert!(ch.outbound.contains(&Outbound::Cancel { worker: w, attempt: aid, reason: "cancelled" }));
    s.finish(aid, w, result(Outcome::Cancelled, -1, 3), ts(3)).unwrap();
    assert_eq!(s.take_changes().jobs.last().unwrap().state, JobState::Cancelled);
}

#[test]
fn a_silent_worker_cannot_keep_a_cancelled_job_running_forever() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 1, 0, 0);
    let jid = j.id;
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    s.cancel(jid, Actor::Api, ts(2)).unwrap();
    s.heartbeat(w, &[aid], None, ts(19_000)).unwrap();
    s.tick(ts(20_002));
    assert_eq!(s.take_changes().jobs.last().unwrap().state, JobState::Cancelled);
}

#[test]
fn commands_on_ended_jobs_are_refused() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let mut j = job(&mut ids, "a", 1, 0, 0);
    j.state = JobState::Succeeded;
    assert_eq!(s.retry(j.clone(), Actor::Api, ts(1)), Err(CommandError::InvalidState { state: JobState::Succeeded, action: "retry" }));
    assert_eq!(s.cancel(j.id, Actor::Api, ts(1)), Err(CommandError::NotLive));
}

#[test]
fn an_offline_worker_is_forgotten_after_gc_after() {
    let cfg = SchedConfig { gc_after: Duration::from_secs(60), ..Default::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    s.tick(ts(10_000));
    assert_eq!(s.worker(&w).unwrap().state, WorkerState::Offline);
    s.tick(ts(69_999));
    assert!(s.worker(&w).is_some());
    s.tick(ts(70_000));
    let ch = s.take_changes();
    assert_eq!(ch.workers.last().map(|x| x.state), Some(WorkerState::Terminated));
    assert!(s.worker(&w).is_none(), "terminated workers leave memory");
}

#[test]
fn a_reconnecting_worker_keeps_what_it_runs_and_loses_what_it_forgot() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 2, 1000, 0);
    let (a, b) = (job(&mut ids, "a", 1, 0, 0), job(&mut ids, "a", 1, 0, 0));
    let (ja, jb) = (a.id, b.id);
    s.submit(a, ts(0)).unwrap();
    s.submit(b, ts(0)).unwrap();
    let assigned = schedule(&mut s, &mut ids, 0);
    let att: HashMap<JobId, AttemptId> = assigned.iter().map(|x| (x.2, x.1)).collect();
    s.accepted(att[&ja], w, ts(1), ts(1)).unwrap();
    s.accepted(att[&jb], w, ts(1), ts(1)).unwrap();
    s.disconnect_worker(w);
    s.connect_worker(w, &[att[&ja]], vec![], ts(5)).unwrap();
    assert_eq!(s.job(&ja).unwrap().state, JobState::Running);
    assert_eq!(s.job(&jb).unwrap().state, JobState::Pending);
}

// ---- properties -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Submit {
        tenant: u8,
        cpu_m: u16,
        retries: u8,
    },
    AddWorker {
        slots: u8,
        cpu_m: u16,
    },
    Schedule,
    Accept(usize),
    Finish(usize, u8),
    Reject(usize),
    Cancel(usize),
    Retry(usize),
    Disconnect(usize),
    Drain(usize),
    Advance(u16),
    SetQuota {
        tenant: u8,
        cpu_m: u16,
        jobs: u8,
    },
    /// A new rate version from now on (cpu core-hour in micro-units).
    Rates(u32),
    /// A job of the same tenant as job `on` (and maybe another), depending on it.
    SubmitAfter {
        on: usize,
        also: Option<usize>,
        condition: u8,
    },
    /// Opens a burst session of `minutes` for the tenant, or ends its open one.
    Burst {
        tenant: u8,
        cpu_m: u16,
        jobs: u8,
        minutes: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, 1u16..3000, 0u8..3).prop_map(|(tenant, cpu_m, retries)| Op::Submit { tenant, cpu_m, retries }),
        1 => (0u8..4, 500u16..4000).prop_map(|(slots, cpu_m)| Op::AddWorker { slots, cpu_m }),
        3 => Just(Op::Schedule),
        3 => any::<usize>().prop_map(Op::Accept),
        3 => (any::<usize>(), 0u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
        1 => any::<usize>().prop_map(Op::Reject),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => any::<usize>().prop_map(Op::Drain),
        2 => (0u16..15_000).prop_map(Op::Advance),
        1 => (0u8..4, 500u16..6000, 0u8..5).prop_map(|(tenant, cpu_m, jobs)| Op::SetQuota { tenant, cpu_m, jobs }),
        1 => (0u8..4, 0u16..3000, 0u8..3, 0u8..2).prop_map(|(tenant, cpu_m, jobs, minutes)| Op::Burst { tenant, cpu_m, jobs, minutes }),
        1 => (1u32..500_000).prop_map(Op::Rates),
        2 => (any::<usize>(), proptest::option::of(any::<usize>()), 0u8..3).prop_map(|(on, also, condition)| Op::SubmitAfter { on, also, condition }),
    ]
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

/// Dependencies (SPEC §2.2): a job with dependencies leaves its hold (to be queued) only once
/// each has ended as its condition asks; a job cancelled for them has one that ended in a way
/// that cannot meet it; a job still held for them has one that has not ended since (a
/// dependency retried by hand is seen ending again), and none that ended against it.
/// `ends`: every way each job has ended so far.
fn check_dependencies(ch: &Changes, store: &HashMap<JobId, Job>, ends: &mut HashMap<JobId, Vec<JobState>>) -> Result<(), TestCaseError> {
    use crate::job::Condition;
    for j in ch.jobs.iter().chain(&ch.new_jobs).filter(|j| j.is_terminal()) {
        ends.entry(j.id).or_default().push(j.state);
    }
    let met = |c: Condition, s: JobState| match c {
        Condition::AfterOk => s == JobState::Succeeded,
        Condition::AfterAny => true,
        Condition::AfterNotOk => s != JobState::Succeeded,
    };
    let ended = |id: &JobId| ends.get(id).map(Vec::as_slice).unwrap_or_default();
    for e in &ch.events {
        let Some(j) = store.get(&e.job_id).filter(|j| !j.spec.depends_on.is_empty()) else { continue };
        prop_assert!(!(e.to == JobState::Pending && e.from.is_none()), "{} with dependencies was queued at once", j.id);
        if e.from == Some(JobState::Held) && e.to == JobState::Pending && e.reason.as_deref() == Some("dependencies_met") {
            for d in &j.spec.depends_on {
                prop_assert!(
                    ended(&d.job).iter().any(|s| met(d.condition, *s)),
                    "{} queued before {} ({}) was met: {:?}",
                    j.id,
                    d.job,
                    d.condition,
                    ended(&d.job)
                );
            }
        }
    }
    for j in ch.jobs.iter().chain(&ch.new_jobs) {
        let deps = &j.spec.depends_on;
        match (j.state, j.state_reason.as_deref()) {
            (JobState::Cancelled, Some(r @ ("dependency_failed" | "skipped"))) => {
                prop_assert!(deps.iter().any(|d| ended(&d.job).iter().any(|s| !met(d.condition, *s))), "{} cancelled {r} with every dependency met", j.id);
            }
            (JobState::Held, Some("dependency_pending")) => {
                let open = |d: &crate::spec::Dependency| store.get(&d.job).is_some_and(|x| !x.is_terminal()) || ended(&d.job).is_empty();
                prop_assert!(deps.iter().any(open), "{} still held though every dependency ended", j.id);
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_invariants(s: &Scheduler, ch: &Changes, store: &mut HashMap<JobId, Job>, succeeded: &mut HashMap<JobId, u32>) -> Result<(), TestCaseError> {
    for e in &ch.events {
        if let Some(from) = e.from {
            prop_assert!(from.can_become(e.to), "illegal transition {} → {}", from, e.to);
            if e.to == JobState::Succeeded {
                *succeeded.entry(e.job_id).or_default() += 1;
            }
        }
    }
    for j in ch.new_jobs.iter().chain(&ch.jobs) {
        store.insert(j.id, j.clone());
    }
    for n in succeeded.values() {
        prop_assert!(*n <= 1, "a job succeeded twice");
    }
    // Usage books match the live jobs, and a tenant that just got a dispatch is within its ceiling.
    let mut usage: HashMap<TenantId, Usage> = HashMap::new();
    for j in s.jobs() {
        let u = usage.entry(j.tenant.clone()).or_default();
        match j.state {
            JobState::Scheduled | JobState::Running => {
                u.active.add(&j.resources());
                u.active_jobs += 1;
            }
            JobState::Pending => {
                u.pending.add(&j.resources());
                u.pending_jobs += 1;
                u.queued_jobs += 1;
            }
            JobState::Held => u.queued_jobs += 1,
            _ => {}
        }
    }
    for t in s.tenant_ids() {
        prop_assert_eq!(usage.get(t).copied().unwrap_or_default(), s.usage(t), "usage books of {}", t);
    }
    for e in ch.events.iter().filter(|e| e.to == JobState::Scheduled) {
        let Some(j) = s.job(&e.job_id) else { continue };
        let (u, c) = (s.usage(&j.tenant), s.policy(&j.tenant).ceiling(e.at));
        prop_assert!(u.active.fits_in(&c.resources) && u.active_jobs <= c.concurrent_jobs, "tenant {} over its ceiling: {:?} > {:?}", j.tenant, u, c);
    }
    // Queue status, read off the books, the queue and the attempts, equals a recount.
    let status = s.queue_status(Timestamp::from_millis(i64::MAX / 4));
    let mut recount: BTreeMap<TenantId, [u64; 4]> = BTreeMap::new();
    for j in s.jobs() {
        let slot = match j.state {
            JobState::Pending => 0,
            JobState::Held => 1,
            JobState::Scheduled => 2,
            JobState::Running => 3,
            _ => continue,
        };
        recount.entry(j.tenant.clone()).or_default()[slot] += 1;
    }
    let rows: BTreeMap<TenantId, [u64; 4]> =
        status.tenants.iter().map(|r| (r.tenant.clone(), [r.pending, r.held, r.scheduled, r.running])).filter(|(_, c)| c.iter().any(|n| *n > 0)).collect();
    prop_assert_eq!(rows, recount, "queue status per tenant");
    prop_assert_eq!(status.by_priority.values().sum::<u64>(), status.pending);
    // An array job never has more than max_parallel jobs scheduled or running.
    let mut per_array: HashMap<crate::ArrayId, (u32, u32)> = HashMap::new();
    for j in s.jobs().filter(|j| j.state.is_active()) {
        if let (Some((a, _)), Some(max)) = (j.array, j.spec.array.and_then(|a| a.max_parallel)) {
            let e = per_array.entry(a).or_insert((0, max));
            e.0 += 1;
        }
    }
    for (a, (n, max)) in per_array {
        prop_assert!(n <= max, "array {} runs {} jobs, max_parallel {}", a, n, max);
    }
    // SLA books match a recount of the jobs whose clock runs; an ended clock is final.
    let mut waiting: BTreeMap<(TenantId, crate::SlaLevel, SlaStatus), u32> = BTreeMap::new();
    for j in s.jobs() {
        let runs = matches!(j.state, JobState::Pending | JobState::Scheduled) && j.sla.wait_ms.is_none();
        prop_assert_eq!(runs, j.sla.since.is_some(), "job {} in {}: clock {:?}", j.id, j.state, j.sla);
        if runs {
            *waiting.entry((j.tenant.clone(), j.spec.sla, j.sla.status)).or_default() += 1;
        }
        prop_assert!(j.sla.wait_ms.is_some() == j.sla.decided_at.is_some());
        if j.sla.wait_ms.is_some() {
            prop_assert!(matches!(j.sla.status, SlaStatus::Met | SlaStatus::Breached));
        }
    }
    prop_assert_eq!(&waiting, s.sla_waiting());
    let mut indexed = 0;
    for w in s.workers() {
        let live: Vec<_> = s.attempts().filter(|a| a.worker_id == w.id).collect();
        let mut on: Vec<_> = s.attempts_on(w.id).map(|a| a.id).collect();
        on.sort();
        let mut recounted: Vec<_> = live.iter().map(|a| a.id).collect();
        recounted.sort();
        prop_assert_eq!(on, recounted, "the attempts indexed on worker {}", w.id);
        indexed += live.len();
        prop_assert_eq!(w.slots_used as usize, live.len());
        prop_assert!(w.slots_used <= w.slots, "slots oversubscribed");
        prop_assert!(w.allocated.fits_in(&w.resources), "resources oversubscribed");
        prop_assert!(!(w.state == WorkerState::Draining && w.slots_used == 0), "a draining worker with nothing left is terminated");
    }
    for o in &ch.outbound {
        if let Outbound::Assign { worker, .. } = o {
            let state = s.worker(worker).map(|w| w.state);
            prop_assert!(state != Some(WorkerState::Draining), "a draining worker was given a job");
        }
    }
    prop_assert_eq!(indexed, s.attempts().count(), "every attempt is on a known worker");
    let mut current: HashMap<JobId, usize> = HashMap::new();
    for a in s.attempts() {
        if s.job(&a.job_id).is_some_and(|j| j.current_attempt == Some(a.id) && j.state.is_active()) {
            *current.entry(a.job_id).or_default() += 1;
        }
    }
    for j in s.jobs() {
        let n = current.get(&j.id).copied().unwrap_or(0);
        prop_assert_eq!(n, usize::from(j.state.is_active()), "job {} in {} has {} live attempts", j.id, j.state, n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120), (keep_cost_records, cost_by_pool) in (any::<bool>(), any::<bool>())) {
        // Short SLA waits, so jobs cross every threshold and escalate within a run.
        let sla = SlaRules { max_wait: [Duration::from_secs(20); 5], ..SlaRules::default() };
        // Accrual every 5 s, so running attempts are billed in parts across rate changes.
        // What the ledger keeps by job and by pool (`cost_tracking.track_by_*`) is either way.
        let cfg = SchedConfig { sla, preemption: true, accrual_interval: Duration::from_secs(5), keep_cost_records, cost_by_pool, ..SchedConfig::default() };
        let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
        let mut now = 0i64;
        let mut ledger = Ledger { keep_cost_records, cost_by_pool, ..Ledger::default() };
        let mut versions: Vec<crate::cost::RateVersion> = Vec::new();
        let mut jobs: Vec<JobId> = vec![];
        let mut workers: Vec<WorkerId> = vec![];
        let mut store: HashMap<JobId, Job> = HashMap::new();
        let mut succeeded: HashMap<JobId, u32> = HashMap::new();
        let mut ends: HashMap<JobId, Vec<JobState>> = HashMap::new();
        let mut bursts: HashMap<u8, BurstSession> = HashMap::new();
        let rules = BurstRules { max_duration_minutes: 1, cooldown: Duration::from_secs(5), ..BurstRules::default() };
        for op in ops {
            match op {
                Op::Submit { tenant, cpu_m, retries } => {
                    let mut j = job(&mut ids, &format!("t{tenant}"), i64::from(cpu_m), i64::from(retries), now);
                    // Every class, and batch jobs preemptible: preemption and escalation happen.
                    Arc::make_mut(&mut j.spec).priority = Priority::ALL[usize::from(cpu_m) % Priority::ALL.len()];
                    Arc::make_mut(&mut j.spec).preemptible = j.spec.priority == Priority::Batch;
                    // Some jobs belong to one of two array jobs (max_parallel 1 and 2).
                    if let Some(max) = [1u32, 2].get(usize::from(cpu_m % 5)).copied() {
                        Arc::make_mut(&mut j.spec).array = Some(crate::spec::ArraySpec { start: 0, end: 99, step: 1, max_parallel: Some(max) });
                        j.array = Some((crate::ArrayId::from_uuid(Uuid::from_u128(u128::from(max))), u32::from(cpu_m)));
                    }
                    let id = j.id;
                    if s.submit(j, ts(now)).is_ok() {
                        jobs.push(id);
                    }
                }
                Op::SubmitAfter { on, also, condition } => {
                    let Some(first) = pick(&jobs, on) else { continue };
                    let tenant = store.get(&first).map(|j| j.tenant.clone()).or_else(|| s.job(&first).map(|j| j.tenant.clone()));
                    let Some(tenant) = tenant else { continue };
                    let c = ["after_ok", "after_any", "after_not_ok"][usize::from(condition)];
                    let mut on: Vec<(JobId, &str)> = vec![(first, c)];
                    if let Some(second) = also.and_then(|a| pick(&jobs, a)) {
                        on.push((second, ["after_any", "after_ok", "after_not_ok"][usize::from(condition)]));
                    }
                    // Jobs that left memory: their outcome as the store would give it.
                    let gone: Vec<(JobId, JobState)> = on.iter().filter(|(d, _)| s.job(d).is_none()).filter_map(|(d, _)| store.get(d).map(|j| (*d, j.state))).collect();
                    s.note_ended(&gone);
                    let mut j = dependant(&mut ids, &on, now);
                    j.tenant = tenant;
                    let id = j.id;
                    if s.submit(j, ts(now)).is_ok() {
                        jobs.push(id);
                    }
                }
                Op::SetQuota { tenant, cpu_m, jobs } => {
                    let quota = Quota { resources: Resources::new(u32::from(cpu_m), 1 << 20, 0), max_concurrent_jobs: u32::from(jobs), max_queued_jobs: 1000 };
                    let version = s.policy(&tid(&format!("t{tenant}"))).version + 1;
                    s.set_tenant(&tid(&format!("t{tenant}")), TenantPolicy { quota, version, ..TenantPolicy::default() }, ts(now));
                }
                Op::Burst { tenant, cpu_m, jobs, minutes } => {
                    let t = tid(&format!("t{tenant}"));
                    let history: Vec<_> = bursts.get(&tenant).cloned().into_iter().collect();
                    let req = BurstRequest {
                        resources: Resources::new(u32::from(cpu_m), 0, 0),
                        concurrent_jobs: u32::from(jobs),
                        duration_minutes: Some(u32::from(minutes)),
                        reason: String::new(),
                        requested_by: "p".into(),
                    };
                    let quota = s.policy(&t).quota;
                    match crate::burst::open(&rules, &t, &quota, &history, req, crate::BurstId::from_uuid(ids.next()), ts(now)) {
                        Ok(b) => { s.set_burst(&b, ts(now)); bursts.insert(tenant, b); }
                        Err(_) => if let Some(b) = bursts.get_mut(&tenant) && b.end("p", &rules, ts(now)).is_ok() { s.set_burst(b, ts(now)); },
                    }
                }
                Op::AddWorker { slots, cpu_m } => workers.push(connected_worker(&mut s, &mut ids, u32::from(slots), u32::from(cpu_m), now)),
                Op::Rates(cpu) => {
                    let rates = crate::cost::Rates { cpu_core_hour: i64::from(cpu), ..crate::cost::Rates::DEFAULT };
                    versions.retain(|v| v.effective_from < ts(now));
                    versions.push(crate::cost::RateVersion { effective_from: ts(now), rates });
                    s.set_rates(versions.clone());
                }
                Op::Schedule => {
                    let mut mint = || AttemptId::from_uuid(ids.next());
                    s.schedule(ts(now), &mut mint);
                }
                Op::Accept(i) => {
                    let live: Vec<_> = s.attempts().map(|a| (a.id, a.worker_id)).collect();
                    if let Some((a, w)) = pick(&live, i) { let _ = s.accepted(a, w, ts(now), ts(now)); }
                }
                Op::Finish(i, o) => {
                    let live: Vec<_> = s.attempts().map(|a| (a.id, a.worker_id)).collect();
                    if let Some((a, w)) = pick(&live, i) {
                        let outcome = [Outcome::Succeeded, Outcome::Failed, Outcome::TimedOut, Outcome::Cancelled][usize::from(o)];
                        let _ = s.finish(a, w, result(outcome, i32::from(o), now), ts(now));
                    }
                }
                Op::Reject(i) => {
                    let live: Vec<_> = s.attempts().map(|a| (a.id, a.worker_id)).collect();
                    if let Some((a, w)) = pick(&live, i) { let _ = s.rejected(a, w, ts(now)); }
                }
                Op::Cancel(i) => if let Some(j) = pick(&jobs, i) { let _ = s.cancel(j, Actor::Api, ts(now)); },
                Op::Retry(i) => if let Some(j) = pick(&jobs, i)
                    && let Some(stored) = store.get(&j).cloned() { let _ = s.retry(stored, Actor::Api, ts(now)); },
                Op::Disconnect(i) => if let Some(w) = pick(&workers, i) { s.disconnect_worker(w); },
                Op::Drain(i) => if let Some(w) = pick(&workers, i) { let _ = s.drain_worker(w); },
                Op::Advance(ms) => {
                    now += i64::from(ms);
                    // Connected workers keep heartbeating; disconnected ones go silent.
                    for w in &workers {
                        if s.worker(w).is_some_and(|x| x.connected) {
                            let running: Vec<_> = s.attempts().filter(|a| a.worker_id == *w).map(|a| a.id).collect();
                            let _ = s.heartbeat(*w, &running, None, ts(now));
                        }
                    }
                    s.tick(ts(now));
                    for b in bursts.values_mut() {
                        if b.advance(&rules, ts(now)) { s.set_burst(b, ts(now)); }
                    }
                }
            }
            let ch = s.take_changes();
            check_invariants(&s, &ch, &mut store, &mut succeeded)?;
            ledger.check(&ch, &versions)?;
            check_dependencies(&ch, &store, &mut ends)?;
        }
    }

    #[test]
    fn every_pending_job_runs_when_capacity_exists(n in 1usize..60, tenants in 1u8..5, slots in 1u32..8) {
        let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
        let w = connected_worker(&mut s, &mut ids, slots, 100_000, 0);
        for i in 0..n {
            let j = job(&mut ids, &format!("t{}", i as u8 % tenants), 1, 0, i as i64);
            s.submit(j, ts(i as i64)).unwrap();
        }
        let mut done = 0;
        for round in 0..=n {
            let assigned = schedule(&mut s, &mut ids, round as i64);
            prop_assert!(assigned.len() <= slots as usize);
            for (_, a, _) in assigned {
                s.finish(a, w, result(Outcome::Succeeded, 0, round as i64), ts(round as i64)).unwrap();
                done += 1;
            }
        }
        prop_assert_eq!(done, n);
    }
}

/// What the store would hold of the cost ledger: each attempt's priced stretches, and the daily
/// rollups (day × tenant × pool) they are added to in the same batch.
#[derive(Default)]
struct Ledger {
    stretches: HashMap<AttemptId, Vec<crate::cost::Segment>>,
    rollups: HashMap<(i64, Option<TenantId>, Option<PoolId>), i64>,
    /// What the scheduler was told to keep by job and by pool.
    keep_cost_records: bool,
    cost_by_pool: bool,
}

impl Ledger {
    /// The ledger invariants (SPEC §2.12) after one batch: every attempt's stored cost and
    /// billed seconds are the sums of its stretches; its stretches follow one another from its
    /// start without a gap or an overlap, none spans a midnight or a rate change, each is
    /// priced at the rates in force when it began; an ended attempt's seconds are the billed
    /// seconds of its whole run; and the rollups add up to the attempts' costs.
    fn check(&mut self, ch: &Changes, versions: &[crate::cost::RateVersion]) -> Result<(), TestCaseError> {
        for c in &ch.costs {
            prop_assert_eq!((c.keep_record, c.by_pool), (self.keep_cost_records, self.cost_by_pool), "every priced attempt says what to keep");
            for seg in &c.segments {
                let pool = c.by_pool.then(|| c.pool_id.clone());
                *self.rollups.entry((seg.day, c.tenant.clone(), pool)).or_default() += seg.cost_micros;
                // Against the versions known when it was billed: a later version is never
                // applied to seconds already begun.
                prop_assert_eq!(crate::cost::day_of(seg.start), seg.day);
                prop_assert!(!versions.iter().any(|v| v.effective_from > seg.start && v.effective_from < seg.end), "{:?} spans a rate change", seg);
                prop_assert_eq!(seg.rates, crate::cost::rates_at(versions, seg.start));
            }
            self.stretches.entry(c.attempt_id).or_default().extend(c.segments.iter().copied());
        }
        for a in &ch.attempts {
            let segs = self.stretches.get(&a.id).map(Vec::as_slice).unwrap_or_default();
            prop_assert_eq!(a.cost_micros, segs.iter().map(|x| x.cost_micros).sum::<i64>(), "attempt {} cost", a.id);
            prop_assert_eq!(a.billed_seconds, segs.iter().map(|x| x.billed_seconds).sum::<u64>(), "attempt {} seconds", a.id);
            if let (Some(start), Some(first)) = (a.started_at, segs.first()) {
                prop_assert_eq!(first.start, start, "billed from its start");
            }
            // The seconds billed so far cover the run up to a whole second after its start, so
            // the next part may begin anywhere up to there — inside the last billed second, or
            // at a rate change or midnight within it when the piece before that has no second
            // of its own — billing only the seconds begun after it (checked by the total below).
            let mut billed = 0u64;
            for w in segs.windows(2) {
                billed += w[0].billed_seconds;
                let covered = a.started_at.map_or(w[0].end.as_millis(), |s| s.as_millis() + billed as i64 * 1000);
                prop_assert!(
                    w[0].start <= w[1].start && w[1].start.as_millis() <= covered.max(w[0].end.as_millis()),
                    "stretches of {} follow one another: {:?}",
                    a.id,
                    w
                );
            }
            if a.state.is_terminal()
                && let (Some(start), Some(to)) = (a.started_at, a.accrued_to)
            {
                let run = (to.as_millis() - start.as_millis()).max(0) as u64;
                prop_assert_eq!(a.billed_seconds, crate::cost::billed_seconds(run), "an ended attempt bills its whole run, once");
            }
        }
        let rolled: i64 = self.rollups.values().sum();
        let attempts: i64 = self.stretches.values().flatten().map(|x| x.cost_micros).sum();
        prop_assert_eq!(rolled, attempts, "rollups add up to the attempts' costs");
        Ok(())
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn set_quota(s: &mut Scheduler, tenant: &str, weight: u32, cpu_m: u32, jobs: u32, now: i64) {
    let quota = Quota { resources: Resources::new(cpu_m, 1 << 20, 0), max_concurrent_jobs: jobs, max_queued_jobs: 100_000 };
    let version = s.policy(&tid(tenant)).version + 1;
    s.set_tenant(&tid(tenant), TenantPolicy { weight, quota, version, ..TenantPolicy::default() }, ts(now));
}

/// Runs rounds of "schedule, then every placed job ends"; counts dispatches per tenant.
fn run_rounds(s: &mut Scheduler, ids: &mut Ids, rounds: i64) -> HashMap<TenantId, usize> {
    let mut got: HashMap<TenantId, usize> = HashMap::new();
    for r in 0..rounds {
        let now = 1_000 + r * 1000;
        for (w, a, j) in schedule(s, ids, now) {
            *got.entry(s.job(&j).unwrap().tenant.clone()).or_default() += 1;
            let r = AttemptResult { finished_at: ts(now + 500), ..result(Outcome::Succeeded, 0, now) };
            s.finish(a, w, r, ts(now + 500)).unwrap();
        }
        let _ = s.take_changes();
    }
    got
}

#[test]
fn weights_one_and_three_share_a_saturated_pool_25_75() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 1, 1_000_000, 1000, 0);
    set_quota(&mut s, "b", 3, 1_000_000, 1000, 0);
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    for i in 0..2000 {
        s.submit(job(&mut ids, "a", 100, 0, i), ts(i)).unwrap();
        s.submit(job(&mut ids, "b", 100, 0, i), ts(i)).unwrap();
    }
    let got = run_rounds(&mut s, &mut ids, 100);
    assert_eq!(got[&tid("a")] + got[&tid("b")], 400);
    assert!((95..=105).contains(&got[&tid("a")]), "{got:?}");
}

#[test]
fn a_tenant_spending_ahead_of_its_budget_gets_a_smaller_share_until_it_is_on_pace() {
    // Equal weights; a's budget factor 0.5 gives it 1/3 of a saturated pool, 1 gives it half.
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1_000_000, 1000, 0);
    set_quota(&mut s, "b", 2, 1_000_000, 1000, 0);
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    for i in 0..2000 {
        for t in ["a", "b"] {
            // Known durations: no first charge at the default duration to catch up with.
            let mut j = job(&mut ids, t, 100, 0, i);
            Arc::make_mut(&mut j.spec).expected_duration = Some(Duration::from_millis(500));
            s.submit(j, ts(i)).unwrap();
        }
    }
    s.set_budget_factor(&tid("a"), 500);
    let a_job = s.queued_jobs(&tid("a")).next().unwrap().id;
    let e = s.explain(a_job, ts(2000), Duration::ZERO).unwrap();
    assert_eq!((e.budget_factor_permille, e.fair_share.map(|f| f.weight)), (500, Some(2)), "explain shows the factor and the weight as set");
    let got = run_rounds(&mut s, &mut ids, 150);
    assert_eq!(got[&tid("a")] + got[&tid("b")], 600);
    assert!((190..=210).contains(&got[&tid("a")]), "a third: {got:?}");
    s.set_budget_factor(&tid("a"), 1000);
    assert_eq!(s.budget_factor(&tid("a")), 1000);
    let got = run_rounds(&mut s, &mut ids, 150);
    assert!((290..=310).contains(&got[&tid("a")]), "back to half: {got:?}");
    s.set_budget_factor(&tid("a"), 5);
    assert_eq!(s.budget_factor(&tid("a")), 100, "never below a tenth");
}

#[test]
fn many_small_jobs_do_not_buy_a_larger_share() {
    // b asks for 5× smaller jobs: per dispatch it is charged 5× less, so it gets ~5× the
    // dispatches but the same share of cpu.
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1_000_000, 1000, 0);
    set_quota(&mut s, "b", 2, 1_000_000, 1000, 0);
    connected_worker(&mut s, &mut ids, 20, 1000, 0);
    for i in 0..3000 {
        for (t, cpu) in [("a", 250), ("b", 50)] {
            let mut j = job(&mut ids, t, cpu, 0, i);
            Arc::make_mut(&mut j.spec).expected_duration = Some(Duration::from_millis(500));
            s.submit(j, ts(i)).unwrap();
        }
    }
    let got = run_rounds(&mut s, &mut ids, 200);
    let (a_cpu, b_cpu) = (got[&tid("a")] * 250, got[&tid("b")] * 50);
    let share = a_cpu as f64 / (a_cpu + b_cpu) as f64;
    assert!((0.45..=0.55).contains(&share), "a's cpu share {share}: {got:?}");
}

#[test]
fn max_concurrent_jobs_is_never_exceeded_and_frees_on_completion() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1_000_000, 2, 0);
    let w = connected_worker(&mut s, &mut ids, 10, 100_000, 0);
    for i in 0..5 {
        s.submit(job(&mut ids, "a", 1, 0, i), ts(i)).unwrap();
    }
    let first = schedule(&mut s, &mut ids, 10);
    assert_eq!(first.len(), 2);
    assert_eq!(schedule(&mut s, &mut ids, 11).len(), 0);
    s.finish(first[0].1, w, result(Outcome::Succeeded, 0, 12), ts(12)).unwrap();
    assert_eq!(schedule(&mut s, &mut ids, 13).len(), 1);
}

#[test]
fn an_array_job_runs_at_most_max_parallel_jobs_and_others_are_not_held_back() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 1, 1_000_000, 100, 0);
    let w = connected_worker(&mut s, &mut ids, 10, 100_000, 0);
    let array = crate::ids::ArrayId::from_uuid(ids.next());
    let spec = Arc::new(crate::spec::JobSpec {
        array: Some(crate::spec::ArraySpec { start: 1, end: 5, step: 1, max_parallel: Some(2) }),
        ..(*job(&mut ids, "a", 1, 0, 0).spec).clone()
    });
    let mut members = vec![];
    for i in 1..=5 {
        let mut j = Job::new(JobId::from_uuid(ids.next()), tid("a"), spec.clone(), ts(0));
        j.array = Some((array, i));
        members.push(j.id);
        s.submit(j, ts(0)).unwrap();
    }
    let loose = job(&mut ids, "a", 1, 0, 1);
    let loose_id = loose.id;
    s.submit(loose, ts(1)).unwrap();
    let placed = schedule(&mut s, &mut ids, 10);
    let of_array: Vec<_> = placed.iter().filter(|(_, _, j)| members.contains(j)).collect();
    assert_eq!(of_array.len(), 2, "max_parallel 2");
    assert!(placed.iter().any(|(_, _, j)| *j == loose_id), "a job outside the array is not held back by it");
    let waiting = members.iter().find(|m| s.job(m).unwrap().state == JobState::Pending).unwrap();
    assert_eq!(s.blocking_reason(*waiting, ts(11)), Some("array_max_parallel"));
    assert!(schedule(&mut s, &mut ids, 11).is_empty());
    s.finish(of_array[0].1, w, result(Outcome::Succeeded, 0, 12), ts(12)).unwrap();
    let next = schedule(&mut s, &mut ids, 13);
    assert_eq!(next.len(), 1, "one ended, one more starts");
    assert!(members.contains(&next[0].2));
}

#[test]
fn a_tenant_at_its_quota_does_not_block_others() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 5, 1_000_000, 1, 0);
    set_quota(&mut s, "b", 1, 1_000_000, 100, 0);
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    for i in 0..10 {
        s.submit(job(&mut ids, "a", 1, 0, i), ts(i)).unwrap();
        s.submit(job(&mut ids, "b", 1, 0, i), ts(i)).unwrap();
    }
    let placed = schedule(&mut s, &mut ids, 20);
    assert_eq!(placed.len(), 4);
    let a = placed.iter().filter(|(_, _, j)| s.job(j).unwrap().tenant == tid("a")).count();
    assert_eq!(a, 1);
}

#[test]
fn soft_mode_holds_a_job_over_the_ceiling_until_the_quota_grows() {
    let cfg = SchedConfig { quota_rules: QuotaRules { strict: false, ..QuotaRules::default() }, ..SchedConfig::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    set_quota(&mut s, "a", 2, 1000, 10, 0);
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    let big = job(&mut ids, "a", 2000, 0, 0);
    let id = big.id;
    assert!(matches!(s.submit(big, ts(0)), Ok(Admission::HeldCeiling(_))));
    assert_eq!(s.job(&id).unwrap().state, JobState::Held);
    let why = s.explain(id, ts(1), Duration::from_secs(3600)).unwrap();
    assert_eq!(why.blockers[0].code, "quota_ceiling");
    assert_eq!(why.blockers[0].details["ceiling"], 1000);
    set_quota(&mut s, "a", 2, 4000, 10, 2);
    assert_eq!(s.job(&id).unwrap().state, JobState::Pending);
    assert_eq!(schedule(&mut s, &mut ids, 3).len(), 1);
}

#[test]
fn strict_mode_rejects_a_job_over_the_ceiling_and_stores_nothing() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1000, 10, 0);
    let e = s.submit(job(&mut ids, "a", 2000, 0, 0), ts(0)).unwrap_err();
    assert!(!e.retryable);
    assert_eq!((e.breach.limit, e.breach.ceiling, e.breach.requested), (Limit::CpuM, 1000, 2000));
    assert!(s.take_changes().is_empty());
}

#[test]
fn an_atomic_batch_over_max_queued_jobs_admits_nothing() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let quota = Quota { max_queued_jobs: 3, ..Quota::DEFAULT };
    s.set_tenant(&tid("a"), TenantPolicy { quota, version: 1, ..TenantPolicy::default() }, ts(0));
    let batch: Vec<Job> = (0..4).map(|i| job(&mut ids, "a", 1, 0, i)).collect();
    let r = s.submit_all(batch.clone(), true, ts(0));
    assert!(r[3].is_err() && r[..3].iter().all(Result::is_ok));
    assert!(s.take_changes().is_empty());
    let r = s.submit_all(batch, false, ts(0));
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 3);
    assert_eq!(s.usage(&tid("a")).queued_jobs, 3);
}

#[test]
fn an_array_is_made_from_its_template_only_once_all_members_are_admitted() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let quota = Quota { max_queued_jobs: 4, ..Quota::DEFAULT };
    s.set_tenant(&tid("a"), TenantPolicy { quota, version: 1, ..TenantPolicy::default() }, ts(0));
    let mut template = job(&mut ids, "a", 1, 0, 0);
    let array = crate::ids::ArrayId::from_uuid(ids.next());
    Arc::make_mut(&mut template.spec).array = Some(crate::spec::ArraySpec { start: 10, end: 18, step: 2, max_parallel: None });
    // Five members over a queue limit of four: refused, and no id is minted.
    let mut minted = 0;
    let r = s.submit_array_in_parts(
        &template,
        array,
        || {
            minted += 1;
            JobId::from_uuid(Uuid::now_v7())
        },
        ts(1),
        2,
        |_| panic!("a refused array hands out no part"),
    );
    assert_eq!((r.len(), r.iter().filter(|r| r.is_err()).count(), minted), (5, 1, 0));
    assert!(s.take_changes().is_empty());
    // Within the limit: four members, in parts of two (the last one is left for take_changes).
    Arc::make_mut(&mut template.spec).array = Some(crate::spec::ArraySpec { start: 10, end: 16, step: 2, max_parallel: None });
    let mut parts = Vec::new();
    let r = s.submit_array_in_parts(&template, array, || JobId::from_uuid(ids.next()), ts(1), 2, |c| parts.push(c));
    assert!(r.iter().all(Result::is_ok));
    parts.push(s.take_changes());
    let sizes: Vec<usize> = parts.iter().map(|c| c.new_jobs.len()).collect();
    assert_eq!(sizes, [2, 2]);
    let members: Vec<_> =
        parts.iter().flat_map(|c| &c.new_jobs).map(|j| (j.array, j.tenant.as_str().to_owned(), Arc::ptr_eq(&j.spec, &template.spec))).collect();
    let want: Vec<_> = [10, 12, 14, 16].into_iter().map(|i| (Some((array, i)), "a".to_owned(), true)).collect();
    assert_eq!(members, want, "members in index order, sharing the template's spec");
    assert_eq!(s.usage(&tid("a")).queued_jobs, 4);
}

#[test]
fn a_suspended_tenant_has_its_pending_jobs_held_and_released() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let j = job(&mut ids, "a", 1, 0, 0);
    let id = j.id;
    s.submit(j, ts(0)).unwrap();
    s.set_tenant(&tid("a"), TenantPolicy { suspended: true, version: 1, ..TenantPolicy::default() }, ts(1));
    assert_eq!(s.job(&id).unwrap().state_reason.as_deref(), Some("tenant_suspended"));
    s.set_tenant(&tid("a"), TenantPolicy { version: 2, ..TenantPolicy::default() }, ts(2));
    assert_eq!(s.job(&id).unwrap().state, JobState::Pending);
    // An older copy of the tenant never overwrites a newer one.
    s.set_tenant(&tid("a"), TenantPolicy { suspended: true, version: 1, ..TenantPolicy::default() }, ts(3));
    assert_eq!(s.job(&id).unwrap().state, JobState::Pending);
}

#[test]
fn explain_names_the_blockers_and_the_eta_follows_expected_durations() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1_000_000, 100, 0);
    let w = connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    let mut jobs = vec![];
    for i in 0..3 {
        let mut j = job(&mut ids, "a", 1, 0, i);
        Arc::make_mut(&mut j.spec).expected_duration = Some(Duration::from_secs(10));
        jobs.push(j.id);
        s.submit(j, ts(i)).unwrap();
    }
    let placed = schedule(&mut s, &mut ids, 100);
    s.accepted(placed[0].1, w, ts(100), ts(100)).unwrap();
    let _ = s.take_changes();
    let why = s.explain(jobs[2], ts(1_100), Duration::from_secs(3600)).unwrap();
    let codes: Vec<_> = why.blockers.iter().map(|b| b.code).collect();
    assert_eq!(codes, ["no_capacity", "queue_order"], "first come, first served within one priority");
    assert_eq!(why.position_in_tenant, Some(1));
    // The running job ends at 10 100, the next one at 20 100: then this one starts.
    assert_eq!(why.estimated_start_at, Some(ts(20_100)));
    assert_eq!(why.global_position, Some(1));
    assert!(why.candidate_pools[0].eligible);
    // Explaining changes nothing.
    assert!(s.take_changes().is_empty());
    // A job of a higher priority goes before both waiting ones: named apart from queue order.
    let mut urgent = job(&mut ids, "a", 1, 0, 1_200);
    Arc::make_mut(&mut urgent.spec).priority = Priority::High;
    s.submit(urgent, ts(1_200)).unwrap();
    let why = s.explain(jobs[2], ts(1_300), Duration::from_secs(3600)).unwrap();
    let codes: Vec<_> = why.blockers.iter().map(|b| (b.code, b.message.clone())).collect();
    assert_eq!(
        codes[1..],
        [
            ("lower_priority", "1 jobs of the same tenant with a higher priority go first".to_owned()),
            ("queue_order", "1 jobs of the same tenant and priority were queued before it".to_owned()),
        ]
    );
}

#[test]
fn explain_reports_quota_and_fair_share() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 1_000_000, 1, 0);
    set_quota(&mut s, "b", 2, 1_000_000, 100, 0);
    connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    let a1 = job(&mut ids, "a", 1, 0, 0);
    let a2 = job(&mut ids, "a", 1, 0, 1);
    let a2_id = a2.id;
    s.submit(a1, ts(0)).unwrap();
    s.submit(a2, ts(1)).unwrap();
    schedule(&mut s, &mut ids, 2);
    let why = s.explain(a2_id, ts(3), Duration::from_secs(3600)).unwrap();
    assert_eq!(why.blockers[0].code, "max_concurrent_jobs");
    assert_eq!(why.blockers[0].details["ceiling"], 1);
    let b1 = job(&mut ids, "b", 1, 0, 5);
    let b2 = job(&mut ids, "b", 1, 0, 6);
    let b2_id = b2.id;
    s.submit(b1, ts(5)).unwrap();
    s.submit(b2, ts(6)).unwrap();
    let why = s.explain(b2_id, ts(7), Duration::from_secs(3600)).unwrap();
    assert!(why.fair_share.is_some());
    assert!(why.blockers.iter().any(|b| b.code == "no_capacity"), "{why:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Equal-sized jobs of one tenant and priority class are dispatched in submit order.
    #[test]
    fn order_within_a_tenant_and_class_is_preserved(subs in proptest::collection::vec((0u8..3, 0usize..5), 1..150), slots in 1u32..6) {
        let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
        for t in 0..3 {
            set_quota(&mut s, &format!("t{t}"), 1 + t as u32, 1_000_000, 3, 0);
        }
        let w = connected_worker(&mut s, &mut ids, slots, 100_000, 0);
        let mut submitted: HashMap<(TenantId, Priority), Vec<JobId>> = HashMap::new();
        for (i, (t, p)) in subs.iter().enumerate() {
            let mut j = job(&mut ids, &format!("t{t}"), 1, 0, i as i64);
            Arc::make_mut(&mut j.spec).priority = crate::job::Priority::ALL[*p];
            submitted.entry((j.tenant.clone(), j.spec.priority)).or_default().push(j.id);
            s.submit(j, ts(i as i64)).unwrap();
        }
        let mut dispatched: HashMap<(TenantId, Priority), Vec<JobId>> = HashMap::new();
        for round in 0..=subs.len() as i64 {
            for (_, a, j) in schedule(&mut s, &mut ids, 1000 + round) {
                let job = s.job(&j).unwrap();
                dispatched.entry((job.tenant.clone(), job.spec.priority)).or_default().push(j);
                s.finish(a, w, result(Outcome::Succeeded, 0, 1000 + round), ts(1000 + round)).unwrap();
            }
        }
        prop_assert_eq!(dispatched, submitted);
    }
}

#[test]
fn a_burst_session_admits_more_until_it_expires() {
    let cfg = SchedConfig { quota_rules: QuotaRules { strict: false, ..QuotaRules::default() }, ..SchedConfig::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    set_quota(&mut s, "a", 2, 1000, 10, 0);
    connected_worker(&mut s, &mut ids, 8, 100_000, 0);
    for i in 0..2 {
        s.submit(job(&mut ids, "a", 500, 0, i), ts(i)).unwrap();
    }
    let big = job(&mut ids, "a", 1500, 0, 2);
    let big_id = big.id;
    assert!(matches!(s.submit(big, ts(2)), Ok(Admission::HeldCeiling(_))));
    s.submit(job(&mut ids, "a", 500, 0, 3), ts(3)).unwrap();
    assert_eq!(schedule(&mut s, &mut ids, 4).len(), 2, "quota 1000 runs two 500m jobs");

    let rules = BurstRules { max_duration_minutes: 1, ..BurstRules::default() };
    let quota = s.policy(&tid("a")).quota;
    let req = BurstRequest { resources: Resources::new(500, 0, 0), concurrent_jobs: 0, duration_minutes: None, reason: "x".into(), requested_by: "a".into() };
    let mut b = crate::burst::open(&rules, &tid("a"), &quota, &[], req, crate::BurstId::from_uuid(ids.next()), ts(10)).unwrap();
    let opened = b.clone();
    s.set_burst(&b, ts(10));
    assert_eq!(s.job(&big_id).unwrap().state, JobState::Pending, "the ceiling of 1500 fits the held job alone");
    assert_eq!(schedule(&mut s, &mut ids, 11).len(), 1, "the grant runs one more 500m job");
    assert_eq!(s.usage(&tid("a")).active.cpu_m, 1500);

    // At expiry dispatch falls back to the quota by itself; running jobs continue.
    assert!(b.advance(&rules, ts(60_010)));
    assert_eq!(schedule(&mut s, &mut ids, 60_010).len(), 0);
    s.set_burst(&b, ts(60_010));
    assert_eq!(s.job(&big_id).unwrap().state, JobState::Held, "alone over the quota again");
    assert_eq!(s.usage(&tid("a")).active.cpu_m, 1500);
    // A stale update (the session as first opened) does not bring the grant back.
    s.set_burst(&opened, ts(60_011));
    assert_eq!(s.policy(&tid("a")).grant, None);
    // A tenant update keeps the grant (tenant records carry none).
    let mut b2 = crate::burst::open(
        &rules,
        &tid("a"),
        &quota,
        &[b],
        BurstRequest { resources: Resources::new(100, 0, 0), concurrent_jobs: 0, duration_minutes: None, reason: String::new(), requested_by: "a".into() },
        crate::BurstId::from_uuid(ids.next()),
        ts(1_900_000),
    )
    .unwrap();
    s.set_burst(&b2, ts(1_900_000));
    set_quota(&mut s, "a", 3, 1000, 10, 1_900_001);
    assert_eq!(s.policy(&tid("a")).grant, b2.grant());
    b2.end("a", &rules, ts(1_900_002)).unwrap();
    s.set_burst(&b2, ts(1_900_002));
    assert_eq!(s.policy(&tid("a")).grant, None);
}

fn accept_all(s: &mut Scheduler, ids: &mut Ids, now: i64) -> Vec<(WorkerId, AttemptId, JobId)> {
    let placed = schedule(s, ids, now);
    for (w, a, _) in &placed {
        s.accepted(*a, *w, ts(now), ts(now)).unwrap();
    }
    let _ = s.take_changes();
    placed
}

#[test]
fn sla_wait_excludes_time_at_the_tenants_own_limit() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    set_quota(&mut s, "a", 2, 100_000, 1, 0);
    let first = job(&mut ids, "a", 100, 0, 0);
    let second = job(&mut ids, "a", 100, 0, 0);
    let second_id = second.id;
    s.submit(first, ts(0)).unwrap();
    s.submit(second, ts(0)).unwrap();
    // No worker for the first second: that wait counts.
    assert!(accept_all(&mut s, &mut ids, 0).is_empty());
    let w = connected_worker(&mut s, &mut ids, 4, 100_000, 1_000);
    let placed = accept_all(&mut s, &mut ids, 1_000);
    assert_eq!(placed.len(), 1, "max_concurrent_jobs 1");
    // 50 min at its own limit (83 % of the medium level's hour), yet no wait counts.
    s.heartbeat(w, &[placed[0].1], None, ts(3_000_000)).unwrap();
    s.tick(ts(3_000_000));
    assert_eq!(s.job(&second_id).unwrap().sla.status, SlaStatus::OnTrack);
    s.finish(placed[0].1, w, result(Outcome::Succeeded, 0, 3_000_000), ts(3_000_000)).unwrap();
    let placed = accept_all(&mut s, &mut ids, 3_000_000);
    assert_eq!(placed[0].2, second_id);
    let j = s.job(&second_id).unwrap();
    assert_eq!((j.sla.wait_ms, j.sla.status), (Some(1_000), SlaStatus::Met));
}

#[test]
fn sla_status_moves_through_its_thresholds_and_holds_pause_the_clock() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let j = job(&mut ids, "a", 100, 0, 0);
    let id = j.id;
    s.submit(j, ts(0)).unwrap();
    let max = 3_600_000; // medium: the default level of `normal`
    s.hold(id, Actor::Api, ts(1_000)).unwrap();
    s.release(id, Actor::Api, ts(601_000)).unwrap();
    let _ = s.take_changes();
    let at = |s: &mut Scheduler, ms: i64| {
        s.tick(ts(ms));
        s.job(&id).unwrap().sla.status
    };
    // 10 min held do not count: 70 % is reached at 600 s + 0.7 h.
    assert_eq!(at(&mut s, 600_000 + max * 70 / 100), SlaStatus::OnTrack);
    assert_eq!(at(&mut s, 600_000 + max * 70 / 100 + 10), SlaStatus::AtRisk);
    assert!(s.take_changes().jobs.iter().any(|j| j.id == id), "the new status is stored");
    assert_eq!(at(&mut s, 600_000 + max * 90 / 100 + 10), SlaStatus::Critical);
    assert_eq!(at(&mut s, 600_000 + max + 50), SlaStatus::Breached);
    let j = s.job(&id).unwrap();
    assert_eq!(j.sla.breached_at, Some(ts(600_000 + max)));
    assert_eq!(s.take_changes().sla_breaches.len(), 1);
    // Starting later keeps it breached, counted once.
    connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    accept_all(&mut s, &mut ids, 600_000 + max + 60);
    let j = s.job(&id).unwrap();
    assert_eq!((j.sla.status, j.sla.wait_ms), (SlaStatus::Breached, Some(max as u64 + 60)));
    assert!(s.take_changes().sla_breaches.is_empty());
}

#[test]
fn a_critical_job_goes_first_when_escalation_is_on() {
    for escalation in [true, false] {
        let cfg = SchedConfig { sla: SlaRules { escalation, ..SlaRules::default() }, ..SchedConfig::default() };
        let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
        set_quota(&mut s, "a", 1, 100_000, 10, 0);
        set_quota(&mut s, "b", 1000, 100_000, 10, 0);
        let w = connected_worker(&mut s, &mut ids, 1, 100_000, 0);
        s.submit(job(&mut ids, "c", 100, 0, 0), ts(0)).unwrap();
        let busy = accept_all(&mut s, &mut ids, 0);
        let waiting = job(&mut ids, "a", 100, 0, 0);
        let waiting_id = waiting.id;
        s.submit(waiting, ts(0)).unwrap();
        for i in 0..3 {
            s.submit(job(&mut ids, "b", 100, 0, 3_000_000 + i), ts(3_000_000 + i)).unwrap();
        }
        s.heartbeat(w, &[busy[0].1], None, ts(3_500_000)).unwrap();
        s.tick(ts(3_500_000));
        assert_eq!(s.job(&waiting_id).unwrap().sla.status, SlaStatus::Critical);
        s.finish(busy[0].1, w, result(Outcome::Succeeded, 0, 3_500_000), ts(3_500_000)).unwrap();
        let next = accept_all(&mut s, &mut ids, 3_500_000);
        assert_eq!(next[0].2 == waiting_id, escalation, "escalation {escalation}: the critical job goes first only with it on");
    }
}

/// One 4-core worker kept busy by a stream of 1-core jobs (one ends and one arrives every 15 s);
/// a 4-core job waits behind them. Returns when it started, if within `until`.
fn big_job_start(backfill: BackfillRules, until: i64) -> (Option<i64>, Vec<String>) {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig { backfill, ..SchedConfig::default() }), Ids(0));
    set_quota(&mut s, "a", 2, 100_000, 100, 0);
    let w = connected_worker(&mut s, &mut ids, 10, 4000, 0);
    let mut running: VecDeque<AttemptId> = VecDeque::new();
    let mut blocked_reasons = vec![];
    let mut big = None;
    let mut t = 0;
    while t <= until {
        if t >= 60_000
            && let Some(a) = running.pop_front()
        {
            s.finish(a, w, result(Outcome::Succeeded, 0, t), ts(t)).unwrap();
        }
        if t == 45_000 {
            let mut j = job(&mut ids, "a", 4000, 0, t);
            Arc::make_mut(&mut j.spec).expected_duration = Some(Duration::from_secs(60));
            big = Some(j.id);
            s.submit(j, ts(t)).unwrap();
        }
        let mut small = job(&mut ids, "a", 1000, 0, t);
        // Each runs 60 s and says so (the test's results carry no run time to learn from).
        Arc::make_mut(&mut small.spec).expected_duration = Some(Duration::from_secs(60));
        let small_id = small.id;
        s.submit(small, ts(t)).unwrap();
        for (_, a, j) in accept_all(&mut s, &mut ids, t) {
            if Some(j) == big {
                return (Some(t), blocked_reasons);
            }
            running.push_back(a);
        }
        if s.job(&small_id).is_some_and(|j| j.state == JobState::Pending) {
            let why = s.explain(small_id, ts(t), Duration::ZERO).unwrap();
            blocked_reasons.extend(why.blockers.iter().map(|b| b.code.to_owned()));
        }
        t += 15_000;
    }
    (None, blocked_reasons)
}

#[test]
fn a_big_job_reserves_a_worker_after_waiting_and_is_not_starved_by_small_ones() {
    let off = BackfillRules { enabled: false, ..BackfillRules::default() };
    assert_eq!(big_job_start(off, 900_000).0, None, "without reservations the stream of small jobs starves it");
    let (started, reasons) = big_job_start(BackfillRules::default(), 900_000);
    let started = started.expect("the big job starts");
    // Waiting from 45 s, it reserves the worker at 75 s; the four small jobs running then
    // are expected to end by 135 s, and no small job expected to end later is let in.
    assert!(started <= 135_000, "started at {started} ms");
    assert!(reasons.iter().any(|r| r == "reserved_for_other_job"), "{reasons:?}");
}

/// The job, saying it runs 1 s (the tests' results carry no run time to learn from).
fn timed(mut j: Job) -> Job {
    Arc::make_mut(&mut j.spec).expected_duration = Some(Duration::from_secs(1));
    j
}

/// Tenant a runs 40 jobs alone, then a and b both queue 40 more: how many of the next 20
/// dispatches go to b.
fn b_share_after_a_ran_alone(half_life: Option<Duration>) -> usize {
    let cfg = SchedConfig { usage_half_life: half_life, ..SchedConfig::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    set_quota(&mut s, "a", 2, 100_000, 100, 0);
    set_quota(&mut s, "b", 2, 100_000, 100, 0);
    let w = connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    let mut t = 0;
    let run_one = |s: &mut Scheduler, ids: &mut Ids, t: i64| {
        let placed = accept_all(s, ids, t);
        for (_, a, _) in &placed {
            s.finish(*a, w, result(Outcome::Succeeded, 0, t), ts(t)).unwrap();
        }
        placed.iter().map(|p| s.job(&p.2).map_or(String::new(), |j| j.tenant.to_string())).collect::<Vec<_>>()
    };
    for _ in 0..40 {
        s.submit(timed(job(&mut ids, "a", 100, 0, t)), ts(t)).unwrap();
        run_one(&mut s, &mut ids, t);
        t += 1000;
    }
    for tenant in ["a", "b"] {
        for _ in 0..40 {
            s.submit(timed(job(&mut ids, tenant, 100, 0, t)), ts(t)).unwrap();
        }
    }
    let mut got_b = 0;
    for _ in 0..20 {
        let _ = s.take_changes();
        let who = run_one(&mut s, &mut ids, t);
        got_b += who.iter().filter(|x| *x == "b").count();
        t += 1000;
    }
    got_b
}

#[test]
fn decayed_usage_lets_a_tenant_that_used_less_catch_up() {
    // Plain SFQ: idling earns no credit, so they alternate.
    assert_eq!(b_share_after_a_ran_alone(None), 10);
    // With a long half-life a's recent use counts against it: b goes first for a while.
    assert_eq!(b_share_after_a_ran_alone(Some(Duration::from_secs(86_400))), 20);
    // With a short one, a's use an hour ago is forgotten.
    let cfg_short = b_share_after_a_ran_alone(Some(Duration::from_millis(1)));
    assert_eq!(cfg_short, 10);
}

#[test]
fn a_critical_job_preempts_the_youngest_lower_priority_job_when_enabled() {
    for enabled in [false, true] {
        let (mut s, mut ids) = (Scheduler::new(SchedConfig { preemption: enabled, ..SchedConfig::default() }), Ids(0));
        set_quota(&mut s, "a", 2, 100_000, 100, 0);
        set_quota(&mut s, "b", 2, 100_000, 100, 0);
        let w = connected_worker(&mut s, &mut ids, 4, 4000, 0);
        let mut batch = vec![];
        for i in 0..4 {
            let mut j = job(&mut ids, "b", 1000, 2, i);
            Arc::make_mut(&mut j.spec).priority = Priority::Batch;
            Arc::make_mut(&mut j.spec).preemptible = true;
            batch.push(j.id);
            s.submit(j, ts(i)).unwrap();
            accept_all(&mut s, &mut ids, i);
        }
        let mut urgent = job(&mut ids, "a", 1000, 0, 10);
        Arc::make_mut(&mut urgent.spec).priority = Priority::Critical;
        let urgent_id = urgent.id;
        s.submit(urgent, ts(10)).unwrap();
        let mut mint = || AttemptId::from_uuid(Uuid::from_u128(u128::MAX - 7));
        s.schedule(ts(10), &mut mint);
        let cancels: Vec<AttemptId> = s
            .take_changes()
            .outbound
            .iter()
            .filter_map(|o| match o {
                Outbound::Cancel { attempt, reason: "preempted", .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        if !enabled {
            assert!(cancels.is_empty());
            continue;
        }
        // The youngest batch job (started at 3 ms) makes room.
        let victim = s.job(&batch[3]).unwrap().current_attempt.unwrap();
        assert_eq!(cancels, [victim]);
        // The worker kills it and reports a cancel: the attempt ends preempted, the job waits again
        // with its retries untouched, and the critical job takes the room.
        s.finish(victim, w, result(Outcome::Cancelled, -1, 12), ts(12)).unwrap();
        let ch = s.take_changes();
        assert_eq!(ch.attempts.last().map(|a| (a.state, a.failure_reason)), Some((AttemptState::Preempted, Some(FailureReason::Preempted))));
        let j = s.job(&batch[3]).unwrap();
        assert_eq!((j.state, j.state_reason.as_deref(), j.retries_left), (JobState::Pending, Some("preempted"), 2));
        let placed = accept_all(&mut s, &mut ids, 12);
        assert_eq!(placed.iter().map(|p| p.2).collect::<Vec<_>>(), [urgent_id]);
    }
}

/// The usage books hold any sum of requests: two jobs of 3 000 000 000 millicores each are
/// 6 000 000 000 pending (more than a u32), and cancelling one leaves exactly the other — an
/// overflowing add once went missing and the later subtract then read zero, loosening admission.
#[test]
fn usage_books_never_overflow_or_read_low() {
    let cfg = SchedConfig { quota_rules: QuotaRules { enabled: false, ..QuotaRules::default() }, ..SchedConfig::default() };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    let (a, b) = (job(&mut ids, "a", 3_000_000_000, 0, 0), job(&mut ids, "a", 3_000_000_000, 0, 0));
    let a_id = a.id;
    s.submit(a, ts(0)).unwrap();
    s.submit(b, ts(0)).unwrap();
    assert_eq!(s.usage(&tid("a")).pending.cpu_m, 6_000_000_000);
    s.cancel(a_id, Actor::Api, ts(1)).unwrap();
    let u = s.usage(&tid("a"));
    assert_eq!((u.pending.cpu_m, u.pending_jobs), (3_000_000_000, 1));
}

#[test]
fn a_drained_worker_takes_nothing_new_lets_its_jobs_finish_then_stops() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 2, 10_000, 0);
    let first = job(&mut ids, "a", 100, 0, 0);
    s.submit(first, ts(0)).unwrap();
    let assigned = schedule(&mut s, &mut ids, 1);
    let (_, aid, _) = assigned[0];
    s.accepted(aid, w, ts(2), ts(2)).unwrap();
    assert_eq!(s.drain_worker(w), Ok(()));
    assert_eq!(s.drain_worker(w), Ok(()), "again: no change");
    assert_eq!(s.worker(&w).unwrap().state, WorkerState::Draining);
    let ch = s.take_changes();
    assert!(!ch.outbound.iter().any(|o| matches!(o, Outbound::Drained { .. })), "it still runs a job");
    let second = job(&mut ids, "a", 100, 0, 3);
    let second_id = second.id;
    s.submit(second, ts(3)).unwrap();
    assert!(schedule(&mut s, &mut ids, 4).is_empty(), "a draining worker takes no new job");
    assert_eq!(s.job(&second_id).unwrap().state, JobState::Pending);
    s.finish(aid, w, result(Outcome::Succeeded, 0, 5), ts(5)).unwrap();
    let ch = s.take_changes();
    assert_eq!(ch.jobs.iter().find(|j| j.id != second_id).map(|j| j.state), Some(JobState::Succeeded), "its running job finished");
    assert!(ch.outbound.contains(&Outbound::Drained { worker: w }));
    assert!(s.worker(&w).is_none(), "a terminated worker leaves memory");
    assert!(ch.workers.iter().any(|x| x.id == w && x.state == WorkerState::Terminated), "stored");
    // Another worker takes the waiting job; an idle worker drains at once.
    let other = connected_worker(&mut s, &mut ids, 1, 10_000, 6);
    assert_eq!(schedule(&mut s, &mut ids, 7).len(), 1);
    let idle = connected_worker(&mut s, &mut ids, 1, 10_000, 8);
    s.drain_worker(idle).unwrap();
    assert!(s.take_changes().outbound.contains(&Outbound::Drained { worker: idle }));
    assert_eq!(s.drain_worker(idle), Err(DrainError::Unknown), "gone once terminated");
    assert_eq!(s.drain_worker(WorkerId::from_uuid(ids.next())), Err(DrainError::Unknown));
    assert_eq!(s.worker(&other).unwrap().state, WorkerState::Busy);
}

#[test]
fn a_pools_new_labels_and_tenants_apply_to_its_registered_workers() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let local = PoolId::parse("local").unwrap();
    let zone = |z: &str| BTreeMap::from([("zone".to_owned(), z.to_owned())]);
    s.set_pool_placement(&local, PoolPlacement { labels: zone("eu"), ..Default::default() });
    let mut w = worker(&mut ids, 4, 4000);
    w.labels = BTreeMap::from([("zone".to_owned(), "eu".to_owned()), ("disk".to_owned(), "ssd".to_owned())]);
    let wid = w.id;
    s.register_worker(w, ts(0));
    s.connect_worker(wid, &[], vec![], ts(0)).unwrap();
    let submit = |s: &mut Scheduler, ids: &mut Ids, tenant: &str, z: &str| {
        let mut j = job(ids, tenant, 100, 0, 1);
        std::sync::Arc::make_mut(&mut j.spec).pool_labels = zone(z);
        let id = j.id;
        s.submit(j, ts(1)).unwrap();
        id
    };
    let us = submit(&mut s, &mut ids, "t", "us");
    assert!(schedule(&mut s, &mut ids, 2).is_empty(), "no worker is in zone us yet");
    s.set_pool_placement(&local, PoolPlacement { labels: zone("us"), allowed_tenants: vec![TenantId::parse("t").unwrap()] });
    assert_eq!(s.worker(&wid).unwrap().labels.get("disk").map(String::as_str), Some("ssd"), "its own labels stay");
    assert_eq!(s.worker(&wid).unwrap().labels.get("zone").map(String::as_str), Some("us"), "the pool's value wins");
    assert_eq!(schedule(&mut s, &mut ids, 3).iter().map(|p| p.2).collect::<Vec<_>>(), [us]);
    let eu = submit(&mut s, &mut ids, "t", "eu");
    let other = submit(&mut s, &mut ids, "u", "us");
    assert!(schedule(&mut s, &mut ids, 4).is_empty(), "zone eu is gone and tenant u is not allowed");
    let e = s.explain(other, ts(4), Duration::ZERO).unwrap();
    assert!(e.blockers.iter().any(|b| b.code == "no_matching_pool" && b.message.contains("tenant")), "{:?}", e.blockers);
    let e = s.explain(eu, ts(4), Duration::ZERO).unwrap();
    assert!(e.blockers.iter().any(|b| b.code == "no_matching_pool" && b.message.contains("label")), "{:?}", e.blockers);
}

#[test]
fn a_pool_with_rates_of_its_own_bills_at_them_and_follows_global_changes_for_the_rest() {
    use crate::cost::{RateOverride, RateVersion, Rates, cost_micros};
    let later = RateVersion { effective_from: ts(10_000), rates: Rates { memory_gib_hour: 40_000, ..Rates::DEFAULT } };
    let cfg = SchedConfig {
        rates: vec![later],
        pool_rates: BTreeMap::from([(PoolId::parse("local").unwrap(), RateOverride { cpu_core_hour: Some(200_000), ..RateOverride::default() })]),
        ..SchedConfig::default()
    };
    let (mut s, mut ids) = (Scheduler::new(cfg), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 4000, 0);
    let j = job(&mut ids, "t", 1000, 0, 0);
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(0), ts(0)).unwrap();
    let _ = s.take_changes();
    s.finish(aid, w, AttemptResult { started_at: ts(0), finished_at: ts(20_000), ..result(Outcome::Succeeded, 0, 0) }, ts(20_000)).unwrap();
    let c = s.take_changes();
    let res = Resources::new(1000, 64, 0);
    // 10 s before the global change (the pool's cpu, default memory), 10 s after (the pool's
    // cpu still, the new memory rate).
    let want = cost_micros(10, &res, &Rates { cpu_core_hour: 200_000, ..Rates::DEFAULT })
        + cost_micros(10, &res, &Rates { cpu_core_hour: 200_000, memory_gib_hour: 40_000, ..Rates::DEFAULT });
    assert_eq!(c.costs.iter().map(AttemptCost::cost_micros).sum::<i64>(), want);
}

#[test]
fn ended_attempts_are_billed_from_their_start_and_lost_ones_up_to_the_last_heartbeat() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 2, 4000, 0);
    let (a, b) = (job(&mut ids, "t", 1000, 0, 0), job(&mut ids, "t", 500, 0, 0));
    let (ja, jb) = (a.id, b.id);
    s.submit(a, ts(0)).unwrap();
    s.submit(b, ts(0)).unwrap();
    let placed = schedule(&mut s, &mut ids, 0);
    let aid = |j: JobId| placed.iter().find(|p| p.2 == j).unwrap().1;
    s.accepted(aid(ja), w, ts(1_000), ts(1_000)).unwrap();
    s.accepted(aid(jb), w, ts(1_000), ts(1_000)).unwrap();
    let _ = s.take_changes();
    s.finish(aid(ja), w, AttemptResult { started_at: ts(1_000), finished_at: ts(3_004), ..result(Outcome::Succeeded, 0, 0) }, ts(3_004)).unwrap();
    let c = s.take_changes();
    assert_eq!(c.costs.len(), 1);
    let cost = &c.costs[0];
    assert_eq!((cost.job_id, cost.tenant.as_ref().map(TenantId::as_str), cost.billed_seconds()), (ja, Some("t"), 3), "2.004 s bills 3 s");
    assert_eq!(cost.cost_micros(), crate::cost::cost_micros(3, &Resources::new(1000, 64, 0), &crate::cost::Rates::DEFAULT));
    // The worker goes silent after a heartbeat at 5 s: b is lost, billed 1 s → 5 s.
    s.heartbeat(w, &[aid(jb)], None, ts(5_000)).unwrap();
    s.tick(ts(5_000 + SchedConfig::default().heartbeat_timeout.as_millis() as i64 + 1));
    let c = s.take_changes();
    assert_eq!(c.costs.iter().map(|c| (c.job_id, c.billed_seconds())).collect::<Vec<_>>(), [(jb, 4)]);
}

#[test]
fn a_spent_budget_holds_new_and_pending_jobs_never_running_ones_and_releases_them_after() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 4000, 0);
    let t = TenantId::parse("t").unwrap();
    let (running, waiting) = (job(&mut ids, "t", 100, 0, 0), job(&mut ids, "t", 100, 0, 0));
    let (r, p) = (running.id, waiting.id);
    s.submit(running, ts(0)).unwrap();
    s.submit(waiting, ts(0)).unwrap();
    let placed = schedule(&mut s, &mut ids, 0);
    assert_eq!(placed.iter().map(|x| x.2).collect::<Vec<_>>(), [r]);
    s.accepted(placed[0].1, w, ts(1), ts(1)).unwrap();
    s.set_budget_exhausted(&t, true, ts(2));
    assert_eq!((s.job(&r).unwrap().state, s.job(&p).unwrap().state), (JobState::Running, JobState::Held));
    assert_eq!(s.job(&p).unwrap().state_reason.as_deref(), Some("budget_exhausted"));
    let late = job(&mut ids, "t", 100, 0, 3);
    let l = late.id;
    s.submit(late, ts(3)).unwrap();
    assert_eq!((s.job(&l).unwrap().state, s.job(&l).unwrap().state_reason.as_deref()), (JobState::Held, Some("budget_exhausted")));
    assert_eq!(s.explain(l, ts(3), Duration::ZERO).unwrap().blockers[0].code, "budget_exhausted");
    s.release(l, Actor::Api, ts(4)).unwrap();
    assert_eq!(s.job(&l).unwrap().state, JobState::Held, "a user's release does not lift the budget");
    // The running job ends and is billed as ever; a new period releases the others.
    s.finish(placed[0].1, w, result(Outcome::Succeeded, 0, 5), ts(5)).unwrap();
    assert_eq!(s.job(&r).unwrap().state, JobState::Succeeded);
    s.set_budget_exhausted(&t, false, ts(6));
    assert_eq!((s.job(&p).unwrap().state, s.job(&l).unwrap().state), (JobState::Pending, JobState::Pending));
    assert_eq!(schedule(&mut s, &mut ids, 7).len(), 1);
}

#[test]
fn running_attempts_are_billed_as_they_run_and_the_parts_add_up_to_the_whole() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig { accrual_interval: Duration::from_secs(60), ..SchedConfig::default() }), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 4000, 0);
    let j = job(&mut ids, "t", 1000, 0, 0);
    s.submit(j, ts(0)).unwrap();
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(500), ts(500)).unwrap();
    s.tick(ts(1_000)); // arms the accrual clock
    let _ = s.take_changes();
    let mut parts = Vec::new();
    for at in [61_000, 121_000] {
        s.heartbeat(w, &[aid], None, ts(at)).unwrap();
        s.tick(ts(at));
        let c = s.take_changes();
        assert_eq!(c.costs.len(), 1, "one accrual at {at}");
        assert_eq!(c.attempts.last().map(|a| a.accrued_to), Some(Some(ts(at))), "the attempt row says how far it is billed");
        parts.push(c.costs[0].billed_seconds());
    }
    s.finish(aid, w, AttemptResult { started_at: ts(500), finished_at: ts(150_200), ..result(Outcome::Succeeded, 0, 0) }, ts(150_200)).unwrap();
    let c = s.take_changes();
    parts.push(c.costs.iter().map(AttemptCost::billed_seconds).sum());
    assert_eq!(parts, [61, 60, 29], "60.5 s begun at the first accrual, then by 121 s, then to 149.7 s");
    assert_eq!(parts.iter().sum::<u64>(), crate::cost::billed_seconds(149_700));
    let a = c.attempts.last().unwrap();
    assert_eq!(a.billed_seconds, 150);
}

mod placement_chain {
    use super::*;
    use crate::placement::{ever_fits, fits_now};

    #[derive(Clone, Debug)]
    struct W {
        pool: bool,
        container: bool,
        cpu_m: u32,
        slots: u32,
        connect: bool,
        drain: bool,
        zone: bool,
        unhealthy: bool,
    }

    #[derive(Clone, Debug)]
    struct J {
        cpu_m: i64,
        select: Option<bool>,
        image: bool,
        tenant: bool,
        zone: Option<bool>,
    }

    fn pool(b: bool) -> &'static str {
        if b { "a" } else { "b" }
    }

    proptest! {
        /// No job is ever placed on a worker that fails a check of the placement chain at the
        /// moment it is placed; and `explain` gives `no_matching_pool` exactly when no live
        /// worker passes the checks that never change, `no_capacity` when some do but none
        /// passes the whole chain.
        #[test]
        fn placements_pass_the_chain_and_explain_says_the_chains_reasons(
            ws in proptest::collection::vec((any::<bool>(), any::<bool>(), 500u32..4000, 0u32..3, proptest::bool::weighted(0.8), proptest::bool::weighted(0.2), any::<bool>(), proptest::bool::weighted(0.15))
                .prop_map(|(pool, container, cpu_m, slots, connect, drain, zone, unhealthy)| W { pool, container, cpu_m, slots, connect, drain, zone, unhealthy }), 0..6),
            js in proptest::collection::vec((100i64..3000, proptest::option::of(any::<bool>()), proptest::bool::weighted(0.2), any::<bool>(), proptest::option::of(any::<bool>()))
                .prop_map(|(cpu_m, select, image, tenant, zone)| J { cpu_m, select, image, tenant, zone }), 1..20),
            restrict_b in any::<bool>(),
        ) {
            let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
            let roomy = Quota { resources: Resources::new(u32::MAX, u32::MAX, u32::MAX), max_concurrent_jobs: u32::MAX, max_queued_jobs: u32::MAX };
            let tenant = |b: bool| TenantId::parse(if b { "t" } else { "u" }).unwrap();
            for t in [true, false] {
                s.set_tenant(&tenant(t), TenantPolicy { quota: roomy, version: 1, ..TenantPolicy::default() }, ts(0));
            }
            let zone = |b: bool| BTreeMap::from([("zone".to_owned(), if b { "eu" } else { "us" }.to_owned())]);
            for w in &ws {
                let mut worker = worker(&mut ids, w.slots, w.cpu_m);
                worker.pool_id = PoolId::parse(pool(w.pool)).unwrap();
                worker.labels = zone(w.zone);
                if w.unhealthy {
                    worker.health = crate::worker::Health::Unhealthy;
                }
                if w.container {
                    worker.capabilities.push("container".into());
                }
                let id = worker.id;
                s.register_worker(worker, ts(0));
                if w.connect {
                    s.connect_worker(id, &[], vec![], ts(0)).unwrap();
                    if w.drain {
                        s.drain_worker(id).unwrap();
                    }
                }
            }
            if restrict_b {
                // Pool b runs only tenant u's jobs (told after its workers registered).
                s.set_pool_placement(&PoolId::parse("b").unwrap(), PoolPlacement { allowed_tenants: vec![tenant(false)], ..Default::default() });
            }
            let mut jobs = Vec::new();
            for (i, j) in js.iter().enumerate() {
                let spec = JobSpecInput {
                    command: vec!["true".into()],
                    cpu_m: Some(j.cpu_m),
                    memory_mb: Some(64),
                    pool: j.select.map(|b| pool(b).to_owned()),
                    image: j.image.then(|| "alpine:3".to_owned()),
                    pool_labels: j.zone.map(zone).unwrap_or_default(),
                    ..Default::default()
                }
                .validate(&SpecLimits::default(), "")
                .unwrap();
                let job = Job::new(JobId::from_uuid(ids.next()), tenant(j.tenant), spec, ts(i as i64));
                jobs.push(job.id);
                s.submit(job, ts(i as i64)).unwrap();
            }
            let _ = s.take_changes();
            let mut before: BTreeMap<WorkerId, Worker> = s.workers().map(|w| (w.id, w.clone())).collect();
            for (wid, _, jid) in schedule(&mut s, &mut ids, 100) {
                let job = s.job(&jid).unwrap();
                let w = before.get_mut(&wid).unwrap();
                prop_assert_eq!(fits_now(w, &job.tenant, &job.spec, &job.resources()), Ok(()), "placed on a worker the chain refuses");
                prop_assert!(!(restrict_b && w.pool_id.as_str() == "b" && job.tenant != tenant(false)), "tenant {} placed in pool b", job.tenant);
                prop_assert!(w.health != crate::worker::Health::Unhealthy, "placed on an unhealthy worker");
                w.allocated = w.allocated.checked_add(&job.resources()).unwrap();
                w.slots_used += 1;
            }
            for id in jobs {
                let Some(job) = s.job(&id).filter(|j| j.state == JobState::Pending) else { continue };
                let req = job.resources();
                let live: Vec<&Worker> = s.workers().filter(|w| w.state.is_live()).collect();
                let ever = live.iter().any(|w| ever_fits(w, &job.tenant, &job.spec, &req).is_ok());
                let now = live.iter().any(|w| fits_now(w, &job.tenant, &job.spec, &req).is_ok());
                let e = s.explain(id, ts(100), Duration::ZERO).unwrap();
                let codes: Vec<&str> = e.blockers.iter().map(|b| b.code).collect();
                prop_assert_eq!(codes.contains(&"no_matching_pool"), !ever, "{:?}", codes);
                prop_assert_eq!(codes.contains(&"no_capacity"), ever && !now, "{:?}", codes);
                prop_assert!(!now, "a pending job that fits a worker now after a scheduling round: {:?}", codes);
                for p in &e.candidate_pools {
                    let pool_ever = live.iter().any(|w| w.pool_id == p.pool_id && ever_fits(w, &job.tenant, &job.spec, &req).is_ok());
                    prop_assert_eq!(p.eligible, pool_ever, "{:?}", p);
                }
            }
        }
    }
}

/// A job with `depends_on` (SPEC §2.2).
fn dependant(ids: &mut Ids, on: &[(JobId, &str)], now: i64) -> Job {
    let spec = JobSpecInput {
        command: vec!["true".into()],
        cpu_m: Some(1),
        memory_mb: Some(64),
        depends_on: on.iter().map(|(j, c)| (j.to_string(), c.to_string())).collect(),
        ..Default::default()
    }
    .validate(&SpecLimits::default(), "")
    .unwrap();
    Job::new(JobId::from_uuid(ids.next()), TenantId::parse("a").unwrap(), spec, ts(now))
}

#[test]
fn dependants_wait_then_run_or_are_cancelled_as_their_dependencies_end() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    let first = job(&mut ids, "a", 1, 0, 0);
    let a = first.id;
    s.submit(first, ts(0)).unwrap();
    let b = dependant(&mut ids, &[(a, "after_ok")], 1);
    let (b_id, c) = (b.id, dependant(&mut ids, &[(a, "after_not_ok")], 1));
    let c_id = c.id;
    let d = dependant(&mut ids, &[(b_id, "after_any")], 1);
    let d_id = d.id;
    for j in [b, c, d] {
        s.submit(j, ts(1)).unwrap();
    }
    for id in [b_id, c_id, d_id] {
        assert_eq!((s.job(&id).unwrap().state, s.job(&id).unwrap().state_reason.as_deref()), (JobState::Held, Some("dependency_pending")));
    }
    let why = s.explain(b_id, ts(1), Duration::from_secs(60)).unwrap();
    assert_eq!(why.blockers[0].code, "dependency_pending");
    assert!(why.blockers[0].message.contains(&a.to_string()), "{}", why.blockers[0].message);
    assert!(s.release(b_id, Actor::Scheduler, ts(1)).is_err(), "no release past its dependencies");
    // Only `a` is dispatched; it succeeds.
    let placed = schedule(&mut s, &mut ids, 2);
    assert_eq!(placed.iter().map(|p| p.2).collect::<Vec<_>>(), [a]);
    s.accepted(placed[0].1, w, ts(2), ts(2)).unwrap();
    s.finish(placed[0].1, w, result(Outcome::Succeeded, 0, 3), ts(3)).unwrap();
    let changes = s.take_changes();
    assert_eq!(s.job(&b_id).unwrap().state, JobState::Pending, "after_ok met");
    let c_end = changes.jobs.iter().chain(&changes.new_jobs).find(|j| j.id == c_id).expect("c ended in the same changes");
    assert_eq!((c_end.state, c_end.state_reason.as_deref()), (JobState::Cancelled, Some("skipped")), "after_not_ok of a success");
    assert_eq!(s.job(&d_id).unwrap().state, JobState::Held, "d waits for b");
    // b fails: d (after_any) runs anyway.
    let placed = schedule(&mut s, &mut ids, 4);
    assert_eq!(placed.iter().map(|p| p.2).collect::<Vec<_>>(), [b_id]);
    s.accepted(placed[0].1, w, ts(4), ts(4)).unwrap();
    s.finish(placed[0].1, w, result(Outcome::Failed, 1, 5), ts(5)).unwrap();
    let _ = s.take_changes();
    assert_eq!(s.job(&d_id).unwrap().state, JobState::Pending);

    // A job depending on one that ended before it was submitted: decided at once, from the
    // outcome the store gave (note_ended) or the recent ones the scheduler kept.
    let gone = JobId::from_uuid(ids.next());
    s.note_ended(&[(gone, JobState::Failed)]);
    let e = dependant(&mut ids, &[(gone, "after_ok"), (a, "after_ok")], 6);
    let e_id = e.id;
    s.submit(e, ts(6)).unwrap();
    let changes = s.take_changes();
    let e_end = changes.new_jobs.iter().find(|j| j.id == e_id).unwrap();
    assert_eq!((e_end.state, e_end.state_reason.as_deref()), (JobState::Cancelled, Some("dependency_failed")));
    let f = dependant(&mut ids, &[(a, "after_ok")], 7);
    let f_id = f.id;
    s.submit(f, ts(7)).unwrap();
    assert_eq!(s.job(&f_id).unwrap().state, JobState::Pending, "a's success is remembered after it left memory");
    // A cancel cascades: g waits on h, h is cancelled, g (after_ok) is cancelled too.
    let h = dependant(&mut ids, &[(f_id, "after_ok")], 8);
    let h_id = h.id;
    s.submit(h, ts(8)).unwrap();
    let g = dependant(&mut ids, &[(h_id, "after_ok")], 8);
    let g_id = g.id;
    s.submit(g, ts(8)).unwrap();
    let _ = s.take_changes();
    s.cancel(f_id, Actor::Scheduler, ts(9)).unwrap();
    let changes = s.take_changes();
    let ended: Vec<_> = changes.jobs.iter().map(|j| (j.id, j.state, j.state_reason.clone())).collect();
    assert!(ended.contains(&(h_id, JobState::Cancelled, Some("dependency_failed".into()))), "{ended:?}");
    assert!(ended.contains(&(g_id, JobState::Cancelled, Some("dependency_failed".into()))), "{ended:?}");
}

#[test]
fn a_job_waiting_on_two_runs_once_both_have_ended_one_decided_by_a_cascade() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 100_000, 0);
    let first = job(&mut ids, "a", 1, 0, 0);
    let a = first.id;
    s.submit(first, ts(0)).unwrap();
    let _ = s.take_changes();
    let b = dependant(&mut ids, &[(a, "after_ok")], 1);
    let b_id = b.id;
    s.submit(b, ts(1)).unwrap();
    let _ = s.take_changes();
    let c = dependant(&mut ids, &[(a, "after_not_ok")], 1);
    let c_id = c.id;
    s.submit(c, ts(1)).unwrap();
    let _ = s.take_changes();
    let d = dependant(&mut ids, &[(b_id, "after_any"), (c_id, "after_any")], 1);
    let d_id = d.id;
    s.submit(d, ts(1)).unwrap();
    let _ = s.take_changes();
    for expected in [a, b_id] {
        let placed = schedule(&mut s, &mut ids, 2);
        assert_eq!(placed.iter().map(|p| p.2).collect::<Vec<_>>(), [expected]);
        s.accepted(placed[0].1, w, ts(2), ts(2)).unwrap();
        s.finish(placed[0].1, w, result(Outcome::Succeeded, 0, 3), ts(3)).unwrap();
        let _ = s.take_changes();
    }
    assert_eq!(s.job(&d_id).unwrap().state, JobState::Pending);
}
