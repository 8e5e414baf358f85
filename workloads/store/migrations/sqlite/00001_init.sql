-- SecureText tenant schema, SQLite (the embedded single-process mode). Same tables and meaning
-- as migrations/postgres; the differences are SQLite's types: timestamps are INTEGER
-- microseconds since the Unix epoch (UTC), booleans are INTEGER 0/1, JSON is TEXT, and tables
-- are STRICT so that a value of the wrong type is refused rather than stored.

-- +goose Up

CREATE TABLE recipients (
    id            TEXT PRIMARY KEY,
    phone         TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  INTEGER,
    opted_out     INTEGER NOT NULL DEFAULT 0 CHECK (opted_out IN (0, 1)),
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE messages (
    id                  TEXT PRIMARY KEY,
    sender              TEXT NOT NULL,
    recipient_id        TEXT NOT NULL REFERENCES recipients (id),
    status              TEXT NOT NULL CHECK (status IN
                            ('accepted', 'notified', 'delivered', 'failed', 'opened', 'read',
                             'expired', 'revoked', 'purged')),
    wrapped_key         TEXT,
    link_token_hash     BLOB NOT NULL UNIQUE CHECK (length(link_token_hash) = 32),
    channel             TEXT NOT NULL CHECK (channel IN ('smtp', 'api')),
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    status_changed_at   INTEGER NOT NULL,
    provider_message_id TEXT,
    CHECK (wrapped_key IS NOT NULL OR status = 'purged')
) STRICT;
CREATE INDEX messages_recipient_idx ON messages (recipient_id);

-- No message is stored for a recipient who opted out (see migrations/postgres).
-- +goose StatementBegin
CREATE TRIGGER messages_recipient_opted_in BEFORE INSERT ON messages
WHEN (SELECT opted_out FROM recipients WHERE id = NEW.recipient_id) = 1
BEGIN
    SELECT RAISE(ABORT, 'messages_recipient_opted_in: recipient has opted out');
END;
-- +goose StatementEnd
CREATE INDEX messages_provider_idx ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE message_parts (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (message_id, name)
) STRICT;

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),
    message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE sessions (
    id_hash      BLOB PRIMARY KEY CHECK (length(id_hash) = 32),
    recipient_id TEXT NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_recipient_idx ON sessions (recipient_id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('notify')),
    payload         BLOB,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    last_error      TEXT,
    sent_at         INTEGER,
    failed_at       INTEGER
) STRICT;
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_message_idx ON outbox (message_id);

CREATE TABLE audit_pending (
    id          INTEGER PRIMARY KEY,
    occurred_at INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    message_id  TEXT,
    detail      TEXT NOT NULL
) STRICT;

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    occurred_at INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    message_id  TEXT,
    detail      TEXT NOT NULL,
    prev_hash   BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE INDEX audit_events_message_idx ON audit_events (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE audit_head (
    singleton INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    tenant    TEXT NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 0),
    hash      BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY,
    tenant    TEXT NOT NULL,
    size      INTEGER NOT NULL CHECK (size >= 0),
    head      BLOB NOT NULL CHECK (length(head) = 32),
    signed_at TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    signature BLOB NOT NULL
) STRICT;
CREATE INDEX audit_checkpoints_size_idx ON audit_checkpoints (size);

-- +goose Down

DROP TABLE audit_checkpoints;
DROP TABLE audit_head;
DROP TABLE audit_events;
DROP TABLE audit_pending;
DROP TABLE outbox;
DROP TABLE sessions;
DROP TABLE idempotency_keys;
DROP TABLE message_parts;
DROP TABLE messages;
DROP TABLE recipients;
