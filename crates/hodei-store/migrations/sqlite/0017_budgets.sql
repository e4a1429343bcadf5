-- Budgets (SPEC §2.3): an amount a tenant may spend per period; what is spent is read from
-- the cost rollups, never stored here.
CREATE TABLE budgets (
    id              BLOB    PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    amount_micros   INTEGER NOT NULL,
    period          TEXT    NOT NULL,
    thresholds_pct  TEXT    NOT NULL,
    on_exhausted    TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX budgets_tenant ON budgets (tenant_id);
