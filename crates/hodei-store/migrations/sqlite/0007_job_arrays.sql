-- An array's spec is stored once, in `job_arrays`; its members' rows in `jobs` hold their own
-- state and index and leave the spec columns NULL (a 100 000-member array writes one spec, not
-- 100 000). `job_rows` reads a job with its spec wherever it is stored. `first_job_id` and
-- `last_job_id` bound the members' ids (minted in order), so listing an array's jobs is a
-- range of the primary key and needs no index of its own.

CREATE TABLE job_arrays (
    id                    BLOB PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    name                  TEXT NOT NULL,
    command               TEXT NOT NULL,
    env                   TEXT NOT NULL,
    working_dir           TEXT,
    image                 TEXT,
    cpu_m                 INTEGER NOT NULL,
    memory_mb             INTEGER NOT NULL,
    gpu                   INTEGER NOT NULL,
    timeout_ms            INTEGER NOT NULL,
    expected_duration_ms  INTEGER,
    max_retries           INTEGER NOT NULL,
    retry_backoff_ms      INTEGER,
    priority              TEXT NOT NULL,
    sla                   TEXT NOT NULL,
    preemptible           INTEGER NOT NULL,
    hold                  INTEGER NOT NULL,
    labels                TEXT NOT NULL,
    pool_selector         TEXT,
    array_start           INTEGER NOT NULL,
    array_end             INTEGER NOT NULL,
    array_step            INTEGER NOT NULL,
    array_max_parallel    INTEGER,
    first_job_id          BLOB NOT NULL,
    last_job_id           BLOB NOT NULL
) WITHOUT ROWID;

INSERT INTO job_arrays (id, tenant_id, name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, expected_duration_ms, max_retries, retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, array_start, array_end, array_step, array_max_parallel, first_job_id, last_job_id)
SELECT array_id, tenant_id, name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, expected_duration_ms, max_retries, retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, array_start, array_end, array_step, array_max_parallel, min(id), max(id)
FROM jobs WHERE array_id IS NOT NULL GROUP BY array_id;

CREATE TABLE jobs_new (
    id                    BLOB PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    name                  TEXT,
    command               TEXT,
    env                   TEXT,
    working_dir           TEXT,
    image                 TEXT,
    cpu_m                 INTEGER,
    memory_mb             INTEGER,
    gpu                   INTEGER,
    timeout_ms            INTEGER,
    expected_duration_ms  INTEGER,
    max_retries           INTEGER,
    retry_backoff_ms      INTEGER,
    priority              TEXT,
    sla                   TEXT,
    preemptible           INTEGER,
    hold                  INTEGER,
    labels                TEXT,
    pool_selector         TEXT,
    state                 TEXT NOT NULL,
    state_reason          TEXT,
    attempt_count         INTEGER NOT NULL,
    current_attempt_id    BLOB,
    retries_left          INTEGER NOT NULL,
    lost_requeues         INTEGER NOT NULL,
    exit_code             INTEGER,
    failure_reason        TEXT,
    submitted_at          INTEGER NOT NULL,
    eligible_at           INTEGER NOT NULL,
    scheduled_at          INTEGER,
    started_at            INTEGER,
    finished_at           INTEGER,
    next_retry_at         INTEGER,
    cancel_requested_at   INTEGER,
    pool_id               TEXT,
    worker_id             BLOB,
    log_truncated         INTEGER NOT NULL,
    created_state         TEXT NOT NULL,
    created_reason        TEXT,
    warnings              TEXT,
    sla_status            TEXT NOT NULL,
    sla_waited_ms         INTEGER NOT NULL,
    sla_since             INTEGER,
    sla_breached_at       INTEGER,
    sla_wait_ms           INTEGER,
    sla_decided_at        INTEGER,
    array_id              BLOB,
    array_index           INTEGER,
    -- A job has its own spec or belongs to an array, never both.
    CHECK ((array_id IS NULL) = (command IS NOT NULL))
) WITHOUT ROWID;

INSERT INTO jobs_new (id, tenant_id, name, command, env, working_dir, image, cpu_m, memory_mb, gpu, timeout_ms, expected_duration_ms, max_retries, retry_backoff_ms, priority, sla, preemptible, hold, labels, pool_selector, state, state_reason, attempt_count, current_attempt_id, retries_left, lost_requeues, exit_code, failure_reason, submitted_at, eligible_at, scheduled_at, started_at, finished_at, next_retry_at, cancel_requested_at, pool_id, worker_id, log_truncated, created_state, created_reason, warnings, sla_status, sla_waited_ms, sla_since, sla_breached_at, sla_wait_ms, sla_decided_at, array_id, array_index)
SELECT id, tenant_id,
    CASE WHEN array_id IS NULL THEN name END, CASE WHEN array_id IS NULL THEN command END, CASE WHEN array_id IS NULL THEN env END, CASE WHEN array_id IS NULL THEN working_dir END, CASE WHEN array_id IS NULL THEN image END, CASE WHEN array_id IS NULL THEN cpu_m END, CASE WHEN array_id IS NULL THEN memory_mb END, CASE WHEN array_id IS NULL THEN gpu END, CASE WHEN array_id IS NULL THEN timeout_ms END, CASE WHEN array_id IS NULL THEN expected_duration_ms END, CASE WHEN array_id IS NULL THEN max_retries END, CASE WHEN array_id IS NULL THEN retry_backoff_ms END, CASE WHEN array_id IS NULL THEN priority END, CASE WHEN array_id IS NULL THEN sla END, CASE WHEN array_id IS NULL THEN preemptible END, CASE WHEN array_id IS NULL THEN hold END, CASE WHEN array_id IS NULL THEN labels END, CASE WHEN array_id IS NULL THEN pool_selector END,
    state, state_reason, attempt_count, current_attempt_id, retries_left, lost_requeues, exit_code, failure_reason, submitted_at, eligible_at, scheduled_at, started_at, finished_at, next_retry_at, cancel_requested_at, pool_id, worker_id, log_truncated, created_state, created_reason, warnings, sla_status, sla_waited_ms, sla_since, sla_breached_at, sla_wait_ms, sla_decided_at, array_id, array_index
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_live ON jobs (state)
    WHERE (state = 'pending' OR state = 'held' OR state = 'scheduled' OR state = 'running' OR state = 'failed');
CREATE INDEX jobs_sla_decided ON jobs (sla_decided_at) WHERE sla_decided_at IS NOT NULL;
CREATE INDEX jobs_sla_breached ON jobs (sla_breached_at) WHERE sla_breached_at IS NOT NULL;

-- Every job with its spec: its own, or its array's.
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
    j.state, j.state_reason, j.attempt_count, j.current_attempt_id, j.retries_left, j.lost_requeues, j.exit_code, j.failure_reason, j.submitted_at, j.eligible_at, j.scheduled_at, j.started_at, j.finished_at, j.next_retry_at, j.cancel_requested_at, j.pool_id, j.worker_id, j.log_truncated, j.created_state, j.created_reason, j.warnings, j.sla_status, j.sla_waited_ms, j.sla_since, j.sla_breached_at, j.sla_wait_ms, j.sla_decided_at,
    j.array_id, j.array_index, a.array_start, a.array_end, a.array_step, a.array_max_parallel
FROM jobs j LEFT JOIN job_arrays a ON a.id = j.array_id;
