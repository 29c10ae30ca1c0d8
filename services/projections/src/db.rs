//! The two databases the read side runs on, opened and migrated the same way.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::error::ReadModelError;

/// A pool on one of the supported databases.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs the same body against whichever pool it is; `$p` is bound to the concrete pool, so the
/// body (SQL written with `$n` parameters, which both drivers accept) compiles once per backend.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Where to connect, parsed from a URL.
pub(crate) enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl Target {
    /// Parses `sqlite:…`, `postgres://…` or `postgresql://…`.
    pub(crate) fn parse(url: &str) -> Result<Self, ReadModelError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite(
                SqliteConnectOptions::from_str(url)
                    .map_err(ReadModelError::db("parse sqlite URL"))?,
            )),
            "postgres" | "postgresql" => Ok(Self::Postgres(
                PgConnectOptions::from_str(url)
                    .map_err(ReadModelError::db("parse postgres URL"))?,
            )),
            other => Err(ReadModelError::UnsupportedUrl {
                scheme: other.chars().take(32).collect(),
            }),
        }
    }
}

/// A migrator with the given migrations that records them in its own table, so the read side's
/// migrations never mix with the event store's `_sqlx_migrations` in a shared database.
fn migrator(source: &Migrator, table: &'static str) -> Migrator {
    let mut migrator = Migrator::with_migrations(source.iter().cloned().collect());
    migrator.dangerous_set_table_name(table);
    migrator
}

/// One set of migrations per backend, recorded in `table`.
pub(crate) struct Schema {
    pub what: &'static str,
    pub table: &'static str,
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// The settings every connection to a SQLite file of the read side runs with: created if
/// missing, WAL with `synchronous=FULL` (every commit fsynced), `secure_delete=ON` (deleted rows
/// are overwritten, not left in free pages), and a 10 s wait for another writer's lock.
pub(crate) fn durable_sqlite(options: SqliteConnectOptions) -> SqliteConnectOptions {
    newsletter_eventstore::durable_sqlite_options(options, Duration::from_secs(10))
        .pragma("secure_delete", "ON")
}

/// Opens a SQLite file (created if missing) with [`durable_sqlite`] and migrates it.
pub(crate) async fn open_sqlite(
    options: SqliteConnectOptions,
    schema: &Schema,
) -> Result<Pool, ReadModelError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(durable_sqlite(options))
        .await
        .map_err(ReadModelError::db("open sqlite read-model database"))?;
    migrator(schema.sqlite, schema.table)
        .run(&pool)
        .await
        .map_err(|source| ReadModelError::Migration {
            what: schema.what,
            source,
        })?;
    Ok(Pool::Sqlite(pool))
}

/// Connects to PostgreSQL and migrates.
pub(crate) async fn connect_postgres(
    options: PgConnectOptions,
    schema: &Schema,
) -> Result<Pool, ReadModelError> {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(ReadModelError::db("connect to postgres"))?;
    migrate_postgres(pool, schema).await
}

/// Migrates an existing PostgreSQL pool (e.g. the event store's).
pub(crate) async fn migrate_postgres(
    pool: PgPool,
    schema: &Schema,
) -> Result<Pool, ReadModelError> {
    migrator(schema.postgres, schema.table)
        .run(&pool)
        .await
        .map_err(|source| ReadModelError::Migration {
            what: schema.what,
            source,
        })?;
    Ok(Pool::Postgres(pool))
}

/// Opens whatever a URL names.
pub(crate) async fn open_url(url: &str, schema: &Schema) -> Result<Pool, ReadModelError> {
    match Target::parse(url)? {
        Target::Sqlite(options) => open_sqlite(options, schema).await,
        Target::Postgres(options) => connect_postgres(options, schema).await,
    }
}
