//! The KurrentDB (EventStoreDB 20.6+) adapter, over the `kurrentdb` gRPC client.
//!
//! - One KurrentDB stream per stream of ours, named by our [`StreamId`] (after an optional
//!   [`KurrentDbConfig::stream_prefix`]).
//! - Expected versions: our `NoStream` is KurrentDB's no-stream state, our `Exact(n)` (1-based)
//!   is its revision `n - 1` (0-based). A conflict is [`StoreError::WrongExpectedVersion`] with
//!   the stream's actual version as KurrentDB reports it.
//! - Event ids are passed through: KurrentDB itself acknowledges a retry of the same ids at the
//!   same expected version without writing them again. A conflicting retry is classified like
//!   the SQL adapters do (same ids at those versions: replay; some: duplicate id; none: conflict).
//! - The global log is `$all`, read forwards in commit order with a server-side filter (our
//!   stream prefix, or every non-system stream); our [`Position`] is its commit/prepare pair.
//! - [`EventStore::changes`] is bumped by a background, filtered subscription to `$all` that
//!   reconnects with backoff (see `watch`).
//!
//! Where this differs from the SQL adapters is written down in `docs/kurrentdb.md`.

mod envelope;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscriptionFilter,
};
use tokio::sync::watch as tokio_watch;
use uuid::Uuid;

use crate::StoreError;
use crate::model::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use crate::port::EventStore;

/// How the KurrentDB adapter uses its server.
#[derive(Debug, Clone)]
pub struct KurrentDbConfig {
    /// Put before every stream name in KurrentDB, and the server-side filter on `$all`: only
    /// streams with this prefix are read back. Empty (the default): every stream that is not a
    /// system stream (`$…`), which suits a KurrentDB database of newsletter's own. Set it when
    /// the database is shared with other applications (and in tests, one per test).
    pub stream_prefix: String,
    /// The deadline of one call (append, read).
    pub deadline: Duration,
    /// The longest pause between two attempts to resubscribe the change watcher.
    pub max_reconnect_backoff: Duration,
}

impl Default for KurrentDbConfig {
    fn default() -> Self {
        Self {
            stream_prefix: String::new(),
            deadline: Duration::from_secs(30),
            max_reconnect_backoff: Duration::from_secs(10),
        }
    }
}

/// The event store on a KurrentDB (or EventStoreDB 20.6+) server or cluster.
pub struct KurrentDbEventStore {
    client: Client,
    config: KurrentDbConfig,
    changes: Arc<tokio_watch::Sender<u64>>,
    _watcher: watch::Watcher,
}

/// Wraps a client error with what the store was doing.
fn backend(operation: &'static str) -> impl FnOnce(kurrentdb::Error) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        message: error.to_string(),
    }
}

/// KurrentDB's expected stream state for ours.
fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        // `Exact(0)` says the same as `NoStream` (no event yet); the SQL adapters read it so too.
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => StreamState::NoStream,
        ExpectedVersion::Exact(version) => StreamState::StreamRevision(version - 1),
    }
}

/// Our stream version (1-based, 0 for none) from KurrentDB's current revision.
fn version_of(current: CurrentRevision) -> u64 {
    match current {
        CurrentRevision::NoStream => 0,
        CurrentRevision::Current(revision) => revision.saturating_add(1),
    }
}

impl KurrentDbEventStore {
    /// Connects with a connection string: `kurrentdb://`, `esdb://` (and their `+discover`
    /// forms, `kdb://`, `kurrent://`), e.g. `esdb://localhost:2113?tls=false`. The connection is
    /// made lazily; an unreachable server shows in the first call's error.
    pub async fn connect(url: &str, config: KurrentDbConfig) -> Result<Self, StoreError> {
        let settings: ClientSettings = url.parse().map_err(
            |e: kurrentdb::ClientSettingsParseError| StoreError::Backend {
                operation: "parse the KurrentDB connection string",
                message: e.to_string(),
            },
        )?;
        Self::with_settings(settings, config)
    }

    /// Connects with parsed client settings.
    pub fn with_settings(
        settings: ClientSettings,
        config: KurrentDbConfig,
    ) -> Result<Self, StoreError> {
        let client = Client::new(settings).map_err(|e| StoreError::Backend {
            operation: "create the KurrentDB client",
            message: e.to_string(),
        })?;
        let (sender, _) = tokio_watch::channel(0);
        let changes = Arc::new(sender);
        let watcher = watch::Watcher::start(
            client.clone(),
            filter_for(&config.stream_prefix),
            Arc::clone(&changes),
            config.max_reconnect_backoff,
        );
        Ok(Self {
            client,
            config,
            changes,
            _watcher: watcher,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KurrentDbConfig {
        &self.config
    }

    /// The name of one of our streams in KurrentDB.
    fn name(&self, stream: &StreamId) -> String {
        format!("{}{}", self.config.stream_prefix, stream.as_str())
    }

    /// Reads up to `count` events of a KurrentDB stream from `revision` on (0-based).
    /// A missing or deleted stream reads as empty.
    async fn read_revisions(
        &self,
        name: &str,
        revision: u64,
        count: usize,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(revision))
            .max_count(count)
            .deadline(self.config.deadline);
        let mut read = match self.client.read_stream(name, &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(backend(operation)(e)),
        };
        let mut events = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let Some(event) = resolved.event.as_ref() else {
                        continue;
                    };
                    if envelope::is_system(event) {
                        continue;
                    }
                    events.push(envelope::decode(event, &self.config.stream_prefix)?);
                }
                Ok(None) => return Ok(events),
                Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted) => {
                    return Ok(events);
                }
                Err(e) => return Err(backend(operation)(e)),
            }
        }
    }

    /// After a successful append: the stored last event, checked to be ours. Read back because
    /// an idempotent acknowledgement carries no position, and because the position of a write
    /// need not be that of its last event.
    async fn stored_last(
        &self,
        name: &str,
        version: u64,
        last_id: Uuid,
    ) -> Result<RecordedEvent, StoreError> {
        let revision = version.saturating_sub(1);
        let stored = self
            .read_revisions(name, revision, 1, "read back an append")
            .await?;
        match stored.into_iter().next() {
            Some(event) if event.event_id == last_id => Ok(event),
            Some(event) => Err(StoreError::Corrupt {
                location: format!("stream revision {revision}"),
                reason: format!(
                    "KurrentDB acknowledged the append, but holds event {} there instead of {last_id}",
                    event.event_id
                ),
            }),
            None => Err(StoreError::Corrupt {
                location: format!("stream revision {revision}"),
                reason: "KurrentDB acknowledged the append, but the event cannot be read back"
                    .to_owned(),
            }),
        }
    }

    /// After KurrentDB refused an append: reads what the stream holds at the asked-for versions
    /// and tells a retry of an append that already succeeded from a real conflict.
    async fn classify_conflict(
        &self,
        stream: &StreamId,
        name: &str,
        expected: ExpectedVersion,
        ids: &[Uuid],
        actual: u64,
    ) -> Result<AppendOutcome, StoreError> {
        let first = expected.as_u64();
        let stored = if actual > first {
            self.read_revisions(name, first, ids.len(), "classify a conflict")
                .await?
        } else {
            Vec::new()
        };
        classify(stream, expected, ids, &stored, actual)
    }
}

/// Tells a retry of an append that already succeeded from a real conflict, as the SQL adapters
/// do: the same ids at the asked-for versions are a replay (nothing written, the stored outcome
/// returned), some of them a reused id, none a version conflict. `stored` holds the events at
/// the asked-for versions, `actual` the stream's version.
fn classify(
    stream: &StreamId,
    expected: ExpectedVersion,
    ids: &[Uuid],
    stored: &[RecordedEvent],
    actual: u64,
) -> Result<AppendOutcome, StoreError> {
    let matching: Vec<Uuid> = ids
        .iter()
        .zip(stored)
        .filter(|(id, slot)| **id == slot.event_id)
        .map(|(id, _)| *id)
        .collect();
    if matching.len() == ids.len()
        && stored.len() == ids.len()
        && let Some(last) = stored.last()
    {
        return Ok(AppendOutcome {
            stream_version: last.stream_version,
            position: last.position,
            idempotent_replay: true,
        });
    }
    if let Some(event_id) = matching.first() {
        return Err(StoreError::DuplicateEventId {
            event_id: *event_id,
        });
    }
    Err(StoreError::WrongExpectedVersion {
        stream: stream.clone(),
        expected,
        actual,
    })
}

/// The server-side filter on `$all`: our prefix, or every non-system stream.
fn filter_for(stream_prefix: &str) -> SubscriptionFilter {
    if stream_prefix.is_empty() {
        SubscriptionFilter::on_stream_name().exclude_system_events()
    } else {
        SubscriptionFilter::on_stream_name().add_prefix(stream_prefix)
    }
}

#[async_trait]
impl EventStore for KurrentDbEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let Some(last_id) = events.last().map(|e| e.event_id) else {
            return Err(StoreError::EmptyAppend);
        };
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let data = events
            .iter()
            .map(envelope::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let name = self.name(stream);
        // A retry of an append that already landed is answered from what is stored, without
        // writing: KurrentDB would acknowledge it too, but could not say that it was a replay.
        let first_slot = self
            .read_revisions(
                &name,
                expected.as_u64(),
                ids.len(),
                "check for a retried append",
            )
            .await?;
        if first_slot.first().map(|e| e.event_id) == ids.first().copied() {
            let actual = first_slot
                .last()
                .map_or(expected.as_u64(), |e| e.stream_version);
            return classify(stream, expected, &ids, &first_slot, actual);
        }
        let options = AppendToStreamOptions::default()
            .stream_state(stream_state(expected))
            .deadline(self.config.deadline);
        match self
            .client
            .append_to_stream(name.as_str(), &options, data)
            .await
        {
            Ok(result) => {
                // A retry racing its own first attempt: KurrentDB acknowledges it without a
                // position (the client turns that into the start of the log).
                let idempotent_replay = result.position == kurrentdb::Position::start();
                // Either way the events sit right after the expected version.
                let count = u64::try_from(ids.len()).unwrap_or(u64::MAX);
                let stream_version = expected.as_u64().saturating_add(count);
                let last = self.stored_last(&name, stream_version, last_id).await?;
                if !idempotent_replay {
                    watch::bump(&self.changes);
                }
                Ok(AppendOutcome {
                    stream_version,
                    position: last.position,
                    idempotent_replay,
                })
            }
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                self.classify_conflict(stream, &name, expected, &ids, version_of(current))
                    .await
            }
            Err(kurrentdb::Error::ResourceDeleted) => Err(StoreError::Backend {
                operation: "append",
                message: format!("stream {stream} is deleted (tombstoned) in KurrentDB"),
            }),
            Err(e) => Err(backend("append")(e)),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_revisions(&self.name(stream), after_version, usize::MAX, "read stream")
            .await
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(events);
        }
        // A forward read from a position includes the event there, so ask for one more and
        // drop it. A full page that held only skipped events is followed by the next page, so
        // an empty answer always means "nothing more yet".
        let page = limit.saturating_add(1);
        let filter = filter_for(&self.config.stream_prefix);
        let mut cursor = after;
        loop {
            let start = cursor.map_or(StreamPosition::Start, |p| {
                StreamPosition::Position(envelope::position_to(p))
            });
            let options = ReadAllOptions::default()
                .forwards()
                .position(start)
                .filter(filter.clone())
                .max_count(page)
                .deadline(self.config.deadline);
            let mut read = self
                .client
                .read_all(&options)
                .await
                .map_err(backend("read $all"))?;
            let page_after = cursor;
            let mut received = 0usize;
            while let Some(resolved) = read.next().await.map_err(backend("read $all"))? {
                received += 1;
                let Some(event) = resolved.event.as_ref() else {
                    continue;
                };
                let position = envelope::position_from(event.position);
                if page_after.is_some_and(|after| position <= after) {
                    continue;
                }
                cursor = Some(position);
                if envelope::is_system(event) {
                    continue;
                }
                events.push(envelope::decode(event, &self.config.stream_prefix)?);
                if events.len() == limit {
                    return Ok(events);
                }
            }
            if received < page || cursor == page_after {
                return Ok(events);
            }
        }
    }

    fn changes(&self) -> tokio_watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn adapter_name(&self) -> &'static str {
        "kurrentdb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_map_to_zero_based_revisions() {
        assert_eq!(
            stream_state(ExpectedVersion::NoStream),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(0)),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(1)),
            StreamState::StreamRevision(0)
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(42)),
            StreamState::StreamRevision(41)
        );
        assert_eq!(version_of(CurrentRevision::NoStream), 0);
        assert_eq!(version_of(CurrentRevision::Current(0)), 1);
        assert_eq!(version_of(CurrentRevision::Current(41)), 42);
    }

    fn stored(ids: &[Uuid], first_version: u64) -> Vec<RecordedEvent> {
        ids.iter()
            .zip(first_version..)
            .map(|(id, version)| RecordedEvent {
                event_id: *id,
                stream: StreamId::new("subscriber-1").expect("stream"),
                stream_version: version,
                position: Position::new(100 + version, 100 + version),
                recorded_at: chrono::DateTime::UNIX_EPOCH,
                event_type: "TestHappened".to_owned(),
                schema_version: 1,
                payload: "{}".to_owned(),
                metadata: crate::EventMetadata::default(),
            })
            .collect()
    }

    #[test]
    fn the_same_ids_at_the_asked_for_versions_are_a_replay() {
        let stream = StreamId::new("subscriber-1").expect("stream");
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        let outcome = classify(
            &stream,
            ExpectedVersion::NoStream,
            &ids,
            &stored(&ids, 1),
            4,
        )
        .expect("a replay");
        assert!(outcome.idempotent_replay);
        assert_eq!(outcome.stream_version, 2);
        assert_eq!(outcome.position, Position::new(102, 102));
    }

    #[test]
    fn some_of_the_ids_are_a_reused_id_and_none_a_conflict() {
        let stream = StreamId::new("subscriber-1").expect("stream");
        let ids = [Uuid::now_v7(), Uuid::now_v7()];
        let other = Uuid::now_v7();
        match classify(
            &stream,
            ExpectedVersion::NoStream,
            &ids,
            &stored(&[ids[0], other], 1),
            2,
        ) {
            Err(StoreError::DuplicateEventId { event_id }) => assert_eq!(event_id, ids[0]),
            other => panic!("expected a duplicate id, got {other:?}"),
        }
        match classify(
            &stream,
            ExpectedVersion::Exact(1),
            &ids,
            &stored(&[other], 2),
            2,
        ) {
            Err(StoreError::WrongExpectedVersion {
                actual, expected, ..
            }) => {
                assert_eq!(actual, 2);
                assert_eq!(expected, ExpectedVersion::Exact(1));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // A partial match (the stream holds only the start of the batch) is not a replay.
        assert!(matches!(
            classify(
                &stream,
                ExpectedVersion::NoStream,
                &ids,
                &stored(&ids[..1], 1),
                1
            ),
            Err(StoreError::DuplicateEventId { .. })
        ));
    }

    #[test]
    fn the_filter_is_the_prefix_or_every_non_system_stream() {
        let all = format!("{:?}", filter_for(""));
        assert!(all.contains("^[^\\\\$].*"), "{all}");
        let prefixed = format!("{:?}", filter_for("tenant-a."));
        assert!(prefixed.contains("tenant-a."), "{prefixed}");
    }

    #[tokio::test]
    async fn a_bad_connection_string_is_refused_with_context() {
        let result = KurrentDbEventStore::connect("esdb://", KurrentDbConfig::default()).await;
        match result {
            Err(StoreError::Backend { operation, .. }) => {
                assert_eq!(operation, "parse the KurrentDB connection string");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an empty host was accepted"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_backend_error_not_a_hang() {
        // Port 1 on loopback: nothing listens there.
        let store = KurrentDbEventStore::connect(
            "esdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=1&discoveryInterval=10",
            KurrentDbConfig {
                deadline: Duration::from_secs(5),
                ..KurrentDbConfig::default()
            },
        )
        .await
        .expect("the client is created lazily");
        assert_eq!(store.adapter_name(), "kurrentdb");
        let stream = StreamId::new("subscriber-x").expect("stream");
        let result = tokio::time::timeout(Duration::from_secs(30), store.read_stream(&stream, 0))
            .await
            .expect("the call gives up within its bounds");
        assert!(
            matches!(result, Err(StoreError::Backend { .. })),
            "got {result:?}"
        );
    }
}
