//! [`KeyId`] and [`SigningKey`]: the pieces of a [`crate::KeyRing`].

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::TokenError;

/// The longest key id, in characters.
pub const MAX_KEY_ID_CHARS: usize = 16;

/// The name of a signing key, carried in every token it signs: 1–16 characters of `[a-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub(crate) String);

impl KeyId {
    /// Checks a key id.
    pub fn parse(input: &str) -> Result<Self, TokenError> {
        let valid = !input.is_empty()
            && input.len() <= MAX_KEY_ID_CHARS
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(input.to_owned()))
        } else {
            Err(TokenError::InvalidKeyId)
        }
    }

    /// The key id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fewest bytes of key material accepted (the HMAC-SHA256 output size).
pub const MIN_KEY_BYTES: usize = 32;
/// The most bytes of key material accepted (one SHA-256 block; longer keys would be hashed).
pub const MAX_KEY_BYTES: usize = 64;
/// How many bytes [`SigningKey::generate`] draws.
pub const GENERATED_KEY_BYTES: usize = 32;

/// Secret HMAC key material, 32–64 bytes. Its `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// 32 fresh bytes from the operating system's CSPRNG (through `rand`'s thread RNG, which
    /// is seeded from it).
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = vec![0_u8; GENERATED_KEY_BYTES];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// Wraps existing key material of 32–64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(TokenError::InvalidKey {
                reason: "shorter than 32 bytes",
            });
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(TokenError::InvalidKey {
                reason: "longer than 64 bytes",
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// Reads key material written by [`Self::to_base64`] (base64url without padding).
    pub fn from_base64(encoded: &str) -> Result<Self, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| TokenError::InvalidKey {
                reason: "not base64url without padding",
            })?;
        Self::from_bytes(&bytes)
    }

    /// The key material as base64url without padding, for a key file. Secret.
    #[must_use]
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// The key material. Secret.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_short_lowercase_tokens() {
        assert!(KeyId::parse("k1").is_ok());
        assert!(KeyId::parse("2026a0123456789z").is_ok());
        for bad in ["", "K1", "k-1", "k.1", "k 1", "abcdefghijklmnopq", "kø"] {
            assert_eq!(KeyId::parse(bad), Err(TokenError::InvalidKeyId), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_32_to_64_bytes_and_round_trip_through_base64() {
        assert!(SigningKey::from_bytes(&[7; 31]).is_err());
        assert!(SigningKey::from_bytes(&[7; 65]).is_err());
        let key = SigningKey::from_bytes(&[7; 40]).unwrap();
        assert_eq!(SigningKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(SigningKey::from_base64("not base64!").is_err());
        assert!(SigningKey::from_base64(&URL_SAFE_NO_PAD.encode([1; 16])).is_err());
    }

    #[test]
    fn generated_keys_differ_and_debug_is_redacted() {
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_BYTES);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "SigningKey(<redacted>)");
        assert!(!format!("{a:?}").contains(&a.to_base64()));
    }
}
