//! Errors of the event store port.

use uuid::Uuid;

use crate::model::{ExpectedVersion, StreamId};

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version: another writer got there first.
    #[error("stream {stream} is at version {actual}, the append expected {expected}")]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version as the store saw it.
        actual: u64,
    },
    /// An event id is already stored, but not as the same append (other stream or version).
    #[error("event id {event_id} is already stored elsewhere")]
    DuplicateEventId {
        /// The conflicting id.
        event_id: Uuid,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// A stream name the store does not accept.
    #[error("invalid stream name ({len} bytes): 1 to 128 characters of [A-Za-z0-9_.:-]")]
    InvalidStreamId {
        /// The rejected name's length (the name itself is not echoed).
        len: usize,
    },
    /// A database URL no adapter accepts.
    #[error(
        "unsupported event store URL scheme {scheme:?} (use sqlite:, postgres://, postgresql://, kurrentdb:// or esdb://)"
    )]
    UnsupportedUrl {
        /// The scheme that was given.
        scheme: String,
    },
    /// A stored row that cannot be read back (corruption or a foreign writer).
    #[error("stored event at {location} is unreadable: {reason}")]
    Corrupt {
        /// Where: position or stream and version.
        location: String,
        /// What was wrong.
        reason: String,
    },
    /// The database failed.
    #[error("event store database error during {operation}: {source}")]
    Database {
        /// What the store was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A non-SQL backend (KurrentDB) failed: unreachable, timed out, refused the request.
    #[error("event store backend error during {operation}: {message}")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// The backend's error, as text (its client's error type is not part of this API).
        message: String,
    },
    /// Applying the schema migrations failed.
    #[error("event store migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The background writer stopped (the store is shutting down or crashed).
    #[error("the event store writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// Wraps a driver error with what the store was doing.
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }
}
