-- Jobs a job waits for (SPEC §2.2 `depends_on`): a JSON array of {"job_id", "condition"},
-- NULL when it waits for none (arrays have none: their column stays NULL).
ALTER TABLE jobs ADD COLUMN depends_on TEXT;
ALTER TABLE job_arrays ADD COLUMN depends_on TEXT;

DROP VIEW job_rows;
CREATE VIEW job_rows AS
SELECT j.id, j.tenant_id,
    coalesce(j.name, a.name) AS name,
    coalesce(j.command, a.command) AS command,
    coalesce(j.env, a.env) AS env,
    coalesce(j.working_dir, a.working_dir) AS working_dir,
    coalesce(j.image, a.image) AS image,
    coalesce(j.cpu_m, a.cpu_m) AS cpu_m,
    coalesce(j.memory_mb, a.memory_mb) AS memory_mb,
    coalesce(j.gpu, a.gpu) AS gpu,
    coalesce(j.timeout_ms, a.timeout_ms) AS timeout_ms,
    coalesce(j.expected_duration_ms, a.expected_duration_ms) AS expected_duration_ms,
    coalesce(j.max_retries, a.max_retries) AS max_retries,
    coalesce(j.retry_backoff_ms, a.retry_backoff_ms) AS retry_backoff_ms,
    coalesce(j.priority, a.priority) AS priority,
    coalesce(j.sla, a.sla) AS sla,
    coalesce(j.preemptible, a.preemptible) AS preemptible,
    coalesce(j.hold, a.hold) AS hold,
    coalesce(j.labels, a.labels) AS labels,
    coalesce(j.pool_selector, a.pool_selector) AS pool_selector,
    coalesce(j.submitted_by, a.submitted_by) AS submitted_by,
    j.state, j.state_reason, j.attempt_count, j.current_attempt_id, j.retries_left, j.lost_requeues, j.exit_code, j.failure_reason, j.submitted_at, j.eligible_at, j.scheduled_at, j.started_at, j.finished_at, j.next_retry_at, j.cancel_requested_at, j.pool_id, j.worker_id, j.log_truncated, j.created_state, j.created_reason, j.warnings, j.sla_status, j.sla_waited_ms, j.sla_since, j.sla_breached_at, j.sla_wait_ms, j.sla_decided_at,
    coalesce(j.depends_on, a.depends_on) AS depends_on,
    j.array_id, j.array_index, a.array_start, a.array_end, a.array_step, a.array_max_parallel
FROM jobs j LEFT JOIN job_arrays a ON a.id = j.array_id;
