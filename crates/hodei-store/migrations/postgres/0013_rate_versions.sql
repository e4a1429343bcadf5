-- Cost rate versions (SPEC §2.12): each in force from its instant until the next one, never
-- retroactively. `source`: `config` (the configuration file's rates, recorded when they
-- change) or `api` (an admin's PUT /cost-rates).
CREATE TABLE rate_versions (
    effective_from  BIGINT PRIMARY KEY,
    rate_cpu        BIGINT  NOT NULL,
    rate_memory     BIGINT  NOT NULL,
    rate_gpu        BIGINT  NOT NULL,
    source          TEXT    NOT NULL,
    created_by      TEXT    NOT NULL
);
