//! [`SubscriberCommand`]: what callers ask of one subscriber.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{ActorName, ErasureReference, ReasonText};
use crate::consent::ConsentEvidence;
use crate::email::EmailAddress;
use crate::ids::{MessageId, RequestId};
use crate::list::ListId;
use crate::locale::Locale;
use crate::profile::{Profile, ProfileChanges};

/// Which lists an unsubscribe is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribeScope {
    /// One list (the list of the newsletter whose link was used).
    List(ListId),
    /// Every list (also: objection to processing for marketing).
    All,
}

/// How an unsubscribe reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribeChannel {
    /// RFC 8058 one-click `POST` from the mail client.
    OneClick,
    /// The unsubscribe link in the newsletter footer (page + button).
    Link,
    /// An internal service through the API.
    Api,
    /// An admin (data protection officer) on the person's behalf.
    Admin,
}

/// A command to one subscriber's stream. Time comes in separately as `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriberCommand {
    /// A signup: asks for one or more lists, starting double opt-in.
    RequestSubscription {
        /// Chosen by the caller; names the request in confirm tokens; a retry reuses it.
        request_id: RequestId,
        /// The requested lists (from the catalog); at least one.
        lists: BTreeSet<ListId>,
        /// The address to confirm.
        email: EmailAddress,
        /// The optional profile typed into the form.
        profile: Profile,
        /// The language of the confirmation mail and pages.
        locale: Locale,
        /// Consent evidence at signup.
        consent: ConsentEvidence,
        /// Until when the request can be confirmed (caller's configuration, e.g. now + 7 days).
        confirm_by: DateTime<Utc>,
    },
    /// The mailer sent the confirmation mail of a request.
    RecordConfirmationMailSent {
        /// The request the mail was for.
        request_id: RequestId,
        /// The mail's Message-ID (a retry with the same id is a no-op).
        message_id: MessageId,
    },
    /// The mailer could not send the confirmation mail of a request.
    RecordConfirmationMailFailed {
        /// The request the mail was for.
        request_id: RequestId,
        /// What went wrong (e.g. the SMTP reply).
        reason: ReasonText,
        /// True when retrying is pointless (e.g. 5xx: the mailbox does not exist).
        permanent: bool,
    },
    /// The person confirmed a request from the link in the mail.
    Confirm {
        /// The request named by the confirm token.
        request_id: RequestId,
        /// Consent evidence at confirmation.
        consent: ConsentEvidence,
    },
    /// Withdraws consent for one list or all.
    Unsubscribe {
        /// One list or all.
        scope: UnsubscribeScope,
        /// How the unsubscribe came in.
        channel: UnsubscribeChannel,
    },
    /// Rectifies the profile (GDPR art. 16).
    RectifyProfile {
        /// Per field: keep, clear or set.
        changes: ProfileChanges,
        /// Who did it.
        actor: ActorName,
    },
    /// Restricts processing (GDPR art. 18): kept, not mailed, not listed.
    Restrict {
        /// Who did it.
        actor: ActorName,
        /// Why.
        reason: ReasonText,
    },
    /// Lifts a restriction.
    LiftRestriction {
        /// Who did it.
        actor: ActorName,
        /// Why.
        reason: ReasonText,
    },
    /// "This wasn't me": the mailbox owner cancels one pending request. Only that request's lists
    /// go back to what they were; every other list is left alone.
    CancelRequest {
        /// The request named by the cancel token.
        request_id: RequestId,
    },
    /// Retention: a pending request whose `confirm_by` passed is expired.
    ExpirePending {
        /// The request to expire.
        request_id: RequestId,
    },
    /// Erases the subscriber (GDPR art. 17). Terminal.
    Erase {
        /// Who did it.
        actor: ActorName,
        /// The data-subject request (ticket) this fulfils, or the retention rule's name.
        reference: ErasureReference,
    },
    /// Records that everything held about the subscriber was exported (GDPR art. 15, 20).
    RecordExport {
        /// Who did it.
        actor: ActorName,
    },
}

impl SubscriberCommand {
    /// The command's name, for logs and metrics (never holds personal data).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::RequestSubscription { .. } => "RequestSubscription",
            Self::RecordConfirmationMailSent { .. } => "RecordConfirmationMailSent",
            Self::RecordConfirmationMailFailed { .. } => "RecordConfirmationMailFailed",
            Self::Confirm { .. } => "Confirm",
            Self::Unsubscribe { .. } => "Unsubscribe",
            Self::RectifyProfile { .. } => "RectifyProfile",
            Self::Restrict { .. } => "Restrict",
            Self::LiftRestriction { .. } => "LiftRestriction",
            Self::CancelRequest { .. } => "CancelRequest",
            Self::ExpirePending { .. } => "ExpirePending",
            Self::Erase { .. } => "Erase",
            Self::RecordExport { .. } => "RecordExport",
        }
    }
}
