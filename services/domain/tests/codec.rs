//! Stored events: type names, schema versions, round trips and the v1 → v2 upcaster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use newsletter_domain::{
    DecodeError, EventCodec, ListStatus, Locale, Profile, SubscriberEvent, SubscriptionRequested,
};
use serde_json::Value;
use support::*;

#[test]
fn a_stored_v1_subscription_request_is_upcast_on_read() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/subscription_requested_v1.json"
    ))
    .unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap();
    let event = SubscriberEvent::decode(
        stored["type"].as_str().unwrap(),
        u32::try_from(stored["schema_version"].as_u64().unwrap()).unwrap(),
        stored["payload"].clone(),
    )
    .unwrap();

    let SubscriberEvent::SubscriptionRequested(requested) = &event else {
        panic!("decoded to {event:?}");
    };
    assert_eq!(requested.lists, lists(&["news"]));
    assert_eq!(requested.email.as_str(), "Kim.Hansen@xn--bcher-kva.dk");
    assert_eq!(requested.locale, Locale::Da);
    assert_eq!(requested.consent.source, None);
    assert_eq!(requested.consent.policy_version.as_str(), "2024-05");
    assert_eq!(
        requested.profile.phone.as_ref().map(|p| p.as_str()),
        Some("+45 73 700 100")
    );
    assert!(requested.profile.address.is_none());

    // It is written back as the current version, and folds like any request.
    assert_eq!(event.schema_version(), 2);
    let encoded = event.encode().unwrap();
    assert_eq!(encoded["lists"], serde_json::json!(["news"]));
    assert!(encoded.get("list").is_none());
    let state = <newsletter_domain::Subscriber as newsletter_domain::Decider>::fold([&event]);
    assert_eq!(state.status_of(&list("news")), Some(ListStatus::Pending));
}

fn one_of_each() -> Vec<SubscriberEvent> {
    use newsletter_domain::SubscriberCommand as C;
    history(&[
        (request(1, &["news", "events"], t(0)), t(0)),
        (mail_sent(1, 1), t(0)),
        (
            C::RecordConfirmationMailFailed {
                request_id: rid(1),
                reason: reason("421 try later"),
                permanent: false,
            },
            t(0),
        ),
        (confirm(1, t(1)), t(1)),
        (
            C::Unsubscribe {
                scope: newsletter_domain::UnsubscribeScope::List(list("news")),
                channel: newsletter_domain::UnsubscribeChannel::Link,
            },
            t(2),
        ),
        (request(2, &["product"], t(3)), t(3)),
        (
            C::Unsubscribe {
                scope: newsletter_domain::UnsubscribeScope::List(list("product")),
                channel: newsletter_domain::UnsubscribeChannel::Api,
            },
            t(3),
        ),
        (request(3, &["news"], t(4)), t(4)),
        (C::ExpirePending { request_id: rid(3) }, t(24 * 8)),
        (
            C::RectifyProfile {
                changes: newsletter_domain::ProfileChanges {
                    company: newsletter_domain::FieldChange::Set(
                        newsletter_domain::CompanyName::parse("ACME").unwrap(),
                    ),
                    ..Default::default()
                },
                actor: actor(),
            },
            t(24 * 8),
        ),
        (restrict(), t(24 * 9)),
        (
            C::LiftRestriction {
                actor: actor(),
                reason: reason("resolved"),
            },
            t(24 * 9),
        ),
        (C::RecordExport { actor: actor() }, t(24 * 10)),
        (erase(), t(24 * 11)),
    ])
}

#[test]
fn every_event_round_trips_through_the_codec_under_its_own_type_name() {
    let events = one_of_each();
    let mut names: Vec<&str> = events.iter().map(EventCodec::event_type).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        12,
        "not every event kind is covered: {names:?}"
    );
    for event in events {
        let payload = event.encode().unwrap();
        assert!(payload.get("type").is_none());
        let back =
            SubscriberEvent::decode(event.event_type(), event.schema_version(), payload).unwrap();
        assert_eq!(back, event);
        // serde with the `type` tag round-trips as well.
        let tagged = serde_json::to_value(&event).unwrap();
        assert_eq!(tagged["type"], event.event_type());
        assert_eq!(
            serde_json::from_value::<SubscriberEvent>(tagged).unwrap(),
            event
        );
    }
}

#[test]
fn the_erasure_event_holds_no_personal_data() {
    let events = one_of_each();
    let erased = events.last().unwrap();
    assert_eq!(erased.event_type(), "SubscriberErased");
    assert!(erased.personal_data_pointers().is_empty());
    let text = erased.encode().unwrap().to_string();
    assert!(!text.contains('@'), "{text}");
    assert!(!text.to_lowercase().contains("jane"), "{text}");
}

#[test]
fn personal_data_pointers_point_at_fields_that_exist() {
    for event in one_of_each() {
        let payload = event.encode().unwrap();
        for pointer in event.personal_data_pointers() {
            assert!(
                payload.pointer(pointer).is_some(),
                "{} has no {pointer}",
                event.event_type()
            );
        }
    }
}

#[test]
fn unknown_types_versions_and_bad_payloads_are_reported() {
    assert!(matches!(
        SubscriberEvent::decode("Nope", 1, Value::Null),
        Err(DecodeError::UnknownType { .. })
    ));
    assert!(matches!(
        SubscriberEvent::decode("SubscriptionRequested", 3, Value::Null),
        Err(DecodeError::UnknownVersion { .. })
    ));
    assert!(matches!(
        SubscriberEvent::decode("DataExported", 1, serde_json::json!({"actor": "a b"})),
        Err(DecodeError::Malformed { .. })
    ));
    let event = SubscriberEvent::SubscriptionRequested(SubscriptionRequested {
        request_id: rid(1),
        lists: lists(&["news"]),
        email: email(),
        profile: Profile::default(),
        locale: Locale::En,
        consent: consent(t(0)),
        confirm_by: t(1),
        at: t(0),
    });
    let mut payload = event.encode().unwrap();
    payload["email"] = Value::String("not an address".to_owned());
    assert!(matches!(
        SubscriberEvent::decode("SubscriptionRequested", 2, payload),
        Err(DecodeError::Malformed { .. })
    ));
}
