//! Full-size simulations of the fairness claims, with timings:
//! `cargo bench -p hodei-sim --bench fairness`. The CI-size versions are tests/fairness.rs.

use std::path::PathBuf;
use std::time::Instant;

use hodei_sim::{Workload, simulate};

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads");
    for name in ["fairness-1000.yaml", "flood-1m.yaml"] {
        let (w, trace) = Workload::load(&dir.join(name)).expect("workload");
        let t0 = Instant::now();
        let report = simulate(&w, trace).expect("simulate");
        let took = t0.elapsed();
        println!("== {name} (simulated in {:.2} s, {} jobs started)", took.as_secs_f64(), report.started);
        print!("{}", report.render());
        println!();
    }
}
