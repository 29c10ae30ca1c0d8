//! The values the event store speaks in: streams, versions, positions, events and their metadata.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use newsletter_domain::{DecodeError, EventCodec};

use crate::StoreError;

/// The name of one stream (one per subscriber: `subscriber-<uuid>`).
///
/// At most 128 characters of `[A-Za-z0-9_.:-]`: stream names carry no personal data,
/// and the limit keeps them valid for every adapter, KurrentDB included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// The longest stream name accepted.
    pub const MAX_LEN: usize = 128;

    /// Checks a stream name.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if name.is_empty() || name.len() > Self::MAX_LEN || !name.chars().all(valid_char) {
            return Err(StoreError::InvalidStreamId { len: name.len() });
        }
        Ok(Self(name))
    }

    /// The stream name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the writer believes the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet (it has no events).
    NoStream,
    /// The stream's last event must have exactly this version (1-based).
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation matching a stream that currently holds `version` events.
    pub fn from_current(version: u64) -> Self {
        if version == 0 {
            Self::NoStream
        } else {
            Self::Exact(version)
        }
    }

    /// The version of the stream's last event, 0 for no stream.
    pub fn as_u64(self) -> u64 {
        match self {
            Self::NoStream => 0,
            Self::Exact(version) => version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// A place in the global log, totally ordered.
///
/// `commit` orders first, `prepare` breaks ties. SQLite: both are the row's sequence number.
/// PostgreSQL: `commit` is the writing transaction's id, `prepare` the row's sequence number,
/// read only below the oldest running transaction, so a late commit is never skipped.
/// KurrentDB: its own commit and prepare positions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// The commit part: orders first.
    pub commit: u64,
    /// The prepare part: orders within one commit.
    pub prepare: u64,
}

impl Position {
    /// A position from its two parts.
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Self { commit, prepare }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.prepare)
    }
}

/// Data about an event that is not the event itself. Never personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Ties together everything one outside request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or request that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who acted: a service token's or role's name (`public`, `mailer`, `dpo`), never a person's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// An event to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v7); appending the same ids again is an idempotent retry.
    pub event_id: Uuid,
    /// The stable type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload as JSON.
    pub payload: serde_json::Value,
    /// Correlation, causation and actor.
    pub metadata: EventMetadata,
}

/// An event as stored, in its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The event's unique id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its 1-based version within the stream.
    pub stream_version: u64,
    /// Its place in the global log.
    pub position: Position,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The stable type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload as the JSON text that was stored. Left unparsed so that readers which skip an
    /// event, or parse it straight into a typed event, pay nothing for it; see [`Self::decode`].
    pub payload: String,
    /// Correlation, causation and actor.
    pub metadata: EventMetadata,
}

impl RecordedEvent {
    /// The payload parsed as a JSON value.
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The event decoded (and upcast, for older schema versions) by its codec.
    pub fn decode<E: EventCodec>(&self) -> Result<E, DecodeError> {
        let payload = self
            .payload_json()
            .map_err(|source| DecodeError::Malformed {
                event_type: self.event_type.clone(),
                schema_version: self.schema_version,
                source,
            })?;
        E::decode(&self.event_type, self.schema_version, payload)
    }
}

/// What a successful append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append (its last event's version).
    pub stream_version: u64,
    /// The position of the last appended event.
    pub position: Position,
    /// True when every event was already stored by an earlier call with the same ids:
    /// nothing was written this time.
    pub idempotent_replay: bool,
}
