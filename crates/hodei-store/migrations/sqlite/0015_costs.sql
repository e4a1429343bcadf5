-- The cost ledger (SPEC §2.12): what each ended attempt cost, its cost records (one per UTC
-- day and rate version it ran in), and daily rollups by tenant and pool written in the same
-- transaction, so that rollups always add up to the records to the micro-dollar.
ALTER TABLE attempts ADD COLUMN billed_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;

CREATE TABLE cost_records (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id      BLOB    NOT NULL,
    job_id          BLOB    NOT NULL,
    tenant_id       TEXT    NOT NULL,
    pool_id         TEXT    NOT NULL,
    job_name        TEXT    NOT NULL,
    cpu_m           INTEGER NOT NULL,
    memory_mb       INTEGER NOT NULL,
    gpu             INTEGER NOT NULL,
    rate_cpu        INTEGER NOT NULL,
    rate_memory     INTEGER NOT NULL,
    rate_gpu        INTEGER NOT NULL,
    start_at        INTEGER NOT NULL,
    end_at          INTEGER NOT NULL,
    day             INTEGER NOT NULL,
    billed_seconds  INTEGER NOT NULL,
    cost_micros     INTEGER NOT NULL
);
CREATE INDEX cost_records_end ON cost_records (end_at);
CREATE INDEX cost_records_job ON cost_records (job_id);

CREATE TABLE cost_rollups (
    day                INTEGER NOT NULL,
    tenant_id          TEXT    NOT NULL,
    pool_id            TEXT    NOT NULL,
    cost_micros        INTEGER NOT NULL,
    cpu_m_seconds      INTEGER NOT NULL,
    memory_mb_seconds  INTEGER NOT NULL,
    gpu_seconds        INTEGER NOT NULL,
    attempts           INTEGER NOT NULL,
    PRIMARY KEY (day, tenant_id, pool_id)
) WITHOUT ROWID;
