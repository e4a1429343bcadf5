-- The audit log (SPEC §2.13): every admin and pi write, who did it and the target before and
-- after (JSON text as the API rendered it, never a secret). Append-only.
CREATE TABLE audit_log (
    id          BLOB PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       BLOB NOT NULL,
    actor_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    before      TEXT,
    after       TEXT,
    request_id  TEXT NOT NULL
);

CREATE INDEX audit_log_actor ON audit_log (actor, id);
