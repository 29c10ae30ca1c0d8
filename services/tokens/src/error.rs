//! [`TokenError`]: why a token or a key was refused. No variant carries the token itself.

/// Why a token did not verify, or a key or key ring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this service: too long, bad characters, bad base64, bad layout.
    #[error("malformed token")]
    Malformed,
    /// The token names a key id that is not in the key ring.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not match: the token was altered or signed with another key.
    #[error("token signature does not match")]
    BadSignature,
    /// A valid token made for another purpose (e.g. an unsubscribe token used to confirm).
    #[error("token is for another purpose")]
    WrongPurpose,
    /// A valid token whose expiry has passed.
    #[error("token has expired")]
    Expired,
    /// A key id that is not 1–16 characters of `[a-z0-9]`.
    #[error("invalid key id: must be 1 to 16 characters of [a-z0-9]")]
    InvalidKeyId,
    /// Key material that is too short, too long or not decodable.
    #[error("invalid signing key: {reason}")]
    InvalidKey {
        /// What was wrong (never the key material).
        reason: &'static str,
    },
    /// A key ring whose current key is missing, or that names one key id twice.
    #[error("invalid key ring: {reason}")]
    InvalidKeyRing {
        /// What was wrong.
        reason: String,
    },
    /// A key file that cannot be read.
    #[error("invalid key file at line {line}: {reason}")]
    InvalidKeyFile {
        /// The 1-based line number.
        line: usize,
        /// What was wrong (never the key material).
        reason: &'static str,
    },
}
