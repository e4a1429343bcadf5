-- Hodei Jobs schema, PostgreSQL engine: the same tables as the SQLite engine after its
-- migration 0007, in PostgreSQL's types. Ids are UUIDs (v7: they sort by time); instants are
-- BIGINT milliseconds since the Unix epoch, UTC; JSON values (argv, env, labels) are text.
-- Every integer is BIGINT but exit codes and signals (INTEGER), so one row mapping serves
-- both engines.

CREATE TABLE tenants (
    id                         TEXT PRIMARY KEY,
    name                       TEXT NOT NULL,
    email                      TEXT,
    tier                       TEXT NOT NULL,
    weight                     BIGINT,
    status                     TEXT NOT NULL,
    labels                     TEXT NOT NULL,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    version                    BIGINT NOT NULL,
    quota_cpu_m                BIGINT NOT NULL,
    quota_memory_mb            BIGINT NOT NULL,
    quota_gpu                  BIGINT NOT NULL,
    quota_max_concurrent_jobs  BIGINT NOT NULL,
    quota_max_queued_jobs      BIGINT NOT NULL
);

CREATE TABLE pools (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    pool_type        TEXT NOT NULL,
    provider         TEXT NOT NULL,
    worker_cpu_m     BIGINT NOT NULL,
    worker_memory_mb BIGINT NOT NULL,
    worker_gpu       BIGINT NOT NULL,
    worker_slots     BIGINT NOT NULL,
    min_size         BIGINT NOT NULL,
    max_size         BIGINT NOT NULL,
    labels           TEXT NOT NULL,
    managed_by       TEXT NOT NULL,
    state            TEXT NOT NULL,
    join_token_hash  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    version          BIGINT NOT NULL
);

-- An array's spec, stored once; its members' rows in `jobs` hold their state and index and
-- leave the spec columns NULL. `first_job_id` and `last_job_id` bound the members' ids.
CREATE TABLE job_arrays (
    id                    UUID PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    name                  TEXT NOT NULL,
    command               TEXT NOT NULL,
    env                   TEXT NOT NULL,
    working_dir           TEXT,
    image                 TEXT,
    cpu_m                 BIGINT NOT NULL,
    memory_mb             BIGINT NOT NULL,
    gpu                   BIGINT NOT NULL,
    timeout_ms            BIGINT NOT NULL,
    expected_duration_ms  BIGINT,
    max_retries           BIGINT NOT NULL,
    retry_backoff_ms      BIGINT,
    priority              TEXT NOT NULL,
    sla                   TEXT NOT NULL,
    preemptible           BOOLEAN NOT NULL,
    hold                  BOOLEAN NOT NULL,
    labels                TEXT NOT NULL,
    pool_selector         TEXT,
    array_start           BIGINT NOT NULL,
    array_end             BIGINT NOT NULL,
    array_step            BIGINT NOT NULL,
    array_max_parallel    BIGINT,
    first_job_id          UUID NOT NULL,
    last_job_id           UUID NOT NULL
);

CREATE TABLE jobs (
    id                    UUID PRIMARY KEY,
    tenant_id             TEXT NOT NULL,
    name                  TEXT,
    command               TEXT,
    env                   TEXT,
    working_dir           TEXT,
    image                 TEXT,
    cpu_m                 BIGINT,
    memory_mb             BIGINT,
    gpu                   BIGINT,
    timeout_ms            BIGINT,
    expected_duration_ms  BIGINT,
    max_retries           BIGINT,
    retry_backoff_ms      BIGINT,
    priority              TEXT,
    sla                   TEXT,
    preemptible           BOOLEAN,
    hold                  BOOLEAN,
    labels                TEXT,
    pool_selector         TEXT,
    state                 TEXT NOT NULL,
    state_reason          TEXT,
    attempt_count         BIGINT NOT NULL,
    current_attempt_id    UUID,
    retries_left          BIGINT NOT NULL,
    lost_requeues         BIGINT NOT NULL,
    exit_code             INTEGER,
    failure_reason        TEXT,
    submitted_at          BIGINT NOT NULL,
    eligible_at           BIGINT NOT NULL,
    scheduled_at          BIGINT,
    started_at            BIGINT,
    finished_at           BIGINT,
    next_retry_at         BIGINT,
    cancel_requested_at   BIGINT,
    pool_id               TEXT,
    worker_id             UUID,
    log_truncated         BOOLEAN NOT NULL,
    -- The job's first transition (— → created_state) lives on its row, not in job_events.
    created_state         TEXT NOT NULL,
    created_reason        TEXT,
    warnings              TEXT,
    sla_status            TEXT NOT NULL,
    sla_waited_ms         BIGINT NOT NULL,
    sla_since             BIGINT,
    sla_breached_at       BIGINT,
    sla_wait_ms           BIGINT,
    sla_decided_at        BIGINT,
    array_id              UUID,
    array_index           BIGINT,
    -- A job has its own spec or belongs to an array, never both.
    CHECK ((array_id IS NULL) = (command IS NOT NULL))
);

CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
-- Live jobs, loaded at start-up; ended ones are the bulk of the table and stay out of this index.
CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('pending', 'held', 'scheduled', 'running', 'failed');
CREATE INDEX jobs_array ON jobs (array_id, id) WHERE array_id IS NOT NULL;
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
    j.state, j.state_reason, j.attempt_count, j.current_attempt_id, j.retries_left, j.lost_requeues, j.exit_code, j.failure_reason,
    j.submitted_at, j.eligible_at, j.scheduled_at, j.started_at, j.finished_at, j.next_retry_at, j.cancel_requested_at, j.pool_id,
    j.worker_id, j.log_truncated, j.created_state, j.created_reason, j.warnings, j.sla_status, j.sla_waited_ms, j.sla_since,
    j.sla_breached_at, j.sla_wait_ms, j.sla_decided_at,
    j.array_id, j.array_index, a.array_start, a.array_end, a.array_step, a.array_max_parallel
FROM jobs j LEFT JOIN job_arrays a ON a.id = j.array_id;

CREATE TABLE attempts (
    id              UUID PRIMARY KEY,
    job_id          UUID NOT NULL,
    number          BIGINT NOT NULL,
    worker_id       UUID NOT NULL,
    pool_id         TEXT NOT NULL,
    cpu_m           BIGINT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    gpu             BIGINT NOT NULL,
    state           TEXT NOT NULL,
    assigned_at     BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    exit_code       INTEGER,
    signal          INTEGER,
    failure_reason  TEXT,
    cpu_time_ms     BIGINT NOT NULL,
    max_rss_mb      BIGINT NOT NULL,
    log_bytes       BIGINT NOT NULL,
    log_truncated   BOOLEAN NOT NULL
);

CREATE INDEX attempts_job ON attempts (job_id, number);
CREATE INDEX attempts_live ON attempts (state) WHERE state IN ('assigned', 'running');

-- Every transition after the first, in the order written.
CREATE TABLE job_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      UUID NOT NULL,
    at          BIGINT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT
);

CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE workers (
    id                  UUID PRIMARY KEY,
    instance_name       TEXT NOT NULL,
    pool_id             TEXT NOT NULL,
    state               TEXT NOT NULL,
    capabilities        TEXT NOT NULL,
    cpu_m               BIGINT NOT NULL,
    memory_mb           BIGINT NOT NULL,
    gpu                 BIGINT NOT NULL,
    slots               BIGINT NOT NULL,
    labels              TEXT NOT NULL,
    version             TEXT NOT NULL,
    session_token_hash  TEXT NOT NULL,
    registered_at       BIGINT NOT NULL,
    last_heartbeat_at   BIGINT NOT NULL
);

-- Burst sessions (SPEC §2.2). At most one open (pending_approval or active) session per
-- tenant, enforced here so two concurrent requests cannot both open one.
CREATE TABLE burst_sessions (
    id                         UUID PRIMARY KEY,
    tenant_id                  TEXT NOT NULL,
    state                      TEXT NOT NULL,
    requested_cpu_m            BIGINT NOT NULL,
    requested_memory_mb        BIGINT NOT NULL,
    requested_gpu              BIGINT NOT NULL,
    requested_concurrent_jobs  BIGINT NOT NULL,
    duration_minutes           BIGINT NOT NULL,
    reason                     TEXT NOT NULL,
    requested_by               TEXT NOT NULL,
    decided_by                 TEXT,
    created_at                 BIGINT NOT NULL,
    activated_at               BIGINT,
    expires_at                 BIGINT,
    ended_at                   BIGINT,
    cooldown_until             BIGINT,
    version                    BIGINT NOT NULL
);

CREATE UNIQUE INDEX burst_one_open_per_tenant ON burst_sessions (tenant_id) WHERE state IN ('pending_approval', 'active');
CREATE INDEX burst_by_tenant ON burst_sessions (tenant_id, id);
CREATE INDEX burst_open ON burst_sessions (state) WHERE state IN ('pending_approval', 'active');
