-- audit_anchor names the signed checkpoint the audit trail starts after once its oldest events
-- were pruned (Store.PruneAudit): the events at or below the checkpoint's size are deleted,
-- oldest first, and an export starts with the checkpoint. One row at most, none before the
-- first pruning; the row only ever moves to a larger checkpoint. The foreign key keeps the
-- anchor's checkpoint from being deleted while it is the anchor.

-- +goose Up

CREATE TABLE audit_anchor (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    checkpoint_id bigint NOT NULL REFERENCES audit_checkpoints (id)
);

-- +goose Down

DROP TABLE audit_anchor;
