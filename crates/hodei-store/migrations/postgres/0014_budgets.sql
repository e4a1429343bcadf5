-- Budgets (SPEC §2.3): an amount a tenant may spend per period; what is spent is read from
-- the cost rollups, never stored here.
CREATE TABLE budgets (
    id              UUID    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    amount_micros   BIGINT  NOT NULL,
    period          TEXT    NOT NULL,
    thresholds_pct  TEXT    NOT NULL,
    on_exhausted    TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    version         BIGINT  NOT NULL
);
CREATE INDEX budgets_tenant ON budgets (tenant_id);
