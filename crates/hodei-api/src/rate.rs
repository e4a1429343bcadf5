//! Per-tenant submit rate (SPEC §1.3): one token bucket per tenant, counted in jobs (the
//! core's `TokenBucket`), checked before a submit reaches the scheduler, so a refused request
//! stores nothing. Buckets live in memory: they are a rate, not data, and a restart starts them
//! full.

use std::collections::HashMap;
use std::sync::Mutex;

use hodei_core::rate::{RateLimit, RateRefusal, TokenBucket};
use hodei_core::{TenantId, Timestamp};

use crate::error::{ApiError, ErrorCode};

pub struct SubmitRate {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<TenantId, TokenBucket>>,
}

impl SubmitRate {
    pub fn new(limit: Option<RateLimit>) -> SubmitRate {
        SubmitRate { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `jobs` tokens from each tenant's bucket, all or none: 429 `rate_limited` (with
    /// `Retry-After`) naming the first tenant over its rate.
    pub fn admit(&self, wants: &[(TenantId, u32)], now: Timestamp) -> Result<(), ApiError> {
        let Some(limit) = self.limit else { return Ok(()) };
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (i, (tenant, jobs)) in wants.iter().enumerate() {
            let bucket = buckets.entry(tenant.clone()).or_insert_with(|| TokenBucket::full(&limit, now));
            if let Err(refusal) = bucket.take(&limit, *jobs, now) {
                for (t, n) in &wants[..i] {
                    if let Some(b) = buckets.get_mut(t) {
                        b.give_back(&limit, *n);
                    }
                }
                return Err(refused(tenant, *jobs, &limit, refusal));
            }
        }
        Ok(())
    }

    /// Returns the tokens of a request that stored nothing new (an idempotent replay).
    pub fn give_back(&self, wants: &[(TenantId, u32)]) {
        let Some(limit) = self.limit else { return };
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (t, n) in wants {
            if let Some(b) = buckets.get_mut(t) {
                b.give_back(&limit, *n);
            }
        }
    }
}

fn refused(tenant: &TenantId, jobs: u32, limit: &RateLimit, why: RateRefusal) -> ApiError {
    metrics::counter!("hodei_submissions_rejected_total", "tenant" => tenant.to_string(), "code" => "rate_limited").increment(1);
    let (rate, burst) = (limit.per_second(), limit.burst());
    let err = match why {
        RateRefusal::RetryAfter(wait) => {
            let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
            ApiError::new(
                ErrorCode::RateLimited,
                format!("tenant {tenant} may submit {rate} jobs/s (bursts of {burst}); {jobs} more fit in {} ms; nothing was stored", wait.as_millis()),
            )
            .with("retry_after_s", secs.into())
            .with("retryable", true.into())
        }
        RateRefusal::OverBurst => ApiError::new(
            ErrorCode::RateLimited,
            format!("{jobs} jobs in one request for tenant {tenant} exceed limits.submit_burst_per_tenant ({burst}); split the request; nothing was stored"),
        )
        .with("retryable", false.into()),
    };
    err.with("rate_per_s", rate.into()).with("burst", burst.into())
}
