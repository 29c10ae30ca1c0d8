//! [`SubscriberEvent`]: what happened to one subscriber; the only thing that is stored.
//!
//! Each variant wraps a payload struct of the same name. With serde the enum is a JSON object
//! with a `type` tag; through [`crate::EventCodec`] the tag is the stored type name and the
//! payload is the struct alone. Personal data appears only in payload fields, listed per event
//! by [`SubscriberEvent::personal_data_pointers`], so the store knows what to encrypt.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{ActorName, ErasureReference, ReasonText};
use crate::command::UnsubscribeChannel;
use crate::consent::ConsentEvidence;
use crate::email::EmailAddress;
use crate::ids::{MessageId, RequestId};
use crate::list::ListId;
use crate::locale::Locale;
use crate::profile::{Profile, ProfileChanges};

/// A signup was received; double opt-in starts. Schema version 2 (v1 had one `list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRequested {
    /// The request's id.
    pub request_id: RequestId,
    /// The lists still to confirm (requested lists already confirmed are left out).
    pub lists: BTreeSet<ListId>,
    /// The address to confirm. Personal data.
    pub email: EmailAddress,
    /// The profile typed into the form. Personal data.
    #[serde(default)]
    pub profile: Profile,
    /// The language of the confirmation mail.
    pub locale: Locale,
    /// Consent evidence at signup. `ip` and `user_agent` are personal data.
    pub consent: ConsentEvidence,
    /// Until when the request can be confirmed.
    pub confirm_by: DateTime<Utc>,
    /// When the request was recorded.
    pub at: DateTime<Utc>,
}

/// The confirmation mail of a request was handed to the SMTP relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationMailSent {
    /// The request the mail was for.
    pub request_id: RequestId,
    /// The mail's Message-ID.
    pub message_id: MessageId,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// The confirmation mail of a request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationMailFailed {
    /// The request the mail was for.
    pub request_id: RequestId,
    /// What went wrong. Personal data (SMTP replies quote addresses).
    pub reason: ReasonText,
    /// True when retrying is pointless.
    pub permanent: bool,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// The person confirmed a request: its lists are confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionConfirmed {
    /// The confirmed request.
    pub request_id: RequestId,
    /// The lists confirmed (the request's lists still pending).
    pub lists: BTreeSet<ListId>,
    /// Consent evidence at confirmation. `ip` and `user_agent` are personal data.
    pub consent: ConsentEvidence,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Consent was withdrawn for these lists (confirmed or still pending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    /// The lists now unsubscribed.
    pub lists: BTreeSet<ListId>,
    /// How the unsubscribe came in.
    pub channel: UnsubscribeChannel,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// A pending request lost all its lists to unsubscribes; it can no longer be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRequestCancelled {
    /// The cancelled request.
    pub request_id: RequestId,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// The profile was rectified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRectified {
    /// The changes that changed something. Personal data.
    pub changes: ProfileChanges,
    /// Who did it.
    pub actor: ActorName,
    /// When.
    pub at: DateTime<Utc>,
}

/// Processing was restricted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessingRestricted {
    /// Who did it.
    pub actor: ActorName,
    /// Why. Personal data.
    pub reason: ReasonText,
    /// When.
    pub at: DateTime<Utc>,
}

/// A restriction was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictionLifted {
    /// Who did it.
    pub actor: ActorName,
    /// Why. Personal data.
    pub reason: ReasonText,
    /// When.
    pub at: DateTime<Utc>,
}

/// A pending request passed its `confirm_by` unconfirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRequestExpired {
    /// The expired request.
    pub request_id: RequestId,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// The subscriber was erased. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberErased {
    /// Who did it.
    pub actor: ActorName,
    /// The data-subject request or retention rule.
    pub reference: ErasureReference,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything held about the subscriber was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataExported {
    /// Who did it.
    pub actor: ActorName,
    /// When.
    pub at: DateTime<Utc>,
}

/// Read-side marker: an event whose personal data can no longer be decrypted because the
/// subscriber's data key was destroyed (crypto-shredding). Never appended by the domain: the
/// encrypting event store (`newsletter-keyvault`) returns it *in place of* the stored event when
/// the key is gone, so every reader (decider, projections, mailer) keeps working without a
/// special case. [`crate::Subscriber::evolve`] ignores it; the [`SubscriberErased`] that follows
/// in the stream makes the fold the erased state. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDataErased {
    /// The stored type name of the event that was redacted.
    pub original_type: String,
    /// Its stored schema version.
    pub original_schema_version: u32,
    /// When the store recorded the original event.
    pub at: DateTime<Utc>,
}

/// One event of a subscriber's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SubscriberEvent {
    /// See [`SubscriptionRequested`].
    SubscriptionRequested(SubscriptionRequested),
    /// See [`ConfirmationMailSent`].
    ConfirmationMailSent(ConfirmationMailSent),
    /// See [`ConfirmationMailFailed`].
    ConfirmationMailFailed(ConfirmationMailFailed),
    /// See [`SubscriptionConfirmed`].
    SubscriptionConfirmed(SubscriptionConfirmed),
    /// See [`Unsubscribed`].
    Unsubscribed(Unsubscribed),
    /// See [`SubscriptionRequestCancelled`].
    SubscriptionRequestCancelled(SubscriptionRequestCancelled),
    /// See [`ProfileRectified`].
    ProfileRectified(ProfileRectified),
    /// See [`ProcessingRestricted`].
    ProcessingRestricted(ProcessingRestricted),
    /// See [`RestrictionLifted`].
    RestrictionLifted(RestrictionLifted),
    /// See [`SubscriptionRequestExpired`].
    SubscriptionRequestExpired(SubscriptionRequestExpired),
    /// See [`SubscriberErased`].
    SubscriberErased(SubscriberErased),
    /// See [`DataExported`].
    DataExported(DataExported),
    /// See [`PersonalDataErased`] (read-side only, never appended).
    PersonalDataErased(PersonalDataErased),
}

impl SubscriberEvent {
    /// When the event was recorded (the `now` of the command that produced it).
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::SubscriptionRequested(e) => e.at,
            Self::ConfirmationMailSent(e) => e.at,
            Self::ConfirmationMailFailed(e) => e.at,
            Self::SubscriptionConfirmed(e) => e.at,
            Self::Unsubscribed(e) => e.at,
            Self::SubscriptionRequestCancelled(e) => e.at,
            Self::ProfileRectified(e) => e.at,
            Self::ProcessingRestricted(e) => e.at,
            Self::RestrictionLifted(e) => e.at,
            Self::SubscriptionRequestExpired(e) => e.at,
            Self::SubscriberErased(e) => e.at,
            Self::DataExported(e) => e.at,
            Self::PersonalDataErased(e) => e.at,
        }
    }

    /// JSON pointers (RFC 6901) into the encoded payload of the fields that hold personal data,
    /// for the store to encrypt with the subscriber's key. Empty for events without any.
    #[must_use]
    pub fn personal_data_pointers(&self) -> &'static [&'static str] {
        match self {
            Self::SubscriptionRequested(_) => {
                &["/email", "/profile", "/consent/ip", "/consent/user_agent"]
            }
            Self::SubscriptionConfirmed(_) => &["/consent/ip", "/consent/user_agent"],
            Self::ConfirmationMailFailed(_)
            | Self::ProcessingRestricted(_)
            | Self::RestrictionLifted(_) => &["/reason"],
            Self::ProfileRectified(_) => &["/changes"],
            Self::ConfirmationMailSent(_)
            | Self::Unsubscribed(_)
            | Self::SubscriptionRequestCancelled(_)
            | Self::SubscriptionRequestExpired(_)
            | Self::SubscriberErased(_)
            | Self::DataExported(_)
            | Self::PersonalDataErased(_) => &[],
        }
    }
}
