-- Job output in the database, so that every server replica reaches it. One row per stored
-- piece of a stream: `pos` is where the piece starts in the stored stream (gap markers
-- included), `worker_end` the worker's offset just past it, so where a stream stands is its
-- last row.
CREATE TABLE log_chunks (
    attempt_id UUID NOT NULL,
    stream SMALLINT NOT NULL,
    pos BIGINT NOT NULL,
    worker_end BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (attempt_id, stream, pos)
);

-- Attempts whose output reached the cap.
CREATE TABLE log_truncations (
    attempt_id UUID PRIMARY KEY
);
