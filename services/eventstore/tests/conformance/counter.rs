//! A minimal decider for testing command handling: a counter that refuses to add zero.

use chrono::{DateTime, Utc};
use newsletter_domain::{Decider, DecodeError, EventCodec};
use serde_json::Value;

/// Adds to the counter.
pub struct Add(pub u64);

/// The counter was increased.
#[derive(Debug, Clone)]
pub struct Added(pub u64);

/// The sum so far.
#[derive(Debug, Clone, Default)]
pub struct Total(pub u64);

/// Adding zero is refused.
#[derive(Debug, thiserror::Error)]
#[error("adding zero changes nothing")]
pub struct AddedZero;

/// The counter decider.
pub struct Counter;

impl Decider for Counter {
    type State = Total;
    type Command = Add;
    type Event = Added;
    type Error = AddedZero;

    fn decide(_: &Total, command: &Add, _: DateTime<Utc>) -> Result<Vec<Added>, AddedZero> {
        if command.0 == 0 {
            return Err(AddedZero);
        }
        Ok(vec![Added(command.0)])
    }

    fn evolve(state: Total, event: &Added) -> Total {
        Total(state.0 + event.0)
    }
}

impl EventCodec for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode(&self) -> Result<Value, serde_json::Error> {
        Ok(serde_json::json!({ "by": self.0 }))
    }
    fn decode(event_type: &str, schema_version: u32, payload: Value) -> Result<Self, DecodeError> {
        if event_type != "Added" {
            return Err(DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            });
        }
        payload["by"]
            .as_u64()
            .map(Added)
            .ok_or(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                schema_version,
            })
    }
}
