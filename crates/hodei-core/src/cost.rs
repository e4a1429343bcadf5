//! Cost arithmetic (SPEC §2.12): integer micro-dollars, one function, i128, half up.

use crate::units::Resources;

/// Hourly rates in micro-dollars: per core-hour, per GiB-hour, per GPU-hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub cpu_core_hour: i64,
    pub memory_gib_hour: i64,
    pub gpu_hour: i64,
}

impl Rates {
    /// SPEC defaults: 0.05 / core-hour, 0.01 / GiB-hour, 2.50 / GPU-hour.
    pub const DEFAULT: Rates = Rates { cpu_core_hour: 50_000, memory_gib_hour: 10_000, gpu_hour: 2_500_000 };
}

/// Billed seconds: every begun second counts, at least one (a 1.004 s run bills 2 s).
pub fn billed_seconds(run_ms: u64) -> u64 {
    run_ms.div_ceil(1000).max(1)
}

/// `round(s·(cpu_m·Rc·1024 + memory_mb·Rm·1000 + gpu·Rg·1 024 000) / 3 686 400 000)`, half up.
pub fn cost_micros(seconds: u64, r: &Resources, rates: &Rates) -> i64 {
    let per_s = i128::from(r.cpu_m.get()) * i128::from(rates.cpu_core_hour) * 1024
        + i128::from(r.memory_mb.get()) * i128::from(rates.memory_gib_hour) * 1000
        + i128::from(r.gpu.get()) * i128::from(rates.gpu_hour) * 1_024_000;
    let num = i128::from(seconds) * per_s;
    let den: i128 = 3_686_400_000;
    let q = (num + den / 2).div_euclid(den);
    i64::try_from(q).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_costs_70_000_micros() {
        assert_eq!(cost_micros(1800, &Resources::new(2000, 4096, 0), &Rates::DEFAULT), 70_000);
    }

    #[test]
    fn every_begun_second_is_billed() {
        assert_eq!((billed_seconds(0), billed_seconds(1000), billed_seconds(1004)), (1, 1, 2));
    }
}
