//! Per-tenant submit rate (SPEC §1.3, `limits.submit_rate_per_tenant` and
//! `submit_burst_per_tenant`): a token bucket counted in jobs. A batch of N jobs takes N tokens,
//! all or none. Tokens are held in thousandths of a job so the refill is exact integer
//! arithmetic; time is passed in.

use std::time::Duration;

use crate::Timestamp;

/// A rate in jobs per second and the bucket's size (the most jobs taken at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit). A `burst` of 0 means one second's worth.
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        (per_second > 0).then_some(RateLimit { per_second, burst: if burst == 0 { per_second } else { burst } })
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn capacity_milli(&self) -> u64 {
        u64::from(self.burst) * 1000
    }
}

/// Why jobs were not admitted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateRefusal {
    /// Enough tokens will be there after this long.
    RetryAfter(Duration),
    /// More jobs in one request than the bucket holds: never admitted as one request.
    OverBurst,
}

/// One tenant's bucket; starts full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    milli: u64,
    at: Timestamp,
}

impl TokenBucket {
    pub fn full(limit: &RateLimit, now: Timestamp) -> TokenBucket {
        TokenBucket { milli: limit.capacity_milli(), at: now }
    }

    /// Tokens refill at `per_second` per second (= `per_second` thousandths per ms), up to the
    /// burst. A clock going backwards refills nothing.
    fn refill(&mut self, limit: &RateLimit, now: Timestamp) {
        let elapsed = now.since(self.at).as_millis().min(u128::from(u64::MAX)) as u64;
        self.milli = self.milli.saturating_add(elapsed.saturating_mul(u64::from(limit.per_second))).min(limit.capacity_milli());
        if now > self.at {
            self.at = now;
        }
    }

    /// Takes `jobs` tokens, or none and says when to come back.
    pub fn take(&mut self, limit: &RateLimit, jobs: u32, now: Timestamp) -> Result<(), RateRefusal> {
        if jobs > limit.burst {
            return Err(RateRefusal::OverBurst);
        }
        self.refill(limit, now);
        let need = u64::from(jobs) * 1000;
        if self.milli >= need {
            self.milli -= need;
            return Ok(());
        }
        let missing = need - self.milli;
        Err(RateRefusal::RetryAfter(Duration::from_millis(missing.div_ceil(u64::from(limit.per_second)))))
    }

    /// Returns tokens taken for a request that was then refused for another reason.
    pub fn give_back(&mut self, limit: &RateLimit, jobs: u32) {
        self.milli = self.milli.saturating_add(u64::from(jobs) * 1000).min(limit.capacity_milli());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn no_rate_means_no_limit_and_no_burst_means_one_seconds_worth() {
        assert_eq!(RateLimit::new(0, 50), None);
        assert_eq!(RateLimit::new(10, 0).map(|l| l.burst()), Some(10));
    }

    #[test]
    fn a_full_bucket_admits_its_burst_then_says_when_the_next_job_fits() {
        let l = RateLimit::new(2, 3).unwrap();
        let mut b = TokenBucket::full(&l, at(0));
        for _ in 0..3 {
            assert_eq!(b.take(&l, 1, at(0)), Ok(()));
        }
        assert_eq!(b.take(&l, 1, at(0)), Err(RateRefusal::RetryAfter(Duration::from_millis(500))), "2 jobs/s: one job every 500 ms");
        assert_eq!(b.take(&l, 1, at(499)), Err(RateRefusal::RetryAfter(Duration::from_millis(1))));
        assert_eq!(b.take(&l, 1, at(500)), Ok(()));
    }

    #[test]
    fn a_batch_takes_all_its_tokens_or_none() {
        let l = RateLimit::new(10, 10).unwrap();
        let mut b = TokenBucket::full(&l, at(0));
        assert_eq!(b.take(&l, 7, at(0)), Ok(()));
        assert_eq!(b.take(&l, 4, at(0)), Err(RateRefusal::RetryAfter(Duration::from_millis(100))));
        assert_eq!(b.take(&l, 3, at(0)), Ok(()), "the refused batch took nothing");
        assert_eq!(b.take(&l, 11, at(10_000)), Err(RateRefusal::OverBurst));
    }

    #[test]
    fn tokens_given_back_are_capped_at_the_burst() {
        let l = RateLimit::new(1, 2).unwrap();
        let mut b = TokenBucket::full(&l, at(0));
        b.take(&l, 2, at(0)).unwrap();
        b.give_back(&l, 5);
        assert_eq!(b, TokenBucket::full(&l, at(0)));
    }

    proptest! {
        /// Over any window, admitted jobs never exceed the burst plus the rate times the window,
        /// and a refusal's retry-after is exact: at that instant the same request fits.
        #[test]
        fn admitted_jobs_never_exceed_burst_plus_rate_times_elapsed(
            rate in 1u32..50,
            burst in 1u32..50,
            steps in proptest::collection::vec((0i64..400, 1u32..8), 1..200),
        ) {
            let l = RateLimit::new(rate, burst).unwrap();
            let mut b = TokenBucket::full(&l, at(0));
            let (mut now, mut admitted) = (0i64, 0u64);
            for (gap, jobs) in steps {
                now += gap;
                match b.take(&l, jobs, at(now)) {
                    Ok(()) => admitted += u64::from(jobs),
                    Err(RateRefusal::RetryAfter(d)) => {
                        let mut probe = b.clone();
                        prop_assert!(probe.take(&l, jobs, at(now + d.as_millis() as i64)).is_ok());
                        if d.as_millis() > 1 {
                            let mut early = b.clone();
                            prop_assert!(early.take(&l, jobs, at(now + d.as_millis() as i64 - 2)).is_err());
                        }
                    }
                    Err(RateRefusal::OverBurst) => prop_assert!(jobs > burst),
                }
                let allowance = u64::from(burst) * 1000 + now as u64 * u64::from(rate);
                prop_assert!(admitted * 1000 <= allowance, "{admitted} jobs in {now} ms at {rate}/s, burst {burst}");
            }
        }
    }
}
