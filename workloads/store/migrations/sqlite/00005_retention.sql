-- Retention: the sweeper's indexes and leases (see migrations/postgres/00005_retention.sql).

-- +goose Up

CREATE INDEX messages_unread_idx ON messages (created_at, id)
    WHERE status IN ('accepted', 'notified', 'delivered', 'failed', 'opened');
CREATE INDEX messages_unpurged_idx ON messages (created_at, id) WHERE status <> 'purged';

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- hold_events remembers which LegalHold placements and releases the audit trail has recorded,
-- so that each is recorded once whichever replica's sweeper sees it first. A hold is keyed by
-- its Kubernetes uid (or "name:<name>" where it has none, as in securetext dev).
CREATE TABLE hold_events (
    hold_key text NOT NULL,
    kind     text NOT NULL CHECK (kind IN ('hold-applied', 'hold-released')),
    PRIMARY KEY (hold_key, kind)
);

-- +goose Down

DROP TABLE hold_events;

DROP TABLE leases;
DROP INDEX messages_unpurged_idx;
DROP INDEX messages_unread_idx;
