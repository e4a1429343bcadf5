use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::ids::{PoolId, TenantId};
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
    s.submit(j, ts(0));
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
        s.submit(j, ts(0));
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
    s.submit(big, ts(0));
    s.submit(small, ts(1));
    let assigned = schedule(&mut s, &mut ids, 2);
    assert_eq!(assigned.iter().map(|a| a.2).collect::<Vec<_>>(), [small_id]);
}

#[test]
fn tenants_take_turns() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    connected_worker(&mut s, &mut ids, 4, 100_000, 0);
    for i in 0..4 {
        let j = job(&mut ids, "flood", 1, 0, i);
        s.submit(j, ts(i));
    }
    let light = job(&mut ids, "light", 1, 0, 10);
    let light_id = light.id;
    s.submit(light, ts(10));
    let assigned = schedule(&mut s, &mut ids, 11);
    assert!(assigned.iter().any(|a| a.2 == light_id), "the light tenant got one of the four slots");
}

#[test]
fn a_failed_job_with_retries_is_retried_after_its_backoff() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let w = connected_worker(&mut s, &mut ids, 1, 1000, 0);
    let j = job(&mut ids, "a", 1, 1, 0);
    let jid = j.id;
    s.submit(j, ts(0));
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    s.finish(aid, w, result(Outcome::Failed, 3, 2), ts(2)).unwrap();
    let ch = s.take_changes();
    let failed = ch.jobs.last().unwrap();
    assert_eq!((failed.state, failed.retries_left, failed.next_retry_at), (JobState::Failed, 0, Some(ts(10_002))));
    s.heartbeat(w, &[], ts(9_000)).unwrap();
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
    s.submit(j, ts(0));
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
    s.submit(j, ts(0));
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
    s.submit(j, ts(0));
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    assert_eq!(s.cancel(jid, ts(2)), Ok(CancelOutcome::Requested));
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
    s.submit(j, ts(0));
    let (_, aid, _) = schedule(&mut s, &mut ids, 0)[0];
    s.accepted(aid, w, ts(1), ts(1)).unwrap();
    s.cancel(jid, ts(2)).unwrap();
    s.heartbeat(w, &[aid], ts(19_000)).unwrap();
    s.tick(ts(20_002));
    assert_eq!(s.take_changes().jobs.last().unwrap().state, JobState::Cancelled);
}

#[test]
fn commands_on_ended_jobs_are_refused() {
    let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
    let mut j = job(&mut ids, "a", 1, 0, 0);
    j.state = JobState::Succeeded;
    assert_eq!(s.retry(j.clone(), ts(1)), Err(CommandError::InvalidState { state: JobState::Succeeded, action: "retry" }));
    assert_eq!(s.cancel(j.id, ts(1)), Err(CommandError::NotLive));
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
    s.submit(a, ts(0));
    s.submit(b, ts(0));
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
    Submit { tenant: u8, cpu_m: u16, retries: u8 },
    AddWorker { slots: u8, cpu_m: u16 },
    Schedule,
    Accept(usize),
    Finish(usize, u8),
    Reject(usize),
    Cancel(usize),
    Retry(usize),
    Disconnect(usize),
    Advance(u16),
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
        2 => (0u16..15_000).prop_map(Op::Advance),
    ]
}

fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()].clone())
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
    for w in s.workers() {
        let live: Vec<_> = s.attempts().filter(|a| a.worker_id == w.id).collect();
        prop_assert_eq!(w.slots_used as usize, live.len());
        prop_assert!(w.slots_used <= w.slots, "slots oversubscribed");
        prop_assert!(w.allocated.fits_in(&w.resources), "resources oversubscribed");
    }
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
    fn random_operations_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120)) {
        let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
        let mut now = 0i64;
        let mut jobs: Vec<JobId> = vec![];
        let mut workers: Vec<WorkerId> = vec![];
        let mut store: HashMap<JobId, Job> = HashMap::new();
        let mut succeeded: HashMap<JobId, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Submit { tenant, cpu_m, retries } => {
                    let j = job(&mut ids, &format!("t{tenant}"), i64::from(cpu_m), i64::from(retries), now);
                    jobs.push(j.id);
                    s.submit(j, ts(now));
                }
                Op::AddWorker { slots, cpu_m } => workers.push(connected_worker(&mut s, &mut ids, u32::from(slots), u32::from(cpu_m), now)),
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
                Op::Cancel(i) => if let Some(j) = pick(&jobs, i) { let _ = s.cancel(j, ts(now)); },
                Op::Retry(i) => if let Some(j) = pick(&jobs, i)
                    && let Some(stored) = store.get(&j).cloned() { let _ = s.retry(stored, ts(now)); },
                Op::Disconnect(i) => if let Some(w) = pick(&workers, i) { s.disconnect_worker(w); },
                Op::Advance(ms) => {
                    now += i64::from(ms);
                    // Connected workers keep heartbeating; disconnected ones go silent.
                    for w in &workers {
                        if s.worker(w).is_some_and(|x| x.connected) {
                            let running: Vec<_> = s.attempts().filter(|a| a.worker_id == *w).map(|a| a.id).collect();
                            let _ = s.heartbeat(*w, &running, ts(now));
                        }
                    }
                    s.tick(ts(now));
                }
            }
            let ch = s.take_changes();
            check_invariants(&s, &ch, &mut store, &mut succeeded)?;
        }
    }

    #[test]
    fn every_pending_job_runs_when_capacity_exists(n in 1usize..60, tenants in 1u8..5, slots in 1u32..8) {
        let (mut s, mut ids) = (Scheduler::new(SchedConfig::default()), Ids(0));
        let w = connected_worker(&mut s, &mut ids, slots, 100_000, 0);
        for i in 0..n {
            let j = job(&mut ids, &format!("t{}", i as u8 % tenants), 1, 0, i as i64);
            s.submit(j, ts(i as i64));
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
