-- Patients' replies to a message (see migrations/postgres/00003_replies.sql).

-- +goose Up

CREATE TABLE replies (
    id         TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    ciphertext BLOB NOT NULL
) STRICT;
CREATE INDEX replies_message_idx ON replies (message_id, created_at);

-- +goose Down

DROP TABLE replies;
