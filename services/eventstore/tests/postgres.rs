//! The conformance suite against the PostgreSQL adapter, plus the late-commit case.
//!
//! Runs when `NEWSLETTER_TEST_DATABASE_URL` names a server (each test in its own fresh schema);
//! without it every test here is reported as ignored with that reason. With it set and the server
//! unreachable, the tests fail.

mod conformance;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use conformance::Backend;
use newsletter_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PostgresConfig, PostgresEventStore,
    StreamId, Subscription, SubscriptionOptions,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("NEWSLETTER_TEST_DATABASE_URL")
        .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests")
}

/// A fresh schema on the configured server.
struct Postgres {
    schema: String,
    store: Arc<PostgresEventStore>,
}

impl Postgres {
    async fn open(schema: &str) -> Arc<PostgresEventStore> {
        let options = PgConnectOptions::from_str(&server_url())
            .expect("a valid NEWSLETTER_TEST_DATABASE_URL")
            .options([("search_path", schema)]);
        let config = PostgresConfig {
            notify_channel: format!("events_{schema}"),
            ..PostgresConfig::default()
        };
        Arc::new(
            PostgresEventStore::connect_with(options, config)
                .await
                .expect("connect to the PostgreSQL test server"),
        )
    }
}

impl Backend for Postgres {
    async fn fresh() -> Self {
        let schema = format!("es_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        let store = Self::open(&schema).await;
        Self { schema, store }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store = Self::open(&self.schema).await;
    }

    async fn cleanup(self) {
        drop(self.store);
        if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
            let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop_schema))
                .execute(&mut admin)
                .await;
        }
    }
}

conformance_suite!(Postgres, [#[cfg_attr(not(postgres_tests), ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run")]]);

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "TestHappened".to_owned(),
        schema_version: 1,
        payload: serde_json::json!({ "n": n }),
        metadata: EventMetadata::default(),
    }
}

/// A transaction that takes its position first and commits last is still seen, in order,
/// by a subscriber that has already read past the later-committed event's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn a_late_commit_is_never_skipped() {
    let backend = Postgres::fresh().await;
    let store = Arc::clone(&backend.store);
    let early = StreamId::new("test-early").expect("stream");
    let late = StreamId::new("test-late").expect("stream");

    // Transaction A takes the first position and stays open.
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::query("BEGIN")
        .execute(&mut *conn)
        .await
        .expect("begin");
    let first = store
        .append_within(
            &mut conn,
            &early,
            ExpectedVersion::NoStream,
            vec![new_event(1)],
        )
        .await
        .expect("append inside the open transaction");

    // Transaction B takes a later position and commits at once.
    let second = store
        .append(&late, ExpectedVersion::NoStream, vec![new_event(2)])
        .await
        .expect("append that commits first");
    assert!(
        first.position.prepare < second.position.prepare,
        "A took its position first"
    );

    // A subscriber reading now must not move past A's place: it sees nothing yet.
    let mut subscription = Subscription::new(
        store.clone(),
        None,
        SubscriptionOptions {
            batch_size: 10,
            poll_interval: Duration::from_millis(20),
        },
    );
    assert!(
        subscription.try_next().await.expect("read").is_none(),
        "nothing is readable while an earlier transaction is open"
    );

    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .expect("commit A");
    drop(conn);

    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("both events arrive")
            .expect("read");
        seen.push(event.payload_json().expect("stored JSON")["n"].as_u64());
    }
    assert_eq!(
        seen,
        vec![Some(1), Some(2)],
        "both, in commit-safe order, none skipped"
    );
    assert!(subscription.try_next().await.expect("read").is_none());
    backend.cleanup().await;
}

/// Appends from many connections at once still give one gap-free reading of the log when a
/// long transaction holds a position open throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn readers_wait_behind_an_open_transaction_and_then_see_everything() {
    let backend = Postgres::fresh().await;
    let store = Arc::clone(&backend.store);
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::query("BEGIN")
        .execute(&mut *conn)
        .await
        .expect("begin");
    store
        .append_within(
            &mut conn,
            &StreamId::new("test-held").expect("stream"),
            ExpectedVersion::NoStream,
            vec![new_event(0)],
        )
        .await
        .expect("held append");
    for n in 1..=50 {
        let s = StreamId::new(format!("test-free-{n}")).expect("stream");
        store
            .append(&s, ExpectedVersion::NoStream, vec![new_event(n)])
            .await
            .expect("append");
    }
    assert!(store.read_all(None, 100).await.expect("read").is_empty());
    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .expect("commit");
    drop(conn);
    let all = store.read_all(None, 100).await.expect("read");
    assert_eq!(all.len(), 51);
    assert_eq!(all[0].payload_json().expect("stored JSON")["n"], 0);
    backend.cleanup().await;
}

/// Each caller of a grouped one-event append gets its own verdict: two store handles on one
/// schema, as two processes, race a first event into each of 64 streams, so every stream gets
/// exactly one event, its winner the position it was stored at, its loser a wrong-version
/// refusal. (Whether a racing batch stays grouped depends on timing: a unique violation from the
/// other process sends it one append at a time, so grouping is checked on its own below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn concurrent_first_appends_from_two_processes_each_get_their_own_verdict() {
    const STREAMS: usize = 64;
    let backend = Postgres::fresh().await;
    let handles = [
        Arc::clone(&backend.store),
        Postgres::open(&backend.schema).await,
    ];
    let start = Arc::new(tokio::sync::Barrier::new(STREAMS * handles.len()));
    let mut tasks = Vec::new();
    for n in 0..STREAMS {
        for store in &handles {
            let (store, start) = (Arc::clone(store), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                let s = StreamId::new(format!("test-first-{n}")).expect("stream");
                let event = new_event(n as u64);
                let id = event.event_id;
                start.wait().await;
                (
                    n,
                    id,
                    store
                        .append(&s, ExpectedVersion::NoStream, vec![event])
                        .await,
                )
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    for task in tasks {
        let (n, id, outcome) = task.await.expect("append task");
        match outcome {
            Ok(outcome) => {
                assert_eq!(outcome.stream_version, 1, "stream {n}");
                assert!(!outcome.idempotent_replay, "stream {n}");
                assert!(
                    winners.insert(n, (id, outcome.position)).is_none(),
                    "one winner of {n}"
                );
            }
            Err(newsletter_eventstore::StoreError::WrongExpectedVersion { actual, .. }) => {
                assert_eq!(actual, 1, "the loser of {n} sees the winner's event");
            }
            Err(other) => panic!("stream {n}: {other}"),
        }
    }
    assert_eq!(winners.len(), STREAMS, "every stream has a winner");
    let all = store_events(&backend.store, STREAMS).await;
    assert_eq!(
        all.len(),
        STREAMS,
        "one event per stream, none lost, none twice"
    );
    for event in &all {
        let n: usize = event.stream.as_str()["test-first-".len()..]
            .parse()
            .expect("stream number");
        assert_eq!(
            winners.get(&n),
            Some(&(event.event_id, event.position)),
            "the winner of {n} was told where its event is"
        );
    }
    backend.cleanup().await;
}

/// One-event appends that queue while the writer's commit is held up go out together in its
/// next commit (one transaction id), each with its own position. Deterministic: a lock on the
/// events table holds the writer's first insert until every other append has been queued, which
/// the single-threaded runtime makes certain (each spawned append runs until it waits for its
/// reply before the test task runs again).
#[tokio::test(flavor = "current_thread")]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn first_appends_queued_behind_a_commit_share_the_next_one() {
    const QUEUED: usize = 63;
    let backend = Postgres::fresh().await;
    let mut holder = PgConnection::connect(&server_url())
        .await
        .expect("connect to the PostgreSQL test server");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    let lock = format!("LOCK TABLE {}.events IN EXCLUSIVE MODE", backend.schema);
    sqlx::query(sqlx::AssertSqlSafe(lock))
        .execute(&mut holder)
        .await
        .expect("lock the events table");
    let append = |n: u64| {
        let store = Arc::clone(&backend.store);
        async move {
            let s = StreamId::new(format!("test-queued-{n}")).expect("stream");
            store
                .append(&s, ExpectedVersion::NoStream, vec![new_event(n)])
                .await
        }
    };
    let first = tokio::spawn(append(0));
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '{}.events'::regclass",
        backend.schema
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let blocked: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(waiting.clone()))
            .fetch_one(&mut holder)
            .await
            .expect("read pg_locks");
        if blocked > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer's first insert never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (started, mut queued) = tokio::sync::mpsc::unbounded_channel();
    let mut rest = Vec::new();
    for n in 1..=QUEUED as u64 {
        let (started, append) = (started.clone(), append(n));
        rest.push(tokio::spawn(async move {
            let _ = started.send(());
            append.await
        }));
    }
    for _ in 0..QUEUED {
        queued.recv().await.expect("every append starts");
    }
    tokio::task::yield_now().await;
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("release the lock");
    let held = first
        .await
        .expect("first append")
        .expect("first append stored");
    let mut commits = std::collections::HashSet::new();
    let mut positions = std::collections::HashSet::new();
    for task in rest {
        let outcome = task.await.expect("append task").expect("append stored");
        assert_eq!(outcome.stream_version, 1);
        commits.insert(outcome.position.commit);
        positions.insert(outcome.position);
    }
    assert_eq!(positions.len(), QUEUED, "each append has its own position");
    assert_eq!(
        commits.len(),
        1,
        "the {QUEUED} appends queued behind the held commit share the next one"
    );
    assert!(
        !commits.contains(&held.position.commit),
        "the held append committed on its own"
    );
    assert_eq!(
        store_events(&backend.store, QUEUED + 1).await.len(),
        QUEUED + 1
    );
    backend.cleanup().await;
}

/// The whole log, once at least `expected` events are readable (within 30 s).
async fn store_events(
    store: &PostgresEventStore,
    expected: usize,
) -> Vec<newsletter_eventstore::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = store.read_all(None, expected * 2).await.expect("read");
        if all.len() >= expected || tokio::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
