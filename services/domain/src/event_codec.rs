//! [`EventCodec`] for [`SubscriberEvent`]: stable type names, schema versions, upcasting on read.
//!
//! | type name | schema version |
//! |---|---|
//! | `SubscriptionRequested` | 2 |
//! | every other variant (named as the variant) | 1 |
//!
//! `PersonalDataErased` is a read-side marker produced by the encrypting event store for events
//! whose data key was destroyed; it is decodable like the others but never appended.

use serde_json::Value;

use crate::codec::{DecodeError, EventCodec};
use crate::event::SubscriberEvent;
use crate::upcast::upcast;

macro_rules! codec {
    ($($variant:ident => $version:literal),+ $(,)?) => {
        /// The current schema version of a stored type name, `None` for unknown names.
        #[must_use]
        pub fn current_schema_version(event_type: &str) -> Option<u32> {
            match event_type {
                $(stringify!($variant) => Some($version),)+
                _ => None,
            }
        }

        impl EventCodec for SubscriberEvent {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)+
                }
            }

            fn schema_version(&self) -> u32 {
                match self {
                    $(Self::$variant(_) => $version,)+
                }
            }

            fn encode(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Self::$variant(payload) => serde_json::to_value(payload),)+
                }
            }

            fn decode(
                event_type: &str,
                schema_version: u32,
                payload: Value,
            ) -> Result<Self, DecodeError> {
                let current = current_schema_version(event_type).ok_or_else(|| {
                    DecodeError::UnknownType {
                        event_type: event_type.to_owned(),
                    }
                })?;
                let payload = upcast(event_type, schema_version, current, payload)?;
                let malformed = |source| DecodeError::Malformed {
                    event_type: event_type.to_owned(),
                    schema_version,
                    source,
                };
                match event_type {
                    $(stringify!($variant) => serde_json::from_value(payload)
                        .map(Self::$variant)
                        .map_err(malformed),)+
                    _ => Err(DecodeError::UnknownType {
                        event_type: event_type.to_owned(),
                    }),
                }
            }
        }
    };
}

codec! {
    SubscriptionRequested => 2,
    ConfirmationMailSent => 1,
    ConfirmationMailFailed => 1,
    SubscriptionConfirmed => 1,
    Unsubscribed => 1,
    SubscriptionRequestCancelled => 1,
    ProfileRectified => 1,
    ProcessingRestricted => 1,
    RestrictionLifted => 1,
    SubscriptionRequestExpired => 1,
    SubscriberErased => 1,
    DataExported => 1,
    PersonalDataErased => 1,
}

/// The stored type names of events that never change what a subscriber's status answer shows:
/// the lists with their statuses and since when, the locale, the restriction and the erasure.
/// They only keep mail and export bookkeeping. A view of statuses may skip them without
/// decoding (the property tests check [`Subscriber::evolve`](crate::Subscriber) agrees).
pub const STATUS_NEUTRAL_TYPES: [&str; 3] = [
    "ConfirmationMailSent",
    "ConfirmationMailFailed",
    "DataExported",
];

/// True when events of this stored type never change a subscriber's statuses (see
/// [`STATUS_NEUTRAL_TYPES`]).
#[must_use]
pub fn is_status_neutral(event_type: &str) -> bool {
    STATUS_NEUTRAL_TYPES.contains(&event_type)
}
