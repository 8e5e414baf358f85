-- Patients' replies to a message, written from the viewer when the tenant allows them. A reply
-- is sealed under its message's data key (part name reply/<id>), so purging the message, which
-- deletes the wrapped key and these rows, leaves nothing that can be opened.

-- +goose Up

CREATE TABLE replies (
    id         text PRIMARY KEY,
    message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    ciphertext bytea NOT NULL
);
CREATE INDEX replies_message_idx ON replies (message_id, created_at);

-- +goose Down

DROP TABLE replies;
