//! Every Prometheus metric the server exports: name, type, labels and help. The exposition
//! writes each one's help text; `docs/metrics.md` is generated from this table and the
//! black-box tests check that a fresh server exports each name with this type and these labels.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn m(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric { name, kind, labels, help }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

pub const METRICS: &[Metric] = &[
    // Jobs.
    m("hodei_jobs_submitted_total", C, &["tenant", "priority"], "Jobs accepted (single, batch and array submits)."),
    m("hodei_jobs_scheduled_total", C, &["tenant", "pool"], "Jobs placed on a worker."),
    m("hodei_jobs_completed_total", C, &["tenant", "pool", "state"], "Jobs that ended, by final state (pool empty: ended before placement)."),
    m("hodei_jobs_retried_total", C, &["tenant"], "Failed attempts followed by another attempt."),
    m("hodei_jobs_requeued_total", C, &["pool", "reason"], "Placed jobs put back in the queue (worker lost, preempted, not acknowledged)."),
    m("hodei_submissions_rejected_total", C, &["tenant", "code"], "Submits refused, by error code."),
    m("hodei_quota_violations_total", C, &["tenant", "resource"], "Dispatches over quota that violation_policy `warn` let through."),
    m("hodei_jobs_queued", G, &["tenant", "priority", "state"], "Jobs waiting (pending or held)."),
    m("hodei_jobs_running", G, &["tenant", "pool"], "Jobs running."),
    m("hodei_queue_oldest_wait_seconds", G, &["tenant"], "Wait of the tenant's longest-waiting pending job."),
    m("hodei_jobs_overdue", G, &["pool"], "Running jobs past their timeout (being killed, or a worker not answering)."),
    // Latencies.
    m("hodei_scheduling_latency_seconds", H, &[], "Time of one placement decision."),
    m("hodei_dispatch_latency_seconds", H, &["pool"], "From a job becoming eligible to its start on a worker."),
    m("hodei_worker_allocation_latency_seconds", H, &["pool"], "From placement to the worker's start of the job."),
    m("hodei_queue_wait_seconds", H, &["tenant", "priority"], "Queue wait of started jobs."),
    m("hodei_job_run_duration_seconds", H, &["pool", "state"], "Run time of ended jobs."),
    // API.
    m("hodei_http_requests_total", C, &["method", "route", "status"], "REST requests answered."),
    m("hodei_http_request_duration_seconds", H, &["method", "route"], "REST request durations."),
    // Workers and pools.
    m("hodei_workers", G, &["pool", "state"], "Workers by state."),
    m("hodei_workers_unhealthy", G, &["pool"], "Live workers reporting themselves unhealthy."),
    m("hodei_workers_lost_total", C, &["pool"], "Workers whose lease expired (no heartbeat)."),
    m("hodei_pool_size", G, &["pool"], "Live workers in the pool."),
    m("hodei_pool_desired_size", G, &["pool"], "Workers the autoscaler wants."),
    m("hodei_pool_min_size", G, &["pool"], "The pool's minimum size."),
    m("hodei_pool_max_size", G, &["pool"], "The pool's maximum size."),
    m("hodei_pool_queue_depth", G, &["pool"], "Pending jobs that have this pool as a candidate."),
    m("hodei_pool_queue_wait_seconds", G, &["pool"], "The longest wait among the pending jobs that have this pool as a candidate."),
    m("hodei_pool_cpu_utilization_ratio", G, &["pool"], "Allocated over total cpu of the pool's idle and busy workers."),
    m("hodei_pool_memory_utilization_ratio", G, &["pool"], "Allocated over total memory of the pool's idle and busy workers."),
    m("hodei_pool_busy_ratio", G, &["pool"], "Busy slots over all slots."),
    m("hodei_pool_state", G, &["pool", "state"], "1 for the pool's current state, 0 for the others."),
    m("hodei_pool_provisioning_failures_total", C, &["pool"], "Workers the provider failed to create."),
    m("hodei_autoscaler_decisions_total", C, &["pool", "action", "decision"], "Autoscaler decisions by action and outcome."),
    // Tenants.
    m("hodei_tenant_cpu_m", G, &["tenant"], "Millicores requested by the tenant's running jobs."),
    m("hodei_tenant_memory_mb", G, &["tenant"], "MiB requested by the tenant's running jobs."),
    m("hodei_tenant_gpu", G, &["tenant"], "GPUs requested by the tenant's running jobs."),
    m("hodei_tenant_weight", G, &["tenant"], "Fair-share weight."),
    m("hodei_tenant_fair_share", G, &["tenant"], "Share of the cluster the tenant's weight entitles it to, among tenants with work."),
    m("hodei_tenant_actual_share", G, &["tenant"], "Share of the cluster the tenant uses."),
    m("hodei_tenant_burst_active", G, &["tenant"], "1 while a burst grant is active."),
    m("hodei_tenant_burst_utilization_ratio", G, &["tenant"], "Use of the active burst grant, worst resource."),
    m("hodei_tenant_quota_utilization", G, &["tenant", "resource"], "Use over quota, per resource (cpu, memory, gpu, jobs)."),
    // Cost and budgets.
    m("hodei_tenant_cost_micros_total", C, &["tenant"], "Cost accrued, in micro-dollars."),
    m("hodei_pool_cost_micros_total", C, &["pool"], "Cost accrued, in micro-dollars (not exported where cost_tracking.track_by_pool is off)."),
    m("hodei_budget_utilization_ratio", G, &["tenant", "project"], "Spend over budget in the current period (worst budget)."),
    m("hodei_budget_fair_share_factor", G, &["tenant"], "Factor applied to the fair-share weight while spending ahead of the budget's pace."),
    // SLA.
    m("hodei_sla_compliance_ratio", G, &["tenant", "level"], "Jobs started within their SLA over jobs started, in the compliance window."),
    m("hodei_sla_jobs", G, &["tenant", "level", "status"], "Waiting jobs by SLA status."),
    m("hodei_sla_breaches_total", C, &["tenant", "level"], "Jobs that waited past their SLA."),
    // Server.
    m("hodei_db_errors_total", C, &["op"], "Failed store writes."),
    m("hodei_db_query_duration_seconds", H, &["op"], "Store write durations."),
    m("hodei_scheduler_leader", G, &[], "1 while this server holds the scheduler lock."),
    m("hodei_scheduler_loop_lag_seconds", G, &[], "How late the scheduler loop runs behind its tick."),
    m("hodei_alerts_firing", G, &["kind", "severity"], "Open internal alerts."),
    m("hodei_build_info", G, &["version"], "Always 1, labelled with the server's version."),
    m("hodei_worker_messages_refused_total", C, &["kind"], "Worker messages refused (stale attempt, unknown worker, over capacity)."),
    m("hodei_usage_samples_dropped_total", C, &[], "Usage samples dropped because the writer fell behind."),
    m("hodei_audit_write_failures_total", C, &[], "Audit records that could not be written."),
];

/// `docs/metrics.md`: the table of every metric, written from this catalog.
pub fn reference() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n<!-- Generated from crates/hodei-api/src/metrics_catalog.rs: edit the catalog, then run\n     \
         `HODEI_UPDATE_DOCS=1 cargo test -p hodei-api metrics_reference`. -->\n\n\
         Every metric the server exports on its metrics listener (`/metrics`), in Prometheus's text format.\n\
         Units are base units: seconds, bytes; cpu in millicores, memory in MiB and money in micro-dollars\n\
         (integers) as everywhere else. Labels are bounded: `tenant` and `pool` by configuration, the others\n\
         by the code; no series is labelled with a job, attempt or worker id. A tenant's or a pool's series\n\
         are exported at zero from the moment it exists (series by tenant and pool: for the tenant's first\n\
         pool, and for each pool with the default tenant), so dashboards and alerts see an idle tenant\n\
         as 0, not as missing.\n\n| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n",
    );
    for m in METRICS {
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", m.name, m.kind.as_str(), m.labels.join(", "), m.help));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
        let want = super::reference();
        if std::env::var_os("HODEI_UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(have == want, "docs/metrics.md is not the generated reference: HODEI_UPDATE_DOCS=1 cargo test -p hodei-api metrics_reference");
    }
}
