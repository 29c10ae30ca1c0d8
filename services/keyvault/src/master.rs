//! The master key-encryption keys (KEK) and the per-subscriber data keys they wrap.
//!
//! A [`MasterKeyRing`] comes from configuration as `id:64-hex-digits`, several separated by
//! commas; the **first** is current (wraps new data keys), the others only unwrap keys wrapped
//! before a rotation. Every wrapped data key stores the id of the master key that wrapped it.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use crate::error::VaultError;

/// Bytes of a key (master or data key): 256 bits.
pub const KEY_BYTES: usize = 32;
/// Bytes of an XChaCha20-Poly1305 nonce.
pub const NONCE_BYTES: usize = 24;

/// The longest master key id.
pub const MAX_KEY_ID_CHARS: usize = 32;

/// 32 random bytes of key material; zeroed on drop, redacted `Debug`.
#[derive(Clone)]
pub struct KeyBytes([u8; KEY_BYTES]);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl KeyBytes {
    /// Fresh random key material from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0_u8; KEY_BYTES];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Encrypts `plaintext` with a fresh random nonce; returns `nonce || ciphertext+tag`.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0_u8; NONCE_BYTES];
        rand::fill(&mut nonce[..]);
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| VaultError::Corrupt {
                what: "plaintext".to_owned(),
                reason: "encryption failed".to_owned(),
            })?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Reverses [`Self::seal`]; fails on a wrong key, wrong associated data or altered bytes.
    pub(crate) fn open(
        &self,
        sealed: &[u8],
        aad: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, VaultError> {
        let fail = || VaultError::Decrypt {
            what: what.to_owned(),
        };
        if sealed.len() < NONCE_BYTES + 16 {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| fail())?;
        self.cipher()
            .decrypt(&XNonce::from(nonce), Payload { msg: body, aad })
            .map_err(|_| fail())
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// One master key with its id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: KeyBytes,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({:?}, <redacted>)", self.id)
    }
}

impl MasterKey {
    /// A key from its id and material. The id is 1–32 characters of `[A-Za-z0-9._-]`.
    pub fn new(id: &str, key: KeyBytes) -> Result<Self, VaultError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_KEY_ID_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(VaultError::MasterKey(
                "a key id is 1-32 characters of [A-Za-z0-9._-]".to_owned(),
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    /// A fresh random key with this id.
    pub fn generate(id: &str) -> Result<Self, VaultError> {
        Self::new(id, KeyBytes::generate())
    }

    /// The key id stored beside every key it wraps.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `id:hex`, the configuration form (secret!).
    #[must_use]
    pub fn to_config_string(&self) -> String {
        let hex: String = self
            .key
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}:{hex}", self.id)
    }
}

/// The configured master keys: the current one first, older ones after it.
#[derive(Clone, Debug)]
pub struct MasterKeyRing {
    keys: Vec<MasterKey>,
}

fn parse_hex_key(hex: &str) -> Result<KeyBytes, VaultError> {
    let bad = || VaultError::MasterKey("key material must be 64 hexadecimal digits".to_owned());
    let hex = hex.trim();
    if hex.len() != 2 * KEY_BYTES || !hex.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0_u8; KEY_BYTES];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    let key = KeyBytes(bytes);
    bytes.zeroize();
    Ok(key)
}

impl MasterKeyRing {
    /// A ring of one key.
    #[must_use]
    pub fn single(key: MasterKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Parses `id:hex[,id:hex…]` (commas or new lines); the first key is current. Errors never
    /// echo key material.
    pub fn parse(spec: &str) -> Result<Self, VaultError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for entry in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let (id, hex) = entry.split_once(':').ok_or_else(|| {
                VaultError::MasterKey("each key is written id:64-hex-digits".to_owned())
            })?;
            let key = MasterKey::new(id.trim(), parse_hex_key(hex)?)?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(VaultError::MasterKey(format!(
                    "two keys have the id {:?}",
                    key.id
                )));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(VaultError::MasterKey("no key given".to_owned()));
        }
        Ok(Self { keys })
    }

    /// The configuration form of the whole ring (secret!).
    #[must_use]
    pub fn to_config_string(&self) -> String {
        self.keys
            .iter()
            .map(MasterKey::to_config_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The key that wraps new data keys.
    #[must_use]
    pub fn current(&self) -> &MasterKey {
        // `parse` and `single` never build an empty ring.
        &self.keys[0]
    }

    /// Every key id, current first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// A ring with a new current key in front of these.
    #[must_use]
    pub fn with_new_current(&self, key: MasterKey) -> Self {
        let mut keys = vec![key];
        keys.extend(self.keys.iter().cloned());
        Self { keys }
    }

    fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Wraps a data key for `subscriber` with the current key: `(key id, nonce || ciphertext)`.
    /// The subscriber id and key id are associated data, so a wrapped key moved to another
    /// subscriber's row does not unwrap.
    pub(crate) fn wrap(
        &self,
        subscriber: uuid::Uuid,
        data_key: &KeyBytes,
    ) -> Result<(String, Vec<u8>), VaultError> {
        let master = self.current();
        let aad = wrap_aad(subscriber, &master.id);
        let sealed = master.key.seal(data_key.as_bytes(), &aad)?;
        Ok((master.id.clone(), sealed))
    }

    /// Unwraps a data key wrapped by [`Self::wrap`] with the key named `key_id`.
    pub(crate) fn unwrap_key(
        &self,
        subscriber: uuid::Uuid,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<KeyBytes, VaultError> {
        let master = self
            .get(key_id)
            .ok_or_else(|| VaultError::UnknownMasterKey {
                subscriber,
                key_id: key_id.chars().take(MAX_KEY_ID_CHARS).collect(),
            })?;
        let aad = wrap_aad(subscriber, key_id);
        let mut plain = master
            .key
            .open(wrapped, &aad, &format!("the data key of {subscriber}"))?;
        let bytes: Result<[u8; KEY_BYTES], _> = plain.as_slice().try_into();
        plain.zeroize();
        bytes.map(KeyBytes).map_err(|_| VaultError::Corrupt {
            what: format!("the data key of {subscriber}"),
            reason: "wrong length".to_owned(),
        })
    }
}

fn wrap_aad(subscriber: uuid::Uuid, key_id: &str) -> Vec<u8> {
    let mut aad = b"newsletter-data-key:".to_vec();
    aad.extend_from_slice(subscriber.as_bytes());
    aad.push(b':');
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_parse_and_never_echo_key_material() {
        let a = MasterKey::generate("k1").unwrap();
        let b = MasterKey::generate("k2").unwrap();
        let spec = format!("{}, {}", a.to_config_string(), b.to_config_string());
        let ring = MasterKeyRing::parse(&spec).unwrap();
        assert_eq!(ring.current().id(), "k1");
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(!format!("{ring:?}").contains(&spec[3..20]));
        for bad in ["", "k1", "k1:abc", "k 1:00", &format!("{spec},{spec}")] {
            let e = MasterKeyRing::parse(bad).unwrap_err().to_string();
            assert!(!e.contains(&spec[3..20]), "{e}");
        }
    }

    #[test]
    fn wrapped_keys_unwrap_only_for_their_subscriber_and_key() {
        let ring = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
        let subscriber = uuid::Uuid::now_v7();
        let data = KeyBytes::generate();
        let (id, wrapped) = ring.wrap(subscriber, &data).unwrap();
        assert_eq!(id, "k1");
        let back = ring.unwrap_key(subscriber, &id, &wrapped).unwrap();
        assert_eq!(back.as_bytes(), data.as_bytes());
        assert!(
            ring.unwrap_key(uuid::Uuid::now_v7(), &id, &wrapped)
                .is_err()
        );
        assert!(matches!(
            ring.unwrap_key(subscriber, "k9", &wrapped),
            Err(VaultError::UnknownMasterKey { .. })
        ));
        let other = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
        assert!(other.unwrap_key(subscriber, &id, &wrapped).is_err());
        let mut tampered = wrapped.clone();
        tampered[30] ^= 1;
        assert!(ring.unwrap_key(subscriber, &id, &tampered).is_err());
    }
}
