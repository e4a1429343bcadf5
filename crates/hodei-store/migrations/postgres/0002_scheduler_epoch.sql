-- The scheduler's epoch (SPEC §1.2): bumped by every server that takes the scheduler lock.
-- Each scheduler batch checks it in the same statement, so a server that lost the lock (its
-- session ended, say in a PostgreSQL restart, and another server took it) cannot write.
CREATE TABLE scheduler_epoch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO scheduler_epoch (id, epoch) VALUES (1, 0);
