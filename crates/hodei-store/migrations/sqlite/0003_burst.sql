-- Burst sessions (SPEC §2.2). At most one open (pending_approval or active) session per
-- tenant, enforced here so two concurrent requests cannot both open one.
CREATE TABLE burst_sessions (
    id BLOB PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_cpu_m INTEGER NOT NULL,
    requested_memory_mb INTEGER NOT NULL,
    requested_gpu INTEGER NOT NULL,
    requested_concurrent_jobs INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    decided_by TEXT,
    created_at INTEGER NOT NULL,
    activated_at INTEGER,
    expires_at INTEGER,
    ended_at INTEGER,
    cooldown_until INTEGER,
    version INTEGER NOT NULL
);
CREATE UNIQUE INDEX burst_one_open_per_tenant ON burst_sessions (tenant_id) WHERE state IN ('pending_approval', 'active');
CREATE INDEX burst_by_tenant ON burst_sessions (tenant_id, id);
CREATE INDEX burst_open ON burst_sessions (state) WHERE state IN ('pending_approval', 'active');
