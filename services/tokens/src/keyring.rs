//! [`KeyRing`]: signs with the current key, verifies with any key it holds; its key file format.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use newsletter_domain::{RequestId, SubscriberId, UnsubscribeScope};
use sha2::Sha256;

use crate::claims::{
    CancelClaims, Claims, ConfirmClaims, ManageClaims, Purpose, UnsubscribeClaims,
};
use crate::{KeyId, SigningKey, TokenError};

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted for verification, in characters; longer input is refused before
/// any decoding. The longest token this crate makes (an unsubscribe token for a 64-character list
/// id with a 16-character key id) is about 175 characters.
pub const MAX_TOKEN_CHARS: usize = 512;
/// HMAC-SHA256 tag length in bytes (not truncated).
const TAG_BYTES: usize = 32;
/// Separates the MAC input of this format from anything else signed with the same key.
const MAC_CONTEXT: &[u8] = b"newsletter-token/v1\0";
/// The first line of a key file.
const KEY_FILE_HEADER: &str = "# newsletter signing keys v1";

/// The signing keys of a deployment: one current key that signs, and every key that still
/// verifies (rotation). Cheap to share behind an `Arc`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRing {
    current: KeyId,
    /// A copy of the current key, so signing needs no lookup that could fail.
    current_key: SigningKey,
    keys: BTreeMap<KeyId, SigningKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// A ring that signs with `current` and verifies with all `keys`; `current` must be among
    /// them, and no key id may appear twice.
    pub fn new(current: KeyId, keys: Vec<(KeyId, SigningKey)>) -> Result<Self, TokenError> {
        let mut map = BTreeMap::new();
        for (id, key) in keys {
            if map.contains_key(&id) {
                return Err(TokenError::InvalidKeyRing {
                    reason: format!("key id {id} appears twice"),
                });
            }
            map.insert(id, key);
        }
        let current_key = map
            .get(&current)
            .cloned()
            .ok_or_else(|| TokenError::InvalidKeyRing {
                reason: format!("the current key {current} is not in the ring"),
            })?;
        Ok(Self {
            current,
            current_key,
            keys: map,
        })
    }

    /// A ring with one freshly generated key, `k1`.
    #[must_use]
    pub fn generate() -> Self {
        let current = KeyId(String::from("k1"));
        let current_key = SigningKey::generate();
        let mut keys = BTreeMap::new();
        keys.insert(current.clone(), current_key.clone());
        Self {
            current,
            current_key,
            keys,
        }
    }

    /// Rotation: a ring that signs with a freshly generated key named `new_current` and still
    /// verifies with every key of this one. Refuses an id already in the ring.
    pub fn rotated(&self, new_current: KeyId) -> Result<Self, TokenError> {
        if self.keys.contains_key(&new_current) {
            return Err(TokenError::InvalidKeyRing {
                reason: format!("key id {new_current} is already in the ring"),
            });
        }
        let current_key = SigningKey::generate();
        let mut keys = self.keys.clone();
        keys.insert(new_current.clone(), current_key.clone());
        Ok(Self {
            current: new_current,
            current_key,
            keys,
        })
    }

    /// The id of the key that signs.
    #[must_use]
    pub fn current_key_id(&self) -> &KeyId {
        &self.current
    }

    /// Every key id in the ring, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// The key file text (the binary keeps it in `<data dir>/signing-keys`, mode 0600):
    ///
    /// ```text
    /// # newsletter signing keys v1
    /// current k2
    /// key k1 <base64url key, no padding>
    /// key k2 <base64url key, no padding>
    /// ```
    ///
    /// Lines starting with `#` and blank lines are ignored on reading. Secret.
    #[must_use]
    pub fn to_file_string(&self) -> String {
        let mut out = format!("{KEY_FILE_HEADER}\ncurrent {}\n", self.current);
        for (id, key) in &self.keys {
            out.push_str(&format!("key {id} {}\n", key.to_base64()));
        }
        out
    }

    /// Reads the text written by [`Self::to_file_string`].
    pub fn from_file_str(text: &str) -> Result<Self, TokenError> {
        let mut current = None;
        let mut keys = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let bad = |reason| TokenError::InvalidKeyFile {
                line: line_no,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["current", id] => {
                    if current.is_some() {
                        return Err(bad("a second current line"));
                    }
                    current = Some(KeyId::parse(id).map_err(|_| bad("invalid key id"))?);
                }
                ["key", id, material] => {
                    let id = KeyId::parse(id).map_err(|_| bad("invalid key id"))?;
                    let key = SigningKey::from_base64(material)
                        .map_err(|_| bad("key material is not 32-64 bytes of base64url"))?;
                    keys.push((id, key));
                }
                _ => return Err(bad("expected `current <id>` or `key <id> <base64url>`")),
            }
        }
        let current = current.ok_or(TokenError::InvalidKeyFile {
            line: 0,
            reason: "no current line",
        })?;
        Self::new(current, keys)
    }

    /// A confirm token for one request, valid while `now <= expires_at` (whole seconds).
    #[must_use]
    pub fn confirm_token(
        &self,
        subscriber: SubscriberId,
        request: RequestId,
        expires_at: DateTime<Utc>,
    ) -> String {
        self.sign(&Claims::Confirm(ConfirmClaims {
            subscriber,
            request,
            expires_at,
        }))
    }

    /// Verifies a confirm token at `now`.
    pub fn verify_confirm(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ConfirmClaims, TokenError> {
        match self.verify(token)? {
            Claims::Confirm(claims) if now > claims.expires_at => Err(TokenError::Expired),
            Claims::Confirm(claims) => Ok(claims),
            _ => Err(TokenError::WrongPurpose),
        }
    }

    /// An unsubscribe token; it never expires.
    #[must_use]
    pub fn unsubscribe_token(&self, subscriber: SubscriberId, scope: UnsubscribeScope) -> String {
        self.sign(&Claims::Unsubscribe(UnsubscribeClaims {
            subscriber,
            scope,
        }))
    }

    /// Verifies an unsubscribe token.
    pub fn verify_unsubscribe(&self, token: &str) -> Result<UnsubscribeClaims, TokenError> {
        match self.verify(token)? {
            Claims::Unsubscribe(claims) => Ok(claims),
            _ => Err(TokenError::WrongPurpose),
        }
    }

    /// A manage (preferences) token, valid while `now <= expires_at` (whole seconds).
    #[must_use]
    pub fn manage_token(&self, subscriber: SubscriberId, expires_at: DateTime<Utc>) -> String {
        self.sign(&Claims::Manage(ManageClaims {
            subscriber,
            expires_at,
        }))
    }

    /// Verifies a manage token at `now`.
    pub fn verify_manage(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ManageClaims, TokenError> {
        match self.verify(token)? {
            Claims::Manage(claims) if now > claims.expires_at => Err(TokenError::Expired),
            Claims::Manage(claims) => Ok(claims),
            _ => Err(TokenError::WrongPurpose),
        }
    }

    /// A cancel ("this wasn't me") token for one pending request; it never expires, and it can
    /// only ever cancel that request.
    #[must_use]
    pub fn cancel_token(&self, subscriber: SubscriberId, request: RequestId) -> String {
        self.sign(&Claims::Cancel(CancelClaims {
            subscriber,
            request,
        }))
    }

    /// Verifies a cancel token.
    pub fn verify_cancel(&self, token: &str) -> Result<CancelClaims, TokenError> {
        match self.verify(token)? {
            Claims::Cancel(claims) => Ok(claims),
            _ => Err(TokenError::WrongPurpose),
        }
    }

    /// The purpose of a token whose signature verifies, without checking expiry.
    pub fn purpose_of(&self, token: &str) -> Result<Purpose, TokenError> {
        self.verify(token).map(|claims| claims.purpose())
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = claims.encode();
        let tag = mac(&self.current_key, &self.current, &payload).finalize();
        let mut body = payload;
        body.extend_from_slice(&tag.into_bytes());
        format!("{}.{}", self.current, URL_SAFE_NO_PAD.encode(body))
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let (kid, body) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let kid = KeyId::parse(kid).map_err(|_| TokenError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let split = body
            .len()
            .checked_sub(TAG_BYTES)
            .filter(|n| *n > 0)
            .ok_or(TokenError::Malformed)?;
        let (payload, tag) = body.split_at(split);
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        mac(key, &kid, payload)
            .verify_slice(tag)
            .map_err(|_| TokenError::BadSignature)?;
        Claims::decode(payload)
    }
}

fn mac(key: &SigningKey, kid: &KeyId, payload: &[u8]) -> HmacSha256 {
    // HMAC pads a key shorter than the hash's block (64 bytes for SHA-256) with zeros, so
    // padding here gives the same MAC as RFC 2104 and keeps construction infallible:
    // `SigningKey` holds at most 64 bytes.
    let mut block = [0_u8; 64];
    for (slot, byte) in block.iter_mut().zip(key.as_bytes()) {
        *slot = *byte;
    }
    let mut mac = HmacSha256::new(&block.into());
    mac.update(MAC_CONTEXT);
    mac.update(kid.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use newsletter_domain::ListId;
    use uuid::Uuid;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap()
    }
    fn subscriber() -> SubscriberId {
        SubscriberId::from_uuid(Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001))
    }
    fn request() -> RequestId {
        RequestId::from_uuid(Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0002))
    }
    fn list(id: &str) -> ListId {
        ListId::try_from(id.to_owned()).unwrap()
    }
    fn ring(id: &str, byte: u8) -> KeyRing {
        let kid = KeyId::parse(id).unwrap();
        KeyRing::new(
            kid.clone(),
            vec![(kid, SigningKey::from_bytes(&[byte; 32]).unwrap())],
        )
        .unwrap()
    }

    #[test]
    fn confirm_tokens_round_trip_until_they_expire() {
        let keys = ring("k1", 1);
        let expires = now() + TimeDelta::days(7);
        let token = keys.confirm_token(subscriber(), request(), expires);
        let claims = keys.verify_confirm(&token, now()).unwrap();
        assert_eq!(
            claims,
            ConfirmClaims {
                subscriber: subscriber(),
                request: request(),
                expires_at: expires
            }
        );
        assert!(
            keys.verify_confirm(&token, expires).is_ok(),
            "valid at expiry"
        );
        assert_eq!(
            keys.verify_confirm(&token, expires + TimeDelta::seconds(1)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn expiry_is_rounded_down_to_the_second() {
        let keys = ring("k1", 1);
        let expires = now() + TimeDelta::milliseconds(1500);
        let token = keys.confirm_token(subscriber(), request(), expires);
        let claims = keys.verify_confirm(&token, now()).unwrap();
        assert_eq!(claims.expires_at, now() + TimeDelta::seconds(1));
        assert_eq!(
            keys.verify_confirm(&token, now() + TimeDelta::milliseconds(1200)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn unsubscribe_tokens_carry_their_scope_and_never_expire() {
        let keys = ring("k1", 1);
        for scope in [UnsubscribeScope::All, UnsubscribeScope::List(list("news"))] {
            let token = keys.unsubscribe_token(subscriber(), scope.clone());
            assert_eq!(
                keys.verify_unsubscribe(&token).unwrap(),
                UnsubscribeClaims {
                    subscriber: subscriber(),
                    scope
                }
            );
        }
    }

    #[test]
    fn manage_tokens_round_trip_until_they_expire() {
        let keys = ring("k1", 1);
        let token = keys.manage_token(subscriber(), now());
        assert_eq!(
            keys.verify_manage(&token, now()).unwrap().subscriber,
            subscriber()
        );
        assert_eq!(
            keys.verify_manage(&token, now() + TimeDelta::seconds(1)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_never_verifies_for_another_purpose() {
        let keys = ring("k1", 1);
        let later = now() + TimeDelta::days(1);
        let confirm = keys.confirm_token(subscriber(), request(), later);
        let unsubscribe = keys.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        let manage = keys.manage_token(subscriber(), later);
        assert_eq!(
            keys.verify_unsubscribe(&confirm),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_manage(&confirm, now()),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_confirm(&unsubscribe, now()),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_manage(&unsubscribe, now()),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_confirm(&manage, now()),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_unsubscribe(&manage),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(keys.purpose_of(&confirm), Ok(Purpose::Confirm));
        assert_eq!(keys.purpose_of(&unsubscribe), Ok(Purpose::Unsubscribe));
        assert_eq!(keys.purpose_of(&manage), Ok(Purpose::Manage));
    }

    #[test]
    fn a_cancel_token_names_one_request_and_nothing_else_verifies_as_it() {
        let keys = ring("k1", 1);
        let later = now() + TimeDelta::days(1);
        let cancel = keys.cancel_token(subscriber(), request());
        let claims = keys.verify_cancel(&cancel).unwrap();
        assert_eq!(
            (claims.subscriber, claims.request),
            (subscriber(), request())
        );
        assert_eq!(keys.purpose_of(&cancel), Ok(Purpose::Cancel));
        assert_eq!(
            keys.verify_unsubscribe(&cancel),
            Err(TokenError::WrongPurpose)
        );
        assert_eq!(
            keys.verify_confirm(&cancel, now()),
            Err(TokenError::WrongPurpose)
        );
        for other in [
            keys.confirm_token(subscriber(), request(), later),
            keys.unsubscribe_token(subscriber(), UnsubscribeScope::All),
            keys.manage_token(subscriber(), later),
        ] {
            assert_eq!(keys.verify_cancel(&other), Err(TokenError::WrongPurpose));
        }
    }

    #[test]
    fn tokens_are_url_safe_compact_and_hold_no_personal_data() {
        let keys = ring("k1", 1);
        let token = keys.confirm_token(subscriber(), request(), now());
        assert!(token.len() <= 110, "{} chars", token.len());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        );
        assert!(token.starts_with("k1."));
        let long =
            keys.unsubscribe_token(subscriber(), UnsubscribeScope::List(list(&"a".repeat(64))));
        assert!(long.len() < MAX_TOKEN_CHARS);
    }

    #[test]
    fn other_keys_and_unknown_key_ids_fail() {
        let keys = ring("k1", 1);
        let token = keys.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        assert_eq!(
            ring("k1", 2).verify_unsubscribe(&token),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            ring("k2", 1).verify_unsubscribe(&token),
            Err(TokenError::UnknownKey)
        );
        // Renaming the key id in the token breaks the signature: the id is signed too.
        let two = KeyRing::new(
            KeyId::parse("k1").unwrap(),
            vec![
                (
                    KeyId::parse("k1").unwrap(),
                    SigningKey::from_bytes(&[1; 32]).unwrap(),
                ),
                (
                    KeyId::parse("k2").unwrap(),
                    SigningKey::from_bytes(&[1; 32]).unwrap(),
                ),
            ],
        )
        .unwrap();
        let renamed = token.replacen("k1.", "k2.", 1);
        assert_eq!(
            two.verify_unsubscribe(&renamed),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_verifies_old_tokens() {
        let old = ring("k1", 1);
        let old_token = old.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        let new = old.rotated(KeyId::parse("k2").unwrap()).unwrap();
        assert_eq!(new.current_key_id().as_str(), "k2");
        let new_token = new.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        assert!(new_token.starts_with("k2."));
        assert!(new.verify_unsubscribe(&old_token).is_ok());
        assert!(new.verify_unsubscribe(&new_token).is_ok());
        assert_eq!(
            old.verify_unsubscribe(&new_token),
            Err(TokenError::UnknownKey)
        );
        assert!(new.rotated(KeyId::parse("k1").unwrap()).is_err());
    }

    #[test]
    fn malformed_input_is_refused_without_echo() {
        let keys = ring("k1", 1);
        let token = keys.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        for bad in [
            String::new(),
            "k1".to_owned(),
            "k1.".to_owned(),
            ".abc".to_owned(),
            "K1.abc".to_owned(),
            "k1.!!!".to_owned(),
            format!("{token}="),
            format!("{token} "),
            "k1.AAAA".to_owned(),
            format!("k1.{}", "A".repeat(MAX_TOKEN_CHARS)),
        ] {
            let err = keys.verify_unsubscribe(&bad).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{bad:?}: {err:?}"
            );
            if bad.len() > 4 {
                assert!(!err.to_string().contains(&bad));
            }
        }
    }

    #[test]
    fn a_signed_but_unknown_payload_is_malformed() {
        let keys = ring("k1", 1);
        let kid = KeyId::parse("k1").unwrap();
        let key = SigningKey::from_bytes(&[1; 32]).unwrap();
        for payload in [vec![2_u8, 1], vec![1, 9, 0], vec![1, 2], [1, 2].repeat(20)] {
            let mut body = payload.clone();
            body.extend_from_slice(&mac(&key, &kid, &payload).finalize().into_bytes());
            let token = format!("k1.{}", URL_SAFE_NO_PAD.encode(body));
            assert_eq!(keys.verify_unsubscribe(&token), Err(TokenError::Malformed));
        }
    }

    #[test]
    fn zero_padding_the_key_gives_the_rfc_2104_mac() {
        for len in [32, 40, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| u8::try_from(i).unwrap()).collect();
            let key = SigningKey::from_bytes(&bytes).unwrap();
            let kid = KeyId::parse("k1").unwrap();
            let ours = mac(&key, &kid, b"payload").finalize().into_bytes();
            let mut reference = HmacSha256::new_from_slice(&bytes).unwrap();
            reference.update(MAC_CONTEXT);
            reference.update(b"k1\0payload");
            assert_eq!(ours, reference.finalize().into_bytes(), "{len}-byte key");
        }
    }

    #[test]
    fn key_files_round_trip() {
        let keys = KeyRing::generate()
            .rotated(KeyId::parse("k2").unwrap())
            .unwrap();
        let text = keys.to_file_string();
        assert!(text.starts_with(KEY_FILE_HEADER));
        assert!(text.contains("current k2\n"));
        let back = KeyRing::from_file_str(&text).unwrap();
        assert_eq!(back, keys);
        let token = keys.unsubscribe_token(subscriber(), UnsubscribeScope::All);
        assert!(back.verify_unsubscribe(&token).is_ok());
        assert!(
            !format!("{keys:?}").contains(&text[40..]),
            "Debug shows no key"
        );
    }

    #[test]
    fn bad_key_files_name_the_line() {
        let key = SigningKey::from_bytes(&[3; 32]).unwrap().to_base64();
        let cases = [
            (format!("key k1 {key}\n"), 0),
            (
                format!("current k1\nkey k1 {key}\nkey k1 {key}\n"),
                usize::MAX,
            ),
            (format!("current k2\nkey k1 {key}\n"), usize::MAX),
            (format!("current k1\ncurrent k1\nkey k1 {key}\n"), 2),
            ("current k1\nkey k1 c2hvcnQ\n".to_owned(), 2),
            (format!("# c\n\ncurrent k1\nkey K1 {key}\n"), 4),
            ("current k1\nsomething else\n".to_owned(), 2),
        ];
        for (text, line) in cases {
            match KeyRing::from_file_str(&text).unwrap_err() {
                TokenError::InvalidKeyFile { line: got, .. } => assert_eq!(got, line, "{text}"),
                TokenError::InvalidKeyRing { .. } => assert_eq!(line, usize::MAX, "{text}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
