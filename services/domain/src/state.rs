//! [`SubscriberState`]: what the decider knows about one subscriber, folded from its events,
//! and the queries the rest of the service asks of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::ReasonText;
use crate::consent::ConsentEvidence;
use crate::email::EmailAddress;
use crate::ids::{MessageId, RequestId};
use crate::list::ListId;
use crate::locale::Locale;
use crate::profile::Profile;

/// At most this many confirmation mails per address within [`CONFIRMATION_MAIL_WINDOW`].
pub const CONFIRMATION_MAIL_LIMIT: usize = 3;
/// The sliding window of [`CONFIRMATION_MAIL_LIMIT`]: the 24 hours before `now`.
pub const CONFIRMATION_MAIL_WINDOW: TimeDelta = TimeDelta::hours(24);

/// A subscriber's status on one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListStatus {
    /// Requested, waiting for confirmation.
    Pending,
    /// Confirmed (double opt-in done).
    Confirmed,
    /// Consent withdrawn (or the pending request for it cancelled).
    Unsubscribed,
}

/// A subscriber's membership of one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMembership {
    pub(crate) status: ListStatus,
    pub(crate) since: DateTime<Utc>,
    pub(crate) request_id: Option<RequestId>,
}

impl ListMembership {
    /// The status.
    #[must_use]
    pub const fn status(&self) -> ListStatus {
        self.status
    }

    /// Since when the status holds.
    #[must_use]
    pub const fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The request that made the list pending or confirmed it; `None` once unsubscribed.
    #[must_use]
    pub const fn request_id(&self) -> Option<RequestId> {
        self.request_id
    }
}

/// How a request that is no longer pending ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// The person confirmed it.
    Confirmed,
    /// It passed its `confirm_by` and was expired.
    Expired,
    /// Every one of its lists was unsubscribed before confirmation.
    Cancelled,
    /// A newer request replaced it.
    Superseded,
}

/// One confirmation mail handed to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMail {
    /// Its Message-ID.
    pub message_id: MessageId,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// The last failure to send a confirmation mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFailure {
    /// What went wrong.
    pub reason: ReasonText,
    /// True when retrying is pointless.
    pub permanent: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// The one subscription request waiting for confirmation. Until it is confirmed, its address,
/// profile and locale stay here and do not replace the subscriber's confirmed ones: anyone can
/// type anyone's address into a form, only the mailbox owner can confirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub(crate) request_id: RequestId,
    pub(crate) lists: BTreeSet<ListId>,
    pub(crate) email: EmailAddress,
    pub(crate) profile: Profile,
    pub(crate) locale: Locale,
    pub(crate) consent: ConsentEvidence,
    pub(crate) confirm_by: DateTime<Utc>,
    pub(crate) requested_at: DateTime<Utc>,
    pub(crate) mails: Vec<SentMail>,
    pub(crate) last_failure: Option<MailFailure>,
    /// Each pending list's membership before this request, restored on expiry or supersession.
    pub(crate) previous: BTreeMap<ListId, Option<ListMembership>>,
}

impl PendingRequest {
    /// The request's id (named by its confirm token).
    #[must_use]
    pub const fn request_id(&self) -> RequestId {
        self.request_id
    }
    /// The lists it would confirm.
    #[must_use]
    pub const fn lists(&self) -> &BTreeSet<ListId> {
        &self.lists
    }
    /// The address to send the confirmation mail to.
    #[must_use]
    pub const fn email(&self) -> &EmailAddress {
        &self.email
    }
    /// The profile typed into the form.
    #[must_use]
    pub const fn profile(&self) -> &Profile {
        &self.profile
    }
    /// The language of the confirmation mail.
    #[must_use]
    pub const fn locale(&self) -> Locale {
        self.locale
    }
    /// The consent evidence at signup.
    #[must_use]
    pub const fn consent(&self) -> &ConsentEvidence {
        &self.consent
    }
    /// Until when it can be confirmed.
    #[must_use]
    pub const fn confirm_by(&self) -> DateTime<Utc> {
        self.confirm_by
    }
    /// When it was requested.
    #[must_use]
    pub const fn requested_at(&self) -> DateTime<Utc> {
        self.requested_at
    }
    /// The confirmation mails sent for it.
    #[must_use]
    pub fn mails_sent(&self) -> &[SentMail] {
        &self.mails
    }
    /// The last failure to send its confirmation mail.
    #[must_use]
    pub const fn last_failure(&self) -> Option<&MailFailure> {
        self.last_failure.as_ref()
    }
    /// True after a permanent failure: do not try again.
    #[must_use]
    pub fn is_undeliverable(&self) -> bool {
        self.last_failure.as_ref().is_some_and(|f| f.permanent)
    }
}

/// Where a subscriber is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Lifecycle {
    /// An empty stream.
    #[default]
    New,
    /// At least one request was recorded.
    Active,
    /// Erased: terminal, holds no personal data.
    Erased {
        /// When.
        at: DateTime<Utc>,
    },
}

/// The state of one subscriber, folded from its events by [`crate::Subscriber`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberState {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) email: Option<EmailAddress>,
    pub(crate) profile: Profile,
    pub(crate) locale: Option<Locale>,
    pub(crate) lists: BTreeMap<ListId, ListMembership>,
    pub(crate) pending: Option<PendingRequest>,
    pub(crate) closed_requests: BTreeMap<RequestId, RequestOutcome>,
    pub(crate) restricted: bool,
    pub(crate) confirmation_mails: Vec<DateTime<Utc>>,
    /// When consent last changed: a request, confirmation, unsubscription, cancellation or
    /// expiry, or a restriction lifted. Absent in snapshots written before it existed.
    #[serde(default)]
    pub(crate) last_change: Option<DateTime<Utc>>,
}

impl SubscriberState {
    /// True for an empty stream (no request ever recorded).
    #[must_use]
    pub fn is_new(&self) -> bool {
        self.lifecycle == Lifecycle::New
    }

    /// True once erased.
    #[must_use]
    pub fn is_erased(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Erased { .. })
    }

    /// When the subscriber was erased.
    #[must_use]
    pub fn erased_at(&self) -> Option<DateTime<Utc>> {
        match self.lifecycle {
            Lifecycle::Erased { at } => Some(at),
            _ => None,
        }
    }

    /// When the subscriber's consent last changed: the time of its latest request,
    /// confirmation, unsubscription, cancellation or expiry, or of a restriction being lifted.
    /// Retention counts its period from here. `None` before any of these (or once erased).
    #[must_use]
    pub const fn last_change(&self) -> Option<DateTime<Utc>> {
        self.last_change
    }

    /// True while processing is restricted.
    #[must_use]
    pub const fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// The confirmed address, or else the pending request's.
    #[must_use]
    pub fn email(&self) -> Option<&EmailAddress> {
        self.email
            .as_ref()
            .or_else(|| self.pending.as_ref().map(|p| &p.email))
    }

    /// The confirmed profile (a pending request's profile is in [`Self::pending_request`]).
    #[must_use]
    pub const fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The confirmed locale, or else the pending request's.
    #[must_use]
    pub fn locale(&self) -> Option<Locale> {
        self.locale
            .or_else(|| self.pending.as_ref().map(|p| p.locale))
    }

    /// The status on `list`; `None` when the subscriber never had anything to do with it.
    #[must_use]
    pub fn status_of(&self, list: &ListId) -> Option<ListStatus> {
        self.lists.get(list).map(|m| m.status)
    }

    /// The membership of `list`, with its `since`.
    #[must_use]
    pub fn membership(&self, list: &ListId) -> Option<&ListMembership> {
        self.lists.get(list)
    }

    /// Every list the subscriber has a status on.
    pub fn lists(&self) -> impl Iterator<Item = (&ListId, &ListMembership)> {
        self.lists.iter()
    }

    /// True when the subscriber may be sent any mail at all: known address, not restricted,
    /// not erased. Never true while restricted or erased.
    #[must_use]
    pub fn is_mailable(&self) -> bool {
        !self.is_erased() && !self.restricted && self.email().is_some()
    }

    /// True when newsletters of `list` go to this subscriber: confirmed on it and mailable.
    #[must_use]
    pub fn is_listed(&self, list: &ListId) -> bool {
        self.is_mailable() && self.status_of(list) == Some(ListStatus::Confirmed)
    }

    /// The request waiting for confirmation, if any.
    #[must_use]
    pub const fn pending_request(&self) -> Option<&PendingRequest> {
        self.pending.as_ref()
    }

    /// How a request that is no longer pending ended; `None` for the pending or unknown ones.
    #[must_use]
    pub fn request_outcome(&self, request_id: RequestId) -> Option<RequestOutcome> {
        self.closed_requests.get(&request_id).copied()
    }

    /// How many confirmation mails were sent in the 24 hours before `now` (`(now - 24 h, now]`).
    #[must_use]
    pub fn confirmation_mails_in_window(&self, now: DateTime<Utc>) -> usize {
        self.mails_in_window(now).len()
    }

    /// When another confirmation mail will be allowed, if the limit is reached at `now`.
    #[must_use]
    pub fn confirmation_retry_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let recent = self.mails_in_window(now);
        let oldest_to_leave = recent.len().checked_sub(CONFIRMATION_MAIL_LIMIT)?;
        recent
            .get(oldest_to_leave)
            .map(|at| *at + CONFIRMATION_MAIL_WINDOW)
    }

    /// True when the mailer may send the pending request's confirmation mail now: mailable,
    /// a pending request that is neither past `confirm_by` nor undeliverable, and fewer than
    /// three confirmation mails in the last 24 hours. The mailer asks this before every send.
    #[must_use]
    pub fn may_send_confirmation(&self, now: DateTime<Utc>) -> bool {
        self.is_mailable()
            && self
                .pending
                .as_ref()
                .is_some_and(|p| now <= p.confirm_by && !p.is_undeliverable())
            && self.confirmation_mails_in_window(now) < CONFIRMATION_MAIL_LIMIT
    }

    fn mails_in_window(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let start = now - CONFIRMATION_MAIL_WINDOW;
        let mut recent: Vec<_> = self
            .confirmation_mails
            .iter()
            .copied()
            .filter(|at| *at > start && *at <= now)
            .collect();
        recent.sort_unstable();
        recent
    }

    /// True when `request_id` is the pending request or one that ended.
    pub(crate) fn knows_request(&self, request_id: RequestId) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.request_id == request_id)
            || self.closed_requests.contains_key(&request_id)
    }

    /// The pending request if it has this id.
    pub(crate) fn pending_with(&self, request_id: RequestId) -> Option<&PendingRequest> {
        self.pending.as_ref().filter(|p| p.request_id == request_id)
    }
}
