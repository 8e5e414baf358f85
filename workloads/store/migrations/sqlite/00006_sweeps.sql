-- The last retention sweep's result per name (see migrations/postgres/00006_sweeps.sql).

-- +goose Up

CREATE TABLE retention_sweeps (
    name        TEXT PRIMARY KEY,
    result      TEXT NOT NULL,
    finished_at INTEGER NOT NULL
) STRICT;

-- +goose Down

DROP TABLE retention_sweeps;
