//! The PostgreSQL adapter.
//!
//! Every append is one `INSERT … SELECT … WHERE <expected version holds>` statement: atomic,
//! checked by the `(stream_id, version)` unique index, and touching no row that other appends
//! touch. One-event appends of concurrent callers go through a writer task that puts a whole
//! batch of them in one such statement, one commit for all (see `batch`). The global order is `(transaction_id, position)`, read only below the oldest running
//! transaction (see the migration), so a transaction that took its position first and committed
//! last is still read, in order, and never skipped.
//!
//! Live subscriptions wake through LISTEN/NOTIFY, sent after commit by a background task that
//! coalesces notifications (so the notify queue's lock stays off the append path), with polling
//! as the safety net.

mod batch;
mod notify;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{Notify, watch};

use crate::StoreError;
use crate::encoded::{
    EncodedEvent, StoredRow, StoredSlot, classify_conflict, non_negative, to_i64,
};
use crate::group_commit::GroupCommit;
use crate::model::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use crate::port::EventStore;
use batch::{OneEventAppend, PgAppends};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Tuning of the PostgreSQL adapter.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Pool size.
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// The LISTEN/NOTIFY channel that announces new events.
    pub notify_channel: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            notify_channel: "newsletter_events".to_owned(),
        }
    }
}

/// The PostgreSQL event store.
pub struct PostgresEventStore {
    pool: PgPool,
    one_event_appends: GroupCommit<PgAppends>,
    changes: watch::Receiver<u64>,
    local_changes: Arc<watch::Sender<u64>>,
    notify_pending: Arc<Notify>,
    _background: notify::BackgroundTasks,
}

/// The most one-event appends the writer commits in one statement.
const MAX_APPENDS_PER_COMMIT: usize = 256;

const APPEND_SQL: &str = "INSERT INTO events \
     (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
     SELECT e.event_id, $1, $2 + e.ord, e.event_type, e.schema_version, e.payload, e.metadata, $3 \
     FROM unnest($4::uuid[], $5::text[], $6::int4[], $7::text[], $8::text[]) \
          WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord) \
     WHERE CASE WHEN $2 = 0 THEN NOT EXISTS (SELECT 1 FROM events WHERE stream_id = $1) \
                ELSE EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND version = $2) END \
     ORDER BY e.ord \
     RETURNING position, transaction_id::text::bigint AS commit_position, version";

/// A `SELECT` of every envelope column, followed by the given clauses.
macro_rules! select_events {
    ($clauses:literal) => {
        concat!(
            "SELECT position, transaction_id::text::bigint AS commit_position, event_id, stream_id, \
             version, event_type, schema_version, payload, metadata, recorded_at FROM events ",
            $clauses
        )
    };
}

impl PostgresEventStore {
    /// Connects to a `postgres://` URL and applies migrations.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(StoreError::db("parse postgres URL"))?;
        Self::connect_with(options, config).await
    }

    /// Connects with explicit options (e.g. a `search_path` per test) and applies migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        config: PostgresConfig,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(StoreError::db("connect to postgres"))?;
        MIGRATOR.run(&pool).await?;
        let (local_changes, changes) = watch::channel(0);
        let local_changes = Arc::new(local_changes);
        let notify_pending = Arc::new(Notify::new());
        let background = notify::BackgroundTasks::start(
            pool.clone(),
            config.notify_channel.clone(),
            Arc::clone(&local_changes),
            Arc::clone(&notify_pending),
        );
        Ok(Self {
            one_event_appends: GroupCommit::spawn(
                PgAppends { pool: pool.clone() },
                MAX_APPENDS_PER_COMMIT,
            ),
            pool,
            changes,
            local_changes,
            notify_pending,
            _background: background,
        })
    }

    /// The connection pool (read models may share it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends inside a transaction the caller holds open (read models and tests that need an
    /// append to commit together with their own writes). Nothing is visible to `read_all` until
    /// the caller commits. Inside a caller's transaction a unique violation aborts that
    /// transaction, so it is returned as a database error rather than resolved.
    pub async fn append_within(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let events = EncodedEvent::encode_all(events)?;
        match insert(conn, stream, expected, &events).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: current_version(conn, stream).await?,
            }),
            Err(e) => Err(StoreError::Database {
                operation: "append within transaction",
                source: e,
            }),
        }
    }

    fn announce(&self) {
        self.local_changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        self.notify_pending.notify_one();
    }
}

/// Runs the append statement; `None` when the expected version did not hold.
async fn insert(
    conn: &mut PgConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EncodedEvent],
) -> Result<Option<AppendOutcome>, sqlx::Error> {
    let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
        .collect();
    let payloads: Vec<_> = events.iter().map(|e| e.payload.as_str()).collect();
    let metadata: Vec<_> = events.iter().map(|e| e.metadata.as_str()).collect();
    let rows = sqlx::query(APPEND_SQL)
        .bind(stream.as_str())
        .bind(to_i64(expected.as_u64()))
        .bind(Utc::now())
        .bind(ids)
        .bind(types)
        .bind(versions)
        .bind(payloads)
        .bind(metadata)
        .fetch_all(conn)
        .await?;
    let mut last: Option<(i64, i64, i64)> = None;
    for row in &rows {
        let current = (
            row.try_get::<i64, _>("commit_position")?,
            row.try_get::<i64, _>("position")?,
            row.try_get::<i64, _>("version")?,
        );
        if last.is_none_or(|l| current.2 > l.2) {
            last = Some(current);
        }
    }
    Ok(
        last.map(|(transaction_id, position, version)| AppendOutcome {
            stream_version: u64::try_from(version).unwrap_or_default(),
            position: Position::new(
                u64::try_from(transaction_id).unwrap_or_default(),
                u64::try_from(position).unwrap_or_default(),
            ),
            idempotent_replay: false,
        }),
    )
}

/// One append in its own statement: inserted, or else resolved as a conflict or a replay.
async fn append_one(
    pool: &PgPool,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EncodedEvent],
) -> Result<AppendOutcome, StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::db("acquire connection for append"))?;
    match insert(&mut conn, stream, expected, events).await {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => resolve_conflict(&mut conn, stream, expected, events).await,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            resolve_conflict(&mut conn, stream, expected, events).await
        }
        Err(e) => Err(StoreError::Database {
            operation: "append",
            source: e,
        }),
    }
}

async fn current_version(conn: &mut PgConnection, stream: &StreamId) -> Result<u64, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
            .bind(stream.as_str())
            .fetch_one(conn)
            .await
            .map_err(StoreError::db("read stream version"))?;
    non_negative(version, "stream version")
}

/// Decides what a refused append means, from what the stream holds at the versions the append
/// asked for: the same ids there make it a replay of an append that already succeeded.
async fn resolve_conflict(
    conn: &mut PgConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EncodedEvent],
) -> Result<AppendOutcome, StoreError> {
    let first = expected.as_u64();
    let rows = sqlx::query(
        "SELECT version, event_id, position, transaction_id::text::bigint AS commit_position \
         FROM events WHERE stream_id = $1 AND version > $2 AND version <= $3 ORDER BY version",
    )
    .bind(stream.as_str())
    .bind(to_i64(first))
    .bind(to_i64(first + events.len() as u64))
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::db("resolve append conflict"))?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        let slot = (|| {
            Ok::<_, sqlx::Error>(StoredSlot {
                version: row.try_get("version")?,
                event_id: row.try_get("event_id")?,
                position: Position::new(
                    u64::try_from(row.try_get::<i64, _>("commit_position")?).unwrap_or_default(),
                    u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or_default(),
                ),
            })
        })();
        stored.push(slot.map_err(|e| StoreError::Database {
            operation: "decode conflict row",
            source: e,
        })?);
    }
    let actual = to_i64(current_version(conn, stream).await?);
    classify_conflict(stream, expected, events, &stored, actual)
}

fn row_to_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let read = |e| StoreError::Database {
        operation: "decode postgres row",
        source: e,
    };
    let transaction_id = non_negative(
        row.try_get("commit_position").map_err(read)?,
        "transaction id",
    )?;
    let position = non_negative(row.try_get("position").map_err(read)?, "position")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(read)?;
    StoredRow {
        position: Position::new(transaction_id, position),
        event_id: row.try_get("event_id").map_err(read)?,
        stream_id: row.try_get("stream_id").map_err(read)?,
        version: row.try_get("version").map_err(read)?,
        event_type: row.try_get("event_type").map_err(read)?,
        schema_version: i64::from(row.try_get::<i32, _>("schema_version").map_err(read)?),
        payload: row.try_get("payload").map_err(read)?,
        metadata: row.try_get("metadata").map_err(read)?,
        recorded_at,
    }
    .into_recorded()
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let mut events = EncodedEvent::encode_all(events)?;
        let outcome = if events.len() == 1 {
            let event = events.remove(0);
            self.one_event_appends
                .submit(OneEventAppend {
                    stream: stream.clone(),
                    expected,
                    event,
                })
                .await
                .map_err(StoreError::db("append"))??
        } else {
            append_one(&self.pool, stream, expected, &events).await?
        };
        if !outcome.idempotent_replay {
            self.announce();
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = select_events!("WHERE stream_id = $1 AND version > $2 ORDER BY version");
        let rows = sqlx::query(SQL)
            .bind(stream.as_str())
            .bind(to_i64(after_version))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read stream"))?;
        rows.iter().map(row_to_event).collect()
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = select_events!(
            "WHERE (transaction_id, position) > ($1::bigint::text::xid8, $2) \
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id, position LIMIT $3"
        );
        let after = after.unwrap_or_default();
        let rows = sqlx::query(SQL)
            .bind(to_i64(after.commit))
            .bind(to_i64(after.prepare))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read all"))?;
        rows.iter().map(row_to_event).collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    fn adapter_name(&self) -> &'static str {
        "postgres"
    }
}
