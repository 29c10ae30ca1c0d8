//! Why a value or a command was refused.
//!
//! [`ValueError`] names the offending [`Field`] and a machine-readable [`ValueError::code`], so the
//! HTTP layer can build an RFC 9457 `errors` array from it. Messages never echo the input, so
//! they are safe to log even when the input was personal data.

use chrono::{DateTime, Utc};
use std::fmt;

use crate::ids::RequestId;

/// The input field a [`ValueError`] is about, named as in the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The subscriber's email address.
    Email,
    /// The subscriber's name.
    Name,
    /// The subscriber's company name.
    Company,
    /// The subscriber's postal address.
    Address,
    /// The subscriber's phone number.
    Phone,
    /// A newsletter list id.
    List,
    /// A locale (language).
    Locale,
    /// The version of the privacy policy consent was given under.
    PolicyVersion,
    /// The form or integration a signup came from.
    Source,
    /// The browser's user agent string.
    UserAgent,
    /// The name of a service token or an admin.
    Actor,
    /// A free-text reason.
    Reason,
    /// The reference (ticket number) of a data-subject request.
    Reference,
    /// The Message-ID of a sent mail.
    MessageId,
}

impl Field {
    /// The field's name as the public API spells it (snake case).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Name => "name",
            Self::Company => "company",
            Self::Address => "address",
            Self::Phone => "phone",
            Self::List => "list",
            Self::Locale => "locale",
            Self::PolicyVersion => "policy_version",
            Self::Source => "source",
            Self::UserAgent => "user_agent",
            Self::Actor => "actor",
            Self::Reason => "reason",
            Self::Reference => "reference",
            Self::MessageId => "message_id",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why outside input could not become a value type. Never contains the input itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value is empty (after trimming).
    #[error("{field} must not be empty")]
    Empty {
        /// The offending field.
        field: Field,
    },
    /// The value is longer than allowed.
    #[error("{field} must be at most {max} characters long")]
    TooLong {
        /// The offending field.
        field: Field,
        /// The maximum length (characters; octets for email addresses).
        max: usize,
    },
    /// The value contains a control character (CR, LF, NUL, bidi overrides…).
    #[error("{field} must not contain control characters")]
    ControlCharacter {
        /// The offending field.
        field: Field,
    },
    /// The value contains a character outside the field's alphabet.
    #[error("{field} contains a character that is not allowed")]
    InvalidCharacter {
        /// The offending field.
        field: Field,
    },
    /// The value does not have the field's shape.
    #[error("{field} is malformed: {reason}")]
    Malformed {
        /// The offending field.
        field: Field,
        /// What is wrong, in plain English (static text, no input echoed).
        reason: &'static str,
    },
    /// The list id is well-formed but not one of the configured lists.
    #[error("{field} is not a configured newsletter list")]
    UnknownList {
        /// The offending field.
        field: Field,
    },
}

impl ValueError {
    /// The field the error is about.
    #[must_use]
    pub const fn field(&self) -> Field {
        match self {
            Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::ControlCharacter { field }
            | Self::InvalidCharacter { field }
            | Self::Malformed { field, .. }
            | Self::UnknownList { field } => *field,
        }
    }

    /// A stable machine-readable code for the kind of error (e.g. `too_long`).
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Empty { .. } => "empty",
            Self::TooLong { .. } => "too_long",
            Self::ControlCharacter { .. } => "control_character",
            Self::InvalidCharacter { .. } => "invalid_character",
            Self::Malformed { .. } => "malformed",
            Self::UnknownList { .. } => "unknown_list",
        }
    }
}

/// Why the decider refused a command. See the crate docs for which command is refused when.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The subscriber was erased; only the commands listed as no-ops in the erasure table pass.
    #[error("the subscriber has been erased")]
    Erased,
    /// The command needs an existing subscriber, but the stream is empty.
    #[error("no such subscriber")]
    UnknownSubscriber,
    /// Processing is restricted (GDPR art. 18): no new requests, no mails.
    #[error("processing of this subscriber is restricted")]
    Restricted,
    /// A subscription request named no list.
    #[error("a subscription request must name at least one list")]
    NoLists,
    /// The caller computed a `confirm_by` that is not after `now`.
    #[error("confirm_by must be after the time of the request")]
    ConfirmByNotInFuture,
    /// Too many confirmation mails went to this address recently.
    #[error("too many confirmation mails; retry after {retry_after}")]
    TooManyConfirmationMails {
        /// When the next confirmation mail will be allowed.
        retry_after: DateTime<Utc>,
    },
    /// The request id was never seen on this subscriber.
    #[error("unknown subscription request {request_id}")]
    UnknownRequest {
        /// The request id named by the command.
        request_id: RequestId,
    },
    /// The request was replaced by a newer one, cancelled by an unsubscribe, or already closed.
    #[error("subscription request {request_id} is no longer pending")]
    StaleRequest {
        /// The request id named by the command.
        request_id: RequestId,
    },
    /// The request expired (its `confirm_by` passed, or it was expired explicitly).
    #[error("subscription request {request_id} has expired")]
    RequestExpired {
        /// The request id named by the command.
        request_id: RequestId,
    },
    /// A pending request cannot be expired before its `confirm_by`.
    #[error("subscription request {request_id} can be confirmed until {confirm_by}")]
    NotYetExpired {
        /// The request id named by the command.
        request_id: RequestId,
        /// Until when the request can still be confirmed.
        confirm_by: DateTime<Utc>,
    },
}
