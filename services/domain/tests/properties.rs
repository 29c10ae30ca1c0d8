//! Property tests: arbitrary command sequences never panic and never reach a forbidden state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use newsletter_domain::{
    Decider, DomainError, EventCodec, FieldChange, ListId, ListStatus, Locale, PersonName,
    ProfileChanges, Subscriber, SubscriberCommand, SubscriberEvent, SubscriberState,
    UnsubscribeChannel, UnsubscribeScope, is_status_neutral,
};
use proptest::prelude::*;
use support::*;

const LISTS: [&str; 3] = ["news", "events", "product"];

#[derive(Debug, Clone)]
enum Spec {
    Request {
        req: u128,
        lists: Vec<usize>,
        confirm_hours: i64,
    },
    MailSent {
        req: u128,
        message: u32,
    },
    MailFailed {
        req: u128,
        permanent: bool,
    },
    Confirm {
        req: u128,
    },
    Unsubscribe {
        list: Option<usize>,
        channel: UnsubscribeChannel,
    },
    Rectify {
        name: u8,
    },
    Restrict,
    Lift,
    Expire {
        req: u128,
    },
    Cancel {
        req: u128,
    },
    Erase,
    Export,
}

fn spec() -> impl Strategy<Value = Spec> {
    let req = 1u128..4;
    prop_oneof![
        4 => (req.clone(), proptest::collection::vec(0usize..3, 1..3), 1i64..200)
            .prop_map(|(req, lists, confirm_hours)| Spec::Request { req, lists, confirm_hours }),
        3 => (req.clone(), 0u32..3).prop_map(|(req, message)| Spec::MailSent { req, message }),
        1 => (req.clone(), any::<bool>()).prop_map(|(req, permanent)| Spec::MailFailed { req, permanent }),
        4 => req.clone().prop_map(|req| Spec::Confirm { req }),
        2 => (proptest::option::of(0usize..3), prop_oneof![
                Just(UnsubscribeChannel::OneClick),
                Just(UnsubscribeChannel::Link),
                Just(UnsubscribeChannel::Api),
                Just(UnsubscribeChannel::Admin),
            ]).prop_map(|(list, channel)| Spec::Unsubscribe { list, channel }),
        1 => (0u8..3).prop_map(|name| Spec::Rectify { name }),
        1 => Just(Spec::Restrict),
        1 => Just(Spec::Lift),
        2 => req.clone().prop_map(|req| Spec::Expire { req }),
        1 => req.prop_map(|req| Spec::Cancel { req }),
        1 => Just(Spec::Erase),
        1 => Just(Spec::Export),
    ]
}

fn command(spec: &Spec, now: DateTime<Utc>) -> SubscriberCommand {
    match spec {
        Spec::Request {
            req,
            lists: picked,
            confirm_hours,
        } => {
            let ids: Vec<&str> = picked.iter().map(|i| LISTS[*i]).collect();
            let SubscriberCommand::RequestSubscription {
                request_id,
                lists,
                email,
                profile,
                locale,
                consent,
                ..
            } = request(*req, &ids, now)
            else {
                unreachable!()
            };
            SubscriberCommand::RequestSubscription {
                request_id,
                lists,
                email,
                profile,
                locale,
                consent,
                confirm_by: now + TimeDelta::hours(*confirm_hours),
            }
        }
        Spec::MailSent { req, message } => mail_sent(*req, *message),
        Spec::MailFailed { req, permanent } => SubscriberCommand::RecordConfirmationMailFailed {
            request_id: rid(*req),
            reason: reason("451 try again"),
            permanent: *permanent,
        },
        Spec::Confirm { req } => confirm(*req, now),
        Spec::Unsubscribe {
            list: which,
            channel,
        } => SubscriberCommand::Unsubscribe {
            scope: which.map_or(UnsubscribeScope::All, |i| {
                UnsubscribeScope::List(list(LISTS[i]))
            }),
            channel: *channel,
        },
        Spec::Rectify { name } => SubscriberCommand::RectifyProfile {
            changes: ProfileChanges {
                name: match name {
                    0 => FieldChange::Keep,
                    1 => FieldChange::Clear,
                    _ => FieldChange::Set(PersonName::parse("Jane").unwrap()),
                },
                ..ProfileChanges::default()
            },
            actor: actor(),
        },
        Spec::Restrict => restrict(),
        Spec::Lift => SubscriberCommand::LiftRestriction {
            actor: actor(),
            reason: reason("ok"),
        },
        Spec::Expire { req } => SubscriberCommand::ExpirePending {
            request_id: rid(*req),
        },
        Spec::Cancel { req } => SubscriberCommand::CancelRequest {
            request_id: rid(*req),
        },
        Spec::Erase => erase(),
        Spec::Export => SubscriberCommand::RecordExport { actor: actor() },
    }
}

/// Commands that record every time they are accepted; all others are idempotent.
fn records_every_time(command: &SubscriberCommand) -> bool {
    matches!(
        command,
        SubscriberCommand::RecordExport { .. }
            | SubscriberCommand::RecordConfirmationMailFailed { .. }
    )
}

fn lists_of(event: &SubscriberEvent) -> Option<(newsletter_domain::RequestId, &BTreeSet<ListId>)> {
    match event {
        SubscriberEvent::SubscriptionRequested(e) => Some((e.request_id, &e.lists)),
        SubscriberEvent::SubscriptionConfirmed(e) => Some((e.request_id, &e.lists)),
        _ => None,
    }
}

fn check_state(state: &SubscriberState, history: &[SubscriberEvent]) -> Result<(), TestCaseError> {
    if state.is_erased() {
        prop_assert!(state.email().is_none(), "erased state holds an email");
        prop_assert!(state.profile().is_empty(), "erased state holds a profile");
        prop_assert!(
            state.pending_request().is_none(),
            "erased state holds a request"
        );
        prop_assert_eq!(state.lists().count(), 0);
        prop_assert!(!state.is_mailable());
        return Ok(());
    }
    if state.is_restricted() {
        prop_assert!(!state.is_mailable());
    }
    for (list, membership) in state.lists() {
        prop_assert!(!state.is_restricted() || !state.is_listed(list));
        match membership.status() {
            ListStatus::Confirmed => {
                let request_id = membership.request_id();
                prop_assert!(request_id.is_some(), "confirmed {} without a request", list);
                let request_id = request_id.unwrap();
                let requested = history.iter().any(|e| {
                    matches!(e, SubscriberEvent::SubscriptionRequested(_))
                        && lists_of(e).is_some_and(|(r, l)| r == request_id && l.contains(list))
                });
                let confirmed = history.iter().any(|e| {
                    matches!(e, SubscriberEvent::SubscriptionConfirmed(_))
                        && lists_of(e).is_some_and(|(r, l)| r == request_id && l.contains(list))
                });
                prop_assert!(
                    requested && confirmed,
                    "{} confirmed without consent on record",
                    list
                );
            }
            ListStatus::Pending => {
                let pending = state.pending_request();
                prop_assert!(
                    pending.is_some_and(|p| p.lists().contains(list)
                        && membership.request_id() == Some(p.request_id())),
                    "{} pending outside the pending request",
                    list
                );
            }
            ListStatus::Unsubscribed => {}
        }
    }
    if let Some(pending) = state.pending_request() {
        prop_assert!(
            !pending.lists().is_empty(),
            "a pending request without lists"
        );
        prop_assert!(state.request_outcome(pending.request_id()).is_none());
        for list in pending.lists() {
            prop_assert_eq!(state.status_of(list), Some(ListStatus::Pending));
        }
    }
    Ok(())
}

/// Everything a status answer shows of a subscriber: each list's status and since when, the
/// locale, the restriction and the erasure.
type StatusFace = (
    Vec<(ListId, ListStatus, DateTime<Utc>)>,
    Option<Locale>,
    bool,
    bool,
);

fn status_face(state: &SubscriberState) -> StatusFace {
    (
        state
            .lists()
            .map(|(list, membership)| (list.clone(), membership.status(), membership.since()))
            .collect(),
        state.locale(),
        state.is_restricted(),
        state.is_erased(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_sequences_never_reach_a_forbidden_state(
        steps in proptest::collection::vec((spec(), 0i64..3000), 1..40)
    ) {
        let mut state = SubscriberState::default();
        let mut history: Vec<SubscriberEvent> = Vec::new();
        let mut now = t(0);
        for (spec, minutes) in &steps {
            now += TimeDelta::minutes(*minutes);
            let command = command(spec, now);
            let result = Subscriber::decide(&state, &command, now);
            prop_assert_eq!(&result, &Subscriber::decide(&state, &command, now), "decide is not deterministic");

            if state.is_erased() {
                prop_assert!(
                    matches!(&result, Ok(events) if events.is_empty()) || result == Err(DomainError::Erased),
                    "{} after erasure gave {:?}", command.name(), result
                );
            }
            let Ok(events) = result else { continue };
            for event in &events {
                if state.is_restricted() {
                    prop_assert!(!matches!(event, SubscriberEvent::ConfirmationMailSent(_)), "mail recorded while restricted");
                }
                prop_assert_eq!(event.at(), now);
                let back = SubscriberEvent::decode(event.event_type(), event.schema_version(), event.encode().unwrap());
                prop_assert_eq!(back.as_ref().ok(), Some(event), "codec round trip");
            }
            let before = state.clone();
            for event in &events {
                let next = Subscriber::evolve(state.clone(), event);
                if is_status_neutral(event.event_type()) {
                    prop_assert_eq!(
                        status_face(&next), status_face(&state),
                        "{} is listed as status-neutral but changed the statuses", event.event_type()
                    );
                }
                state = next;
            }
            history.extend(events.iter().cloned());
            check_state(&state, &history)?;
            prop_assert_eq!(&Subscriber::fold(&history), &state, "fold differs from step-wise evolve");

            if !events.is_empty() && !records_every_time(&command) {
                prop_assert_eq!(
                    Subscriber::decide(&state, &command, now),
                    Ok(vec![]),
                    "{} is not idempotent (state before: {:?})", command.name(), before
                );
            }
        }
    }
}
