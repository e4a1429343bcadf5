//! `jobs.retention_days`: jobs that ended longer ago than that are deleted with their attempts,
//! events and log files, in small batches off the engine's thread. Before each round the engine
//! is told the horizon, so a manual retry racing the delete is refused (404, as for a deleted
//! job) instead of reviving a row that is about to go.
//!
//! Cost records go after `cost_tracking.retention_days`; the daily rollups they were added to
//! stay, so breakdowns of older periods still add up.
//!
//! SLA reports are hourly counts, not job rows: they are kept for the longest report window
//! (90 days) whatever the job retention, and forgotten after it in the same rounds.

use std::sync::Arc;
use std::time::Duration;

use hodei_api::Clock;
use hodei_core::Timestamp;
use hodei_core::sla_tally::window_start;
use hodei_store::Store;
use hodei_store::logs::Logs;
use tokio::sync::watch;

use crate::engine::EngineHandle;

/// The longest `/sla` window (hours): counts older than that are never read.
pub const SLA_HOURS: u32 = 24 * 90;

/// Jobs per store transaction: short enough that the engine's own writes never wait long.
const BATCH: u32 = 500;

/// How often to look: a tenth of the retention, between 1 s and 10 min.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// An error with its causes, `a: b: c` (a store error alone does not say what the database said).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut at = e.source();
    while let Some(c) = at {
        text.push_str(": ");
        text.push_str(&c.to_string());
        at = c.source();
    }
    text
}

/// What each round forgets: ended jobs after `jobs` (`jobs.retention_days`), cost records after
/// `cost_records` (`cost_tracking.retention_days`; their rollups stay).
pub struct Retention {
    pub jobs: Duration,
    pub cost_records: Duration,
}

pub async fn sweep(store: Arc<dyn Store>, engine: EngineHandle, logs: Arc<Logs>, clock: Arc<dyn Clock>, keep: Retention, mut stop: watch::Receiver<bool>) {
    let retention = keep.jobs;
    let mut tick = tokio::time::interval(interval(retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let before = Timestamp::from_millis(clock.now().as_millis().saturating_sub(retention.as_millis() as i64));
        if engine.retention_horizon(before).await.is_err() {
            return;
        }
        // Usage samples go with the jobs they describe.
        if let Err(e) = store.forget_usage(before).await {
            tracing::warn!(error = %causes(&e), "retention: cannot forget old usage; trying again next round");
        }
        if let Err(e) = store.forget_sla_counts(window_start(clock.now(), SLA_HOURS)).await {
            tracing::warn!(error = %causes(&e), "retention: cannot forget old SLA counts; trying again next round");
        }
        let records_before = Timestamp::from_millis(clock.now().as_millis().saturating_sub(keep.cost_records.as_millis() as i64));
        match store.forget_cost_records(records_before).await {
            Ok(n) if n > 0 => tracing::info!(records = n, "retention: forgot cost records past cost_tracking.retention_days"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %causes(&e), "retention: cannot forget old cost records; trying again next round"),
        }
        let (mut jobs, mut files) = (0u64, 0usize);
        loop {
            if *stop.borrow() {
                return;
            }
            let purged = match store.delete_ended_jobs(before, BATCH).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %causes(&e), "retention: cannot delete ended jobs; trying again next round");
                    break;
                }
            };
            if let Err(e) = logs.remove(&purged.attempts).await {
                tracing::warn!(error = %e, attempts = purged.attempts.len(), "retention: cannot delete the output of deleted jobs");
            }
            jobs += purged.jobs;
            files += purged.attempts.len();
            if purged.jobs == 0 {
                break;
            }
            // Let the engine's writes in between batches.
            tokio::task::yield_now().await;
        }
        if jobs > 0 {
            tracing::info!(jobs, attempts = files, before = %before, "retention deleted ended jobs");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn looks_ten_times_per_retention_within_bounds() {
        assert_eq!(super::interval(Duration::from_secs(30 * 86_400)), Duration::from_secs(600));
        assert_eq!(super::interval(Duration::from_secs(100)), Duration::from_secs(10));
        assert_eq!(super::interval(Duration::from_millis(500)), Duration::from_secs(1));
    }
}
