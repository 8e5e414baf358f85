-- SecureText tenant schema, PostgreSQL. One database per tenant.
-- Ids are chosen by the application (store.NewID); only the outbox, the pending audit events
-- and the checkpoints number their own rows.

-- +goose Up

CREATE TABLE recipients (
    id            text PRIMARY KEY,
    phone         text NOT NULL UNIQUE,          -- E.164
    password_hash text,                          -- PHC string; NULL until the patient sets one
    failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  timestamptz,
    opted_out     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL
);

CREATE TABLE messages (
    id                  text PRIMARY KEY,
    sender              text NOT NULL,           -- sender account id
    recipient_id        text NOT NULL REFERENCES recipients (id),
    status              text NOT NULL CHECK (status IN
                            ('accepted', 'notified', 'delivered', 'failed', 'opened', 'read',
                             'expired', 'revoked', 'purged')),
    wrapped_key         text,                    -- NULL once purged: the content is crypto-shredded
    link_token_hash     bytea NOT NULL UNIQUE CHECK (length(link_token_hash) = 32),
    channel             text NOT NULL CHECK (channel IN ('smtp', 'api')),
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    status_changed_at   timestamptz NOT NULL,
    provider_message_id text,
    CHECK (wrapped_key IS NOT NULL OR status = 'purged')
);
CREATE INDEX messages_recipient_idx ON messages (recipient_id);

-- No message is stored for a recipient who opted out (replied STOP). The gateway's accept
-- relies on this refusal to abort its single-round-trip transaction.
-- +goose StatementBegin
CREATE FUNCTION messages_refuse_opted_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT opted_out FROM recipients WHERE id = NEW.recipient_id) THEN
        RAISE EXCEPTION 'recipient has opted out'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'messages_recipient_opted_in', TABLE = 'messages';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER messages_recipient_opted_in BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_refuse_opted_out();
CREATE INDEX messages_provider_idx ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE message_parts (
    message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    name       text NOT NULL,                    -- "body", "attachment/0", …
    position   integer NOT NULL,                 -- order within the message
    ciphertext bytea NOT NULL,                   -- envelope version 1
    PRIMARY KEY (message_id, name)
);

CREATE TABLE idempotency_keys (
    scope        text NOT NULL,                  -- the sender: keys of different senders never meet
    key          text NOT NULL,
    request_hash bytea NOT NULL CHECK (length(request_hash) = 32),
    -- Deferred: the key is inserted first in its transaction, so a replay is found before
    -- anything else is attempted.
    message_id   text NOT NULL REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE sessions (
    id_hash      bytea PRIMARY KEY CHECK (length(id_hash) = 32),  -- SHA-256 of the session id
    recipient_id text NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL            -- absolute timeout
);
CREATE INDEX sessions_recipient_idx ON sessions (recipient_id);

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('notify')),
    payload         bytea,                       -- opaque to the store; cleared once sent or failed
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    claimed_until   timestamptz,                 -- a relay's lease
    last_error      text,                        -- short code, never content
    sent_at         timestamptz,
    failed_at       timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_message_idx ON outbox (message_id);

-- Writers insert unchained events here; the sequencer links them into audit_events under the
-- lock on audit_head, so that commits never queue on the chain head.
CREATE TABLE audit_pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    kind        text NOT NULL,
    actor       text NOT NULL,
    message_id  text,
    detail      jsonb NOT NULL
);

CREATE TABLE audit_events (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    occurred_at timestamptz NOT NULL,
    kind        text NOT NULL,
    actor       text NOT NULL,
    tenant      text NOT NULL,
    message_id  text,
    detail      jsonb NOT NULL,
    prev_hash   bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash        bytea NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_events_message_idx ON audit_events (message_id) WHERE message_id IS NOT NULL;

-- The single chain head; it also records which tenant this database belongs to.
CREATE TABLE audit_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tenant    text NOT NULL,
    seq       bigint NOT NULL CHECK (seq >= 0),
    hash      bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE TABLE audit_checkpoints (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant    text NOT NULL,
    size      bigint NOT NULL CHECK (size >= 0),
    head      bytea NOT NULL CHECK (length(head) = 32),
    -- The signed time, exactly as signed (nanoseconds, which timestamptz cannot hold), in the
    -- fixed-width layout 2006-01-02T15:04:05.000000000Z so that it also sorts as text.
    signed_at text NOT NULL,
    key_id    text NOT NULL,
    signature bytea NOT NULL
);
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
DROP FUNCTION messages_refuse_opted_out;
DROP TABLE recipients;
