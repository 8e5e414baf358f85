-- The viewer's one-time codes (see migrations/postgres/00002_viewer.sql).

-- +goose Up

CREATE TABLE one_time_codes (
    id           TEXT PRIMARY KEY,
    recipient_id TEXT NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('setup', 'reset')),
    salt         BLOB NOT NULL CHECK (length(salt) = 16),
    code_hash    BLOB NOT NULL CHECK (length(code_hash) = 32),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
) STRICT;
CREATE INDEX one_time_codes_recipient_idx ON one_time_codes (recipient_id, purpose, created_at);
CREATE INDEX one_time_codes_expires_idx ON one_time_codes (expires_at);

-- +goose Down

DROP TABLE one_time_codes;
