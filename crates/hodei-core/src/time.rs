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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(format!("{:?} {}", Timestamp::from_millis(-5), Timestamp::from_millis(7)), "Timestamp(-5) 7ms");
    }
}
