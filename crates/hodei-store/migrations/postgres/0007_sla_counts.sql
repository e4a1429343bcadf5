-- SLA compliance as running counts (hodei-core `sla_tally`): outcomes per tenant, level, UTC hour
-- (ms), met or breached, and queue-wait bin. Reports sum hours instead of reading every outcome.
CREATE TABLE sla_counts (
    hour      BIGINT  NOT NULL,
    tenant_id TEXT    NOT NULL,
    level     TEXT    NOT NULL,
    met       BOOLEAN NOT NULL,
    bin       INTEGER NOT NULL,
    n         BIGINT  NOT NULL,
    PRIMARY KEY (hour, tenant_id, level, met, bin)
);

-- The outcomes stored so far, counted into their bins: bin b < 8 holds the wait b ms, then each
-- power of two is split in 8 (`sla_tally::bin_range`); bin 303 holds everything from its start on.
WITH RECURSIVE bins(bin, lo, hi) AS (
    SELECT 0, 0::bigint, 1::bigint
    UNION ALL
    SELECT bin + 1,
           CASE WHEN bin + 1 < 8 THEN bin + 1 ELSE (8 + (bin + 1 - 8) % 8)::bigint << ((bin + 1 - 8) / 8) END,
           CASE WHEN bin + 1 < 8 THEN bin + 2 ELSE (9 + (bin + 1 - 8) % 8)::bigint << ((bin + 1 - 8) / 8) END
    FROM bins WHERE bin < 303
)
INSERT INTO sla_counts (hour, tenant_id, level, met, bin, n)
SELECT j.sla_decided_at - j.sla_decided_at % 3600000, j.tenant_id, j.sla, j.sla_status = 'met', b.bin, COUNT(*)
FROM job_rows j JOIN bins b ON greatest(j.sla_wait_ms, 0) >= b.lo AND (greatest(j.sla_wait_ms, 0) < b.hi OR b.bin = 303)
WHERE j.sla_decided_at IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;

DROP INDEX jobs_sla_decided;
