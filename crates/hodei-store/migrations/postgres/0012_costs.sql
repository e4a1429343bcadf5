-- The cost ledger (SPEC §2.12): what each ended attempt cost, its cost records (one per UTC
-- day and rate version it ran in), and daily rollups by tenant and pool written in the same
-- transaction, so that rollups always add up to the records to the micro-dollar.
ALTER TABLE attempts ADD COLUMN billed_seconds BIGINT  NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cost_micros BIGINT  NOT NULL DEFAULT 0;

CREATE TABLE cost_records (
    id              BIGSERIAL PRIMARY KEY,
    attempt_id      UUID    NOT NULL,
    job_id          UUID    NOT NULL,
    tenant_id       TEXT    NOT NULL,
    pool_id         TEXT    NOT NULL,
    job_name        TEXT    NOT NULL,
    cpu_m           BIGINT  NOT NULL,
    memory_mb       BIGINT  NOT NULL,
    gpu             BIGINT  NOT NULL,
    rate_cpu        BIGINT  NOT NULL,
    rate_memory     BIGINT  NOT NULL,
    rate_gpu        BIGINT  NOT NULL,
    start_at        BIGINT  NOT NULL,
    end_at          BIGINT  NOT NULL,
    day             BIGINT  NOT NULL,
    billed_seconds  BIGINT  NOT NULL,
    cost_micros     BIGINT  NOT NULL
);
CREATE INDEX cost_records_end ON cost_records (end_at);
CREATE INDEX cost_records_job ON cost_records (job_id);

CREATE TABLE cost_rollups (
    day                BIGINT  NOT NULL,
    tenant_id          TEXT    NOT NULL,
    pool_id            TEXT    NOT NULL,
    cost_micros        BIGINT  NOT NULL,
    cpu_m_seconds      BIGINT  NOT NULL,
    memory_mb_seconds  BIGINT  NOT NULL,
    gpu_seconds        BIGINT  NOT NULL,
    attempts           BIGINT  NOT NULL,
    PRIMARY KEY (day, tenant_id, pool_id)
);
