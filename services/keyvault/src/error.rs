//! Errors of the key vault, the audit log and the statistics.

/// Why a key vault operation failed. Never holds personal data or key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The database failed.
    #[error("key vault database error during {operation}: {source}")]
    Database {
        /// What the vault was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A master key given in configuration is not usable.
    #[error("invalid master key: {0}")]
    MasterKey(String),
    /// A data key is wrapped by a master key id that is not configured.
    #[error(
        "the data key of subscriber {subscriber} is wrapped by master key {key_id:?}, which is not configured"
    )]
    UnknownMasterKey {
        /// The subscriber (an opaque id).
        subscriber: uuid::Uuid,
        /// The key id found in the vault.
        key_id: String,
    },
    /// Authenticated decryption failed: wrong key, or the stored bytes were altered.
    #[error("cannot decrypt {what}: wrong key or altered data")]
    Decrypt {
        /// What was being decrypted.
        what: String,
    },
    /// Stored data in an unexpected shape.
    #[error("unreadable {what}: {reason}")]
    Corrupt {
        /// Where.
        what: String,
        /// What was wrong (never the content).
        reason: String,
    },
    /// A database URL the vault does not accept.
    #[error("unsupported key vault URL scheme {0:?} (use sqlite: or postgres://)")]
    UnsupportedUrl(String),
}

impl VaultError {
    /// Wraps a driver error with what the vault was doing.
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }
}
