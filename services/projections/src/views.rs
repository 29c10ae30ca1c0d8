//! What the read models answer with.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use newsletter_domain::{EmailAddress, ListId, ListStatus, Locale, PersonName, SubscriberId};
use newsletter_eventstore::Position;
use uuid::Uuid;

/// A subscriber's status on one list as the read side reports it: the domain's [`ListStatus`],
/// except that every list reads `Restricted` while the subscriber's processing is restricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberStatus {
    /// Requested, waiting for confirmation.
    Pending,
    /// Confirmed (double opt-in done) and not restricted: receives the list's newsletter.
    Confirmed,
    /// Consent withdrawn, or the request for the list cancelled.
    Unsubscribed,
    /// Processing restricted (GDPR art. 18): kept, not mailed, not listed.
    Restricted,
}

impl MemberStatus {
    /// Every status, in a stable order.
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Confirmed,
        Self::Unsubscribed,
        Self::Restricted,
    ];

    /// What queries report for a domain status of a subscriber who is or is not restricted.
    #[must_use]
    pub const fn reported(status: ListStatus, restricted: bool) -> Self {
        if restricted {
            return Self::Restricted;
        }
        match status {
            ListStatus::Pending => Self::Pending,
            ListStatus::Confirmed => Self::Confirmed,
            ListStatus::Unsubscribed => Self::Unsubscribed,
        }
    }

    /// The stored and reported name: `pending`, `confirmed`, `unsubscribed` or `restricted`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
            Self::Restricted => "restricted",
        }
    }

    /// The status a stored name names.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored name of a domain [`ListStatus`].
pub(crate) const fn list_status_name(status: ListStatus) -> &'static str {
    match status {
        ListStatus::Pending => "pending",
        ListStatus::Confirmed => "confirmed",
        ListStatus::Unsubscribed => "unsubscribed",
    }
}

/// One list of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// The list.
    pub list: ListId,
    /// Its reported status.
    pub status: MemberStatus,
    /// Since when the domain status holds (for `Restricted`: the underlying status's time),
    /// to the microsecond.
    pub since: DateTime<Utc>,
}

/// One subscriber as the API reads it. Holds personal data (address and name): never log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberView {
    /// The subscriber.
    pub id: SubscriberId,
    /// The confirmed locale, or else the pending request's.
    pub locale: Option<Locale>,
    /// True while processing is restricted.
    pub restricted: bool,
    /// The confirmed address, or else the pending request's (see `SubscriberState::email`).
    pub email: Option<EmailAddress>,
    /// The confirmed profile's name.
    pub name: Option<PersonName>,
    /// Every list the subscriber has a status on, in list order.
    pub lists: Vec<MembershipView>,
    /// The stream version the view reflects.
    pub version: u64,
    /// The log position of the last event the view reflects.
    pub updated: Position,
}

impl SubscriberView {
    /// The reported status on `list`, if the subscriber has one.
    #[must_use]
    pub fn status_on(&self, list: &ListId) -> Option<MemberStatus> {
        self.lists
            .iter()
            .find(|m| &m.list == list)
            .map(|m| m.status)
    }
}

/// One member of a list listing. Holds personal data: never log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The subscriber.
    pub subscriber_id: SubscriberId,
    /// The reported status (the one the listing asked for).
    pub status: MemberStatus,
    /// Since when.
    pub since: DateTime<Utc>,
    /// The address to send to.
    pub email: Option<EmailAddress>,
    /// The name, for a salutation.
    pub name: Option<PersonName>,
    /// The language of the mail.
    pub locale: Option<Locale>,
}

/// Where a list listing continues: after this subscriber id (listings are ordered by id).
/// Carries no personal data; its text form is the UUID, for query strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberCursor(pub SubscriberId);

impl fmt::Display for MemberCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MemberCursor {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(|uuid| Self(SubscriberId::from_uuid(uuid)))
    }
}

/// How many subscribers have one reported status on one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCount {
    /// The list.
    pub list: ListId,
    /// The reported status.
    pub status: MemberStatus,
    /// How many.
    pub count: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events replayed.
    pub events: u64,
    /// Subscriber rows after the rebuild.
    pub subscribers: u64,
    /// (list, subscriber) rows after the rebuild.
    pub memberships: u64,
}
