//! Signed, purpose-bound link tokens for `newsletter`: confirm, unsubscribe and manage links.
//!
//! # Token format (version 1)
//!
//! ```text
//! <key id> "." base64url-no-pad( payload || HMAC-SHA256(key, "newsletter-token/v1" 0x00 <key id> 0x00 payload) )
//! ```
//!
//! The payload is binary: a format version byte (1), a purpose byte (`1` confirm, `2`
//! unsubscribe, `3` manage), the subscriber's UUID (16 bytes) and then, by purpose:
//!
//! | purpose | rest of the payload |
//! |---|---|
//! | confirm | request UUID (16 bytes), expiry as Unix seconds (i64, big endian) |
//! | unsubscribe | scope: `0` all lists, or `1`, a length byte and the list id (at most 64 ASCII bytes) |
//! | manage | expiry as Unix seconds (i64, big endian) |
//!
//! A token carries only opaque ids, never the address or any other personal data. A confirm token
//! is about 100 characters, well under [`MAX_TOKEN_CHARS`]. Expiry is kept to the second,
//! rounded down, so a token never lives longer than asked; it is valid while `now <= expires_at`.
//!
//! # Verification
//!
//! Tokens longer than [`MAX_TOKEN_CHARS`] are refused before decoding. The key id picks the key
//! from the [`KeyRing`] ([`TokenError::UnknownKey`] otherwise); the tag is checked in constant
//! time ([`TokenError::BadSignature`]); only then is the payload parsed and its purpose
//! ([`TokenError::WrongPurpose`]) and expiry ([`TokenError::Expired`]) checked. Errors never echo
//! the token.
//!
//! # Rotation
//!
//! A ring signs with its current key and verifies with every key it holds. To rotate: add a new
//! key, make it current, and keep the old one until every token it signed that still matters has
//! expired (unsubscribe tokens never expire, so old keys are normally kept for good).

mod claims;
mod error;
mod key;
mod keyring;

pub use claims::{CancelClaims, ConfirmClaims, ManageClaims, Purpose, UnsubscribeClaims};
pub use error::TokenError;
pub use key::{KeyId, SigningKey};
pub use keyring::{KeyRing, MAX_TOKEN_CHARS};
/// Re-exported from the domain: which lists an unsubscribe token is about.
pub use newsletter_domain::UnsubscribeScope;
