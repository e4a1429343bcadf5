-- Pools that run only some tenants' jobs (empty: every tenant's).
ALTER TABLE pools ADD COLUMN allowed_tenants TEXT NOT NULL DEFAULT '[]';
-- Workers' health from what they measure of their machine (unhealthy: no new jobs).
ALTER TABLE workers ADD COLUMN health TEXT NOT NULL DEFAULT 'healthy';
ALTER TABLE workers ADD COLUMN health_reason TEXT NOT NULL DEFAULT '';
