//! Errors of the read side.

use newsletter_eventstore::{Position, StoreError};

/// Why a read-model, email-index or checkpoint operation failed. Never holds personal data:
/// subscribers are named by their opaque id, addresses never appear.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The database failed.
    #[error("read-model database error during {operation}: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the schema migrations failed.
    #[error("read-model migration of {what} failed: {source}")]
    Migration {
        /// Which schema (`read models` or `email index`).
        what: &'static str,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A database URL neither SQLite nor PostgreSQL.
    #[error(
        "unsupported read-model URL scheme {scheme:?} (use sqlite:, postgres:// or postgresql://)"
    )]
    UnsupportedUrl {
        /// The scheme that was given (at most 32 characters of it).
        scheme: String,
    },
    /// The event store failed while the projection read from it.
    #[error("event store error while {operation}: {source}")]
    Store {
        /// What the projection was doing.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The task reading the log ahead of the applied batch ended without an answer (it was
    /// cancelled: the runtime is shutting down).
    #[error("the task reading the log ahead was cancelled while {operation}")]
    ReaderCancelled {
        /// What the projection was doing.
        operation: &'static str,
    },
    /// A subscriber event in the log cannot be decoded. The projection stops here rather than
    /// skip it: a skipped event would leave the read model silently wrong.
    #[error(
        "event at position {position} (stream {stream}, version {version}) cannot be decoded: {reason}"
    )]
    Decode {
        /// Where in the log.
        position: Position,
        /// The stream (an opaque `subscriber-<uuid>` name).
        stream: String,
        /// Its version in the stream.
        version: u64,
        /// What the codec said, without echoing payload values (they may be personal data).
        reason: String,
    },
    /// A stored row cannot be read back.
    #[error("stored read-model row is unreadable ({location}): {reason}")]
    Corrupt {
        /// Which table and key.
        location: String,
        /// What was wrong (never a stored value).
        reason: String,
    },
    /// The projection's checkpoint changed under a batch: another runner applied events from
    /// the same checkpoint. Nothing of this batch was written; reload the checkpoint and go on.
    #[error(
        "the checkpoint of projection {name} moved while a batch was applied (is another projector running?)"
    )]
    CheckpointMoved {
        /// The projection.
        name: &'static str,
    },
    /// A position or version too large for a signed 64-bit column.
    #[error("{what} {value} does not fit a 64-bit signed column")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// More addresses in one `find_many` than allowed.
    #[error("find_many takes at most {max} addresses at once, got {got}")]
    TooManyAddresses {
        /// The limit.
        max: usize,
        /// What was passed.
        got: usize,
    },
}

impl ReadModelError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }

    /// Wraps an event store error with what was being done.
    pub(crate) fn store(operation: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Store { operation, source }
    }

    /// A corrupt row.
    pub(crate) fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            location: location.into(),
            reason: reason.into(),
        }
    }
}

/// Converts an unsigned value for a signed 64-bit column.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64, ReadModelError> {
    i64::try_from(value).map_err(|_| ReadModelError::OutOfRange { what, value })
}

/// Converts a stored signed value that must be non-negative.
pub(crate) fn to_u64(value: i64, location: &str) -> Result<u64, ReadModelError> {
    u64::try_from(value)
        .map_err(|_| ReadModelError::corrupt(location, format!("negative value {value}")))
}
