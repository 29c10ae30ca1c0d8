-- The global log. Rows are never updated or deleted: erasure destroys the subscriber's key
-- (crypto-shredding), it does not touch events.
--
-- Ordering: a sequence value becomes visible at commit, not at insert, so `position > checkpoint`
-- would skip a row whose transaction took its position first and committed last. Readers instead
-- order by (transaction_id, position) and read only rows whose transaction_id is below the oldest
-- transaction still running (pg_snapshot_xmin): every such transaction has ended, and every
-- transaction that starts later gets a larger id, so nothing can appear behind a checkpoint.
--
-- No row is updated by every append (no shared counter): the identity column is a sequence,
-- which is not transactional and does not serialise writers. Idempotency is per stream: a retried
-- append is recognised by the event ids stored at the versions it asked for, so event ids need no
-- index of their own.
CREATE TABLE events (
    position       bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        text        NOT NULL,
    metadata       text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, position),
    UNIQUE (stream_id, version)
);
