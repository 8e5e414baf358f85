-- The viewer's one-time codes: six digits texted to the patient to confirm the phone on first
-- use (setup) or to reset a forgotten password (reset). Only a salted hash of a code is kept;
-- a code lives ten minutes, is used once, and dies after a few wrong guesses.

-- +goose Up

CREATE TABLE one_time_codes (
    id           text PRIMARY KEY,
    recipient_id text NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    purpose      text NOT NULL CHECK (purpose IN ('setup', 'reset')),
    salt         bytea NOT NULL CHECK (length(salt) = 16),
    code_hash    bytea NOT NULL CHECK (length(code_hash) = 32),  -- SHA-256(salt ‖ code)
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz                     -- set when used or superseded by a newer code
);
CREATE INDEX one_time_codes_recipient_idx ON one_time_codes (recipient_id, purpose, created_at);
CREATE INDEX one_time_codes_expires_idx ON one_time_codes (expires_at);

-- +goose Down

DROP TABLE one_time_codes;
