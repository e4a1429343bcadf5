//! Core scheduling benchmark (issue: one decision ≤ 2 µs with 1,000,000 queued jobs across
//! 1,000 tenants; ≤ 1 KiB per queued job in the core's index).
//!
//! `cargo bench -p hodei-core --bench sched`. Memory is printed first, from a counting
//! allocator: the queue index alone, and the whole scheduler (jobs with their specs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use hodei_core::queue::{JobKey, Queue};
use hodei_core::sched::{AttemptResult, Outcome, SchedConfig, Scheduler};
use hodei_core::spec::{JobSpecInput, SpecLimits};
use hodei_core::{AttemptId, Job, JobId, PoolId, Priority, Quota, Resources, TenantId, TenantPolicy, Timestamp, Worker, WorkerId, WorkerState};
use uuid::Uuid;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TENANTS: usize = 1_000;
const JOBS: usize = 1_000_000;

fn tenant(i: usize) -> TenantId {
    TenantId::parse(&format!("t{i}")).unwrap()
}

fn worker(slots: u32) -> Worker {
    Worker {
        id: WorkerId::from_uuid(Uuid::from_u128(u128::MAX)),
        instance_name: "w".into(),
        pool_id: PoolId::parse("p").unwrap(),
        state: WorkerState::Registering,
        capabilities: vec![],
        resources: Resources::new(u32::MAX, u32::MAX, 0),
        allocated: Resources::ZERO,
        slots,
        slots_used: 0,
        labels: BTreeMap::new(),
        version: "bench".into(),
        registered_at: Timestamp::from_millis(0),
        last_heartbeat_at: Timestamp::from_millis(0),
        idle_since: None,
        connected: false,
        allowed_tenants: Vec::new(),
        health: hodei_core::worker::Health::Healthy,
        health_reason: String::new(),
    }
}

/// 1,000,000 pending jobs across 1,000 tenants (weights 1/2/3/5), one worker with `slots`.
fn loaded(slots: u32) -> Scheduler {
    let mut s = Scheduler::new(SchedConfig::default());
    let roomy = Quota { resources: Resources::new(u32::MAX, u32::MAX, 0), max_concurrent_jobs: u32::MAX, max_queued_jobs: u32::MAX };
    for t in 0..TENANTS {
        let weight = [1, 2, 3, 5][t % 4];
        s.set_tenant(&tenant(t), TenantPolicy { weight, quota: roomy, version: 1, ..TenantPolicy::default() }, Timestamp::from_millis(0));
    }
    let spec = JobSpecInput { command: vec!["true".into()], cpu_m: Some(100), memory_mb: Some(64), ..Default::default() }
        .validate(&SpecLimits::default(), "")
        .unwrap();
    for i in 0..JOBS {
        let at = Timestamp::from_millis(i as i64);
        let job = Job::new(JobId::from_uuid(Uuid::from_u128(i as u128 + 1)), tenant(i % TENANTS), spec.clone(), at);
        s.submit(job, at).unwrap();
    }
    let w = worker(slots);
    let id = w.id;
    s.register_worker(w, Timestamp::from_millis(0));
    s.connect_worker(id, &[], vec![], Timestamp::from_millis(0)).unwrap();
    let _ = s.take_changes();
    s
}

fn main() {
    let before = LIVE.load(Ordering::Relaxed);
    let mut q = Queue::default();
    for i in 0..JOBS {
        let k = JobKey {
            priority: Priority::Normal,
            deadline: Timestamp::from_millis(i as i64),
            submitted_at: Timestamp::from_millis(i as i64),
            id: JobId::from_uuid(Uuid::from_u128(i as u128)),
        };
        q.push(&tenant(i % TENANTS), k, Timestamp::from_millis(0));
    }
    let index = LIVE.load(Ordering::Relaxed) - before;
    drop(q);
    let before = LIVE.load(Ordering::Relaxed);
    let s = loaded(1);
    let whole = LIVE.load(Ordering::Relaxed) - before;
    println!("memory with {JOBS} queued jobs across {TENANTS} tenants:");
    println!("  fair-queue index: {:.0} B/job", index as f64 / JOBS as f64);
    println!("  whole scheduler (jobs + specs + index + books): {:.0} B/job", whole as f64 / JOBS as f64);
    drop(s);
    divan::main();
}

/// One dispatch with one free slot: choose the tenant (SFQ), the job, the worker; assign;
/// charge the tag. The job's end is applied outside the timed part.
#[divan::bench(sample_count = 200, sample_size = 50)]
fn one_decision_1m_queued(b: divan::Bencher) {
    let mut s = loaded(1);
    let mut n: u128 = 0;
    let wid = WorkerId::from_uuid(Uuid::from_u128(u128::MAX));
    b.bench_local(|| {
        let mut mint = || {
            n += 1;
            AttemptId::from_uuid(Uuid::from_u128(n))
        };
        let placed = s.schedule(Timestamp::from_millis(2_000_000), &mut mint);
        assert_eq!(placed, 1);
        let a = AttemptId::from_uuid(Uuid::from_u128(n));
        let r = AttemptResult::decided(Outcome::Succeeded, Some(0), None, Timestamp::from_millis(2_000_000), Timestamp::from_millis(2_000_100));
        s.finish(a, wid, r, Timestamp::from_millis(2_000_100)).unwrap();
        divan::black_box(s.take_changes());
    });
}

/// 100,000 dispatches in one `schedule` call (a worker with 100,000 free slots); per call.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn place_100k_of_1m(b: divan::Bencher) {
    b.with_inputs(|| loaded(100_000)).bench_local_values(|mut s| {
        let mut n: u128 = 0;
        let mut mint = || {
            n += 1;
            AttemptId::from_uuid(Uuid::from_u128(n))
        };
        let placed = s.schedule(Timestamp::from_millis(2_000_000), &mut mint);
        assert_eq!(placed, 100_000);
        s
    });
}
