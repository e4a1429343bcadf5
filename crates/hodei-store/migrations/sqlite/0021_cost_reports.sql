-- Cost reports (SPEC §2.12) as created: the report's JSON, kept with its scope for listing.
-- They stay when the cost records they were made from expire.
CREATE TABLE cost_reports (
    id          BLOB PRIMARY KEY,
    tenant_id   TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    body        TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX cost_reports_tenant ON cost_reports (tenant_id, id);
-- A report's top jobs read the records of its days.
CREATE INDEX cost_records_day ON cost_records (day);
