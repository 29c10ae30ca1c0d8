//! Events serialised once, before they reach a database writer, and rows decoded back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreError;
use crate::model::{
    AppendOutcome, EventMetadata, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};

/// A `NewEvent` with its payload and metadata already serialised to JSON text.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i64,
    pub payload: String,
    pub metadata: String,
}

impl EncodedEvent {
    /// Serialises a batch; serde_json cannot fail on `Value`s and plain structs, but the error
    /// is still carried rather than unwrapped.
    pub(crate) fn encode_all(events: Vec<NewEvent>) -> Result<Vec<Self>, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        events
            .into_iter()
            .map(|event| {
                let encode_err = |e: serde_json::Error| StoreError::Corrupt {
                    location: format!("new event {}", event.event_id),
                    reason: e.to_string(),
                };
                Ok(Self {
                    event_id: event.event_id,
                    schema_version: i64::from(event.schema_version),
                    payload: serde_json::to_string(&event.payload).map_err(encode_err)?,
                    metadata: serde_json::to_string(&event.metadata).map_err(encode_err)?,
                    event_type: event.event_type,
                })
            })
            .collect()
    }
}

/// The columns of one stored row, as every SQL adapter reads them.
pub(crate) struct StoredRow {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i64,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

impl StoredRow {
    /// Checks and parses a row into the port's envelope.
    pub(crate) fn into_recorded(self) -> Result<RecordedEvent, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            location: format!("position {}", self.position),
            reason,
        };
        let metadata: EventMetadata = serde_json::from_str(&self.metadata)
            .map_err(|e| corrupt(format!("metadata is not valid: {e}")))?;
        let stream_version = u64::try_from(self.version)
            .map_err(|_| corrupt(format!("negative version {}", self.version)))?;
        let schema_version = u32::try_from(self.schema_version).map_err(|_| {
            corrupt(format!(
                "schema version {} out of range",
                self.schema_version
            ))
        })?;
        let stream = StreamId::new(self.stream_id).map_err(|e| corrupt(e.to_string()))?;
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream,
            stream_version,
            position: self.position,
            recorded_at: self.recorded_at,
            event_type: self.event_type,
            schema_version,
            payload: self.payload,
            metadata,
        })
    }
}

/// Converts a stored integer that must be non-negative.
pub(crate) fn non_negative(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        location: what.to_owned(),
        reason: format!("negative value {value}"),
    })
}

/// Converts a version for binding; versions beyond i64 cannot occur in practice.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What the stream holds at one of the versions a refused append asked for.
pub(crate) struct StoredSlot {
    pub version: i64,
    pub event_id: Uuid,
    pub position: Position,
}

/// Tells a retry of an append that already succeeded (the same ids at the asked-for versions:
/// an idempotent replay) from a real conflict, for every adapter alike.
pub(crate) fn classify_conflict(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EncodedEvent],
    stored: &[StoredSlot],
    actual_version: i64,
) -> Result<AppendOutcome, StoreError> {
    let matching = events
        .iter()
        .zip(stored)
        .filter(|(event, slot)| event.event_id == slot.event_id)
        .count();
    if matching == events.len()
        && stored.len() == events.len()
        && let Some(last) = stored.last()
    {
        return Ok(AppendOutcome {
            stream_version: non_negative(last.version, "stored version")?,
            position: last.position,
            idempotent_replay: true,
        });
    }
    if matching > 0 {
        // Some ids match what is stored there, some do not: not the same append.
        let event_id = events
            .iter()
            .zip(stored)
            .find(|(event, slot)| event.event_id == slot.event_id)
            .map(|(event, _)| event.event_id)
            .unwrap_or_default();
        return Err(StoreError::DuplicateEventId { event_id });
    }
    Err(StoreError::WrongExpectedVersion {
        stream: stream.clone(),
        expected,
        actual: non_negative(actual_version, "stream version")?,
    })
}
