-- Read models: disposable, rebuilt from the event log by `newsletter rebuild-projections`.
-- Positions are the event store's (commit, prepare) pair.

-- One row per projection or reactor: where it has got to in the global log. A projection writes
-- its row in the same transaction as its read-model rows.
CREATE TABLE projection_checkpoints (
    name     text   PRIMARY KEY,
    "commit" bigint NOT NULL,
    prepare  bigint NOT NULL
);

-- The domain's own fold of each subscriber (`SubscriberState` as JSON), so a batch only evolves
-- the stored state by its new events. An erased subscriber's snapshot is the erased state, which
-- holds no personal data.
CREATE TABLE subscriber_snapshots (
    subscriber_id  uuid   PRIMARY KEY,
    state          text   NOT NULL,
    stream_version bigint NOT NULL,
    "commit"       bigint NOT NULL,
    prepare        bigint NOT NULL
);

-- What the API and the newsletter sender read. Deleted on erasure.
CREATE TABLE subscribers (
    subscriber_id  uuid    PRIMARY KEY,
    locale         text,
    restricted     boolean NOT NULL,
    email          text,
    name           text,
    stream_version bigint  NOT NULL,
    "commit"       bigint  NOT NULL,
    prepare        bigint  NOT NULL
);

-- One row per (list, subscriber). `status` is the domain's; `reported_status` is what queries
-- filter on: `restricted` on every list while the subscriber is restricted. Deleted on erasure.
CREATE TABLE list_members (
    list_id         text        NOT NULL,
    subscriber_id   uuid        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
    reported_status text        NOT NULL
        CHECK (reported_status IN ('pending', 'confirmed', 'unsubscribed', 'restricted')),
    since           timestamptz NOT NULL,
    PRIMARY KEY (list_id, subscriber_id)
);

CREATE INDEX list_members_listing ON list_members (list_id, reported_status, subscriber_id);
CREATE INDEX list_members_by_subscriber ON list_members (subscriber_id);
