//! The one conformance suite every event store adapter must pass.
//!
//! Each check takes a fresh, empty store from a [`Backend`]; `conformance_suite!` turns the list
//! of checks into one `#[tokio::test]` per check for an adapter.

#![allow(dead_code)]

pub mod counter;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use newsletter_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StreamHint, StreamId, Subscription, SubscriptionOptions, SystemClock, execute,
    execute_with_hint,
};
use uuid::Uuid;

/// A way to get a fresh store of one adapter, and to reopen it as after a restart.
pub trait Backend: Sized + Send {
    /// A new, empty store.
    async fn fresh() -> Self;
    /// The open store.
    fn store(&self) -> Arc<dyn EventStore>;
    /// Closes the store and opens it again on the same data, as a restarted process would.
    async fn reopen(&mut self);
    /// Removes what `fresh` created (best effort).
    async fn cleanup(self);
}

/// Generates one test per conformance check for a backend type. The bracketed attributes are
/// put on every test (the PostgreSQL suite uses them to be ignored, with a reason, when no
/// server is configured).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ty, $attrs:tt) => {
        $crate::conformance_suite!(@tests $backend, $attrs,
            conflict_on_wrong_expected_version,
            idempotent_retry_of_the_same_events,
            append_is_all_or_nothing,
            empty_append_is_refused,
            large_batch_in_one_append,
            read_stream_after_a_version,
            concurrent_writers_read_back_exactly_once_in_one_order,
            subscription_catches_up_then_goes_live,
            subscription_resumes_from_its_checkpoint_after_a_restart,
            a_subscription_knows_when_it_has_returned_every_event_of_a_stream,
            appends_survive_a_restart,
            command_handling_retries_conflicts_without_losing_updates,
            a_command_on_a_stream_believed_new_skips_the_read_and_still_sees_what_is_there,
            a_command_on_a_loaded_state_skips_the_read_and_decides_again_if_it_changed,
            concurrent_one_event_appends_each_get_their_own_verdict,
        );
    };
    (@tests $backend:ty, $attrs:tt, $($name:ident),* $(,)?) => {
        $( $crate::conformance_suite!(@one $backend, $attrs, $name); )*
    };
    (@one $backend:ty, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $name() {
            let mut backend = <$backend as $crate::conformance::Backend>::fresh().await;
            $crate::conformance::$name(&mut backend).await;
            backend.cleanup().await;
        }
    };
}

/// The longest any single wait in the suite may take before the check fails (a liveness bound,
/// not a performance assertion).
const PATIENCE: Duration = Duration::from_secs(60);

fn stream(name: &str) -> StreamId {
    StreamId::new(format!("test-{name}")).expect("valid stream name")
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "TestHappened".to_owned(),
        schema_version: 1,
        payload: serde_json::json!({ "n": n }),
        metadata: EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            actor: Some("conformance".to_owned()),
        },
    }
}

fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

/// Reads the whole log in pages of `page`, waiting (within the patience bound) until at least
/// `expected` events are readable. Committed events may become readable a little later than
/// their commit (PostgreSQL holds them back while an older transaction anywhere in the cluster
/// is still open), but they are never skipped; the caller asserts the exact count.
async fn read_everything(
    store: &dyn EventStore,
    page: usize,
    expected: usize,
) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let batch = store.read_all(after, page).await.expect("read all");
        if let Some(last) = batch.last() {
            after = Some(last.position);
            all.extend(batch);
            continue;
        }
        if all.len() >= expected || tokio::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event(subscription: &mut Subscription) -> RecordedEvent {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("an event within the patience bound")
        .expect("subscription read")
}

/// Appending at a version the stream is not at fails with the stream's actual version.
pub async fn conflict_on_wrong_expected_version<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("conflict");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events(0..2))
        .await
        .expect("first append");
    assert_eq!(first.stream_version, 2);
    assert!(!first.idempotent_replay);

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
    ] {
        match store.append(&s, expected, events(10..11)).await {
            Err(StoreError::WrongExpectedVersion {
                actual,
                expected: e,
                ..
            }) => {
                assert_eq!(actual, 2);
                assert_eq!(e, expected);
            }
            other => panic!("expected a version conflict for {expected}, got {other:?}"),
        }
    }
    let next = store
        .append(&s, ExpectedVersion::Exact(2), events(2..3))
        .await
        .expect("append at the right version");
    assert_eq!(next.stream_version, 3);
    assert!(next.position > first.position);
    let stored = store.read_stream(&s, 0).await.expect("read stream");
    let versions: Vec<_> = stored.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

/// Appending the same event ids again succeeds without writing; reusing an id elsewhere fails.
pub async fn idempotent_retry_of_the_same_events<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("idempotent");
    let batch = events(0..3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first append");
    let retry = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("retry is accepted");
    assert!(retry.idempotent_replay);
    assert_eq!(retry.stream_version, first.stream_version);
    assert_eq!(retry.position, first.position);
    assert_eq!(store.read_stream(&s, 0).await.expect("read").len(), 3);

    // The same retry after the stream moved on is still recognised as the same append.
    store
        .append(&s, ExpectedVersion::Exact(3), events(3..4))
        .await
        .expect("later append");
    let late_retry = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("late retry is accepted");
    assert!(late_retry.idempotent_replay);
    assert_eq!(late_retry.stream_version, 3);

    // A retry that reuses some of the ids but not all is not the same append.
    let mut altered = batch.clone();
    altered[2] = event(99);
    match store.append(&s, ExpectedVersion::NoStream, altered).await {
        Err(StoreError::DuplicateEventId { event_id }) => assert_eq!(event_id, batch[0].event_id),
        other => panic!("expected a duplicate id error, got {other:?}"),
    }
    // Other events at those versions make it a plain conflict.
    match store
        .append(&s, ExpectedVersion::NoStream, events(50..52))
        .await
    {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, 4),
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(read_everything(store.as_ref(), 100, 4).await.len(), 4);
}

/// Concurrent multi-event appends at the same version: exactly one lands, whole, and nothing of
/// the others is stored or interleaved.
pub async fn append_is_all_or_nothing<B: Backend>(backend: &mut B) {
    const RACERS: u64 = 8;
    let store = backend.store();
    let s = stream("atomic");
    store
        .append(&s, ExpectedVersion::NoStream, events(0..1))
        .await
        .expect("first append");
    let mut racers = Vec::new();
    for racer in 0..RACERS {
        let store = Arc::clone(&store);
        let s = s.clone();
        racers.push(tokio::spawn(async move {
            let batch = events(racer * 100..racer * 100 + 5);
            let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
            (
                ids,
                store.append(&s, ExpectedVersion::Exact(1), batch).await,
            )
        }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        let (ids, result) = racer.await.expect("racer task");
        match result {
            Ok(outcome) => {
                assert_eq!(outcome.stream_version, 6);
                winners.push(ids);
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, 6),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent append wins");
    let stored: Vec<_> = store
        .read_stream(&s, 1)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        stored, winners[0],
        "the winner's events, whole and in order"
    );
    assert_eq!(read_everything(store.as_ref(), 10, 6).await.len(), 6);
}

/// An append with no events is refused.
pub async fn empty_append_is_refused<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let result = store
        .append(&stream("empty"), ExpectedVersion::NoStream, Vec::new())
        .await;
    assert!(
        matches!(result, Err(StoreError::EmptyAppend)),
        "got {result:?}"
    );
}

/// A thousand events in one append are stored in order, with consecutive versions.
pub async fn large_batch_in_one_append<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("large");
    let batch = events(0..1000);
    let outcome = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("large append");
    assert_eq!(outcome.stream_version, 1000);
    let stored = store.read_stream(&s, 0).await.expect("read");
    assert_eq!(stored.len(), 1000);
    for (i, (stored, sent)) in stored.iter().zip(&batch).enumerate() {
        assert_eq!(stored.stream_version, i as u64 + 1);
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.payload_json().expect("stored JSON"), sent.payload);
        assert_eq!(stored.metadata, sent.metadata);
        assert_eq!(stored.event_type, "TestHappened");
        assert_eq!(stored.stream, s);
    }
    let all = read_everything(store.as_ref(), 128, 1000).await;
    assert_eq!(all.len(), 1000);
    assert_eq!(all.last().map(|e| e.position), Some(outcome.position));
}

/// `read_stream` returns only the events after the given version.
pub async fn read_stream_after_a_version<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("after");
    store
        .append(&s, ExpectedVersion::NoStream, events(0..5))
        .await
        .expect("append");
    store
        .append(&stream("other"), ExpectedVersion::NoStream, events(0..2))
        .await
        .expect("append other");
    let tail = store.read_stream(&s, 3).await.expect("read");
    let versions: Vec<_> = tail.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![4, 5]);
    assert!(store.read_stream(&s, 5).await.expect("read").is_empty());
    assert!(
        store
            .read_stream(&stream("none"), 0)
            .await
            .expect("read")
            .is_empty()
    );
}

/// 10,000 events from 8 concurrent writers are read back exactly once, in one global order that
/// a live subscription running during the writes sees too.
pub async fn concurrent_writers_read_back_exactly_once_in_one_order<B: Backend>(backend: &mut B) {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 1250;
    let store = backend.store();
    let mut live = Subscription::new(
        Arc::clone(&store),
        None,
        SubscriptionOptions {
            batch_size: 300,
            poll_interval: Duration::from_millis(50),
        },
    );
    let collector = tokio::spawn(async move {
        let mut seen = Vec::with_capacity((WRITERS * PER_WRITER) as usize);
        while seen.len() < (WRITERS * PER_WRITER) as usize {
            seen.push(next_event(&mut live).await);
        }
        // Nothing more may arrive.
        let extra = live.try_next().await.expect("read after the last event");
        assert!(
            extra.is_none(),
            "the subscription saw more events than were written"
        );
        seen
    });

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            let mut n = 0;
            let mut stream_no = 0;
            while n < PER_WRITER {
                // Streams of 1 to 4 events, appended in one or two appends.
                let size = (1 + (n + writer) % 4).min(PER_WRITER - n);
                let s = stream(&format!("w{writer}-s{stream_no}"));
                let batch = events(n..n + size);
                written.extend(batch.iter().map(|e| e.event_id));
                if size > 1 {
                    let (head, tail) = batch.split_at(1);
                    store
                        .append(&s, ExpectedVersion::NoStream, head.to_vec())
                        .await
                        .expect("concurrent append");
                    store
                        .append(&s, ExpectedVersion::Exact(1), tail.to_vec())
                        .await
                        .expect("concurrent append");
                } else {
                    store
                        .append(&s, ExpectedVersion::NoStream, batch)
                        .await
                        .expect("concurrent append");
                }
                n += size;
                stream_no += 1;
            }
            written
        }));
    }
    let mut written = HashSet::new();
    for writer in writers {
        for id in writer.await.expect("writer task") {
            assert!(written.insert(id));
        }
    }
    assert_eq!(written.len() as u64, WRITERS * PER_WRITER);

    let all = read_everything(store.as_ref(), 333, (WRITERS * PER_WRITER) as usize).await;
    assert_eq!(all.len() as u64, WRITERS * PER_WRITER, "read_all count");
    let read_ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(
        read_ids, written,
        "read_all returns every written event exactly once"
    );
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions strictly increase"
    );
    let mut last_version: HashMap<&StreamId, u64> = HashMap::new();
    for e in &all {
        let last = last_version.entry(&e.stream).or_default();
        assert_eq!(
            e.stream_version,
            *last + 1,
            "stream order within the global order"
        );
        *last = e.stream_version;
    }

    let seen = tokio::time::timeout(PATIENCE, collector)
        .await
        .expect("the live subscription caught up")
        .expect("collector task");
    let seen_order: Vec<_> = seen.iter().map(|e| e.event_id).collect();
    let read_order: Vec<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(
        seen_order, read_order,
        "live subscription and read_all agree on one order"
    );
}

/// A subscription returns the stored events, then events appended while it waits.
pub async fn subscription_catches_up_then_goes_live<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("live");
    store
        .append(&s, ExpectedVersion::NoStream, events(0..3))
        .await
        .expect("append");
    let mut subscription = Subscription::new(
        Arc::clone(&store),
        None,
        SubscriptionOptions {
            batch_size: 2,
            poll_interval: Duration::from_secs(30),
        },
    );
    for n in 0..3 {
        assert_eq!(
            next_event(&mut subscription)
                .await
                .payload_json()
                .expect("stored JSON")["n"],
            n
        );
    }
    let waiting = tokio::spawn(async move {
        let event = next_event(&mut subscription).await;
        (event, subscription)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .append(&s, ExpectedVersion::Exact(3), events(3..4))
        .await
        .expect("live append");
    let (event, mut subscription) = waiting.await.expect("live task");
    assert_eq!(event.payload_json().expect("stored JSON")["n"], 3);
    assert_eq!(subscription.checkpoint(), Some(event.position));
    assert!(subscription.try_next().await.expect("try next").is_none());
}

/// A subscription says it has returned every event of a stream only when its last read of the
/// log came back short and none of the stream's events waits in its buffer: not while a later
/// event of the stream is buffered, not after a full batch (more may follow).
pub async fn a_subscription_knows_when_it_has_returned_every_event_of_a_stream<B: Backend>(
    backend: &mut B,
) {
    let store = backend.store();
    let (a, b) = (stream("whole-a"), stream("whole-b"));
    for (s, expected, n) in [
        (&a, ExpectedVersion::NoStream, 0),
        (&b, ExpectedVersion::NoStream, 1),
        (&a, ExpectedVersion::Exact(1), 2),
        (&b, ExpectedVersion::Exact(1), 3),
    ] {
        store
            .append(s, expected, events(n..n + 1))
            .await
            .expect("append");
    }
    // All four readable before the subscription's first read, so its reads are what they seem.
    assert_eq!(read_everything(store.as_ref(), 10, 4).await.len(), 4);
    let mut subscription = Subscription::new(
        Arc::clone(&store),
        None,
        SubscriptionOptions {
            batch_size: 3,
            poll_interval: Duration::from_secs(30),
        },
    );
    assert!(!subscription.returned_all_of(&a), "nothing read yet");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut subscription).await);
        let later_of_a_buffered = seen.len() < 3;
        assert!(
            !subscription.returned_all_of(&a),
            "after {} events: {}",
            seen.len(),
            if later_of_a_buffered {
                "a's second event waits in the buffer"
            } else {
                "the read was a full batch: more may follow"
            }
        );
    }
    assert_eq!(seen[2].stream, a);
    assert_eq!(next_event(&mut subscription).await.stream, b);
    assert!(
        subscription.returned_all_of(&a),
        "the last read came back short"
    );
    assert!(subscription.returned_all_of(&b));
}

/// A subscription started from a stored checkpoint after a restart continues exactly after it.
pub async fn subscription_resumes_from_its_checkpoint_after_a_restart<B: Backend>(backend: &mut B) {
    let s = stream("resume");
    let store = backend.store();
    store
        .append(&s, ExpectedVersion::NoStream, events(0..10))
        .await
        .expect("append");
    let checkpoint: Position = {
        let mut subscription = Subscription::new(store, None, SubscriptionOptions::default());
        for n in 0..4 {
            assert_eq!(
                next_event(&mut subscription)
                    .await
                    .payload_json()
                    .expect("stored JSON")["n"],
                n
            );
        }
        subscription
            .checkpoint()
            .expect("a checkpoint after four events")
    };
    backend.reopen().await;
    let store = backend.store();
    let mut resumed = Subscription::new(
        Arc::clone(&store),
        Some(checkpoint),
        SubscriptionOptions::default(),
    );
    for n in 4..10 {
        assert_eq!(
            next_event(&mut resumed)
                .await
                .payload_json()
                .expect("stored JSON")["n"],
            n
        );
    }
    store
        .append(&s, ExpectedVersion::Exact(10), events(10..12))
        .await
        .expect("append after restart");
    for n in 10..12 {
        assert_eq!(
            next_event(&mut resumed)
                .await
                .payload_json()
                .expect("stored JSON")["n"],
            n
        );
    }
    assert!(resumed.try_next().await.expect("try next").is_none());
}

/// What an append returned is there after the store is closed and opened again.
pub async fn appends_survive_a_restart<B: Backend>(backend: &mut B) {
    let store = backend.store();
    let s = stream("durable");
    let outcome = store
        .append(&s, ExpectedVersion::NoStream, events(0..3))
        .await
        .expect("append");
    drop(store);
    backend.reopen().await;
    let store = backend.store();
    let stored = store.read_stream(&s, 0).await.expect("read after restart");
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.last().map(|e| e.position), Some(outcome.position));
    store
        .append(&s, ExpectedVersion::Exact(3), events(3..4))
        .await
        .expect("append after restart");
}

/// Many concurrent commands on one stream: every one lands once, none is lost to a conflict.
pub async fn command_handling_retries_conflicts_without_losing_updates<B: Backend>(
    backend: &mut B,
) {
    const TASKS: u64 = 6;
    const EACH: u64 = 10;
    let store = backend.store();
    let s = stream("counter");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..EACH {
                // Contention may exhaust the bounded retries; the caller then tries again.
                loop {
                    match execute::<counter::Counter>(
                        store.as_ref(),
                        &SystemClock,
                        &s,
                        &counter::Add(task + 1),
                        &EventMetadata::default(),
                    )
                    .await
                    {
                        Ok(outcome) => {
                            assert_eq!(outcome.events.len(), 1);
                            done += 1;
                            break;
                        }
                        Err(newsletter_eventstore::CommandError::Contention { .. }) => continue,
                        Err(e) => panic!("command failed: {e}"),
                    }
                }
            }
            done
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("task");
    }
    assert_eq!(done, TASKS * EACH);
    let (total, version) =
        newsletter_eventstore::command::load::<counter::Counter>(store.as_ref(), &s)
            .await
            .expect("load");
    assert_eq!(version, TASKS * EACH);
    assert_eq!(total.0, EACH * (1..=TASKS).sum::<u64>());

    // A refused command appends nothing.
    let refused = execute::<counter::Counter>(
        store.as_ref(),
        &SystemClock,
        &s,
        &counter::Add(0),
        &EventMetadata::default(),
    )
    .await;
    assert!(matches!(
        refused,
        Err(newsletter_eventstore::CommandError::Refused(_))
    ));
    assert_eq!(
        store.read_stream(&s, 0).await.expect("read").len() as u64,
        version
    );
}

/// Adds `n` to the counter in `stream` through `execute_with_hint`, believing the stream new.
async fn add_believing_new(
    store: &dyn EventStore,
    stream: &StreamId,
    n: u64,
) -> Result<
    newsletter_eventstore::CommandOutcome<counter::Counter>,
    newsletter_eventstore::CommandError<counter::AddedZero>,
> {
    execute_with_hint::<counter::Counter>(
        store,
        &SystemClock,
        stream,
        &counter::Add(n),
        &EventMetadata::default(),
        StreamHint::BelievedNew,
    )
    .await
}

/// A command hinted [`StreamHint::BelievedNew`] on a stream that is new appends at version 1
/// without reading it; on a stream that exists after all it decides again on the stored state,
/// so nothing is lost.
pub async fn a_command_on_a_stream_believed_new_skips_the_read_and_still_sees_what_is_there<
    B: Backend,
>(
    backend: &mut B,
) {
    let store = newsletter_eventstore::CountingStreamReads::over(backend.store());
    let reads = || store.reads();
    let fresh = stream("counter-fresh");
    let outcome = add_believing_new(&store, &fresh, 2)
        .await
        .expect("command on a new stream");
    assert_eq!((outcome.stream_version, outcome.state.0), (1, 2));
    assert_eq!(reads(), 0, "a new stream is not read");

    // The same stream again, wrongly believed new: the append conflicts, the stream is read and
    // the command decided again on its real state.
    let outcome = add_believing_new(&store, &fresh, 3)
        .await
        .expect("command on a stream that exists");
    assert_eq!((outcome.stream_version, outcome.state.0), (2, 5));
    assert_eq!(reads(), 1, "the conflict made it read the stream");
    let (total, version) = newsletter_eventstore::command::load::<counter::Counter>(&store, &fresh)
        .await
        .expect("load");
    assert_eq!((version, total.0), (2, 5));

    // A refusal on the empty state appends nothing.
    let other = stream("counter-refused");
    let refused = add_believing_new(&store, &other, 0).await;
    assert!(matches!(
        refused,
        Err(newsletter_eventstore::CommandError::Refused(_))
    ));
    assert!(store.read_stream(&other, 0).await.expect("read").is_empty());
}

/// Adds `n` to the counter in `stream` through `execute_on`, first on the `loaded` state.
async fn add_on_loaded(
    store: &dyn EventStore,
    stream: &StreamId,
    loaded: (counter::Total, u64),
    n: u64,
) -> Result<
    newsletter_eventstore::CommandOutcome<counter::Counter>,
    newsletter_eventstore::CommandError<counter::AddedZero>,
> {
    newsletter_eventstore::execute_on::<counter::Counter>(
        store,
        &SystemClock,
        stream,
        &counter::Add(n),
        &EventMetadata::default(),
        loaded,
    )
    .await
}

/// A command decided on a state the caller loaded ([`newsletter_eventstore::execute_on`]) appends
/// without reading the stream again; when another writer changed the stream in between, the
/// append conflicts and the command is decided again on the stored state, so nothing is lost.
pub async fn a_command_on_a_loaded_state_skips_the_read_and_decides_again_if_it_changed<
    B: Backend,
>(
    backend: &mut B,
) {
    let store = newsletter_eventstore::CountingStreamReads::over(backend.store());
    let reads = || store.reads();
    let counter = stream("counter-loaded");
    add_believing_new(&store, &counter, 2).await.expect("first");
    let loaded = newsletter_eventstore::command::load::<counter::Counter>(&store, &counter)
        .await
        .expect("load");
    assert_eq!(reads(), 1);
    let outcome = add_on_loaded(&store, &counter, loaded.clone(), 3)
        .await
        .expect("on the loaded state");
    assert_eq!((outcome.stream_version, outcome.state.0), (2, 5));
    assert_eq!(reads(), 1, "the loaded state was not read again");

    // The state loaded before is now old: the append conflicts, the stream is read, and the
    // command is decided again on what is there (5 + 4, not 2 + 4).
    let outcome = add_on_loaded(&store, &counter, loaded, 4)
        .await
        .expect("on an old state");
    assert_eq!((outcome.stream_version, outcome.state.0), (3, 9));
    assert_eq!(reads(), 2, "the conflict made it read the stream");
    let (total, version) =
        newsletter_eventstore::command::load::<counter::Counter>(&store, &counter)
            .await
            .expect("load");
    assert_eq!((version, total.0), (3, 9));
}

/// Many concurrent one-event appends, each to its own stream: a third at the right version, a
/// third at a wrong one, a third replaying an append already stored. Each gets its own verdict
/// (the SQLite writer checks and inserts such a batch in one statement).
pub async fn concurrent_one_event_appends_each_get_their_own_verdict<B: Backend>(backend: &mut B) {
    const STREAMS: usize = 96;
    let store = backend.store();
    let mut seeded = Vec::new();
    for n in 0..STREAMS {
        let s = stream(&format!("verdict-{n}"));
        let first = event(0);
        let outcome = store
            .append(&s, ExpectedVersion::NoStream, vec![first.clone()])
            .await
            .expect("seed");
        seeded.push((s, first, outcome));
    }
    let tasks = seeded.iter().enumerate().map(|(n, (s, first, stored))| {
        let (store, s, first, stored) = (Arc::clone(&store), s.clone(), first.clone(), *stored);
        tokio::spawn(async move {
            match n % 3 {
                0 => {
                    let outcome = store
                        .append(&s, ExpectedVersion::Exact(1), vec![event(1)])
                        .await
                        .expect("append at the right version");
                    assert_eq!(outcome.stream_version, 2, "stream {n}");
                    assert!(!outcome.idempotent_replay, "stream {n}");
                }
                1 => {
                    let refused = store
                        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
                        .await;
                    assert!(
                        matches!(refused, Err(StoreError::WrongExpectedVersion { .. })),
                        "stream {n}: {refused:?}"
                    );
                }
                _ => {
                    let outcome = store
                        .append(&s, ExpectedVersion::NoStream, vec![first])
                        .await
                        .expect("replay of a stored append");
                    assert!(outcome.idempotent_replay, "stream {n}");
                    assert_eq!(
                        (outcome.stream_version, outcome.position),
                        (1, stored.position),
                        "stream {n}"
                    );
                }
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("append task");
    }
    for (n, (s, _, _)) in seeded.iter().enumerate() {
        let stored = store.read_stream(s, 0).await.expect("read");
        let expected = if n % 3 == 0 { 2 } else { 1 };
        assert_eq!(stored.len(), expected, "stream {n}");
    }
}
