//! SLA compliance as running aggregates (SPEC §4.5 `/sla`, `hodei_sla_compliance_ratio`).
//!
//! A job's SLA outcome is decided once, when its first attempt starts. Instead of keeping and
//! re-reading every outcome of a window (≈ 1.4 M rows for 90 days at 1 000 jobs a minute), the
//! store keeps counts per tenant, level, hour, met-or-breached and queue-wait bin. A window is a
//! sum of hours, so a report reads at most `tenants × levels × 2 × WAIT_BINS` sums whatever its
//! length, and the wait percentiles come from the bins.
//!
//! The bins are exact below 8 ms and then split each power of two in 8, so a percentile read
//! from them (the middle of its bin) is within 1/16 (6.25 %) of the exact one.

use std::collections::BTreeMap;

use crate::ids::TenantId;
use crate::job::SlaLevel;
use crate::time::Timestamp;

/// Sub-bins per power of two.
const SUB: u64 = 8;
/// Waits of 2⁴⁰ ms (35 years) and more share the last bin.
const TOP_POWER: u32 = 40;
/// Number of wait bins.
pub const WAIT_BINS: u16 = (SUB + (TOP_POWER as u64 - 3) * SUB) as u16;

/// The bin of a queue wait (ms).
pub fn wait_bin(wait_ms: u64) -> u16 {
    if wait_ms < SUB {
        return wait_ms as u16;
    }
    let power = 63 - wait_ms.leading_zeros();
    if power >= TOP_POWER {
        return WAIT_BINS - 1;
    }
    let sub = (wait_ms >> (power - 3)) & (SUB - 1);
    (SUB + u64::from(power - 3) * SUB + sub) as u16
}

/// The waits `[lo, hi)` of a bin (ms). The stores' migrations compute the same bounds in SQL.
pub fn bin_range(bin: u16) -> (u64, u64) {
    let b = u64::from(bin);
    if b < SUB {
        return (b, b + 1);
    }
    let shift = (b - SUB) / SUB;
    let sub = (b - SUB) % SUB;
    ((SUB + sub) << shift, (SUB + sub + 1) << shift)
}

/// One job's SLA outcome, decided when its first attempt started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaOutcome {
    pub tenant: TenantId,
    pub level: SlaLevel,
    pub met: bool,
    pub wait_ms: u64,
    pub at: Timestamp,
}

/// The hour (UTC) an instant falls in: the unit SLA counts are kept in.
pub fn hour_of(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millis() - t.as_millis().rem_euclid(3_600_000))
}

/// The first hour of a window of `hours` at `now`: the window holds the `hours` whole hours
/// before the current one and the current hour so far.
pub fn window_start(now: Timestamp, hours: u32) -> Timestamp {
    Timestamp::from_millis(hour_of(now).as_millis() - i64::from(hours) * 3_600_000)
}

/// Where a batch of outcomes adds to the stored counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlaCountKey {
    pub tenant: TenantId,
    pub level: SlaLevel,
    pub hour: Timestamp,
    pub met: bool,
    pub bin: u16,
}

/// A batch's outcomes as additions to the stored counts, one per key.
pub fn count_outcomes(outcomes: &[SlaOutcome]) -> BTreeMap<SlaCountKey, u64> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        let key = SlaCountKey { tenant: o.tenant.clone(), level: o.level, hour: hour_of(o.at), met: o.met, bin: wait_bin(o.wait_ms) };
        *m.entry(key).or_default() += 1;
    }
    m
}

/// A count read back over a window: outcomes of one tenant and level, met or not, in one bin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaCount {
    pub tenant: TenantId,
    pub level: SlaLevel,
    pub met: bool,
    pub bin: u16,
    pub n: u64,
}

/// Started / met / breached and the wait distribution of a set of outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlaTally {
    pub met: u64,
    pub breached: u64,
    waits: BTreeMap<u16, u64>,
}

impl SlaTally {
    pub fn add(&mut self, c: &SlaCount) {
        if c.met {
            self.met += c.n;
        } else {
            self.breached += c.n;
        }
        *self.waits.entry(c.bin).or_default() += c.n;
    }

    pub fn started(&self) -> u64 {
        self.met + self.breached
    }

    /// Met of started, `None` when nothing started.
    pub fn compliance(&self) -> Option<f64> {
        let started = self.started();
        (started > 0).then(|| self.met as f64 / started as f64)
    }

    /// The wait (ms) at percentile `pct` (the `(n − 1)·pct/100`-th smallest), 0 when empty.
    pub fn wait_percentile(&self, pct: u64) -> u64 {
        let n = self.started();
        if n == 0 {
            return 0;
        }
        let rank = (n - 1) * pct.min(100) / 100;
        let mut seen = 0;
        for (&bin, &k) in &self.waits {
            seen += k;
            if seen > rank {
                let (lo, hi) = bin_range(bin);
                return lo + (hi - lo - 1) / 2;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bins_cover_every_wait_once_in_order() {
        let mut next = 0;
        for b in 0..WAIT_BINS - 1 {
            let (lo, hi) = bin_range(b);
            assert_eq!(lo, next, "bin {b} starts where the one before ends");
            assert!(hi > lo);
            assert_eq!((wait_bin(lo), wait_bin(hi - 1)), (b, b));
            next = hi;
        }
        assert_eq!(bin_range(WAIT_BINS - 1).0, next);
        assert_eq!(wait_bin(u64::MAX), WAIT_BINS - 1);
    }

    #[test]
    fn windows_are_whole_hours_and_the_current_one() {
        let now = Timestamp::from_millis(10 * 3_600_000 + 59_000);
        assert_eq!(hour_of(now), Timestamp::from_millis(10 * 3_600_000));
        assert_eq!(window_start(now, 24), Timestamp::from_millis(-14 * 3_600_000));
    }

    fn tally(waits: &[u64]) -> SlaTally {
        let t = TenantId::parse("acme").unwrap();
        let outcomes: Vec<SlaOutcome> =
            waits.iter().map(|&w| SlaOutcome { tenant: t.clone(), level: SlaLevel::Medium, met: w < 500, wait_ms: w, at: Timestamp::from_millis(0) }).collect();
        let mut tally = SlaTally::default();
        for (k, n) in count_outcomes(&outcomes) {
            tally.add(&SlaCount { tenant: k.tenant, level: k.level, met: k.met, bin: k.bin, n });
        }
        tally
    }

    #[test]
    fn small_waits_are_exact() {
        let t = tally(&[0, 1, 2, 3, 4, 5, 6, 7, 7, 7]);
        assert_eq!((t.wait_percentile(50), t.wait_percentile(95), t.wait_percentile(0)), (4, 7, 0));
        assert_eq!(SlaTally::default().wait_percentile(50), 0);
        assert_eq!(SlaTally::default().compliance(), None);
    }

    proptest! {
        #[test]
        fn percentiles_are_within_a_sixteenth_of_the_exact_ones(mut waits in prop::collection::vec(0u64..10_000_000_000, 1..300), pct in 0u64..=100) {
            let t = tally(&waits);
            waits.sort_unstable();
            let exact = waits[(waits.len() - 1) * pct as usize / 100];
            let got = t.wait_percentile(pct);
            prop_assert!(got.abs_diff(exact) * 16 <= exact.max(1), "p{pct}: {got} vs exact {exact}");
            prop_assert_eq!(t.started(), waits.len() as u64);
            prop_assert_eq!(t.met, waits.iter().filter(|w| **w < 500).count() as u64);
        }
    }
}
