//! Builders and the given/when/then helper shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use newsletter_domain::{
    ActorName, ConsentEvidence, Decider, DomainError, EmailAddress, ErasureReference, ListCatalog,
    ListId, Locale, MessageId, PolicyVersion, Profile, ReasonText, RequestId, SourceId, Subscriber,
    SubscriberCommand, SubscriberEvent, SubscriberState, UserAgent,
};
use uuid::Uuid;

/// 2026-11-25 09:00 UTC plus `hours`.
pub fn t(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap() + TimeDelta::hours(hours)
}

pub fn catalog() -> ListCatalog {
    ListCatalog::new(["news", "events", "product"]).unwrap()
}

pub fn list(id: &str) -> ListId {
    catalog().parse(id).unwrap()
}

pub fn lists(ids: &[&str]) -> BTreeSet<ListId> {
    ids.iter().map(|id| list(id)).collect()
}

pub fn rid(n: u128) -> RequestId {
    RequestId::from_uuid(Uuid::from_u128(n))
}

pub fn email() -> EmailAddress {
    EmailAddress::parse("Jane.Doe@Example.com").unwrap()
}

pub fn actor() -> ActorName {
    ActorName::parse("dpo").unwrap()
}

pub fn reason(text: &str) -> ReasonText {
    ReasonText::parse(text).unwrap()
}

pub fn message_id(n: u32) -> MessageId {
    MessageId::parse(&format!("<{n}@newsletter.example>")).unwrap()
}

pub fn consent(at: DateTime<Utc>) -> ConsentEvidence {
    ConsentEvidence {
        policy_version: PolicyVersion::parse("2026-11").unwrap(),
        source: Some(SourceId::parse("footer-form").unwrap()),
        at,
        ip: Some("192.0.2.7".parse().unwrap()),
        user_agent: Some(UserAgent::parse("Mozilla/5.0").unwrap()),
    }
}

pub fn request(n: u128, ids: &[&str], at: DateTime<Utc>) -> SubscriberCommand {
    SubscriberCommand::RequestSubscription {
        request_id: rid(n),
        lists: lists(ids),
        email: email(),
        profile: Profile::default(),
        locale: Locale::Da,
        consent: consent(at),
        confirm_by: at + TimeDelta::days(7),
    }
}

pub fn confirm(n: u128, at: DateTime<Utc>) -> SubscriberCommand {
    SubscriberCommand::Confirm {
        request_id: rid(n),
        consent: consent(at),
    }
}

pub fn mail_sent(n: u128, message: u32) -> SubscriberCommand {
    SubscriberCommand::RecordConfirmationMailSent {
        request_id: rid(n),
        message_id: message_id(message),
    }
}

pub fn restrict() -> SubscriberCommand {
    SubscriberCommand::Restrict {
        actor: actor(),
        reason: reason("disputes accuracy"),
    }
}

pub fn erase() -> SubscriberCommand {
    SubscriberCommand::Erase {
        actor: actor(),
        reference: ErasureReference::parse("DSR-2026-0042").unwrap(),
    }
}

/// Runs commands (each at its time) from an empty stream and returns all events. Panics on refusal.
pub fn history(commands: &[(SubscriberCommand, DateTime<Utc>)]) -> Vec<SubscriberEvent> {
    let mut state = SubscriberState::default();
    let mut events = Vec::new();
    for (command, now) in commands {
        let new = Subscriber::decide(&state, command, *now)
            .unwrap_or_else(|e| panic!("{} refused in the given: {e}", command.name()));
        for event in &new {
            state = Subscriber::evolve(state, event);
        }
        events.extend(new);
    }
    events
}

/// `given(events).when(command, now)` → a [`Then`] to assert on.
pub struct Given {
    events: Vec<SubscriberEvent>,
}

pub fn given(events: Vec<SubscriberEvent>) -> Given {
    Given { events }
}

pub fn given_nothing() -> Given {
    Given { events: vec![] }
}

pub struct Then {
    pub state_before: SubscriberState,
    pub result: Result<Vec<SubscriberEvent>, DomainError>,
}

impl Given {
    pub fn when(self, command: SubscriberCommand, now: DateTime<Utc>) -> Then {
        let state_before = Subscriber::fold(&self.events);
        let result = Subscriber::decide(&state_before, &command, now);
        Then {
            state_before,
            result,
        }
    }
}

impl Then {
    /// Asserts the exact events.
    pub fn then_events(self, expected: Vec<SubscriberEvent>) -> SubscriberState {
        let events = self.result.clone().expect("command was refused");
        assert_eq!(events, expected);
        self.apply(&events)
    }

    /// Asserts the command was accepted; returns the events and the state after them.
    pub fn then_accepted(self) -> (Vec<SubscriberEvent>, SubscriberState) {
        let events = self.result.clone().expect("command was refused");
        let state = self.apply(&events);
        (events, state)
    }

    /// Asserts an accepted no-op.
    pub fn then_nothing(self) {
        assert_eq!(self.result, Ok(vec![]));
    }

    /// Asserts the refusal.
    pub fn then_error(self, expected: DomainError) {
        assert_eq!(self.result, Err(expected));
    }

    fn apply(self, events: &[SubscriberEvent]) -> SubscriberState {
        events.iter().fold(self.state_before, Subscriber::evolve)
    }
}
