//! One given/when/then test per rule of the subscriber lifecycle (see the crate docs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::TimeDelta;
use newsletter_domain::{
    ActorName, Decider, DomainError, FieldChange, ListStatus, Locale, PersonName, Profile,
    ProfileChanges, RequestOutcome, Subscriber, SubscriberCommand, SubscriberEvent,
    SubscriptionConfirmed, SubscriptionRequestCancelled, SubscriptionRequested, UnsubscribeChannel,
    UnsubscribeScope, Unsubscribed,
};
use support::*;

fn unsubscribe(scope: UnsubscribeScope) -> SubscriberCommand {
    SubscriberCommand::Unsubscribe {
        scope,
        channel: UnsubscribeChannel::OneClick,
    }
}

fn expire(n: u128) -> SubscriberCommand {
    SubscriberCommand::ExpirePending { request_id: rid(n) }
}

fn confirmed_on_news() -> Vec<SubscriberEvent> {
    history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
    ])
}

#[test]
fn a_request_starts_a_pending_request_with_consent() {
    let state = given_nothing()
        .when(request(1, &["news", "events"], t(0)), t(0))
        .then_events(vec![SubscriberEvent::SubscriptionRequested(
            SubscriptionRequested {
                request_id: rid(1),
                lists: lists(&["news", "events"]),
                email: email(),
                profile: Profile::default(),
                locale: Locale::Da,
                consent: consent(t(0)),
                confirm_by: t(0) + TimeDelta::days(7),
                at: t(0),
            },
        )]);
    assert_eq!(state.status_of(&list("news")), Some(ListStatus::Pending));
    assert_eq!(
        state.pending_request().map(|p| p.request_id()),
        Some(rid(1))
    );
    assert!(!state.is_listed(&list("news")));
    assert!(state.may_send_confirmation(t(0)));
}

#[test]
fn a_request_needs_a_list_and_a_future_confirm_by() {
    let SubscriberCommand::RequestSubscription {
        request_id,
        email,
        profile,
        locale,
        consent,
        confirm_by,
        ..
    } = request(1, &["news"], t(0))
    else {
        unreachable!()
    };
    given_nothing()
        .when(
            SubscriberCommand::RequestSubscription {
                request_id,
                lists: Default::default(),
                email: email.clone(),
                profile: profile.clone(),
                locale,
                consent: consent.clone(),
                confirm_by,
            },
            t(0),
        )
        .then_error(DomainError::NoLists);
    given_nothing()
        .when(
            SubscriberCommand::RequestSubscription {
                request_id,
                lists: lists(&["news"]),
                email,
                profile,
                locale,
                consent,
                confirm_by: t(0),
            },
            t(0),
        )
        .then_error(DomainError::ConfirmByNotInFuture);
}

#[test]
fn confirming_lists_the_subscriber() {
    let state = given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(confirm(1, t(1)), t(1))
        .then_events(vec![SubscriberEvent::SubscriptionConfirmed(
            SubscriptionConfirmed {
                request_id: rid(1),
                lists: lists(&["news"]),
                consent: consent(t(1)),
                at: t(1),
            },
        )]);
    assert!(state.is_listed(&list("news")));
    assert_eq!(state.email(), Some(&email()));
    assert!(state.pending_request().is_none());
    assert_eq!(
        state.request_outcome(rid(1)),
        Some(RequestOutcome::Confirmed)
    );
}

#[test]
fn confirming_twice_succeeds_with_no_new_event() {
    given(confirmed_on_news())
        .when(confirm(1, t(2)), t(2))
        .then_nothing();
}

#[test]
fn confirming_after_the_request_expired_is_refused() {
    given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (expire(1), t(24 * 8)),
    ]))
    .when(confirm(1, t(24 * 8)), t(24 * 8))
    .then_error(DomainError::RequestExpired { request_id: rid(1) });
}

#[test]
fn confirming_after_confirm_by_is_refused_even_before_expiry_ran() {
    given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(confirm(1, t(24 * 7 + 1)), t(24 * 7 + 1))
        .then_error(DomainError::RequestExpired { request_id: rid(1) });
}

#[test]
fn confirming_an_unknown_or_superseded_request_is_refused() {
    given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(confirm(9, t(1)), t(1))
        .then_error(DomainError::UnknownRequest { request_id: rid(9) });
    given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (request(2, &["news"], t(1)), t(1)),
    ]))
    .when(confirm(1, t(2)), t(2))
    .then_error(DomainError::StaleRequest { request_id: rid(1) });
}

#[test]
fn a_new_request_supersedes_the_pending_one_and_restores_its_other_lists() {
    let (_, state) = given(history(&[(request(1, &["news", "events"], t(0)), t(0))]))
        .when(request(2, &["news"], t(1)), t(1))
        .then_accepted();
    assert_eq!(
        state.request_outcome(rid(1)),
        Some(RequestOutcome::Superseded)
    );
    assert_eq!(state.status_of(&list("events")), None);
    assert_eq!(state.status_of(&list("news")), Some(ListStatus::Pending));
}

#[test]
fn retrying_a_request_with_the_same_id_is_a_no_op() {
    given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(request(1, &["news"], t(0)), t(0))
        .then_nothing();
}

#[test]
fn requesting_lists_already_confirmed_is_a_no_op() {
    given(confirmed_on_news())
        .when(request(2, &["news"], t(2)), t(2))
        .then_nothing();
}

#[test]
fn requesting_more_lists_while_confirmed_adds_only_the_new_ones() {
    let (events, state) = given(confirmed_on_news())
        .when(request(2, &["news", "events"], t(2)), t(2))
        .then_accepted();
    let [SubscriberEvent::SubscriptionRequested(requested)] = events.as_slice() else {
        panic!("expected one SubscriptionRequested, got {events:?}");
    };
    assert_eq!(requested.lists, lists(&["events"]));
    assert!(state.is_listed(&list("news")));
    assert_eq!(state.status_of(&list("events")), Some(ListStatus::Pending));
}

#[test]
fn unsubscribing_a_pending_request_cancels_it() {
    let state = given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(unsubscribe(UnsubscribeScope::List(list("news"))), t(1))
        .then_events(vec![
            SubscriberEvent::Unsubscribed(Unsubscribed {
                lists: lists(&["news"]),
                channel: UnsubscribeChannel::OneClick,
                at: t(1),
            }),
            SubscriberEvent::SubscriptionRequestCancelled(SubscriptionRequestCancelled {
                request_id: rid(1),
                at: t(1),
            }),
        ]);
    assert!(state.pending_request().is_none());
    assert_eq!(
        state.status_of(&list("news")),
        Some(ListStatus::Unsubscribed)
    );
    assert!(!state.may_send_confirmation(t(1)));
    given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (unsubscribe(UnsubscribeScope::List(list("news"))), t(1)),
    ]))
    .when(confirm(1, t(2)), t(2))
    .then_error(DomainError::StaleRequest { request_id: rid(1) });
}

fn cancel(n: u128) -> SubscriberCommand {
    SubscriberCommand::CancelRequest { request_id: rid(n) }
}

#[test]
fn cancelling_a_request_leaves_confirmed_lists_alone() {
    // Confirmed on news; somebody (or the person) then asks for events too; the mailbox owner
    // answers "this wasn't me": only the request for events ends.
    let mut events = confirmed_on_news();
    events.extend(history(&[(request(2, &["news", "events"], t(2)), t(2))]));
    let state = given(events.clone())
        .when(cancel(2), t(3))
        .then_events(vec![SubscriberEvent::SubscriptionRequestCancelled(
            SubscriptionRequestCancelled {
                request_id: rid(2),
                at: t(3),
            },
        )]);
    assert!(state.is_listed(&list("news")));
    assert_eq!(state.status_of(&list("events")), None);
    assert!(state.pending_request().is_none());
    assert!(!state.may_send_confirmation(t(3)));
    events.push(SubscriberEvent::SubscriptionRequestCancelled(
        SubscriptionRequestCancelled {
            request_id: rid(2),
            at: t(3),
        },
    ));
    given(events.clone()).when(cancel(2), t(4)).then_nothing();
    given(events)
        .when(confirm(2, t(4)), t(4))
        .then_error(DomainError::StaleRequest { request_id: rid(2) });
    given(confirmed_on_news())
        .when(cancel(9), t(2))
        .then_error(DomainError::UnknownRequest { request_id: rid(9) });
}

#[test]
fn unsubscribing_one_of_several_pending_lists_keeps_the_request() {
    let state = given(history(&[(request(1, &["news", "events"], t(0)), t(0))]))
        .when(unsubscribe(UnsubscribeScope::List(list("news"))), t(1))
        .then_events(vec![SubscriberEvent::Unsubscribed(Unsubscribed {
            lists: lists(&["news"]),
            channel: UnsubscribeChannel::OneClick,
            at: t(1),
        })]);
    assert_eq!(
        state.pending_request().map(|p| p.lists().clone()),
        Some(lists(&["events"]))
    );
}

#[test]
fn unsubscribing_all_withdraws_every_list_and_nothing_left_is_a_no_op() {
    let events = history(&[
        (request(1, &["news", "events"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
    ]);
    let state = given(events.clone())
        .when(unsubscribe(UnsubscribeScope::All), t(2))
        .then_events(vec![SubscriberEvent::Unsubscribed(Unsubscribed {
            lists: lists(&["news", "events"]),
            channel: UnsubscribeChannel::OneClick,
            at: t(2),
        })]);
    assert!(!state.is_listed(&list("news")));
    given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (unsubscribe(UnsubscribeScope::All), t(2)),
    ]))
    .when(unsubscribe(UnsubscribeScope::All), t(3))
    .then_nothing();
    given_nothing()
        .when(unsubscribe(UnsubscribeScope::List(list("news"))), t(0))
        .then_nothing();
}

#[test]
fn subscribing_again_after_an_unsubscribe_starts_a_new_pending_request_with_new_consent() {
    let (events, state) = given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (unsubscribe(UnsubscribeScope::All), t(2)),
    ]))
    .when(request(2, &["news"], t(3)), t(3))
    .then_accepted();
    let [SubscriberEvent::SubscriptionRequested(requested)] = events.as_slice() else {
        panic!("expected one SubscriptionRequested, got {events:?}");
    };
    assert_eq!(requested.request_id, rid(2));
    assert_eq!(requested.consent, consent(t(3)));
    assert_eq!(state.status_of(&list("news")), Some(ListStatus::Pending));
    assert!(!state.is_listed(&list("news")));
}

#[test]
fn an_expired_resubscription_leaves_the_list_unsubscribed() {
    let state = given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (unsubscribe(UnsubscribeScope::All), t(2)),
        (request(2, &["news"], t(3)), t(3)),
    ]))
    .when(expire(2), t(24 * 8))
    .then_accepted()
    .1;
    assert_eq!(
        state.status_of(&list("news")),
        Some(ListStatus::Unsubscribed)
    );
    assert_eq!(
        state.membership(&list("news")).map(|m| m.since()),
        Some(t(2))
    );
}

#[test]
fn a_pending_request_cannot_expire_before_confirm_by_and_expiring_twice_is_a_no_op() {
    given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(expire(1), t(1))
        .then_error(DomainError::NotYetExpired {
            request_id: rid(1),
            confirm_by: t(0) + TimeDelta::days(7),
        });
    given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (expire(1), t(24 * 8)),
    ]))
    .when(expire(1), t(24 * 9))
    .then_nothing();
    given(confirmed_on_news())
        .when(expire(1), t(24 * 9))
        .then_nothing();
}

#[test]
fn a_restricted_subscriber_is_never_mailed_nor_listed() {
    let events = history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (request(2, &["events"], t(2)), t(2)),
        (restrict(), t(3)),
    ]);
    let state = Subscriber::fold(&events);
    assert!(!state.is_mailable());
    assert!(!state.is_listed(&list("news")));
    assert!(!state.may_send_confirmation(t(3)));
    given(events.clone())
        .when(mail_sent(2, 1), t(3))
        .then_error(DomainError::Restricted);
    given(events.clone())
        .when(request(3, &["product"], t(4)), t(4))
        .then_error(DomainError::Restricted);
    given(events.clone()).when(restrict(), t(4)).then_nothing();
    let lifted = given(events)
        .when(
            SubscriberCommand::LiftRestriction {
                actor: actor(),
                reason: reason("resolved"),
            },
            t(5),
        )
        .then_accepted()
        .1;
    assert!(lifted.is_listed(&list("news")));
}

#[test]
fn a_restricted_subscriber_can_still_confirm_but_is_not_listed() {
    let state = given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (restrict(), t(1)),
    ]))
    .when(confirm(1, t(2)), t(2))
    .then_accepted()
    .1;
    assert_eq!(state.status_of(&list("news")), Some(ListStatus::Confirmed));
    assert!(!state.is_listed(&list("news")));
}

#[test]
fn at_most_three_confirmation_mails_in_24_hours() {
    let events = history(&[
        (request(1, &["news"], t(0)), t(0)),
        (mail_sent(1, 1), t(0)),
        (request(2, &["news"], t(1)), t(1)),
        (mail_sent(2, 2), t(1)),
        (request(3, &["news"], t(2)), t(2)),
        (mail_sent(3, 3), t(2)),
    ]);
    let state = Subscriber::fold(&events);
    assert_eq!(state.confirmation_mails_in_window(t(3)), 3);
    assert!(!state.may_send_confirmation(t(3)));
    given(events.clone())
        .when(request(4, &["news"], t(3)), t(3))
        .then_error(DomainError::TooManyConfirmationMails { retry_after: t(24) });
    given(events)
        .when(request(4, &["news"], t(24)), t(24))
        .then_accepted();
}

#[test]
fn recording_the_same_mail_twice_is_a_no_op_and_stale_requests_are_refused() {
    let events = history(&[(request(1, &["news"], t(0)), t(0)), (mail_sent(1, 1), t(0))]);
    given(events.clone())
        .when(mail_sent(1, 1), t(1))
        .then_nothing();
    given(confirmed_on_news())
        .when(mail_sent(1, 2), t(2))
        .then_error(DomainError::StaleRequest { request_id: rid(1) });
}

#[test]
fn a_permanent_mail_failure_stops_sending() {
    let state = given(history(&[(request(1, &["news"], t(0)), t(0))]))
        .when(
            SubscriberCommand::RecordConfirmationMailFailed {
                request_id: rid(1),
                reason: reason("550 mailbox unavailable"),
                permanent: true,
            },
            t(0),
        )
        .then_accepted()
        .1;
    assert!(
        state
            .pending_request()
            .is_some_and(|p| p.is_undeliverable())
    );
    assert!(!state.may_send_confirmation(t(1)));
}

#[test]
fn the_profile_of_a_request_applies_only_on_confirmation_and_rectify_is_effective_only() {
    let jane = PersonName::parse("Jane").unwrap();
    let SubscriberCommand::RequestSubscription {
        request_id,
        lists,
        email,
        locale,
        consent,
        confirm_by,
        ..
    } = request(1, &["news"], t(0))
    else {
        unreachable!()
    };
    let with_name = SubscriberCommand::RequestSubscription {
        request_id,
        lists,
        email,
        profile: Profile {
            name: Some(jane.clone()),
            ..Profile::default()
        },
        locale,
        consent,
        confirm_by,
    };
    let requested = history(&[(with_name, t(0))]);
    let state = Subscriber::fold(&requested);
    assert!(state.profile().is_empty());
    let confirmed = given(requested.clone())
        .when(confirm(1, t(1)), t(1))
        .then_accepted()
        .1;
    assert_eq!(confirmed.profile().name.as_ref(), Some(&jane));

    let mut all = requested;
    all.extend(
        given(all.clone())
            .when(confirm(1, t(1)), t(1))
            .then_accepted()
            .0,
    );
    let same_name = ProfileChanges {
        name: FieldChange::Set(jane),
        ..ProfileChanges::default()
    };
    given(all.clone())
        .when(
            SubscriberCommand::RectifyProfile {
                changes: same_name,
                actor: actor(),
            },
            t(2),
        )
        .then_nothing();
    let cleared = given(all)
        .when(
            SubscriberCommand::RectifyProfile {
                changes: ProfileChanges {
                    name: FieldChange::Clear,
                    ..ProfileChanges::default()
                },
                actor: actor(),
            },
            t(2),
        )
        .then_accepted()
        .1;
    assert!(cleared.profile().is_empty());
}

#[test]
fn admin_commands_need_an_existing_subscriber() {
    given_nothing()
        .when(SubscriberCommand::RecordExport { actor: actor() }, t(0))
        .then_error(DomainError::UnknownSubscriber);
    given_nothing()
        .when(erase(), t(0))
        .then_error(DomainError::UnknownSubscriber);
    given_nothing()
        .when(restrict(), t(0))
        .then_error(DomainError::UnknownSubscriber);
}

#[test]
fn exports_are_recorded_every_time() {
    let (events, _) = given(confirmed_on_news())
        .when(
            SubscriberCommand::RecordExport {
                actor: ActorName::parse("dpo").unwrap(),
            },
            t(2),
        )
        .then_accepted();
    assert!(matches!(
        events.as_slice(),
        [SubscriberEvent::DataExported(e)] if e.at == t(2)
    ));
}

#[test]
fn erasure_drops_all_personal_data() {
    let state = given(history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (request(2, &["events"], t(2)), t(2)),
    ]))
    .when(erase(), t(3))
    .then_accepted()
    .1;
    assert!(state.is_erased());
    assert_eq!(state.erased_at(), Some(t(3)));
    assert!(state.email().is_none());
    assert!(state.profile().is_empty());
    assert!(state.pending_request().is_none());
    assert_eq!(state.lists().count(), 0);
    assert!(!state.is_mailable());
}

#[test]
fn after_erasure_every_command_is_refused_or_a_no_op_as_the_table_says() {
    let erased = history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
        (erase(), t(2)),
    ]);
    let now = t(3);
    let no_ops = [
        erase(),
        unsubscribe(UnsubscribeScope::All),
        unsubscribe(UnsubscribeScope::List(list("news"))),
        expire(1),
    ];
    for command in no_ops {
        given(erased.clone()).when(command, now).then_nothing();
    }
    let refused = [
        request(2, &["news"], now),
        mail_sent(1, 1),
        SubscriberCommand::RecordConfirmationMailFailed {
            request_id: rid(1),
            reason: reason("x"),
            permanent: false,
        },
        confirm(1, now),
        SubscriberCommand::RectifyProfile {
            changes: ProfileChanges::default(),
            actor: actor(),
        },
        restrict(),
        SubscriberCommand::LiftRestriction {
            actor: actor(),
            reason: reason("x"),
        },
        SubscriberCommand::RecordExport { actor: actor() },
    ];
    for command in refused {
        given(erased.clone())
            .when(command, now)
            .then_error(DomainError::Erased);
    }
}

/// Crypto-shredding: the store hands out `PersonalDataErased` in place of every event whose key
/// was destroyed; folding those markers and the `SubscriberErased` that follows gives exactly the
/// erased state, and commands behave as after any erasure.
#[test]
fn redacted_events_fold_to_the_erased_state() {
    use newsletter_domain::{EventCodec, PersonalDataErased, SubscriberErased, SubscriberState};
    let marker = |original: &str, n: i64| {
        SubscriberEvent::PersonalDataErased(PersonalDataErased {
            original_type: original.to_owned(),
            original_schema_version: 1,
            at: t(n),
        })
    };
    let erased = SubscriberEvent::SubscriberErased(SubscriberErased {
        actor: actor(),
        reference: newsletter_domain::ErasureReference::parse("DSR-1").unwrap(),
        at: t(3),
    });
    let redacted = vec![
        marker("SubscriptionRequested", 0),
        marker("SubscriptionConfirmed", 1),
        erased.clone(),
    ];
    let plain = history(&[
        (request(1, &["news"], t(0)), t(0)),
        (confirm(1, t(1)), t(1)),
    ])
    .into_iter()
    .chain([erased])
    .collect::<Vec<_>>();
    let fold = |events: &[SubscriberEvent]| {
        events
            .iter()
            .fold(SubscriberState::default(), Subscriber::evolve)
    };
    assert_eq!(fold(&redacted), fold(&plain));
    assert!(fold(&redacted).is_erased());
    // A marker alone holds nothing, but the stream names a subscriber (its key is missing, not
    // destroyed: a vault restored from an old backup), who can be erased.
    let keyless = Subscriber::evolve(Default::default(), &marker("SubscriptionRequested", 0));
    assert!(!keyless.is_new());
    assert!(!keyless.is_erased());
    assert!(keyless.email().is_none() && keyless.lists().next().is_none());
    assert_eq!(
        Subscriber::evolve(keyless.clone(), &marker("ProfileRectified", 1)),
        keyless
    );
    given(vec![marker("SubscriptionRequested", 0)])
        .when(erase(), t(4))
        .then_events(vec![SubscriberEvent::SubscriberErased(SubscriberErased {
            actor: actor(),
            reference: newsletter_domain::ErasureReference::parse("DSR-2026-0042").unwrap(),
            at: t(4),
        })]);
    given(redacted.clone()).when(erase(), t(4)).then_nothing();
    given(redacted)
        .when(request(9, &["news"], t(4)), t(4))
        .then_error(DomainError::Erased);
    // It decodes under its own type name and holds no personal data pointers.
    let m = marker("SubscriptionRequested", 0);
    assert_eq!(m.event_type(), "PersonalDataErased");
    assert!(m.personal_data_pointers().is_empty());
    let back = SubscriberEvent::decode("PersonalDataErased", 1, m.encode().unwrap()).unwrap();
    assert_eq!(back, m);
}
