//! The forecast claim, through the same core the server runs: on bursty work with SLA
//! classes (`bench/workloads/autoscale-forecast.yaml`), a forecast policy misses no more SLAs
//! than any threshold policy, and every threshold policy that spends no more worker-seconds
//! misses more — without flapping (no scale-up and scale-down within a cooldown of each other).

use std::path::PathBuf;

use hodei_sim::workload::PolicySpec;
use hodei_sim::{Report, Workload, simulate};

fn workload() -> Workload {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads/autoscale-forecast.yaml");
    Workload::load(&path).expect("workload").0
}

fn policy(name: &str, trigger: &str, action: &str, step: u32, cooldown_s: u64) -> PolicySpec {
    PolicySpec {
        name: name.into(),
        mode: "threshold".into(),
        trigger: Some(trigger.into()),
        action: action.into(),
        step,
        cooldown_s: Some(cooldown_s),
        window_s: Some(60),
        hysteresis_pct: None,
    }
}

fn with_policies(policies: Vec<PolicySpec>) -> Report {
    let mut w = workload();
    w.pools[0].autoscaling.as_mut().unwrap().policies = policies;
    simulate(&w, vec![]).expect("simulate")
}

#[test]
fn forecast_misses_fewer_slas_than_threshold_policies_that_cost_as_much() {
    let forecast = simulate(&workload(), vec![]).expect("simulate");
    eprint!("{}", forecast.render());
    assert_eq!(forecast.completed, forecast.submitted, "the horizon leaves time for every job");
    assert_eq!(forecast.flaps, 0, "forecast flapped");
    let down = || policy("down", "busy_ratio < 0.5", "scale_down", 1, 120);
    let grid = [
        ("queue_depth > 0", 4),
        ("queue_depth > 10", 2),
        ("queue_depth > 20", 1),
        ("queue_depth > 40", 4),
        ("queue_wait_seconds > 300", 4),
        ("queue_wait_seconds > 600", 1),
        ("queue_wait_seconds > 120", 2),
    ];
    eprintln!("{:<28} {:>5} {:>15} {:>9} {:>6}", "policy", "step", "worker-seconds", "breaches", "flaps");
    eprintln!("{:<28} {:>5} {:>15.0} {:>9} {:>6}", "forecast", 4, forecast.worker_seconds, forecast.sla_breaches, forecast.flaps);
    for (trigger, step) in grid {
        let r = with_policies(vec![policy("up", trigger, "scale_up", step, 60), down()]);
        eprintln!("{:<28} {:>5} {:>15.0} {:>9} {:>6}", trigger, step, r.worker_seconds, r.sla_breaches, r.flaps);
        assert_eq!(r.completed, r.submitted, "{trigger}: every job ends");
        assert!(forecast.sla_breaches <= r.sla_breaches, "{trigger} missed fewer SLAs ({}) than forecast ({})", r.sla_breaches, forecast.sla_breaches);
        assert!(
            r.worker_seconds > forecast.worker_seconds || r.sla_breaches > forecast.sla_breaches,
            "{trigger} spent {:.0} worker-seconds (forecast {:.0}) and missed {} SLAs (forecast {})",
            r.worker_seconds,
            forecast.worker_seconds,
            r.sla_breaches,
            forecast.sla_breaches
        );
    }
}

#[test]
fn the_same_workload_gives_the_same_report() {
    let a = serde_json::to_string(&simulate(&workload(), vec![]).unwrap()).unwrap();
    let b = serde_json::to_string(&simulate(&workload(), vec![]).unwrap()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_policy_field_that_would_mean_nothing_is_refused() {
    let mut w = workload();
    let mut p = policy("up", "queue_depth > 0", "scale_up", 1, 60);
    p.hysteresis_pct = Some(10);
    w.pools[0].autoscaling.as_mut().unwrap().policies = vec![p];
    let e = simulate(&w, vec![]).expect_err("hysteresis on a threshold policy").to_string();
    assert!(e.contains("hysteresis_pct is for forecast policies"), "{e}");
    let mut w = workload();
    w.pools[0].autoscaling.as_mut().unwrap().policies[0].window_s = Some(30);
    let e = simulate(&w, vec![]).expect_err("a window on a forecast policy").to_string();
    assert!(e.contains("window_s is for threshold policies"), "{e}");
}
