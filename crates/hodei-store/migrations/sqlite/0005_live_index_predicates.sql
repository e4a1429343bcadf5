-- The partial indexes of live jobs and attempts said `state IN (...)`. SQLite evaluates an
-- index's WHERE on every insert and update of a row, and an IN list of constants builds a
-- temporary b-tree each time: a quarter of an insert and 40 % of a state update. The same
-- sets, written as ORs, cost a few comparisons. Queries that use these indexes repeat the
-- predicate word for word (SQLite matches it as written): `LIVE_JOBS` and `LIVE_ATTEMPTS`
-- in sqlite.rs.
DROP INDEX jobs_live;
CREATE INDEX jobs_live ON jobs (state)
    WHERE (state = 'pending' OR state = 'held' OR state = 'scheduled' OR state = 'running' OR state = 'failed');
DROP INDEX attempts_live;
CREATE INDEX attempts_live ON attempts (state) WHERE (state = 'assigned' OR state = 'running');
