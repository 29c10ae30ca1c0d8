//! Properties of tokens: round trips for arbitrary claims, tamper resistance, and no panics on
//! arbitrary input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use newsletter_domain::{ListId, RequestId, SubscriberId};
use newsletter_tokens::{KeyId, KeyRing, SigningKey, TokenError, UnsubscribeScope};
use proptest::prelude::*;
use uuid::Uuid;

fn ring() -> KeyRing {
    let kid = KeyId::parse("k7").unwrap();
    KeyRing::new(
        kid.clone(),
        vec![(kid, SigningKey::from_bytes(&[42; 32]).unwrap())],
    )
    .unwrap()
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // Whole seconds between 1970 and 2200: tokens keep expiry to the second.
    (0_i64..7_258_118_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn scope() -> impl Strategy<Value = UnsubscribeScope> {
    prop_oneof![
        Just(UnsubscribeScope::All),
        "[a-z0-9_-]{1,64}".prop_map(|id| UnsubscribeScope::List(ListId::try_from(id).unwrap())),
    ]
}

/// One token of each purpose for arbitrary ids.
fn tokens() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<u128>(), time(), scope(), 0_u8..3).prop_map(|(s, r, t, scope, kind)| {
        let keys = ring();
        let subscriber = SubscriberId::from_uuid(Uuid::from_u128(s));
        match kind {
            0 => keys.confirm_token(subscriber, RequestId::from_uuid(Uuid::from_u128(r)), t),
            1 => keys.unsubscribe_token(subscriber, scope),
            _ => keys.manage_token(subscriber, t),
        }
    })
}

/// True when the token verifies for any purpose at the epoch (before every expiry).
fn verifies_somehow(keys: &KeyRing, token: &str) -> bool {
    let epoch = DateTime::from_timestamp(0, 0).unwrap();
    keys.verify_confirm(token, epoch).is_ok()
        || keys.verify_unsubscribe(token).is_ok()
        || keys.verify_manage(token, epoch).is_ok()
}

proptest! {
    #[test]
    fn confirm_round_trips(s in any::<u128>(), r in any::<u128>(), expires in time()) {
        let keys = ring();
        let subscriber = SubscriberId::from_uuid(Uuid::from_u128(s));
        let request = RequestId::from_uuid(Uuid::from_u128(r));
        let token = keys.confirm_token(subscriber, request, expires);
        let claims = keys.verify_confirm(&token, expires).unwrap();
        prop_assert_eq!(claims.subscriber, subscriber);
        prop_assert_eq!(claims.request, request);
        prop_assert_eq!(claims.expires_at, expires);
        prop_assert_eq!(
            keys.verify_confirm(&token, expires + TimeDelta::seconds(1)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn unsubscribe_round_trips(s in any::<u128>(), scope in scope()) {
        let keys = ring();
        let subscriber = SubscriberId::from_uuid(Uuid::from_u128(s));
        let token = keys.unsubscribe_token(subscriber, scope.clone());
        let claims = keys.verify_unsubscribe(&token).unwrap();
        prop_assert_eq!(claims.subscriber, subscriber);
        prop_assert_eq!(claims.scope, scope);
    }

    #[test]
    fn manage_round_trips(s in any::<u128>(), expires in time()) {
        let keys = ring();
        let subscriber = SubscriberId::from_uuid(Uuid::from_u128(s));
        let token = keys.manage_token(subscriber, expires);
        let claims = keys.verify_manage(&token, expires).unwrap();
        prop_assert_eq!(claims.subscriber, subscriber);
        prop_assert_eq!(claims.expires_at, expires);
    }

    #[test]
    fn any_single_byte_change_fails(token in tokens(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let keys = ring();
        prop_assert!(verifies_somehow(&keys, &token));
        let mut bytes = token.clone().into_bytes();
        let i = index.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        // A change that makes invalid UTF-8 cannot even be passed as a token.
        if let Ok(changed) = String::from_utf8(bytes) {
            // Base64 has slack in the last character's low bits; a change there that decodes to
            // the same bytes would be the same token. The decoder refuses non-canonical trailing
            // bits, so every change must fail.
            prop_assert!(!verifies_somehow(&keys, &changed), "{} verified", changed);
        }
    }

    #[test]
    fn truncations_and_extensions_fail(token in tokens(), cut in 1_usize..40, extra in "[A-Za-z0-9_-]{1,8}") {
        let keys = ring();
        let cut = cut.min(token.len());
        prop_assert!(!verifies_somehow(&keys, &token[..token.len() - cut]));
        let extended = format!("{token}{extra}");
        prop_assert!(!verifies_somehow(&keys, &extended));
    }

    #[test]
    fn arbitrary_strings_never_panic_or_verify(input in ".{0,600}") {
        let keys = ring();
        prop_assert!(!verifies_somehow(&keys, &input));
    }

    #[test]
    fn arbitrary_bodies_under_a_known_key_never_verify(body in "[A-Za-z0-9_-]{0,200}") {
        let keys = ring();
        let token = format!("k7.{body}");
        prop_assert!(!verifies_somehow(&keys, &token));
    }
}
