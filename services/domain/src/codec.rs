//! How events become stored JSON and come back, across schema versions.

use serde_json::Value;

/// Why a stored event could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stored type name is not one this build knows.
    #[error("unknown event type {event_type:?}")]
    UnknownType {
        /// The stored type name.
        event_type: String,
    },
    /// The stored schema version is newer than this build, or was never defined.
    #[error("event type {event_type:?} has no schema version {schema_version}")]
    UnknownVersion {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
    },
    /// The payload does not match the schema it claims. The message names only the kind of
    /// problem and where (serde's own text can quote payload values, which may be personal data).
    #[error("event {event_type:?} v{schema_version} has a malformed payload ({}, line {}, column {})", describe_category(source.classify()), source.line(), source.column())]
    Malformed {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// An event as it is stored: a type name, a schema version and a JSON payload.
///
/// `decode` accepts every version ever written (upcasting older ones), so stored history
/// stays readable forever; `encode` always writes the current version.
pub trait EventCodec: Sized {
    /// The stable type name stored with the event (e.g. `SubscriptionRequested`).
    fn event_type(&self) -> &'static str;
    /// The schema version `encode` writes for this event's type.
    fn schema_version(&self) -> u32;
    /// The JSON payload of the current schema version.
    fn encode(&self) -> Result<Value, serde_json::Error>;
    /// Reads a stored event of any known version, upcasting it to the current shape.
    fn decode(event_type: &str, schema_version: u32, payload: Value) -> Result<Self, DecodeError>;
}

fn describe_category(category: serde_json::error::Category) -> &'static str {
    match category {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "does not match the schema",
        serde_json::error::Category::Eof => "truncated",
    }
}
