-- Pools scale (hodei-core `autoscale`): their target size, policies and idle timeout, why they
-- are in their state, and every scaling decision with its reason.
ALTER TABLE pools ADD COLUMN desired_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN auto_scaling_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN idle_timeout_ms INTEGER NOT NULL DEFAULT 300000;
ALTER TABLE pools ADD COLUMN scaling_policies TEXT NOT NULL DEFAULT '[]';
ALTER TABLE pools ADD COLUMN state_reason TEXT NOT NULL DEFAULT '';
UPDATE pools SET desired_size = min_size;

CREATE TABLE scaling_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id        TEXT    NOT NULL,
    at             INTEGER NOT NULL,
    source         TEXT    NOT NULL,
    policy_id      TEXT,
    trigger_text   TEXT,
    observed_value REAL,
    from_size      INTEGER NOT NULL,
    to_size        INTEGER NOT NULL,
    decision       TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    actor          TEXT
);
CREATE INDEX scaling_events_by_pool ON scaling_events (pool_id, id);
CREATE INDEX scaling_events_by_time ON scaling_events (at);
