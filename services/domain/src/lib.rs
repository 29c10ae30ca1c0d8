//! The subscriber domain of `newsletter`: value types parsed from outside input, the commands and
//! events of a subscriber's lifecycle, and the pure decider that holds every rule.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: callers pass time and ids in.
//!
//! # Value types
//!
//! Every value from outside goes through a `parse` constructor returning
//! `Result<_, `[`ValueError`]`>` (the error names the [`Field`] and a [`ValueError::code`]);
//! fields are private, and `Deserialize` goes through the same `parse`, so stored data is
//! re-validated. Personal data types ([`EmailAddress`], [`PersonName`], [`CompanyName`],
//! [`PostalAddress`], [`PhoneNumber`], [`UserAgent`], [`ReasonText`]) have a redacted `Debug`
//! and no `Display`; [`EmailAddress::masked`] is the form for logs.
//!
//! # Lifecycle of one subscriber (one stream, named by [`SubscriberId::stream_name`])
//!
//! ```text
//!                RequestSubscription            Confirm (before confirm_by)
//!   (new) ──────────────────────────► Pending ───────────────────────────► Confirmed
//!                                     │   │                                   │
//!         ExpirePending (after        │   │ Unsubscribe                       │ Unsubscribe
//!         confirm_by): back to what   │   ▼ (cancels the request when         ▼
//!         the list was before ◄───────┘  Unsubscribed  it has no list left) Unsubscribed
//!                                          │
//!                                          └── RequestSubscription: a new Pending with new consent
//!
//!   restricted (Restrict / LiftRestriction) is subscriber-wide and orthogonal to list statuses;
//!   Erase from any state leads to Erased, which is terminal and holds no personal data.
//! ```
//!
//! # Rules
//!
//! - **Request.** At least one list ([`DomainError::NoLists`]); `confirm_by` after `now`. A request
//!   id already seen (pending or ended) is a no-op, so retries are safe. Lists already confirmed
//!   are left out; if none is left the request is a no-op (the HTTP layer answers the same either
//!   way, so nothing is enumerated). A new request **supersedes** a pending one entirely: the old
//!   confirm link becomes stale ([`DomainError::StaleRequest`]), and lists only the old request
//!   named go back to their earlier status — each confirmation confirms exactly the lists whose
//!   request carried the consent. Refused while restricted ([`DomainError::Restricted`]) and
//!   when three confirmation mails went out in the last 24 h
//!   ([`DomainError::TooManyConfirmationMails`] with `retry_after`).
//! - **Address, profile and locale of a request** are held in the [`PendingRequest`] and become
//!   the subscriber's only on confirmation (anyone can type anyone's address; only the mailbox
//!   owner confirms). Confirmation merges the request's profile: fields the form left empty keep
//!   their earlier value; clearing is what rectification is for.
//! - **Confirmation mails.** The mailer asks [`SubscriberState::may_send_confirmation`] before
//!   every send (mailable, pending, not past `confirm_by`, not undeliverable, fewer than 3 mails
//!   in `(now - 24 h, now]`). Recording a sent mail is refused while restricted and for a request
//!   that is not the pending one; the same Message-ID twice is a no-op. Recording a failure is
//!   accepted while restricted (it is a fact, not a mail); a permanent failure makes the request
//!   undeliverable.
//! - **Confirm.** Confirming an already confirmed request is a no-op (so a second click, or an
//!   old link after an unsubscribe, changes nothing). Refused after `confirm_by` or after expiry
//!   ([`DomainError::RequestExpired`]), for a superseded or cancelled request
//!   ([`DomainError::StaleRequest`]) and for an unknown id ([`DomainError::UnknownRequest`]).
//!   Accepted while restricted (it is the person's own act of consent, recorded as evidence), but a
//!   restricted subscriber is still neither mailed nor listed.
//! - **Unsubscribe** (one list or all; any channel) always works, also while restricted. It
//!   applies to pending and confirmed lists; unsubscribing every list of the pending request also
//!   cancels it ([`SubscriptionRequestCancelled`]). Nothing to unsubscribe is a no-op.
//! - **Rectify** changes the confirmed profile and the pending request's; a change that changes
//!   nothing is a no-op. Allowed while restricted.
//! - **Restrict / lift**: restricting twice or lifting an unrestricted subscriber is a no-op.
//!   While restricted, [`SubscriberState::is_mailable`] and [`SubscriberState::is_listed`] are false.
//! - **Cancel** ("this wasn't me") ends one pending request: only its lists go back to what they
//!   were before it (as on expiry); confirmed lists and other requests are left alone. A request
//!   that already ended is a no-op; an unknown one is refused.
//! - **Expire** a pending request only after its `confirm_by` ([`DomainError::NotYetExpired`]);
//!   a request that already ended is a no-op (the retention job may race a confirmation).
//! - **Export** is recorded every time (who and when).
//! - A stream whose events all read as `PersonalDataErased` (the data key is missing, e.g. a
//!   vault restored from an old backup) is not empty: it names a subscriber whose data cannot
//!   be read, and `Erase` erases it.
//! - Commands other than a request on an empty stream: [`DomainError::UnknownSubscriber`]
//!   (confirmation/mail/expiry commands name a request and get [`DomainError::UnknownRequest`];
//!   unsubscribe is a no-op).
//!
//! # After erasure
//!
//! | command | result |
//! |---|---|
//! | `Erase` | no-op (erasing twice is fine) |
//! | `Unsubscribe` | no-op (old one-click links keep answering "unsubscribed") |
//! | `ExpirePending` | no-op (the retention job may race an erasure) |
//! | `CancelRequest` | no-op (an old "this wasn't me" link keeps answering) |
//! | `RequestSubscription` | refused, [`DomainError::Erased`] (the email index no longer points here; a new signup makes a new stream) |
//! | `RecordConfirmationMailSent`, `RecordConfirmationMailFailed` | refused, `Erased` |
//! | `Confirm` | refused, `Erased` |
//! | `RectifyProfile`, `Restrict`, `LiftRestriction` | refused, `Erased` |
//! | `RecordExport` | refused, `Erased` (nothing is held to export) |
//!
//! No command produces an event after [`SubscriberErased`], and `evolve` ignores any event after
//! it. The erased state holds no personal data; [`SubscriberErased`] holds only actor, reference
//! and time.
//!
//! # Events and storage
//!
//! [`SubscriberEvent`] implements [`EventCodec`]: each variant's type name is its own name, at
//! schema version 1, except `SubscriptionRequested` at 2 (see [`upcast`]). Personal data is only
//! in payload fields, listed by [`SubscriberEvent::personal_data_pointers`].

pub mod audit;
pub mod codec;
pub mod command;
pub mod consent;
pub mod decider;
pub mod email;
pub mod error;
pub mod event;
pub mod event_codec;
pub mod ids;
pub mod list;
pub mod locale;
pub mod profile;
pub mod state;
pub mod subscriber;
mod text;
pub mod upcast;

pub use audit::{ActorName, ErasureReference, ReasonText};
pub use codec::{DecodeError, EventCodec};
pub use command::{SubscriberCommand, UnsubscribeChannel, UnsubscribeScope};
pub use consent::{ConsentEvidence, PolicyVersion, SourceId, UserAgent};
pub use decider::Decider;
pub use email::EmailAddress;
pub use error::{DomainError, Field, ValueError};
pub use event::{
    ConfirmationMailFailed, ConfirmationMailSent, DataExported, PersonalDataErased,
    ProcessingRestricted, ProfileRectified, RestrictionLifted, SubscriberErased, SubscriberEvent,
    SubscriptionConfirmed, SubscriptionRequestCancelled, SubscriptionRequestExpired,
    SubscriptionRequested, Unsubscribed,
};
pub use event_codec::{STATUS_NEUTRAL_TYPES, is_status_neutral};
pub use ids::{MessageId, RequestId, SubscriberId};
pub use list::{ListCatalog, ListId};
pub use locale::Locale;
pub use profile::{
    CompanyName, FieldChange, PersonName, PhoneNumber, PostalAddress, Profile, ProfileChanges,
};
pub use state::{
    CONFIRMATION_MAIL_LIMIT, CONFIRMATION_MAIL_WINDOW, ListMembership, ListStatus, MailFailure,
    PendingRequest, RequestOutcome, SentMail, SubscriberState,
};
pub use subscriber::Subscriber;
