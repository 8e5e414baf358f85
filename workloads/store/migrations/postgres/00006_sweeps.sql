-- retention_sweeps keeps the last sweep's result (package retention's Result, as JSON: counts,
-- times, the policy and hold names, never a message or a patient) per name, one row each. The
-- sweeper that holds the lease writes it as a sweep ends, so that any replica can report it:
-- the operator reads it from whichever gateway its status request reaches.

-- +goose Up

CREATE TABLE retention_sweeps (
    name        text PRIMARY KEY,
    result      jsonb NOT NULL,
    finished_at timestamptz NOT NULL
);

-- +goose Down

DROP TABLE retention_sweeps;
