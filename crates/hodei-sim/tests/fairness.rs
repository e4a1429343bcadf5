//! The fairness claims at CI size (full size: `cargo bench -p hodei-sim`), through the
//! same core the server runs.

use std::path::PathBuf;

use hodei_sim::{Report, Workload, simulate};

fn run(name: &str) -> Report {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads").join(name);
    let (w, trace) = Workload::load(&path).expect("workload");
    simulate(&w, trace).expect("simulate")
}

#[test]
fn a_hundred_saturating_tenants_get_their_weighted_share() {
    let r = run("fairness-100.yaml");
    eprint!("{}", r.render());
    assert!(r.utilization > 0.99, "the pool is saturated: {}", r.utilization);
    for t in &r.tenants {
        assert!((t.ratio - 1.0).abs() <= 0.02, "{} (weight {}) got {:.4} of its fair share", t.tenant, t.weight, t.ratio);
    }
    assert!(r.jain_index >= 0.99, "Jain's index {}", r.jain_index);
}

#[test]
fn a_flood_does_not_delay_a_light_tenant_beyond_the_next_free_slot() {
    let r = run("flood-10k.yaml");
    eprint!("{}", r.render());
    let light = r.tenants.iter().find(|t| t.tenant == "light").unwrap();
    assert_eq!(light.started, 2);
    assert_eq!(light.max_overtaken, 0, "no flood job was dispatched between the light job's arrival and its start");
    assert_eq!(light.max_delay_beyond_first_slot_ms, 0, "it took the first slot that freed");
    assert!(light.wait_max_ms <= 1500, "one quantum is at most the longest job (1.5 s): waited {} ms", light.wait_max_ms);
}

#[test]
fn same_seed_same_report_byte_for_byte() {
    let a = run("mixed.yaml");
    let b = run("mixed.yaml");
    assert_eq!(a.render(), b.render());
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    assert!(a.tenants.iter().any(|t| t.tenant == "lab" && t.started > 0), "the trace's tenant ran");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads/mixed.yaml");
    let (mut w, trace) = Workload::load(&path).unwrap();
    w.seed += 1;
    assert_ne!(simulate(&w, trace).unwrap().render(), a.render(), "another seed draws other arrivals");
}

#[test]
fn bad_workloads_name_the_field() {
    let e = Workload::parse("horizon_s: 10\npools: []\n").unwrap_err();
    assert_eq!(e.to_string(), "pools: at least one pool");
    let e =
        Workload::parse("horizon_s: 10\npools: [{workers: 1, slots: 1, cpu_m: 1, memory_mb: 1}]\ntenants: [{name: a, job: {priority: urgent}}]\n").unwrap_err();
    assert!(e.to_string().starts_with("tenants[0].job.priority: expected critical|"), "{e}");
    let e = Workload::parse("horizon_s: 10\npools: [{workers: 1, slots: 1, cpu_m: 1, memory_mb: 1, cpus: 2}]\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `cpus`"), "{e}");
}

#[test]
fn reservations_keep_big_jobs_from_starving_behind_a_stream_of_small_ones() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads/backfill.yaml");
    let (mut w, trace) = Workload::load(&path).unwrap();
    let big = |r: &Report| r.tenants.iter().find(|t| t.tenant == "big").unwrap().wait_max_ms;
    let with = simulate(&w, trace.clone()).unwrap();
    w.scheduler.backfill = false;
    let without = simulate(&w, trace).unwrap();
    eprintln!("longest wait of a big job: {} ms with reservations, {} ms without", big(&with), big(&without));
    // Reserved after 30 s, started once the small jobs on the reserved worker end (≤ 40 s).
    assert!(big(&with) <= 30_000 + 40_000 + 30_000, "{}", big(&with));
    assert!(big(&without) > 600_000, "without reservations they starve: {}", big(&without));
}
