-- A job's SLA clock (SPEC §2.9): wait counted so far, the start of the interval counting now,
-- its status, when it passed 100 %, and the final wait when the first attempt started.
ALTER TABLE jobs ADD COLUMN sla_status TEXT NOT NULL DEFAULT 'on_track';
ALTER TABLE jobs ADD COLUMN sla_waited_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN sla_since INTEGER;
ALTER TABLE jobs ADD COLUMN sla_breached_at INTEGER;
ALTER TABLE jobs ADD COLUMN sla_wait_ms INTEGER;
ALTER TABLE jobs ADD COLUMN sla_decided_at INTEGER;
CREATE INDEX jobs_sla_decided ON jobs (sla_decided_at) WHERE sla_decided_at IS NOT NULL;
CREATE INDEX jobs_sla_breached ON jobs (sla_breached_at) WHERE sla_breached_at IS NOT NULL;
