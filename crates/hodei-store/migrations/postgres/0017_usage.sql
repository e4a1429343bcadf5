-- What each attempt used (SPEC §8.7): at most 720 points ("at,samples,cpu,rss,gpu,gpu_mem,
-- io_read,io_write" separated by ";"), and once it ended its summary (comma-separated, see
-- rows.rs). Kept `cost_tracking.retention_days` after the last write.
CREATE TABLE attempt_usage (
    attempt_id  UUID PRIMARY KEY,
    step_ms     BIGINT NOT NULL,
    points      TEXT NOT NULL,
    summary     TEXT,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX attempt_usage_age ON attempt_usage (updated_at);
