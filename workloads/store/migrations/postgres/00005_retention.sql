-- Retention (package retention's sweeper). Two partial indexes find, in created_at order, the
-- messages whose link still works (to expire them) and those whose content is still stored
-- (to purge them); a message leaves each index as it leaves the condition, so a sweep reads
-- only what it may still have to do, plus the messages that legal holds keep. The conditions
-- are spelled exactly as the store's queries spell them (store/retention.go).
--
-- leases gives a piece of work to one process at a time: the sweeper of one replica holds
-- "retention-sweep" while it sweeps, and until the next sweep is due.

-- +goose Up

CREATE INDEX messages_unread_idx ON messages (created_at, id)
    WHERE status IN ('accepted', 'notified', 'delivered', 'failed', 'opened');
CREATE INDEX messages_unpurged_idx ON messages (created_at, id) WHERE status <> 'purged';

CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

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
