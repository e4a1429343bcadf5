-- Array jobs (SPEC §2.7): the array a job belongs to, its index, and the array's range (every
-- job of an array carries it, so a restart restores `max_parallel` without another table).
ALTER TABLE jobs ADD COLUMN array_id BLOB;
ALTER TABLE jobs ADD COLUMN array_index INTEGER;
ALTER TABLE jobs ADD COLUMN array_start INTEGER;
ALTER TABLE jobs ADD COLUMN array_end INTEGER;
ALTER TABLE jobs ADD COLUMN array_step INTEGER;
ALTER TABLE jobs ADD COLUMN array_max_parallel INTEGER;
CREATE INDEX jobs_array ON jobs (array_id, id) WHERE array_id IS NOT NULL;
