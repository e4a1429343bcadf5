//! The metric history (`metrics.history`): which of the server's own figures are sampled, per
//! scope, and how a query picks its resolution. The server's sampler writes them; the
//! `/metrics/historical` endpoint reads them.

use std::time::Duration;

use hodei_core::Timestamp;

/// What the history keeps, for the API's answers: raw samples a day, 5-minute averages a week,
/// hourly ones `retention_days` (each at most that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistorySettings {
    pub interval: Duration,
    pub retention_days: u32,
}

pub const CLUSTER: &str = "cluster";
pub const POOL: &str = "pool";
pub const TENANT: &str = "tenant";

/// A figure of the history and where it comes from: the exported metric it reads, the label
/// that names its scope (none: the cluster), a label value it is limited to, and whether it
/// is a counter whose increase between samples is kept.
pub struct Source {
    pub scope: &'static str,
    pub name: &'static str,
    pub metric: &'static str,
    pub filter: Option<(&'static str, &'static str)>,
    pub increase: bool,
    pub help: &'static str,
}

const fn src(scope: &'static str, name: &'static str, metric: &'static str, help: &'static str) -> Source {
    Source { scope, name, metric, filter: None, increase: false, help }
}

/// Every figure of the history. Series of the same scope and name add up (e.g. a tenant's
/// running jobs over all pools).
pub const SOURCES: &[Source] = &[
    Source { filter: Some(("state", "pending")), ..src(CLUSTER, "jobs_pending", "hodei_jobs_queued", "Pending jobs.") },
    src(CLUSTER, "jobs_running", "hodei_jobs_running", "Running jobs."),
    src(CLUSTER, "workers", "hodei_pool_size", "Live workers."),
    src(POOL, "size", "hodei_pool_size", "Live workers."),
    src(POOL, "desired_size", "hodei_pool_desired_size", "Workers the autoscaler wants."),
    src(POOL, "queue_depth", "hodei_pool_queue_depth", "Pending jobs that could run in the pool."),
    src(POOL, "queue_wait_seconds", "hodei_pool_queue_wait_seconds", "The longest wait among them, seconds."),
    src(POOL, "cpu_utilization", "hodei_pool_cpu_utilization_ratio", "Allocated over total cpu (0–1)."),
    src(POOL, "memory_utilization", "hodei_pool_memory_utilization_ratio", "Allocated over total memory (0–1)."),
    src(POOL, "busy_ratio", "hodei_pool_busy_ratio", "Busy over all slots (0–1)."),
    src(POOL, "jobs_running", "hodei_jobs_running", "Running jobs."),
    src(TENANT, "cpu_m", "hodei_tenant_cpu_m", "Millicores of running jobs."),
    src(TENANT, "memory_mb", "hodei_tenant_memory_mb", "MiB of running jobs."),
    src(TENANT, "gpu", "hodei_tenant_gpu", "GPUs of running jobs."),
    src(TENANT, "fair_share", "hodei_tenant_fair_share", "Fair share (0–1)."),
    src(TENANT, "actual_share", "hodei_tenant_actual_share", "Actual share (0–1)."),
    Source { filter: Some(("state", "pending")), ..src(TENANT, "jobs_pending", "hodei_jobs_queued", "Pending jobs.") },
    src(TENANT, "jobs_running", "hodei_jobs_running", "Running jobs."),
    Source { increase: true, ..src(TENANT, "cost_micros", "hodei_tenant_cost_micros_total", "Cost accrued since the previous sample, micro-dollars.") },
];

/// The names of a scope's figures.
pub fn names(scope: &str) -> impl Iterator<Item = &'static str> + '_ {
    SOURCES.iter().filter(move |s| s.scope == scope).map(|s| s.name)
}

pub const FIVE_MINUTES: u32 = 300;
pub const ONE_HOUR: u32 = 3600;
pub const MAX_POINTS: i64 = 11_000;

impl HistorySettings {
    /// How long samples of a resolution are kept (raw: a day, 5 minutes: a week, hourly:
    /// `retention_days`; none longer than `retention_days`).
    pub fn kept(&self, resolution_s: u32) -> Duration {
        let all = Duration::from_secs(u64::from(self.retention_days) * 86_400);
        all.min(match resolution_s {
            0 => Duration::from_secs(86_400),
            FIVE_MINUTES => Duration::from_secs(7 * 86_400),
            _ => all,
        })
    }

    /// The finest resolution still holding `start`, and its spacing in seconds.
    pub fn resolution_for(&self, start: Timestamp, now: Timestamp) -> (u32, u64) {
        let age = now.since(start);
        if age <= self.kept(0) {
            (0, self.interval.as_secs().max(1))
        } else if age <= self.kept(FIVE_MINUTES) {
            (FIVE_MINUTES, u64::from(FIVE_MINUTES))
        } else {
            (ONE_HOUR, u64::from(ONE_HOUR))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_reads_the_finest_resolution_that_still_holds_its_start() {
        let h = HistorySettings { interval: Duration::from_secs(60), retention_days: 14 };
        let now = Timestamp::from_millis(30 * 86_400_000);
        let ago = |s: i64| Timestamp::from_millis(now.as_millis() - s * 1000);
        assert_eq!(h.resolution_for(ago(3600), now), (0, 60));
        assert_eq!(h.resolution_for(ago(2 * 86_400), now), (300, 300));
        assert_eq!(h.resolution_for(ago(10 * 86_400), now), (3600, 3600));
        let short = HistorySettings { interval: Duration::from_secs(10), retention_days: 3 };
        assert_eq!(short.kept(FIVE_MINUTES), Duration::from_secs(3 * 86_400));
        assert_eq!(short.kept(0), Duration::from_secs(86_400));
    }

    #[test]
    fn every_figure_reads_a_metric_of_the_catalog() {
        for s in SOURCES {
            assert!(crate::metrics_catalog::METRICS.iter().any(|m| m.name == s.metric), "{}", s.metric);
        }
    }
}
