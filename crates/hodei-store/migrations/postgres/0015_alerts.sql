-- Alerts (SPEC §2.13): one row per firing, deduplicated by `dedup_key` (a budget threshold
-- fires once per period); `firing → [acknowledged →] resolved`.
CREATE TABLE alerts (
    id               UUID    PRIMARY KEY,
    kind             TEXT    NOT NULL,
    severity         TEXT    NOT NULL,
    tenant_id        TEXT,
    scope            TEXT    NOT NULL,
    dedup_key        TEXT    NOT NULL UNIQUE,
    value            DOUBLE PRECISION NOT NULL,
    message          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    fired_at         BIGINT  NOT NULL,
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT,
    resolved_at      BIGINT
);
CREATE INDEX alerts_scope ON alerts (scope, state);
