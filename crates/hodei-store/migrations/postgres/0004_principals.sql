-- Who submitted a job (the principal of the token), read by the permission table: a
-- researcher controls its own jobs only. NULL for jobs stored before principals existed.
ALTER TABLE jobs ADD COLUMN submitted_by UUID;
ALTER TABLE job_arrays ADD COLUMN submitted_by UUID;

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
    j.array_id, j.array_index, a.array_start, a.array_end, a.array_step, a.array_max_parallel
FROM jobs j LEFT JOIN job_arrays a ON a.id = j.array_id;

-- Principals (users and services) and their role bindings (SPEC §2.13, §8.2): `role_bindings`
-- is a JSON array of {role, scope}.
CREATE TABLE principals (
    id             UUID PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    role_bindings  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    version        BIGINT NOT NULL
);

-- API tokens: only the SHA-256 of a secret is kept; `prefix` (its first 12 characters) finds
-- the candidates, whose hashes are compared in constant time. Revoking deletes the row.
CREATE TABLE api_tokens (
    id            UUID PRIMARY KEY,
    principal_id  UUID NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT
);

CREATE INDEX api_tokens_prefix ON api_tokens (prefix);
CREATE INDEX api_tokens_principal ON api_tokens (principal_id, id);
