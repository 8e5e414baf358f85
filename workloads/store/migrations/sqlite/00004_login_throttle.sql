-- Sign-in throttling keyed by recipient and client (see migrations/postgres/00004_login_throttle.sql).

-- +goose Up

CREATE TABLE login_attempts (
    id           TEXT PRIMARY KEY,
    recipient_id TEXT NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    client       BLOB NOT NULL CHECK (length(client) = 32),
    trusted      INTEGER NOT NULL CHECK (trusted IN (0, 1)),
    outcome      TEXT NOT NULL CHECK (outcome IN ('pending', 'failed', 'succeeded')),
    at           INTEGER NOT NULL
) STRICT;
CREATE INDEX login_attempts_recipient_idx ON login_attempts (recipient_id, client, at);
CREATE INDEX login_attempts_at_idx ON login_attempts (at);

ALTER TABLE recipients DROP COLUMN failed_logins;
ALTER TABLE recipients DROP COLUMN locked_until;

ALTER TABLE one_time_codes ADD COLUMN client BLOB CHECK (length(client) = 32);
ALTER TABLE one_time_codes ADD COLUMN requester BLOB CHECK (length(requester) = 32);
ALTER TABLE one_time_codes ADD COLUMN trusted INTEGER NOT NULL DEFAULT 0 CHECK (trusted IN (0, 1));
CREATE INDEX one_time_codes_requester_idx ON one_time_codes (recipient_id, requester, created_at);

-- +goose Down

DROP INDEX one_time_codes_requester_idx;
ALTER TABLE one_time_codes DROP COLUMN trusted;
ALTER TABLE one_time_codes DROP COLUMN requester;
ALTER TABLE one_time_codes DROP COLUMN client;
ALTER TABLE recipients ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0);
ALTER TABLE recipients ADD COLUMN locked_until INTEGER;
DROP TABLE login_attempts;
