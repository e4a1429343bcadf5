-- Tenant quotas (SPEC §2.1; defaults of multi_tenancy.default_tenant_quota for existing rows)
-- and a job's admission warnings (JSON array; NULL = none).
ALTER TABLE tenants ADD COLUMN quota_cpu_m INTEGER NOT NULL DEFAULT 4000;
ALTER TABLE tenants ADD COLUMN quota_memory_mb INTEGER NOT NULL DEFAULT 8192;
ALTER TABLE tenants ADD COLUMN quota_gpu INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN quota_max_concurrent_jobs INTEGER NOT NULL DEFAULT 10;
ALTER TABLE tenants ADD COLUMN quota_max_queued_jobs INTEGER NOT NULL DEFAULT 1000;
ALTER TABLE jobs ADD COLUMN warnings TEXT;
