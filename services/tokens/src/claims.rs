//! What each kind of token says, and its binary payload layout (see the crate docs).

use chrono::{DateTime, Utc};
use newsletter_domain::{ListId, RequestId, SubscriberId, UnsubscribeScope};
use uuid::Uuid;

use crate::TokenError;

/// The payload format version this build writes and reads.
const FORMAT_VERSION: u8 = 1;
const SCOPE_ALL: u8 = 0;
const SCOPE_LIST: u8 = 1;

/// What a token may be used for. A token of one purpose never verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Confirms one subscription request (double opt-in). Expires.
    Confirm,
    /// Unsubscribes from one list or all. Never expires.
    Unsubscribe,
    /// Opens the subscriber's preferences. Expires.
    Manage,
    /// "This wasn't me": cancels one pending request, and nothing else; no expiry.
    Cancel,
}

impl Purpose {
    const fn tag(self) -> u8 {
        match self {
            Self::Confirm => 1,
            Self::Unsubscribe => 2,
            Self::Manage => 3,
            Self::Cancel => 4,
        }
    }
}

/// What a verified confirm token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmClaims {
    /// Whose request.
    pub subscriber: SubscriberId,
    /// Which request.
    pub request: RequestId,
    /// Until when the token is valid (whole seconds).
    pub expires_at: DateTime<Utc>,
}

/// What a verified unsubscribe token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeClaims {
    /// Who unsubscribes.
    pub subscriber: SubscriberId,
    /// From one list or all.
    pub scope: UnsubscribeScope,
}

/// What a verified manage token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageClaims {
    /// Whose preferences.
    pub subscriber: SubscriberId,
    /// Until when the token is valid (whole seconds).
    pub expires_at: DateTime<Utc>,
}

/// The decoded payload of any token.
/// What a cancel token says: which pending request of which subscriber to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelClaims {
    /// The subscriber.
    pub subscriber: SubscriberId,
    /// The request to cancel.
    pub request: RequestId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claims {
    Confirm(ConfirmClaims),
    Unsubscribe(UnsubscribeClaims),
    Manage(ManageClaims),
    Cancel(CancelClaims),
}

impl Claims {
    pub(crate) fn purpose(&self) -> Purpose {
        match self {
            Self::Confirm(_) => Purpose::Confirm,
            Self::Unsubscribe(_) => Purpose::Unsubscribe,
            Self::Manage(_) => Purpose::Manage,
            Self::Cancel(_) => Purpose::Cancel,
        }
    }

    /// The binary payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(100);
        out.push(FORMAT_VERSION);
        out.push(self.purpose().tag());
        match self {
            Self::Confirm(c) => {
                out.extend_from_slice(c.subscriber.as_uuid().as_bytes());
                out.extend_from_slice(c.request.as_uuid().as_bytes());
                out.extend_from_slice(&c.expires_at.timestamp().to_be_bytes());
            }
            Self::Unsubscribe(u) => {
                out.extend_from_slice(u.subscriber.as_uuid().as_bytes());
                match &u.scope {
                    UnsubscribeScope::All => out.push(SCOPE_ALL),
                    UnsubscribeScope::List(list) => {
                        out.push(SCOPE_LIST);
                        // List ids are at most 64 ASCII bytes (checked by the domain type).
                        let bytes = list.as_str().as_bytes();
                        out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
                        out.extend_from_slice(bytes);
                    }
                }
            }
            Self::Manage(m) => {
                out.extend_from_slice(m.subscriber.as_uuid().as_bytes());
                out.extend_from_slice(&m.expires_at.timestamp().to_be_bytes());
            }
            Self::Cancel(c) => {
                out.extend_from_slice(c.subscriber.as_uuid().as_bytes());
                out.extend_from_slice(c.request.as_uuid().as_bytes());
            }
        }
        out
    }

    /// Parses a payload whose signature already verified.
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, TokenError> {
        let mut reader = Reader(payload);
        if reader.byte()? != FORMAT_VERSION {
            return Err(TokenError::Malformed);
        }
        let purpose = reader.byte()?;
        let subscriber = SubscriberId::from_uuid(reader.uuid()?);
        let claims = match purpose {
            1 => Self::Confirm(ConfirmClaims {
                subscriber,
                request: RequestId::from_uuid(reader.uuid()?),
                expires_at: reader.time()?,
            }),
            2 => {
                let scope = match reader.byte()? {
                    SCOPE_ALL => UnsubscribeScope::All,
                    SCOPE_LIST => {
                        let len = usize::from(reader.byte()?);
                        let bytes = reader.take(len)?;
                        let text = std::str::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
                        let list =
                            ListId::try_from(text.to_owned()).map_err(|_| TokenError::Malformed)?;
                        UnsubscribeScope::List(list)
                    }
                    _ => return Err(TokenError::Malformed),
                };
                Self::Unsubscribe(UnsubscribeClaims { subscriber, scope })
            }
            3 => Self::Manage(ManageClaims {
                subscriber,
                expires_at: reader.time()?,
            }),
            4 => Self::Cancel(CancelClaims {
                subscriber,
                request: RequestId::from_uuid(reader.uuid()?),
            }),
            _ => return Err(TokenError::Malformed),
        };
        if reader.0.is_empty() {
            Ok(claims)
        } else {
            Err(TokenError::Malformed)
        }
    }
}

/// Reads a payload front to back; every short read is [`TokenError::Malformed`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, TokenError> {
        self.take(1).map(|b| b[0])
    }

    fn uuid(&mut self) -> Result<Uuid, TokenError> {
        Uuid::from_slice(self.take(16)?).map_err(|_| TokenError::Malformed)
    }

    fn time(&mut self) -> Result<DateTime<Utc>, TokenError> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| TokenError::Malformed)?;
        DateTime::from_timestamp(i64::from_be_bytes(bytes), 0).ok_or(TokenError::Malformed)
    }
}
