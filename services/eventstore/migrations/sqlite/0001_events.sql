-- The global log. Rows are never updated or deleted: erasure destroys the subscriber's key
-- (crypto-shredding), it does not touch events. `position` is the rowid, assigned by the one
-- writer in commit order, so readers polling `position > checkpoint` never skip a row.
-- Idempotency is per stream: a retried append is recognised by the event ids stored at the
-- versions it asked for, so event ids need no index of their own.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
    UNIQUE (stream_id, version)
);
