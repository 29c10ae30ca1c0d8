//! Our event envelope in KurrentDB's terms, both ways.
//!
//! | ours | KurrentDB |
//! |---|---|
//! | `event_id` | the event's id (passed through, so retries are idempotent) |
//! | `event_type` | the event type |
//! | `payload` | the event data, content type `application/json` |
//! | `schema_version` and `metadata` | the custom metadata, one JSON object |
//! | `stream_version` (1-based) | the event's revision (0-based) + 1 |
//! | `position { commit, prepare }` | its `$all` commit and prepare positions |
//! | `recorded_at` | the server's `created` timestamp (100 ns ticks) |

use chrono::{DateTime, TimeZone, Utc};
use kurrentdb::EventData;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::model::{EventMetadata, NewEvent, Position, RecordedEvent, StreamId};

/// The custom metadata stored with every event: our metadata plus the payload's schema version.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMetadata {
    schema_version: u32,
    #[serde(flatten)]
    metadata: EventMetadata,
}

/// Our position from KurrentDB's.
pub(super) fn position_from(position: kurrentdb::Position) -> Position {
    Position::new(position.commit, position.prepare)
}

/// KurrentDB's position from ours.
pub(super) fn position_to(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.commit,
        prepare: position.prepare,
    }
}

/// True for what KurrentDB writes itself (`$`-prefixed types: stream tombstones, metadata,
/// links, statistics): never one of our events.
pub(super) fn is_system(event: &kurrentdb::RecordedEvent) -> bool {
    event.event_type.starts_with('$') || event.stream_id().starts_with('$')
}

/// One new event as KurrentDB event data, its id passed through.
pub(super) fn encode(event: &NewEvent) -> Result<EventData, StoreError> {
    let encode_err = |e: serde_json::Error| StoreError::Corrupt {
        location: format!("new event {}", event.event_id),
        reason: e.to_string(),
    };
    let metadata = StoredMetadata {
        schema_version: event.schema_version,
        metadata: event.metadata.clone(),
    };
    EventData::json(&event.event_type, &event.payload)
        .map_err(encode_err)?
        .id(event.event_id)
        .metadata_as_json(&metadata)
        .map_err(encode_err)
}

/// A stored KurrentDB event as our envelope; `stream_prefix` is removed from its stream name.
pub(super) fn decode(
    event: &kurrentdb::RecordedEvent,
    stream_prefix: &str,
) -> Result<RecordedEvent, StoreError> {
    let position = position_from(event.position);
    let corrupt = |reason: String| StoreError::Corrupt {
        location: format!(
            "KurrentDB position {position}, stream revision {}",
            event.revision
        ),
        reason,
    };
    let name = event
        .stream_id()
        .strip_prefix(stream_prefix)
        .ok_or_else(|| corrupt("the stream name lacks the configured prefix".to_owned()))?;
    let stream = StreamId::new(name).map_err(|e| corrupt(e.to_string()))?;
    if event.custom_metadata.is_empty() {
        return Err(corrupt(
            "no custom metadata: not written by newsletter".to_owned(),
        ));
    }
    let stored: StoredMetadata = serde_json::from_slice(&event.custom_metadata)
        .map_err(|e| corrupt(format!("custom metadata is not valid: {e}")))?;
    let payload = String::from_utf8(event.data.to_vec())
        .map_err(|_| corrupt("the event data is not UTF-8 JSON".to_owned()))?;
    Ok(RecordedEvent {
        event_id: event.id,
        stream,
        stream_version: event.revision.saturating_add(1),
        position,
        recorded_at: recorded_at(event),
        event_type: event.event_type.clone(),
        schema_version: stored.schema_version,
        payload,
        metadata: stored.metadata,
    })
}

/// The server's timestamp at full precision: the `created` system metadata counts 100 ns ticks
/// since the Unix epoch (the client's own `created` field keeps whole seconds only).
fn recorded_at(event: &kurrentdb::RecordedEvent) -> DateTime<Utc> {
    event
        .metadata
        .get("created")
        .and_then(|ticks| ticks.parse::<i64>().ok())
        .and_then(|ticks| {
            let secs = ticks.div_euclid(10_000_000);
            let nanos = u32::try_from(ticks.rem_euclid(10_000_000) * 100).ok()?;
            Utc.timestamp_opt(secs, nanos).single()
        })
        .unwrap_or(event.created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn positions_map_one_to_one() {
        let ours = Position::new(1234, 1200);
        let theirs = position_to(ours);
        assert_eq!((theirs.commit, theirs.prepare), (1234, 1200));
        assert_eq!(position_from(theirs), ours);
    }

    #[test]
    fn metadata_carries_the_schema_version_next_to_ours() {
        let metadata = StoredMetadata {
            schema_version: 2,
            metadata: EventMetadata {
                correlation_id: Some(Uuid::nil()),
                causation_id: None,
                actor: Some("public".to_owned()),
            },
        };
        let json = serde_json::to_value(&metadata).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({
                "schema_version": 2,
                "correlation_id": Uuid::nil(),
                "actor": "public",
            })
        );
        let back: StoredMetadata = serde_json::from_value(json).expect("parse");
        assert_eq!(back.schema_version, 2);
        assert_eq!(back.metadata, metadata.metadata);
    }

    #[test]
    fn encoding_passes_the_event_id_through() {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "SubscriptionRequested".to_owned(),
            schema_version: 1,
            payload: serde_json::json!({ "list": "news" }),
            metadata: EventMetadata::default(),
        };
        let data = encode(&event).expect("encode");
        let debug = format!("{data:?}");
        assert!(debug.contains(&event.event_id.to_string()), "{debug}");
        assert!(debug.contains("SubscriptionRequested"), "{debug}");
    }
}
