//! One autoscaler evaluation (issue: 50 pools × 10,000 queued jobs ≤ 1 ms): every pool's
//! signals and demand read off the scheduler, then the core's decision for each.
//!
//! `cargo bench -p hodei-core --bench autoscale`.

use std::collections::BTreeMap;
use std::time::Duration;

use hodei_core::autoscale::{self, Direction, IdleExpired, Memory, Mode, Policy, PoolSize, Samples, Trigger};
use hodei_core::sched::{PoolQuery, SchedConfig, Scheduler};
use hodei_core::spec::{JobSpecInput, SpecLimits};
use hodei_core::{Job, JobId, Pool, PoolId, PoolState, PoolType, Quota, Resources, TenantId, TenantPolicy, Timestamp, Worker, WorkerId, WorkerState};
use uuid::Uuid;

const POOLS: usize = 50;
const JOBS: usize = 10_000;
const TENANTS: usize = 100;

fn main() {
    divan::main();
}

fn pool(i: usize, forecast: bool) -> Pool {
    let mode = if forecast { Mode::Forecast } else { Mode::Threshold };
    Pool {
        id: PoolId::parse(&format!("p{i}")).unwrap(),
        name: format!("p{i}"),
        pool_type: PoolType::Dynamic,
        provider: "local".into(),
        worker_resources: Resources::new(4000 + (i as u32 % 4) * 2000, 8192, 0),
        worker_slots: 8,
        min_size: 0,
        max_size: 100,
        desired_size: 4,
        auto_scaling_enabled: true,
        idle_timeout: Duration::from_secs(300),
        scaling_policies: vec![Policy {
            id: "p".into(),
            name: "p".into(),
            mode,
            trigger: (!forecast).then(|| Trigger::parse("queue_depth > 10").unwrap()),
            direction: Direction::ScaleUp,
            step: 2,
            cooldown: Duration::from_secs(60),
            window: Duration::from_secs(60),
            hysteresis_pct: 20,
            enabled: true,
        }],
        allowed_tenants: Vec::new(),
        labels: BTreeMap::new(),
        managed_by: "config".into(),
        state: PoolState::Active,
        state_reason: String::new(),
        created_at: Timestamp::from_millis(0),
        updated_at: Timestamp::from_millis(0),
        version: 1,
    }
}

/// 10,000 pending jobs across 100 tenants in 10 shapes, a tenth of them selecting a pool;
/// 50 pools of 4 workers each.
fn loaded(forecast: bool) -> (Scheduler, Vec<Pool>) {
    let mut s = Scheduler::new(SchedConfig::default());
    let roomy = Quota { resources: Resources::new(u32::MAX, u32::MAX, 0), max_concurrent_jobs: u32::MAX, max_queued_jobs: u32::MAX };
    for t in 0..TENANTS {
        s.set_tenant(
            &TenantId::parse(&format!("t{t}")).unwrap(),
            TenantPolicy { weight: 1, quota: roomy, version: 1, ..TenantPolicy::default() },
            Timestamp::from_millis(0),
        );
    }
    let pools: Vec<Pool> = (0..POOLS).map(|i| pool(i, forecast)).collect();
    for (i, p) in pools.iter().enumerate() {
        for k in 0..4u128 {
            let w = Worker {
                id: WorkerId::from_uuid(Uuid::from_u128(((i as u128) << 8) + k + 1)),
                instance_name: format!("{}-{k}", p.id),
                pool_id: p.id.clone(),
                state: WorkerState::Registering,
                capabilities: vec!["process".into()],
                resources: p.worker_resources,
                allocated: Resources::ZERO,
                slots: 8,
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
            };
            s.register_worker(w, Timestamp::from_millis(0));
        }
    }
    for i in 0..JOBS {
        let spec = JobSpecInput {
            command: vec!["true".into()],
            cpu_m: Some(250 * (1 + (i as i64 % 10))),
            memory_mb: Some(256),
            pool: (i % 10 == 0).then(|| format!("p{}", i % POOLS)),
            ..Default::default()
        }
        .validate(&SpecLimits::default(), "")
        .unwrap();
        let at = Timestamp::from_millis(i as i64);
        s.submit(Job::new(JobId::from_uuid(Uuid::from_u128(i as u128 + 1)), TenantId::parse(&format!("t{}", i % TENANTS)).unwrap(), spec, at), at).unwrap();
    }
    let _ = s.take_changes();
    (s, pools)
}

fn evaluation(s: &Scheduler, pools: &[Pool], minds: &mut [(Samples, Memory)], now: Timestamp) -> usize {
    let queries: Vec<PoolQuery<'_>> = pools
        .iter()
        .map(|p| PoolQuery {
            pool: p,
            idle_timeout: Some(p.idle_timeout),
            forecast: p.scaling_policies[0].mode == Mode::Forecast,
            provision_delay: Duration::from_secs(1),
        })
        .collect();
    let views = s.pool_views(&queries, now);
    let mut decided = 0;
    for ((p, v), (samples, mem)) in pools.iter().zip(&views).zip(minds.iter_mut()) {
        samples.push(now, v.signals, Duration::from_secs(60));
        let size = PoolSize { min: p.min_size, max: p.max_size, desired: p.desired_size, current: v.live, auto_scaling: true };
        decided += autoscale::evaluate(size, &p.scaling_policies, samples, v.demand.as_ref(), IdleExpired(v.idle_expired), mem, now).is_some() as usize;
    }
    decided
}

/// Threshold policies on every pool.
#[divan::bench(sample_count = 100)]
fn evaluate_50_pools_10k_queued(b: divan::Bencher) {
    let (s, pools) = loaded(false);
    let mut minds = vec![(Samples::default(), Memory::default()); POOLS];
    let now = Timestamp::from_millis(100_000);
    b.bench_local(|| divan::black_box(evaluation(&s, &pools, &mut minds, now)));
}

/// Forecast policies on every pool: each one list-schedules its candidate jobs.
#[divan::bench(sample_count = 20)]
fn evaluate_50_pools_10k_queued_forecast(b: divan::Bencher) {
    let (s, pools) = loaded(true);
    let mut minds = vec![(Samples::default(), Memory::default()); POOLS];
    let now = Timestamp::from_millis(100_000);
    b.bench_local(|| divan::black_box(evaluation(&s, &pools, &mut minds, now)));
}

/// The part that runs on the engine's thread: reading every pool's signals and demand
/// (forecast policies on every pool, the costlier case).
#[divan::bench(sample_count = 100)]
fn pool_views_50_pools_10k_queued_forecast(b: divan::Bencher) {
    let (s, pools) = loaded(true);
    let now = Timestamp::from_millis(100_000);
    let queries: Vec<PoolQuery<'_>> =
        pools.iter().map(|p| PoolQuery { pool: p, idle_timeout: Some(p.idle_timeout), forecast: true, provision_delay: Duration::from_secs(1) }).collect();
    b.bench_local(|| divan::black_box(s.pool_views(&queries, now)));
}
