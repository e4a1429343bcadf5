-- The metric history (`metrics.history`): samples the server takes of its own figures, per
-- scope (cluster, pool, tenant), raw (resolution 0) and averaged into 5-minute and 1-hour
-- buckets (resolution = the bucket's width in seconds).
CREATE TABLE metric_samples (
    scope       TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    metric      TEXT NOT NULL,
    resolution  INTEGER NOT NULL,
    at          BIGINT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, scope_id, resolution, metric, at)
);

-- Downsampling and retention read and delete by resolution and age.
CREATE INDEX metric_samples_age ON metric_samples (resolution, at);
