-- Idempotency keys of job submits (SPEC §4.1), written in the same transaction as the jobs
-- they name and deleted by the scheduler 24 h after. `job_ids` holds 16 bytes per job handed
-- to the scheduler, in order (all zero for one quota refused); for an array job, its first and
-- last member, with `array_id` and `array_count`.
CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    job_ids      BLOB NOT NULL,
    array_id     BLOB,
    array_count  INTEGER,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
