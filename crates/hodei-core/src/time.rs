//! Instants. The core never reads a clock: callers pass `now`.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC, from `i64::MIN + 1` to `i64::MAX`.
///
/// Held with the sign bit flipped, in a `NonZeroU64`: the order is the same, and the one value
/// left out (`i64::MIN`) lets `Option<Timestamp>` take 8 bytes instead of 16 — a job holds ten
/// of them, and the scheduler holds a million jobs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NonZeroU64);

const SIGN: u64 = 1 << 63;

impl Timestamp {
    /// `i64::MIN` (some 292 million years before the epoch) reads as the next millisecond.
    pub const fn from_millis(ms: i64) -> Self {
        let ms = if ms == i64::MIN { i64::MIN + 1 } else { ms };
        match NonZeroU64::new(ms as u64 ^ SIGN) {
            Some(v) => Timestamp(v),
            None => unreachable!(),
        }
    }

    pub const fn as_millis(self) -> i64 {
        (self.0.get() ^ SIGN) as i64
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp::from_millis(self.as_millis().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.as_millis().saturating_sub(earlier.as_millis())).unwrap_or(0))
    }
}

impl Default for Timestamp {
    /// The epoch.
    fn default() -> Self {
        Timestamp::from_millis(0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Timestamp").field(&self.as_millis()).finish()
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-07T20:15:59.123Z`: what a person reads
    /// in an error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (y, m, d) = civil_from_days(days);
        let (h, min, sec, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}.{milli:03}Z")
    }
}

/// Days since the epoch of a civil date (Howard Hinnant's algorithm), and back.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_read_as_rfc3339_utc() {
        assert_eq!(Timestamp::from_millis(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(1_796_674_559_123).to_string(), "2026-12-07T20:15:59.123Z");
        assert_eq!(Timestamp::from_millis(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn millis_and_order_are_kept(a in (i64::MIN + 1).., b in (i64::MIN + 1)..) {
            prop_assert_eq!(Timestamp::from_millis(a).as_millis(), a);
            prop_assert_eq!(Timestamp::from_millis(a).cmp(&Timestamp::from_millis(b)), a.cmp(&b));
        }
    }

    #[test]
    fn an_optional_instant_takes_eight_bytes() {
        assert_eq!(size_of::<Option<Timestamp>>(), 8);
        assert_eq!(Timestamp::from_millis(i64::MIN).as_millis(), i64::MIN + 1);
        assert_eq!(Timestamp::default().as_millis(), 0);
        assert_eq!(Timestamp::from_millis(i64::MAX).saturating_add(Duration::from_secs(1)).as_millis(), i64::MAX);
        assert_eq!(format!("{:?} {}", Timestamp::from_millis(-5), Timestamp::from_millis(7)), "Timestamp(-5) 1970-01-01T00:00:00.007Z");
        let _ = (Timestamp::from_millis(i64::MIN).to_string(), Timestamp::from_millis(i64::MAX).to_string());
    }
}
