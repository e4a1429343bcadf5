-- Settings changed through the API (PUT /observability/config): one JSON object of key paths
-- to values, applied over the configuration file at the next start.
CREATE TABLE setting_overrides (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    body        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
