-- Hodei Jobs schema, SQLite engine. Ids are 16-byte UUID blobs (v7: they sort by time);
-- instants are integer milliseconds since the Unix epoch, UTC.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT,
    tier        TEXT NOT NULL,
    weight      INTEGER,
    status      TEXT NOT NULL,
    labels      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL
);

CREATE TABLE pools (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    pool_type       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    worker_cpu_m    INTEGER NOT NULL,
    worker_memory_mb INTEGER NOT NULL,
    worker_gpu      INTEGER NOT NULL,
    worker_slots    INTEGER NOT NULL,
    min_size        INTEGER NOT NULL,
    max_size        INTEGER NOT NULL,
    labels          TEXT NOT NULL,
    managed_by      TEXT NOT NULL,
    state           TEXT NOT NULL,
    join_token_hash TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);

CREATE TABLE jobs (
    id                  BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    command             TEXT NOT NULL,
    env                 TEXT NOT NULL,
    working_dir         TEXT,
    image               TEXT,
    cpu_m               INTEGER NOT NULL,
    memory_mb           INTEGER NOT NULL,
    gpu                 INTEGER NOT NULL,
    timeout_ms          INTEGER NOT NULL,
    expected_duration_ms INTEGER,
    max_retries         INTEGER NOT NULL,
    retry_backoff_ms    INTEGER,
    priority            TEXT NOT NULL,
    sla                 TEXT NOT NULL,
    preemptible         INTEGER NOT NULL,
    hold                INTEGER NOT NULL,
    labels              TEXT NOT NULL,
    pool_selector       TEXT,
    state               TEXT NOT NULL,
    state_reason        TEXT,
    attempt_count       INTEGER NOT NULL,
    current_attempt_id  BLOB,
    retries_left        INTEGER NOT NULL,
    lost_requeues       INTEGER NOT NULL,
    exit_code           INTEGER,
    failure_reason      TEXT,
    submitted_at        INTEGER NOT NULL,
    eligible_at         INTEGER NOT NULL,
    scheduled_at        INTEGER,
    started_at          INTEGER,
    finished_at         INTEGER,
    next_retry_at       INTEGER,
    cancel_requested_at INTEGER,
    pool_id             TEXT,
    worker_id           BLOB,
    log_truncated       INTEGER NOT NULL,
    -- The job's first transition (— → created_state) lives on its row, not in job_events:
    -- a batch of N submits writes N rows, not 2N.
    created_state       TEXT NOT NULL,
    created_reason      TEXT
) WITHOUT ROWID;

CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
-- Live jobs, loaded at start-up; ended ones are the bulk of the table and stay out of this index.
CREATE INDEX jobs_live ON jobs (state) WHERE state IN ('pending', 'held', 'scheduled', 'running', 'failed');

CREATE TABLE attempts (
    id              BLOB PRIMARY KEY,
    job_id          BLOB NOT NULL,
    number          INTEGER NOT NULL,
    worker_id       BLOB NOT NULL,
    pool_id         TEXT NOT NULL,
    cpu_m           INTEGER NOT NULL,
    memory_mb       INTEGER NOT NULL,
    gpu             INTEGER NOT NULL,
    state           TEXT NOT NULL,
    assigned_at     INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    exit_code       INTEGER,
    signal          INTEGER,
    failure_reason  TEXT,
    cpu_time_ms     INTEGER NOT NULL,
    max_rss_mb      INTEGER NOT NULL,
    log_bytes       INTEGER NOT NULL,
    log_truncated   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX attempts_job ON attempts (job_id, number);
CREATE INDEX attempts_live ON attempts (state) WHERE state IN ('assigned', 'running');

-- Every transition after the first. `seq` is the rowid (no AUTOINCREMENT: it would update
-- sqlite_sequence on every insert).
CREATE TABLE job_events (
    seq         INTEGER PRIMARY KEY,
    job_id      BLOB NOT NULL,
    at          INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT
);

CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE workers (
    id                  BLOB PRIMARY KEY,
    instance_name       TEXT NOT NULL,
    pool_id             TEXT NOT NULL,
    state               TEXT NOT NULL,
    capabilities        TEXT NOT NULL,
    cpu_m               INTEGER NOT NULL,
    memory_mb           INTEGER NOT NULL,
    gpu                 INTEGER NOT NULL,
    slots               INTEGER NOT NULL,
    labels              TEXT NOT NULL,
    version             TEXT NOT NULL,
    session_token_hash  TEXT NOT NULL,
    registered_at       INTEGER NOT NULL,
    last_heartbeat_at   INTEGER NOT NULL
) WITHOUT ROWID;
