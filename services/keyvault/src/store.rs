//! [`EncryptingEventStore`]: an [`EventStore`] decorator that encrypts the personal fields of
//! subscriber events on append and decrypts them on read.
//!
//! # Stored form
//!
//! For an event of a `subscriber-<uuid>` stream whose [`SubscriberEvent::personal_data_pointers`]
//! are non-empty, the fields at those JSON pointers are **removed** from the payload and stored
//! together, encrypted, under one extra top-level member:
//!
//! ```json
//! {"request_id": "…", "lists": ["news"], "consent": {"policy_version": "2026-11", …},
//!  "personal_data": {"v": 1, "alg": "XChaCha20-Poly1305", "sealed": "<base64 nonce||ciphertext>"}}
//! ```
//!
//! The plaintext is a JSON object `{pointer: value}`; the associated data is the event id and
//! the stream name, so a sealed blob copied onto another event does not open. The key is the
//! subscriber's data key from the [`KeyVault`], created on the first event that needs one.
//! Events without personal data, and streams that are not a subscriber's, pass through as is.
//!
//! # Reading after erasure
//!
//! When the subscriber's key was destroyed (or is missing), an event with sealed personal data
//! is returned as a `PersonalDataErased` event (schema version 1, payload: original type and
//! version and the time it was recorded; no personal data) instead of an error. The domain's
//! `evolve` ignores it and the stream's `SubscriberErased` makes the fold the erased state, so
//! the decider, the projections and the mailer need no special case.
//!
//! # Appending after erasure
//!
//! Personal data for a subscriber whose key was destroyed is refused
//! ([`StoreError::Corrupt`] naming the stream): the domain never produces it, and the refusal
//! keeps a stale writer from storing it under a fresh key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use newsletter_domain::{EventCodec, SubscriberEvent};
use newsletter_eventstore::{
    AppendOutcome, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StreamId,
};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use uuid::Uuid;
use zeroize::Zeroize;

use crate::error::VaultError;
use crate::master::KeyBytes;
use crate::vault::{KeyState, KeyVault};

/// The payload member that holds the sealed personal data.
pub const SEALED_MEMBER: &str = "personal_data";
/// The algorithm name stored beside the sealed data.
pub const ALGORITHM: &str = "XChaCha20-Poly1305";
/// The event type returned in place of an event whose key is gone.
pub const ERASED_TYPE: &str = "PersonalDataErased";

/// The decorator. Cheap to clone.
#[derive(Clone)]
pub struct EncryptingEventStore {
    inner: Arc<dyn EventStore>,
    vault: KeyVault,
}

impl EncryptingEventStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>, vault: KeyVault) -> Self {
        Self { inner, vault }
    }

    /// The wrapped store (holds sealed payloads).
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// The vault.
    #[must_use]
    pub fn vault(&self) -> &KeyVault {
        &self.vault
    }
}

fn vault_error(stream: &str, error: VaultError) -> StoreError {
    match error {
        VaultError::Database { operation, source } => StoreError::Database { operation, source },
        other => StoreError::Corrupt {
            location: format!("key vault, stream {stream}"),
            reason: other.to_string(),
        },
    }
}

/// The subscriber a stream belongs to.
#[must_use]
pub fn subscriber_of(stream: &str) -> Option<Uuid> {
    stream
        .strip_prefix("subscriber-")
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn aad(event_id: Uuid, stream: &str) -> Vec<u8> {
    let mut aad = event_id.as_bytes().to_vec();
    aad.extend_from_slice(stream.as_bytes());
    aad
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Removes the value at an object-only JSON pointer; `None` when absent.
fn take_pointer(value: &mut Value, pointer: &str) -> Option<Value> {
    let mut tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let last = tokens.pop()?;
    let mut current = value;
    for token in tokens {
        current = current.as_object_mut()?.get_mut(&token)?;
    }
    current.as_object_mut()?.remove(&last)
}

/// Puts a value back at an object-only JSON pointer, creating objects on the way.
fn put_pointer(value: &mut Value, pointer: &str, new: Value) -> bool {
    let mut tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let Some(last) = tokens.pop() else {
        return false;
    };
    let mut current = value;
    for token in tokens {
        let Some(object) = current.as_object_mut() else {
            return false;
        };
        current = object
            .entry(token)
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match current.as_object_mut() {
        Some(object) => {
            object.insert(last, new);
            true
        }
        None => false,
    }
}

/// The personal-data pointers of a new event (`&[]` for other streams' events).
fn pointers_of(event: &NewEvent) -> Result<&'static [&'static str], StoreError> {
    let decoded = SubscriberEvent::decode(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .map_err(|e| StoreError::Corrupt {
        location: format!("new event {}", event.event_id),
        reason: format!("cannot tell its personal data: {e}"),
    })?;
    Ok(decoded.personal_data_pointers())
}

/// Seals the fields at `pointers` of `event` with `key`.
fn seal(
    event: &mut NewEvent,
    stream: &str,
    pointers: &[&str],
    key: &KeyBytes,
) -> Result<(), StoreError> {
    let mut personal = Map::new();
    for pointer in pointers {
        if let Some(value) = take_pointer(&mut event.payload, pointer) {
            personal.insert((*pointer).to_owned(), value);
        }
    }
    let mut plain =
        serde_json::to_vec(&Value::Object(personal)).map_err(|e| StoreError::Corrupt {
            location: format!("new event {}", event.event_id),
            reason: e.to_string(),
        })?;
    let sealed = key
        .seal(&plain, &aad(event.event_id, stream))
        .map_err(|e| vault_error(stream, e));
    plain.zeroize();
    let sealed = sealed?;
    let Some(object) = event.payload.as_object_mut() else {
        return Err(StoreError::Corrupt {
            location: format!("new event {}", event.event_id),
            reason: "the payload is not a JSON object".to_owned(),
        });
    };
    object.insert(
        SEALED_MEMBER.to_owned(),
        json!({"v": 1, "alg": ALGORITHM, "sealed": STANDARD.encode(sealed)}),
    );
    Ok(())
}

/// What reading does with one stored event.
enum Opened {
    /// Nothing sealed in it.
    Plain,
    /// Sealed and opened: the new payload text.
    Payload(String),
    /// Sealed, and the key is gone.
    Erased,
}

fn open(event: &RecordedEvent, key: Option<&KeyState>) -> Result<Opened, StoreError> {
    // Cheap test first: most events hold no sealed data.
    if !event.payload.contains(SEALED_MEMBER) {
        return Ok(Opened::Plain);
    }
    let corrupt = |reason: String| StoreError::Corrupt {
        location: format!("position {}", event.position),
        reason,
    };
    let mut payload: Value = serde_json::from_str(&event.payload)
        .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?;
    let Some(sealed) = payload
        .as_object_mut()
        .and_then(|o| o.remove(SEALED_MEMBER))
    else {
        return Ok(Opened::Plain);
    };
    let key = match key {
        Some(KeyState::Active(key)) => key,
        Some(KeyState::Shredded(_)) => return Ok(Opened::Erased),
        None => {
            tracing::warn!(stream = %event.stream, position = %event.position, "no data key for sealed personal data; reading it as erased (was the key vault restored from an old backup?)");
            return Ok(Opened::Erased);
        }
    };
    if sealed.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(corrupt(
            "sealed personal data of an unknown algorithm".to_owned(),
        ));
    }
    let bytes = sealed
        .get("sealed")
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or_else(|| corrupt("sealed personal data is not base64".to_owned()))?;
    let mut plain = key
        .open(
            &bytes,
            &aad(event.event_id, event.stream.as_str()),
            &format!("the personal data at position {}", event.position),
        )
        .map_err(|e| vault_error(event.stream.as_str(), e))?;
    let personal: Result<Map<String, Value>, _> = serde_json::from_slice(&plain);
    plain.zeroize();
    let personal =
        personal.map_err(|_| corrupt("opened personal data is not an object".to_owned()))?;
    for (pointer, value) in personal {
        put_pointer(&mut payload, &pointer, value);
    }
    serde_json::to_string(&payload)
        .map(Opened::Payload)
        .map_err(|e| corrupt(e.to_string()))
}

fn erased(mut event: RecordedEvent) -> RecordedEvent {
    event.payload = json!({
        "original_type": event.event_type,
        "original_schema_version": event.schema_version,
        "at": event.recorded_at,
    })
    .to_string();
    event.event_type = ERASED_TYPE.to_owned();
    event.schema_version = 1;
    event
}

impl EncryptingEventStore {
    /// Opens every sealed event of a batch, with one vault query for all their subscribers.
    async fn open_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        let needed: HashSet<Uuid> = events
            .iter()
            .filter(|e| e.payload.contains(SEALED_MEMBER))
            .filter_map(|e| subscriber_of(e.stream.as_str()))
            .collect();
        if needed.is_empty() {
            return Ok(events);
        }
        let ids: Vec<Uuid> = needed.into_iter().collect();
        let keys: HashMap<Uuid, KeyState> = self
            .vault
            .states(&ids)
            .await
            .map_err(|e| vault_error("(batch)", e))?;
        events
            .into_iter()
            .map(|mut event| {
                let key = subscriber_of(event.stream.as_str()).and_then(|id| keys.get(&id));
                match open(&event, key)? {
                    Opened::Plain => Ok(event),
                    Opened::Payload(payload) => {
                        event.payload = payload;
                        Ok(event)
                    }
                    Opened::Erased => Ok(erased(event)),
                }
            })
            .collect()
    }
}

#[async_trait]
impl EventStore for EncryptingEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let Some(subscriber) = subscriber_of(stream.as_str()) else {
            return self.inner.append(stream, expected, events).await;
        };
        let mut events = events;
        let mut key: Option<Option<KeyBytes>> = None;
        for event in &mut events {
            let pointers = pointers_of(event)?;
            if pointers.is_empty() {
                continue;
            }
            if key.is_none() {
                key = Some(
                    self.vault
                        .key_for_append(subscriber)
                        .await
                        .map_err(|e| vault_error(stream.as_str(), e))?,
                );
            }
            let Some(Some(data_key)) = &key else {
                return Err(StoreError::Corrupt {
                    location: format!("stream {stream}"),
                    reason: "the subscriber was erased: personal data is not stored again"
                        .to_owned(),
                });
            };
            seal(event, stream.as_str(), pointers, data_key)?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream, after_version).await?;
        self.open_all(events).await
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after, limit).await?;
        self.open_all(events).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn adapter_name(&self) -> &'static str {
        self.inner.adapter_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_are_taken_and_put_back() {
        let mut v = json!({"email": "a@b.dk", "consent": {"ip": "192.0.2.1", "at": "t"}, "x": 1});
        let email = take_pointer(&mut v, "/email").unwrap();
        let ip = take_pointer(&mut v, "/consent/ip").unwrap();
        assert!(take_pointer(&mut v, "/consent/user_agent").is_none());
        assert!(take_pointer(&mut v, "/nope/deeper").is_none());
        assert_eq!(v, json!({"consent": {"at": "t"}, "x": 1}));
        assert!(put_pointer(&mut v, "/email", email));
        assert!(put_pointer(&mut v, "/consent/ip", ip));
        assert_eq!(
            v,
            json!({"email": "a@b.dk", "consent": {"ip": "192.0.2.1", "at": "t"}, "x": 1})
        );
    }
}
