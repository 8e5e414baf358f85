-- The signed checkpoint the audit trail starts after once pruned (see
-- migrations/postgres/00007_audit_anchor.sql).

-- +goose Up

CREATE TABLE audit_anchor (
    singleton     INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    checkpoint_id INTEGER NOT NULL REFERENCES audit_checkpoints (id)
) STRICT;

-- +goose Down

DROP TABLE audit_anchor;
