-- The email index: keyed hash of the normalised address -> subscriber id. Not a projection: the
-- API writes it before it appends, and it is never rebuilt or truncated with the read models.
-- It holds only HMAC-SHA256 digests, never an address.
CREATE TABLE email_index (
    address_hash  bytea PRIMARY KEY CHECK (length(address_hash) = 32),
    subscriber_id uuid  NOT NULL
);

CREATE INDEX email_index_by_subscriber ON email_index (subscriber_id);
