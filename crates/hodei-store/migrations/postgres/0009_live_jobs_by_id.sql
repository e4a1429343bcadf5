-- Live jobs by state and then id: a page of one state's jobs, newest first, reads that page
-- from the index instead of sorting every job in the state (a million pending jobs: a million).
CREATE INDEX jobs_live_by_id ON jobs (state, id) WHERE state IN ('pending', 'held', 'scheduled', 'running', 'failed');
DROP INDEX jobs_live;
