-- Sign-in throttling keyed by recipient and client (NIST SP 800-63B §5.2.2: at most 100
-- failed attempts, and no lockout an attacker can hold). Each sign-in attempt is a row: it is
-- written as pending before the password is checked, so that concurrent attempts cannot
-- overrun a limit, and then becomes failed (audited in the same transaction) or is replaced
-- by a succeeded row that marks the browser as one the recipient signed in from. Rows older
-- than the failure window stop counting and are deleted.
--
-- client is the SHA-256 of a client key: the browser's device token for a browser the
-- recipient signed in from (trusted), else the client's address. One-time codes are bound to
-- the browser that asked for them (client) and counted per requesting client (requester).
-- The per-recipient failure count and lock on recipients are gone.

-- +goose Up

CREATE TABLE login_attempts (
    id           text PRIMARY KEY,
    recipient_id text NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    client       bytea NOT NULL CHECK (length(client) = 32),
    trusted      boolean NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('pending', 'failed', 'succeeded')),
    at           timestamptz NOT NULL
);
CREATE INDEX login_attempts_recipient_idx ON login_attempts (recipient_id, client, at);
CREATE INDEX login_attempts_at_idx ON login_attempts (at);

ALTER TABLE recipients DROP COLUMN failed_logins, DROP COLUMN locked_until;

ALTER TABLE one_time_codes
    ADD COLUMN client    bytea CHECK (length(client) = 32),
    ADD COLUMN requester bytea CHECK (length(requester) = 32),
    ADD COLUMN trusted   boolean NOT NULL DEFAULT false;
CREATE INDEX one_time_codes_requester_idx ON one_time_codes (recipient_id, requester, created_at);

-- +goose Down

DROP INDEX one_time_codes_requester_idx;
ALTER TABLE one_time_codes DROP COLUMN client, DROP COLUMN requester, DROP COLUMN trusted;
ALTER TABLE recipients
    ADD COLUMN failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    ADD COLUMN locked_until  timestamptz;
DROP TABLE login_attempts;
