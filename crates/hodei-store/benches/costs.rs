//! What a cost breakdown costs over a large ledger: 1,000,000 priced attempts (200 tenants ×
//! 5 pools over 30 days, some across midnight) written through `Store::apply` into a SQLite
//! store in a temporary file, then `cost_breakdown` of the whole month grouped by tenant, pool
//! and day — sums of the daily rollups, never a scan of the records.
//! `cargo bench -p hodei-store --bench costs [-- ATTEMPTS]`; results in BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use hodei_core::cost::{RateVersion, Rates, price};
use hodei_core::sched::{AttemptCost, Changes};
use hodei_core::{AttemptId, JobId, PoolId, Resources, TenantId, Timestamp};
use hodei_store::sqlite::SqliteStore;
use hodei_store::{CostGroup, CostQuery, Store};

const DAY: i64 = 86_400_000;
const FIRST_DAY: i64 = 20_400;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let attempts: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("hodei.db")).await.unwrap());
    let tenants: Vec<TenantId> = (0..200).map(|i| TenantId::parse(&format!("t{i}")).unwrap()).collect();
    let pools: Vec<PoolId> = (0..5).map(|i| PoolId::parse(&format!("p{i}")).unwrap()).collect();
    let versions = [RateVersion { effective_from: Timestamp::from_millis(0), rates: Rates::DEFAULT }];
    let started = Instant::now();
    let mut n: u64 = 0;
    let mut total: i64 = 0;
    while n < attempts {
        let batch = (attempts - n).min(10_000);
        let costs: Vec<AttemptCost> = (n..n + batch)
            .map(|i| {
                let res = Resources::new(250 + (i % 8) as u32 * 250, 256 + (i % 4) as u32 * 256, u32::from(i % 50 == 0));
                // Spread over 30 days; every 97th runs across a midnight.
                let start = (FIRST_DAY + (i % 30) as i64) * DAY + (i as i64 * 7_919) % DAY;
                let run = if i % 97 == 0 { DAY / 12 } else { 1_000 + (i as i64 % 600) * 1_000 };
                AttemptCost {
                    attempt_id: AttemptId::from_uuid(uuid::Uuid::from_u128(u128::from(i) + 1)),
                    job_id: JobId::from_uuid(uuid::Uuid::from_u128(u128::from(i) + 1)),
                    tenant: Some(tenants[(i % 200) as usize].clone()),
                    job_name: Some(format!("job{}", i % 50)),
                    pool_id: pools[(i % 5) as usize].clone(),
                    resources: res,
                    segments: price(Timestamp::from_millis(start), Timestamp::from_millis(start + run), &res, &versions),
                    keep_record: true,
                    by_pool: true,
                }
            })
            .collect();
        total += costs.iter().map(AttemptCost::cost_micros).sum::<i64>();
        store.apply(Arc::new(Changes { costs, ..Changes::default() })).await.unwrap();
        n += batch;
    }
    println!("{attempts} priced attempts written in {:.1} s", started.elapsed().as_secs_f64());
    for (group_by, name) in [(CostGroup::Tenant, "tenant"), (CostGroup::Pool, "pool"), (CostGroup::Day, "day")] {
        let q = CostQuery { from_day: FIRST_DAY - 1, to_day: FIRST_DAY + 31, tenant: None, pool: None, visible: None, group_by };
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let rows = store.cost_breakdown(&q).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(rows.iter().map(|r| r.cost_micros).sum::<i64>(), total, "the breakdown adds up to the ledger");
        }
        times.sort_by(f64::total_cmp);
        println!("breakdown by {name:<6}: p50 {:.2} ms, max {:.2} ms (20 runs)", times[times.len() / 2], times[times.len() - 1]);
    }
    let one = CostQuery { from_day: FIRST_DAY, to_day: FIRST_DAY + 29, tenant: Some(tenants[7].clone()), pool: None, visible: None, group_by: CostGroup::Day };
    let t = Instant::now();
    store.cost_breakdown(&one).await.unwrap();
    println!("one tenant by day: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
}
