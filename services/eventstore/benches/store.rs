//! Event store benchmark: every figure is compared, as a ratio, with a baseline measured in the
//! same run on the same database.
//!
//! `cargo bench -p newsletter-eventstore --bench store` (add `-- --quick` for a smoke run).
//! PostgreSQL: `NEWSLETTER_BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! the benchmark works in a schema of its own and drops it at the end.
//!
//! Prints a Markdown table and writes it to `target/bench-eventstore.md`.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use newsletter_domain::{Decider, DecodeError, EventCodec};
use newsletter_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PostgresConfig, PostgresEventStore,
    SqliteConfig, SqliteEventStore, StreamId, SystemClock, execute,
};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One row of the result table.
struct Row {
    figure: String,
    ours: f64,
    baseline: f64,
    unit: &'static str,
    target: String,
    pass: bool,
}

/// A subscriber-sized payload (about 330 bytes of JSON).
fn payload(n: u64) -> Value {
    serde_json::json!({
        "subscriber_id": Uuid::now_v7(),
        "request_id": Uuid::now_v7(),
        "lists": ["newsletter"],
        "email": format!("reader{n}@example.com"),
        "profile": { "name": "Karen Blixen", "company": "Rungstedlund" },
        "locale": "da",
        "consent": {
            "policy_version": "2024-05", "source": "footer-form", "at": "2026-11-25T10:00:00Z",
            "ip": "192.0.2.10", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"
        },
        "confirm_by": "2026-12-02T10:00:00Z"
    })
}

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "SubscriptionRequested".to_owned(),
        schema_version: 2,
        payload: payload(n),
        metadata: EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            actor: Some("public".to_owned()),
        },
    }
}

fn fresh_stream() -> StreamId {
    StreamId::new(format!("subscriber-{}", Uuid::now_v7())).unwrap_or_else(|_| unreachable!())
}

/// Runs `op` from `writers` concurrent tasks for `duration`; returns operations per second.
async fn throughput<F, Fut>(writers: usize, duration: Duration, op: F) -> Result<f64, BoxError>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (op, stop, done) = (Arc::clone(&op), Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut n = (writer as u64) << 40;
            while !stop.load(Ordering::Relaxed) {
                op(n).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BoxError>(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// A counter decider: the command handling benchmark's subject.
struct Counter;
#[derive(Clone)]
struct Added(u64);
#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Decider for Counter {
    type State = u64;
    type Command = u64;
    type Event = Added;
    type Error = Never;
    fn decide(_: &u64, by: &u64, _: DateTime<Utc>) -> Result<Vec<Added>, Never> {
        Ok(vec![Added(*by)])
    }
    fn evolve(state: u64, event: &Added) -> u64 {
        state + event.0
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
        let mut value = payload(self.0);
        value["by"] = self.0.into();
        Ok(value)
    }
    fn decode(event_type: &str, schema_version: u32, payload: Value) -> Result<Self, DecodeError> {
        payload["by"]
            .as_u64()
            .map(Added)
            .ok_or(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                schema_version,
            })
    }
}

/// Appending one event to a new stream vs. the raw INSERT loop, and command handling on a long
/// stream vs. a fresh one.
async fn write_figures(
    adapter: &str,
    store: Arc<dyn EventStore>,
    raw: impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    + Send
    + Sync
    + Clone
    + 'static,
    duration: Duration,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    for writers in [1usize, 16] {
        let baseline = throughput(writers, duration, raw.clone()).await?;
        let s = Arc::clone(&store);
        let ours = throughput(writers, duration, move |n| {
            let s = Arc::clone(&s);
            async move {
                s.append(
                    &fresh_stream(),
                    ExpectedVersion::NoStream,
                    vec![new_event(n)],
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            figure: format!("{adapter}: append 1 event to a new stream, {writers} writer(s)"),
            ours,
            baseline,
            unit: "appends/s vs raw INSERTs/s",
            target: ">= 0.70".to_owned(),
            pass: ours / baseline >= 0.70,
        });
    }

    // Command handling: a stream with 50 events vs a fresh stream, one writer.
    let long = fresh_stream();
    let events: Vec<_> = (0..50)
        .map(|n| {
            let mut e = new_event(n);
            e.event_type = "Added".to_owned();
            e.payload["by"] = 1.into();
            e
        })
        .collect();
    store
        .append(&long, ExpectedVersion::NoStream, events)
        .await?;
    let s = Arc::clone(&store);
    let fresh = throughput(1, duration, move |_| {
        let s = Arc::clone(&s);
        async move {
            execute::<Counter>(
                s.as_ref(),
                &SystemClock,
                &fresh_stream(),
                &1,
                &EventMetadata::default(),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    // Keep the long stream at about 50 events: each run appends to a different 50-event stream.
    let mut long_streams = Vec::new();
    for _ in 0..1024 {
        long_streams.push(fresh_stream());
    }
    let seeded = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&store);
    let long_streams = Arc::new(long_streams);
    // Seed streams up front so the timed loop only loads, decides and appends.
    for stream in long_streams.iter() {
        let batch = (0..50)
            .map(|n| {
                let mut e = new_event(n);
                e.event_type = "Added".to_owned();
                e.payload["by"] = 1.into();
                e
            })
            .collect();
        s.append(stream, ExpectedVersion::NoStream, batch).await?;
    }
    let ls = Arc::clone(&long_streams);
    let with_history = throughput(1, duration, move |_| {
        let s = Arc::clone(&s);
        let ls = Arc::clone(&ls);
        let seeded = Arc::clone(&seeded);
        async move {
            let i = seeded.fetch_add(1, Ordering::Relaxed) as usize % ls.len();
            execute::<Counter>(
                s.as_ref(),
                &SystemClock,
                &ls[i],
                &1,
                &EventMetadata::default(),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    rows.push(Row {
        figure: format!("{adapter}: load+decide+append, stream of ~50 events vs fresh"),
        ours: with_history,
        baseline: fresh,
        unit: "commands/s",
        target: ">= 0.50 (cost <= 2x)".to_owned(),
        pass: with_history / fresh >= 0.5,
    });
    Ok(())
}

/// Fills the log with `count` events, then reads it all; events/s.
async fn replay_figure(
    adapter: &str,
    store: Arc<dyn EventStore>,
    count: u64,
    target: f64,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let existing = count_all(store.as_ref()).await?;
    let mut written = 0;
    while written < count {
        let batch: Vec<_> = (0..100).map(|n| new_event(written + n)).collect();
        store
            .append(&fresh_stream(), ExpectedVersion::NoStream, batch)
            .await?;
        written += 100;
    }
    let started = Instant::now();
    let total = count_all(store.as_ref()).await?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    assert!(total >= existing + count);
    let size = serde_json::to_string(&payload(0))?.len();
    rows.push(Row {
        figure: format!(
            "{adapter}: replay (read all, pages of 1000) of {total} events, payload {size} B"
        ),
        ours: rate,
        baseline: target,
        unit: "events/s vs target",
        target: format!(">= {target:.0}/s"),
        pass: rate >= target,
    });
    Ok(())
}

async fn count_all(store: &dyn EventStore) -> Result<u64, BoxError> {
    let mut after = None;
    let mut total = 0;
    loop {
        let batch = store.read_all(after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.position);
        total += batch.len() as u64;
    }
    Ok(total)
}

async fn sqlite_figures(
    quick: bool,
    duration: Duration,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default()).await?,
    );
    let raw_options = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let raw_pool = SqlitePoolOptions::new()
        .max_connections(16)
        .connect_with(raw_options)
        .await?;
    sqlx::query("CREATE TABLE raw (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(&raw_pool)
        .await?;
    let raw = move |n: u64| {
        let pool = raw_pool.clone();
        Box::pin(async move {
            sqlx::query("INSERT INTO raw (payload) VALUES (?1)")
                .bind(payload(n).to_string())
                .execute(&pool)
                .await?;
            Ok(())
        }) as std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
    };
    write_figures("SQLite", Arc::clone(&store), raw, duration, rows).await?;
    replay_figure(
        "SQLite",
        store,
        if quick { 2_000 } else { 200_000 },
        200_000.0,
        rows,
    )
    .await
}

async fn postgres_figures(
    quick: bool,
    duration: Duration,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let url = std::env::var("NEWSLETTER_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await?;
    let options = PgConnectOptions::from_str(&url)?.options([("search_path", schema.as_str())]);
    let result = async {
        let store: Arc<dyn EventStore> = Arc::new(
            PostgresEventStore::connect_with(
                options.clone(),
                PostgresConfig {
                    max_connections: 20,
                    ..PostgresConfig::default()
                },
            )
            .await?,
        );
        let raw_pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(options)
            .await?;
        sqlx::query("CREATE TABLE raw (id bigserial PRIMARY KEY, payload text NOT NULL)")
            .execute(&raw_pool)
            .await?;
        let raw = move |n: u64| {
            let pool = raw_pool.clone();
            Box::pin(async move {
                sqlx::query("INSERT INTO raw (payload) VALUES ($1)")
                    .bind(payload(n).to_string())
                    .execute(&pool)
                    .await?;
                Ok(())
            }) as std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        };
        write_figures("PostgreSQL", Arc::clone(&store), raw, duration, rows).await?;
        replay_figure(
            "PostgreSQL",
            store,
            if quick { 2_000 } else { 200_000 },
            100_000.0,
            rows,
        )
        .await
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await?;
    result
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | ours | baseline | ratio | target | pass |\n|---|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} ({}) | {:.0} | {:.0} | {:.2} | {} | {} |\n",
            row.figure,
            row.unit,
            row.ours,
            row.baseline,
            row.ours / row.baseline,
            row.target,
            if row.pass { "pass" } else { "FAIL" }
        ));
    }
    out
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(4)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    runtime.block_on(async {
        sqlite_figures(quick, duration, &mut rows).await?;
        postgres_figures(quick, duration, &mut rows).await
    })?;
    let report = table(&rows);
    println!("{report}");
    let target_dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let path = std::path::Path::new(&target_dir).join("bench-eventstore.md");
    if std::fs::write(&path, &report).is_ok() {
        println!("written to {}", path.display());
    }
    Ok(())
}
