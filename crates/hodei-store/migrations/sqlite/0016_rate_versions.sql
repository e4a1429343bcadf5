-- Cost rate versions (SPEC §2.12): each in force from its instant until the next one, never
-- retroactively. `source`: `config` (the configuration file's rates, recorded when they
-- change) or `api` (an admin's PUT /cost-rates).
CREATE TABLE rate_versions (
    effective_from  INTEGER PRIMARY KEY,
    rate_cpu        INTEGER NOT NULL,
    rate_memory     INTEGER NOT NULL,
    rate_gpu        INTEGER NOT NULL,
    source          TEXT    NOT NULL,
    created_by      TEXT    NOT NULL
);
