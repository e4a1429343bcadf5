//! Cost arithmetic (SPEC §2.12): integer micro-dollars, one function, i128, half up.

use crate::time::Timestamp;
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

/// A pool's own rates (`resource_pools.pools[].cost_rates`): each set one replaces the rate in
/// force, the others follow the global versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateOverride {
    pub cpu_core_hour: Option<i64>,
    pub memory_gib_hour: Option<i64>,
    pub gpu_hour: Option<i64>,
}

impl RateOverride {
    pub fn apply(&self, r: Rates) -> Rates {
        Rates {
            cpu_core_hour: self.cpu_core_hour.unwrap_or(r.cpu_core_hour),
            memory_gib_hour: self.memory_gib_hour.unwrap_or(r.memory_gib_hour),
            gpu_hour: self.gpu_hour.unwrap_or(r.gpu_hour),
        }
    }

    /// The global `versions` with this override applied (the defaults before the first).
    pub fn versions(&self, versions: &[RateVersion]) -> Vec<RateVersion> {
        let mut out = vec![RateVersion { effective_from: Timestamp::from_millis(i64::MIN / 2), rates: self.apply(Rates::DEFAULT) }];
        out.extend(versions.iter().map(|v| RateVersion { effective_from: v.effective_from, rates: self.apply(v.rates) }));
        out
    }
}

/// What idle capacity cost: for each sample of a pool — the seconds it covers, its live
/// workers and the share of their slots busy — the idle part of its workers (workers × (1 −
/// busy)) for those seconds, priced per worker of `per_worker` at `rates`. Idle worker-seconds
/// are summed in milliseconds and rounded once, half up, so many short samples lose nothing.
pub fn idle_micros(samples: &[(u64, f64, f64)], per_worker: &Resources, rates: &Rates) -> i64 {
    let idle_ms: u128 = samples
        .iter()
        .map(|(secs, workers, busy)| {
            let idle = workers.max(0.0) * (1.0 - busy.clamp(0.0, 1.0));
            (*secs as f64 * idle * 1000.0).round() as u128
        })
        .sum();
    let seconds = u64::try_from((idle_ms + 500) / 1000).unwrap_or(u64::MAX);
    cost_micros(seconds, per_worker, rates)
}

/// A non-negative decimal with at most 6 decimals (`0.05`, `2.5`, `12`) in micro-units.
pub fn parse_micros(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) || frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    int.checked_mul(1_000_000)?.checked_add(frac)
}

/// The rates in force at `t`: the newest version that took effect by then (else the defaults).
pub fn rates_at(versions: &[RateVersion], t: Timestamp) -> Rates {
    versions.iter().filter(|v| v.effective_from <= t).max_by_key(|v| v.effective_from).map_or(Rates::DEFAULT, |v| v.rates)
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

/// Rates in force from `effective_from` on (until the next version's): a change applies from
/// its instant, never to time already run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateVersion {
    pub effective_from: Timestamp,
    pub rates: Rates,
}

/// One priced stretch of an attempt's billed time: within one UTC day and one rate version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Days since the epoch (UTC) the stretch lies in.
    pub day: i64,
    pub billed_seconds: u64,
    pub rates: Rates,
    pub cost_micros: i64,
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day of an instant, as days since the epoch.
pub fn day_of(t: Timestamp) -> i64 {
    t.as_millis().div_euclid(DAY_MS)
}

/// Prices an attempt that ran from `start` to `end` on `res` (SPEC §2.12): its billed time —
/// every begun second from `start`, at least one — split at UTC midnights and at the instants
/// rates change. A stretch's seconds are the begun seconds at its end less those at its start,
/// so the stretches' seconds add up to [`billed_seconds`] of the whole run, exactly; each is
/// priced at the rates in force at its start. `versions` in any order; with none, `DEFAULT`.
pub fn price(start: Timestamp, end: Timestamp, res: &Resources, versions: &[RateVersion]) -> Vec<Segment> {
    price_part(start, start, end, res, versions)
}

/// The part `[from, to)` of a run that started at `start` (accrual while it runs: SPEC §2.12).
/// A part bills the seconds begun by `to` less those begun by `from`, so pricing a run in parts
/// — `(start, a)`, `(a, b)`, …, `(z, end)` — bills exactly the seconds [`price`] bills for the
/// whole run (property test); each part is split at midnights and rate changes like a whole run.
/// Parts are not empty: `to` after `from` (only a whole run of no time bills its one second).
pub fn price_part(start: Timestamp, from: Timestamp, to: Timestamp, res: &Resources, versions: &[RateVersion]) -> Vec<Segment> {
    let s0 = start.as_millis();
    let to = to.as_millis().max(s0);
    let from = from.as_millis().clamp(s0, to);
    // Begun seconds at instant t of the run (at least one once it has run at all).
    let begun = |t: i64| if t <= s0 { 0 } else { ((t - s0) as u64).div_ceil(1000) };
    let total = billed_seconds((to - s0) as u64);
    // The end of the billed window: a whole number of seconds after the start.
    let stop = s0.saturating_add(total as i64 * 1000);
    let begun = |t: i64| if t >= to { total } else { begun(t).min(total) };
    let already = if from == s0 { 0 } else { begun(from) };
    let cut_from = if from == s0 { s0 } else { from };
    let rates_at = |t: i64| rates_at(versions, Timestamp::from_millis(t));
    let mut cuts: Vec<i64> = versions.iter().map(|v| v.effective_from.as_millis()).filter(|&t| t > cut_from && t < stop).collect();
    let mut midnight = (cut_from.div_euclid(DAY_MS) + 1) * DAY_MS;
    while midnight < stop {
        cuts.push(midnight);
        midnight += DAY_MS;
    }
    cuts.push(stop.max(cut_from));
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len());
    let mut at = cut_from;
    let mut counted = already;
    for cut in cuts {
        let upto = if cut >= stop { total } else { begun(cut) };
        let seconds = upto.saturating_sub(counted);
        if seconds > 0 {
            let rates = rates_at(at);
            out.push(Segment {
                start: Timestamp::from_millis(at),
                end: Timestamp::from_millis(cut),
                day: at.div_euclid(DAY_MS),
                billed_seconds: seconds,
                rates,
                cost_micros: cost_micros(seconds, res, &rates),
            });
        }
        counted = counted.max(upto);
        at = cut;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn idle_capacity_is_priced_per_idle_worker_second() {
        let worker = Resources::new(1000, 1024, 0);
        // Two idle workers for an hour: two worker-hours of a core and a GiB.
        assert_eq!(idle_micros(&[(3600, 2.0, 0.0)], &worker, &Rates::DEFAULT), 120_000);
        // Half their slots busy: half of it; spread over 3600 samples of a second: the same.
        assert_eq!(idle_micros(&[(3600, 2.0, 0.5)], &worker, &Rates::DEFAULT), 60_000);
        assert_eq!(idle_micros(&vec![(1, 2.0, 0.5); 3600], &worker, &Rates::DEFAULT), 60_000);
        assert_eq!(idle_micros(&[(60, 3.0, 1.0), (0, 9.0, 0.0)], &worker, &Rates::DEFAULT), 0);
    }

    use super::*;
    use proptest::prelude::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_run_across_midnight_and_a_rate_change_is_split_and_adds_up() {
        let res = Resources::new(2000, 4096, 0);
        let doubled = Rates { cpu_core_hour: 100_000, ..Rates::DEFAULT };
        let change = RateVersion { effective_from: ts(DAY_MS + 600_000), rates: doubled };
        // 23:50 → 00:20 the next day: 10 min, then 10 min at the old rates, then 10 at the new.
        let segs = price(ts(DAY_MS - 600_000), ts(DAY_MS + 1_200_000), &res, &[change]);
        let got: Vec<(i64, u64, Rates)> = segs.iter().map(|s| (s.day, s.billed_seconds, s.rates)).collect();
        assert_eq!(got, [(0, 600, Rates::DEFAULT), (1, 600, Rates::DEFAULT), (1, 600, doubled)]);
        assert_eq!(segs[2].cost_micros, cost_micros(600, &res, &doubled));
    }

    proptest! {
        /// Whatever the run and the rate versions, the stretches' seconds add up to the run's
        /// billed seconds, none spans a midnight or a rate change, and each is priced at the
        /// rates in force at its start.
        #[test]
        fn a_run_billed_in_parts_bills_the_seconds_of_the_whole(
            start in 0i64..2 * DAY_MS,
            run_ms in 0i64..DAY_MS,
            cuts in proptest::collection::vec(0.0f64..1.0, 0..6),
        ) {
            let res = Resources::new(1000, 1024, 0);
            let mut at: Vec<i64> = cuts.iter().map(|c| start + (c * run_ms as f64) as i64).collect();
            at.retain(|&t| t > start && t < start + run_ms);
            at.sort_unstable();
            at.dedup();
            let mut bounds = vec![start];
            bounds.extend(at);
            bounds.push(start + run_ms);
            let parts: u64 = bounds.windows(2).flat_map(|w| price_part(ts(start), ts(w[0]), ts(w[1]), &res, &[])).map(|s| s.billed_seconds).sum();
            prop_assert_eq!(parts, billed_seconds(run_ms as u64));
        }

        #[test]
        fn stretches_add_up_to_the_billed_seconds(
            start in 0i64..4 * DAY_MS,
            run_ms in 0i64..3 * DAY_MS,
            changes in proptest::collection::vec((0i64..8 * DAY_MS, 1i64..200_000), 0..5),
            cpu_m in 1u32..64_000, mem in 1u32..1_000_000, gpu in 0u32..8,
        ) {
            let versions: Vec<RateVersion> = changes.iter().map(|&(at, r)| RateVersion { effective_from: ts(at), rates: Rates { cpu_core_hour: r, memory_gib_hour: r / 5, gpu_hour: r * 50 } }).collect();
            let res = Resources::new(cpu_m, mem, gpu);
            let segs = price(ts(start), ts(start + run_ms), &res, &versions);
            prop_assert_eq!(segs.iter().map(|s| s.billed_seconds).sum::<u64>(), billed_seconds(run_ms as u64));
            for s in &segs {
                prop_assert_eq!(day_of(s.start), s.day);
                prop_assert!(s.end.as_millis() <= (s.day + 1) * DAY_MS, "{:?} crosses midnight", s);
                prop_assert!(!versions.iter().any(|v| v.effective_from > s.start && v.effective_from < s.end), "{:?} spans a rate change", s);
                prop_assert_eq!(s.cost_micros, cost_micros(s.billed_seconds, &res, &s.rates));
            }
        }
    }

    #[test]
    fn the_spec_example_costs_70_000_micros() {
        assert_eq!(cost_micros(1800, &Resources::new(2000, 4096, 0), &Rates::DEFAULT), 70_000);
    }

    #[test]
    fn amounts_parse_to_micros_exactly() {
        assert_eq!(
            ["0.05", "2.5", "12", "0.000001", "1.1234567", "-1", "1e3", ".5", ""].map(parse_micros),
            [Some(50_000), Some(2_500_000), Some(12_000_000), Some(1), None, None, None, None, None]
        );
    }

    #[test]
    fn every_begun_second_is_billed() {
        assert_eq!((billed_seconds(0), billed_seconds(1000), billed_seconds(1004)), (1, 1, 2));
    }
}
