//! The embedded default adapter: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer task owns the only write connection and commits the appends of concurrent callers
//! together (group commit): one transaction and one fsync for every append waiting at that moment.
//! An `append` returns only after its transaction is durable. Readers use a separate pool of
//! read-only connections, which WAL lets run beside the writer.

pub mod group_commit;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::watch;

use crate::StoreError;
use crate::encoded::{EncodedEvent, StoredRow, non_negative, to_i64};
use crate::model::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use crate::port::EventStore;

use group_commit::SqliteGroupCommit;
use writer::{AppendRequest, Appends};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// `PRAGMA cache_size` of every SQLite connection the service opens (event store, key vault,
/// read models): 512 KiB, negative meaning KiB. SQLite's default is 2 MiB per connection; with
/// about fifteen connections in `serve` that was about 30 MB of RSS once every cache had filled
/// (measured: 155 MB against 121-126 MB after catching up on 100,000 subscribers), while the
/// database files stay in the OS page cache either way.
pub const SQLITE_CACHE_SIZE: &str = "-512";

/// The settings every connection to one of the service's SQLite files runs with (event store,
/// key vault, read models, email index): created if missing, WAL with `synchronous=FULL` (every
/// commit fsynced before it returns), `busy_timeout` of waiting for another writer's lock, and
/// [`SQLITE_CACHE_SIZE`]. The one place these are set.
pub fn durable_sqlite_options(
    options: SqliteConnectOptions,
    busy_timeout: Duration,
) -> SqliteConnectOptions {
    options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .pragma("cache_size", SQLITE_CACHE_SIZE)
}

/// Tuning of the SQLite adapter.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The most appends committed in one transaction.
    pub max_group_commit: usize,
    /// Read-only connections for `read_stream` and `read_all`.
    pub read_connections: u32,
    /// How long a connection waits for a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            max_group_commit: 512,
            read_connections: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The durability settings the writer connection reported when the store opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteDurability {
    /// `PRAGMA journal_mode`: always `wal`.
    pub journal_mode: String,
    /// `PRAGMA synchronous`: always 2 (`FULL`): every commit is fsynced before it returns.
    pub synchronous: i64,
}

/// The SQLite event store.
pub struct SqliteEventStore {
    appends: SqliteGroupCommit<Appends>,
    readers: SqlitePool,
    changes: watch::Receiver<u64>,
    durability: SqliteDurability,
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations.
    pub async fn open(path: &Path, config: SqliteConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::open_with(options, config).await
    }

    /// Opens a `sqlite:` URL (e.g. `sqlite://data/events.db`) and applies migrations.
    pub async fn open_url(url: &str, config: SqliteConfig) -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::from_str(url).map_err(StoreError::db("parse sqlite URL"))?;
        Self::open_with(options, config).await
    }

    /// Opens with explicit connect options; durability settings are always forced on.
    pub async fn open_with(
        options: SqliteConnectOptions,
        config: SqliteConfig,
    ) -> Result<Self, StoreError> {
        let durable = durable_sqlite_options(options, config.busy_timeout);
        let mut write_conn = durable
            .clone()
            .connect()
            .await
            .map_err(StoreError::db("open sqlite writer"))?;
        MIGRATOR.run(&mut write_conn).await?;
        let durability = SqliteDurability {
            journal_mode: sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut write_conn)
                .await
                .map_err(StoreError::db("read journal mode"))?,
            synchronous: sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut write_conn)
                .await
                .map_err(StoreError::db("read synchronous setting"))?,
        };
        if durability.journal_mode != "wal" || durability.synchronous != 2 {
            return Err(StoreError::Corrupt {
                location: "sqlite settings".to_owned(),
                reason: format!(
                    "the writer runs with {durability:?}, not WAL with synchronous=FULL"
                ),
            });
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(durable.read_only(true))
            .await
            .map_err(StoreError::db("open sqlite readers"))?;
        let (changes_tx, changes) = watch::channel(0);
        let appends = SqliteGroupCommit::on_sqlite(
            write_conn,
            Appends {
                changes: changes_tx,
            },
            config.max_group_commit,
        );
        Ok(Self {
            appends,
            readers,
            changes,
            durability,
        })
    }

    /// The journal mode and sync level the writer runs with.
    pub fn durability(&self) -> &SqliteDurability {
        &self.durability
    }
}

/// A `SELECT` of every envelope column, followed by the given clauses.
macro_rules! select_events {
    ($clauses:literal) => {
        concat!(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
             metadata, recorded_at FROM events ",
            $clauses
        )
    };
}

fn row_to_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let read = |e| StoreError::Database {
        operation: "decode sqlite row",
        source: e,
    };
    let position = non_negative(row.try_get("position").map_err(read)?, "position")?;
    let micros: i64 = row.try_get("recorded_at").map_err(read)?;
    let recorded_at =
        DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
            location: format!("position {position}"),
            reason: format!("recorded_at {micros} out of range"),
        })?;
    StoredRow {
        position: Position::new(position, position),
        event_id: row.try_get("event_id").map_err(read)?,
        stream_id: row.try_get("stream_id").map_err(read)?,
        version: row.try_get("version").map_err(read)?,
        event_type: row.try_get("event_type").map_err(read)?,
        schema_version: row.try_get("schema_version").map_err(read)?,
        payload: row.try_get("payload").map_err(read)?,
        metadata: row.try_get("metadata").map_err(read)?,
        recorded_at,
    }
    .into_recorded()
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let events = EncodedEvent::encode_all(events)?;
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
        };
        match self.appends.submit(request).await {
            Ok(outcome) => outcome,
            Err(sqlx::Error::WorkerCrashed) => Err(StoreError::WriterGone),
            Err(source) => Err(StoreError::Database {
                operation: "group commit",
                source,
            }),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = select_events!("WHERE stream_id = ?1 AND version > ?2 ORDER BY version");
        let rows = sqlx::query(SQL)
            .bind(stream.as_str())
            .bind(to_i64(after_version))
            .fetch_all(&self.readers)
            .await
            .map_err(StoreError::db("read stream"))?;
        rows.iter().map(row_to_event).collect()
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const SQL: &str = select_events!("WHERE position > ?1 ORDER BY position LIMIT ?2");
        let after = after.map_or(0, |p| p.prepare);
        let rows = sqlx::query(SQL)
            .bind(to_i64(after))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.readers)
            .await
            .map_err(StoreError::db("read all"))?;
        rows.iter().map(row_to_event).collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    fn adapter_name(&self) -> &'static str {
        "sqlite"
    }
}
