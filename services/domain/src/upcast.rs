//! Upcasters: turn stored payloads of older schema versions into the current shape, at read time.
//!
//! | event type | version | change to the next version |
//! |---|---|---|
//! | `SubscriptionRequested` | 1 → 2 | the single `"list": "…"` became `"lists": ["…"]`; `consent.source` was added (`null` for v1) |
//!
//! Every other event type is at version 1. Stored events are never rewritten: old versions stay
//! readable forever because each upcaster stays here.

use serde::de::Error as _;
use serde_json::Value;

use crate::codec::DecodeError;

/// Brings a stored payload of `event_type` from `schema_version` up to `current_version`.
pub(crate) fn upcast(
    event_type: &str,
    schema_version: u32,
    current_version: u32,
    payload: Value,
) -> Result<Value, DecodeError> {
    let mut version = schema_version;
    let mut payload = payload;
    while version < current_version {
        payload = match (event_type, version) {
            ("SubscriptionRequested", 1) => {
                subscription_requested_v1_to_v2(payload).map_err(|source| {
                    DecodeError::Malformed {
                        event_type: event_type.to_owned(),
                        schema_version,
                        source,
                    }
                })?
            }
            _ => break,
        };
        version += 1;
    }
    if version == current_version {
        Ok(payload)
    } else {
        Err(DecodeError::UnknownVersion {
            event_type: event_type.to_owned(),
            schema_version,
        })
    }
}

/// `SubscriptionRequested` v1 → v2: `list` becomes `lists`, `consent.source` becomes `null`.
pub fn subscription_requested_v1_to_v2(payload: Value) -> Result<Value, serde_json::Error> {
    let Value::Object(mut object) = payload else {
        return Err(serde_json::Error::custom("payload is not an object"));
    };
    let list = match object.remove("list") {
        Some(Value::String(list)) => list,
        Some(_) => return Err(serde_json::Error::custom("`list` is not a string")),
        None => return Err(serde_json::Error::custom("missing field `list`")),
    };
    object.insert("lists".to_owned(), Value::Array(vec![Value::String(list)]));
    match object.get_mut("consent") {
        Some(Value::Object(consent)) => {
            consent.entry("source").or_insert(Value::Null);
        }
        Some(_) => return Err(serde_json::Error::custom("`consent` is not an object")),
        None => return Err(serde_json::Error::custom("missing field `consent`")),
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn empty_payload() -> Value {
        Value::Object(Map::new())
    }

    #[test]
    fn v1_list_becomes_lists_and_source_is_added() {
        let v2 = subscription_requested_v1_to_v2(json!({
            "list": "news",
            "consent": {"policy_version": "1"},
            "email": "a@b.dk"
        }))
        .unwrap();
        assert_eq!(
            v2,
            json!({
                "lists": ["news"],
                "consent": {"policy_version": "1", "source": null},
                "email": "a@b.dk"
            })
        );
    }

    #[test]
    fn malformed_v1_is_refused() {
        assert!(subscription_requested_v1_to_v2(json!({"consent": {}})).is_err());
        assert!(subscription_requested_v1_to_v2(json!({"list": 3, "consent": {}})).is_err());
        assert!(subscription_requested_v1_to_v2(json!({"list": "a"})).is_err());
        assert!(subscription_requested_v1_to_v2(json!([])).is_err());
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            upcast("SubscriptionRequested", 3, 2, empty_payload()),
            Err(DecodeError::UnknownVersion {
                schema_version: 3,
                ..
            })
        ));
        assert!(matches!(
            upcast("DataExported", 0, 1, empty_payload()),
            Err(DecodeError::UnknownVersion {
                schema_version: 0,
                ..
            })
        ));
    }
}
