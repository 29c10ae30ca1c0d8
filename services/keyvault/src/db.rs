//! The vault's database: a SQLite file of its own (embedded default) or the PostgreSQL database
//! the event store uses. The schema is created at open (idempotent `IF NOT EXISTS` statements,
//! serialised by an advisory lock on PostgreSQL so that replicas may start together).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};

use crate::error::VaultError;

/// A pool on one of the supported databases.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// `sql` (ending in `… IN (`) followed by `ids` as bound parameters and the closing `)`.
pub(crate) fn ids_in<'a, DB>(sql: &str, ids: &'a [String]) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(sql);
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id.as_str());
    }
    query.push(")");
    query
}

/// Runs the same body against whichever pool it is (SQL with `$n` parameters suits both).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS keyvault_data_keys (
        subscriber_id TEXT PRIMARY KEY,
        key_id TEXT,
        wrapped_key BLOB,
        created_at TEXT NOT NULL,
        shredded_at TEXT
    )",
    "CREATE TABLE IF NOT EXISTS admin_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subscriber_id TEXT,
        outcome TEXT NOT NULL,
        detail TEXT
    )",
    "CREATE INDEX IF NOT EXISTS admin_audit_subscriber ON admin_audit (subscriber_id)",
    "CREATE TABLE IF NOT EXISTS privacy_stats (
        list_id TEXT NOT NULL,
        month TEXT NOT NULL,
        requested BIGINT NOT NULL DEFAULT 0,
        confirmed BIGINT NOT NULL DEFAULT 0,
        unsubscribed BIGINT NOT NULL DEFAULT 0,
        erased BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (list_id, month)
    )",
    "CREATE TABLE IF NOT EXISTS privacy_stats_members (
        subscriber_id TEXT NOT NULL,
        list_id TEXT NOT NULL,
        PRIMARY KEY (subscriber_id, list_id)
    )",
    "CREATE TABLE IF NOT EXISTS privacy_stats_checkpoint (
        name TEXT PRIMARY KEY,
        \"commit\" BIGINT NOT NULL,
        prepare BIGINT NOT NULL
    )",
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS keyvault_data_keys (
        subscriber_id TEXT PRIMARY KEY,
        key_id TEXT,
        wrapped_key BYTEA,
        created_at TIMESTAMPTZ NOT NULL,
        shredded_at TIMESTAMPTZ
    )",
    "CREATE TABLE IF NOT EXISTS admin_audit (
        id BIGSERIAL PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subscriber_id TEXT,
        outcome TEXT NOT NULL,
        detail TEXT
    )",
    "CREATE INDEX IF NOT EXISTS admin_audit_subscriber ON admin_audit (subscriber_id)",
    "CREATE TABLE IF NOT EXISTS privacy_stats (
        list_id TEXT NOT NULL,
        month TEXT NOT NULL,
        requested BIGINT NOT NULL DEFAULT 0,
        confirmed BIGINT NOT NULL DEFAULT 0,
        unsubscribed BIGINT NOT NULL DEFAULT 0,
        erased BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (list_id, month)
    )",
    "CREATE TABLE IF NOT EXISTS privacy_stats_members (
        subscriber_id TEXT NOT NULL,
        list_id TEXT NOT NULL,
        PRIMARY KEY (subscriber_id, list_id)
    )",
    "CREATE TABLE IF NOT EXISTS privacy_stats_checkpoint (
        name TEXT PRIMARY KEY,
        \"commit\" BIGINT NOT NULL,
        prepare BIGINT NOT NULL
    )",
];

/// Options for a SQLite file of the vault: WAL, `synchronous=FULL`, `secure_delete=ON`.
pub(crate) fn sqlite_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    newsletter_eventstore::durable_sqlite_options(options, Duration::from_secs(10))
        .pragma("secure_delete", "ON")
}

pub(crate) async fn open_sqlite(options: SqliteConnectOptions) -> Result<Pool, VaultError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(sqlite_options(options))
        .await
        .map_err(VaultError::db("open the key vault file"))?;
    for sql in SQLITE_SCHEMA {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .map_err(VaultError::db("create the key vault schema"))?;
    }
    Ok(Pool::Sqlite(pool))
}

pub(crate) async fn open_postgres(pool: PgPool) -> Result<Pool, VaultError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(VaultError::db("begin key vault schema"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(7366615210420508)")
        .execute(&mut *tx)
        .await
        .map_err(VaultError::db("lock the key vault schema"))?;
    for sql in POSTGRES_SCHEMA {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(VaultError::db("create the key vault schema"))?;
    }
    tx.commit()
        .await
        .map_err(VaultError::db("commit key vault schema"))?;
    Ok(Pool::Postgres(pool))
}

/// The vault's own write connection to a SQLite file (for the group commit of new keys), with
/// the same settings as the pool's.
pub(crate) async fn sqlite_writer(
    options: SqliteConnectOptions,
) -> Result<SqliteConnection, VaultError> {
    use sqlx::ConnectOptions as _;
    sqlite_options(options)
        .connect()
        .await
        .map_err(VaultError::db("open the key vault writer"))
}

/// What a vault URL names.
pub(crate) enum Target {
    /// A SQLite file, not yet opened.
    Sqlite(Box<SqliteConnectOptions>),
    /// A PostgreSQL database, connected.
    Postgres(PgPool),
}

impl Target {
    /// Parses `sqlite:…`, or connects to `postgres://…` / `postgresql://…`.
    pub(crate) async fn parse(url: &str) -> Result<Self, VaultError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite(Box::new(
                SqliteConnectOptions::from_str(url).map_err(VaultError::db("parse sqlite URL"))?,
            ))),
            "postgres" | "postgresql" => Ok(Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(VaultError::db("connect to postgres"))?,
            )),
            other => Err(VaultError::UnsupportedUrl(other.chars().take(32).collect())),
        }
    }
}

/// Moves everything in a SQLite file's write-ahead log into the database file and truncates
/// the log to zero bytes (`PRAGMA wal_checkpoint(TRUNCATE)`), so that page images holding
/// deleted data no longer sit in the `-wal` file. Retries while readers block it; returns
/// whether the log was truncated. A missing file is not an error (`Ok(false)`).
pub async fn truncate_sqlite_wal(path: &Path) -> Result<bool, VaultError> {
    use sqlx::ConnectOptions as _;
    if !path.exists() {
        return Ok(false);
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(VaultError::db("open a sqlite file to checkpoint"))?;
    for _ in 0..50 {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await
            .map_err(VaultError::db("checkpoint the write-ahead log"))?;
        if busy == 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}
