//! [`KeyVault`]: one data key per subscriber, wrapped by the master key, destroyed on erasure.
//!
//! Table `keyvault_data_keys(subscriber_id, key_id, wrapped_key, created_at, shredded_at)`. A
//! live row holds the id of the master key that wrapped it and `nonce || ciphertext` of the
//! data key. Destroying a key (crypto-shredding) overwrites the row to a *tombstone*: key id and
//! wrapped key NULL, `shredded_at` set. On SQLite the file runs with `secure_delete=ON`, so the
//! old bytes are zeroed in the page, and [`KeyVault::truncate_wal`] drops the page images from
//! the write-ahead log. The tombstone keeps a later append from silently creating a new key for
//! an erased subscriber, and tells "erased" from "missing" (a vault restored from a backup older
//! than the subscriber).
//!
//! New keys are written the way the email index writes claims: on SQLite through one writer
//! task that commits the keys of all concurrent first appends in one transaction (the event
//! store's [group commit](newsletter_eventstore::sqlite::group_commit)); on PostgreSQL through a
//! writer task of the same kind that stores all waiting keys in one statement, which inserts
//! each key or reads the row already there. Either way the key is
//! committed before [`KeyVault::key_for_append`] returns it, so no event is ever stored under a
//! key that could be lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use newsletter_eventstore::group_commit::{Commit, GroupCommit};
use newsletter_eventstore::sqlite::group_commit::{Batch, SqliteGroupCommit};
use sqlx::QueryBuilder;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tracing::instrument;
use uuid::Uuid;

use crate::db::{self, Pool, on_pool};
use crate::error::VaultError;
use crate::master::{KeyBytes, MasterKeyRing};

/// What the vault holds for one subscriber.
#[derive(Debug, Clone)]
pub enum KeyState {
    /// A live data key.
    Active(KeyBytes),
    /// The key was destroyed (the subscriber was erased) at this time.
    Shredded(DateTime<Utc>),
}

/// What [`KeyVault::destroy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// A live key was destroyed now.
    Now,
    /// It was destroyed earlier.
    Already,
    /// There was no key (the subscriber never stored personal data); a tombstone was written.
    NoKey,
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Keys re-wrapped with the current master key.
    pub rewrapped: u64,
    /// Keys already wrapped by it.
    pub current: u64,
}

/// The key vault.
#[derive(Debug, Clone)]
pub struct KeyVault {
    pool: Pool,
    new_keys: NewKeys,
    ring: MasterKeyRing,
    sqlite_file: Option<PathBuf>,
}

/// Where new data keys are written.
#[derive(Debug, Clone)]
enum NewKeys {
    /// The SQLite file's group-committing writer.
    Sqlite(SqliteGroupCommit<NewKeyBatch>),
    /// The PostgreSQL writer task, and the pool for the rare row it leaves to its caller.
    Postgres {
        writer: GroupCommit<PgNewKeys>,
        pool: PgPool,
    },
}

#[derive(Clone, sqlx::FromRow)]
struct KeyRow {
    subscriber_id: String,
    key_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
    shredded_at: Option<DateTime<Utc>>,
}

const IDS_PER_QUERY: usize = 500;
/// The most new keys a writer commits at once (on SQLite four parameters each in the batch's
/// one insert, well below SQLite's 32,766; on PostgreSQL four arrays whatever the count).
const MAX_KEYS_PER_COMMIT: usize = 512;
/// The rows of the subscribers of an `IN (…)` list that [`db::ids_in`] completes.
const SELECT_KEYS_IN: &str = "SELECT subscriber_id, key_id, wrapped_key, shredded_at \
    FROM keyvault_data_keys WHERE subscriber_id IN (";
/// The row of one subscriber.
const SELECT_KEY: &str = "SELECT subscriber_id, key_id, wrapped_key, shredded_at \
    FROM keyvault_data_keys WHERE subscriber_id = $1";

/// A freshly wrapped data key, waiting to be stored.
struct NewKey {
    subscriber_id: String,
    key_id: String,
    wrapped: Vec<u8>,
    created_at: DateTime<Utc>,
}

/// The first keys of concurrent new subscribers, in one SQLite transaction.
struct NewKeyBatch;

impl Batch for NewKeyBatch {
    type Request = NewKey;
    /// The subscriber's row after the insert: the new key, or what another writer stored.
    type Reply = Option<KeyRow>;

    /// Two statements for the whole batch, each a hop to sqlx's worker thread: one multi-row
    /// insert that keeps rows already there (and, for a subscriber twice in the batch, the
    /// first key), then one read of every subscriber's row, inside the writer's transaction.
    async fn write(
        &mut self,
        conn: &mut SqliteConnection,
        keys: &[NewKey],
    ) -> Result<Vec<Option<KeyRow>>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut insert = QueryBuilder::new(
            "INSERT INTO keyvault_data_keys (subscriber_id, key_id, wrapped_key, created_at) ",
        );
        insert.push_values(keys, |mut row, key| {
            row.push_bind(key.subscriber_id.as_str())
                .push_bind(key.key_id.as_str())
                .push_bind(key.wrapped.as_slice())
                .push_bind(key.created_at);
        });
        insert.push(" ON CONFLICT (subscriber_id) DO NOTHING");
        insert.build().execute(&mut *conn).await?;
        let ids: Vec<String> = keys.iter().map(|key| key.subscriber_id.clone()).collect();
        let stored = db::ids_in::<sqlx::Sqlite>(SELECT_KEYS_IN, &ids)
            .build_query_as::<KeyRow>()
            .fetch_all(&mut *conn)
            .await?;
        Ok(row_of_each(keys, stored))
    }
}

/// The keys of concurrent appends on PostgreSQL, in one autocommit statement a batch.
struct PgNewKeys {
    pool: PgPool,
}

impl Commit for PgNewKeys {
    type Request = NewKey;
    /// The subscriber's row after the insert; `None` when another writer committed it after the
    /// statement's snapshot (the insert waited for it and skipped the key, the read could not
    /// see it): the caller then reads it.
    type Reply = Option<KeyRow>;

    /// One statement: a multi-row insert that keeps the rows already there (and, for a
    /// subscriber twice in the batch, one of the keys), and a read of the rows that were there
    /// before it. Rows go in in subscriber-id order, so two processes' batches for the same
    /// subscribers wait for each other instead of deadlocking.
    async fn commit(&mut self, keys: &[NewKey]) -> Result<Vec<Option<KeyRow>>, sqlx::Error> {
        const UPSERT_MANY: &str = "WITH inserted AS ( \
                 INSERT INTO keyvault_data_keys (subscriber_id, key_id, wrapped_key, created_at) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) \
                 ORDER BY 1 \
                 ON CONFLICT (subscriber_id) DO NOTHING \
                 RETURNING subscriber_id, key_id, wrapped_key, shredded_at) \
             SELECT * FROM inserted \
             UNION ALL SELECT subscriber_id, key_id, wrapped_key, shredded_at \
                 FROM keyvault_data_keys WHERE subscriber_id = ANY($1)";
        let ids: Vec<&str> = keys.iter().map(|key| key.subscriber_id.as_str()).collect();
        let key_ids: Vec<&str> = keys.iter().map(|key| key.key_id.as_str()).collect();
        let wrapped: Vec<&[u8]> = keys.iter().map(|key| key.wrapped.as_slice()).collect();
        let created: Vec<DateTime<Utc>> = keys.iter().map(|key| key.created_at).collect();
        let stored = sqlx::query_as::<_, KeyRow>(UPSERT_MANY)
            .bind(&ids)
            .bind(&key_ids)
            .bind(&wrapped)
            .bind(&created)
            .fetch_all(&self.pool)
            .await?;
        Ok(row_of_each(keys, stored))
    }
}

/// The stored row of each new key's subscriber, in the keys' order (a subscriber twice in a
/// batch gets its one row twice; one without a row, `None`).
fn row_of_each(keys: &[NewKey], rows: Vec<KeyRow>) -> Vec<Option<KeyRow>> {
    let stored: HashMap<String, KeyRow> = rows
        .into_iter()
        .map(|row| (row.subscriber_id.clone(), row))
        .collect();
    keys.iter()
        .map(|key| stored.get(&key.subscriber_id).cloned())
        .collect()
}

impl KeyVault {
    /// Opens (creating if needed) a SQLite file of its own, e.g. `<data dir>/keyvault.db`.
    #[instrument(name = "keyvault.open_sqlite", skip_all, err)]
    pub async fn open_sqlite(path: &Path, ring: MasterKeyRing) -> Result<Self, VaultError> {
        Self::open_sqlite_with(SqliteConnectOptions::new().filename(path), ring).await
    }

    async fn open_sqlite_with(
        options: SqliteConnectOptions,
        ring: MasterKeyRing,
    ) -> Result<Self, VaultError> {
        let sqlite_file = Some(options.get_filename().to_path_buf());
        let pool = db::open_sqlite(options.clone()).await?;
        let writer = db::sqlite_writer(options).await?;
        Ok(Self {
            pool,
            new_keys: NewKeys::Sqlite(SqliteGroupCommit::on_sqlite(
                writer,
                NewKeyBatch,
                MAX_KEYS_PER_COMMIT,
            )),
            ring,
            sqlite_file,
        })
    }

    /// Uses a PostgreSQL pool (the event store's database) and creates the tables.
    #[instrument(name = "keyvault.open_postgres", skip_all, err)]
    pub async fn from_postgres_pool(pool: PgPool, ring: MasterKeyRing) -> Result<Self, VaultError> {
        Ok(Self {
            pool: db::open_postgres(pool.clone()).await?,
            new_keys: NewKeys::Postgres {
                writer: GroupCommit::spawn(PgNewKeys { pool: pool.clone() }, MAX_KEYS_PER_COMMIT),
                pool: pool.clone(),
            },
            ring,
            sqlite_file: None,
        })
    }

    /// Opens `sqlite:…` or `postgres://…`.
    pub async fn open(url: &str, ring: MasterKeyRing) -> Result<Self, VaultError> {
        match db::Target::parse(url).await? {
            db::Target::Sqlite(options) => Self::open_sqlite_with(*options, ring).await,
            db::Target::Postgres(pool) => Self::from_postgres_pool(pool, ring).await,
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The master key ring in use.
    #[must_use]
    pub fn ring(&self) -> &MasterKeyRing {
        &self.ring
    }

    /// The subscriber's live data key, creating one on first use. `Ok(None)` when the key was
    /// destroyed: personal data of an erased subscriber is never stored again. Race-safe: of
    /// concurrent callers (in any process) exactly one key is stored and all get it. A new key
    /// is committed before it is returned.
    #[instrument(name = "keyvault.key_for_append", skip(self), err)]
    pub async fn key_for_append(&self, subscriber: Uuid) -> Result<Option<KeyBytes>, VaultError> {
        let live = |state| match state {
            KeyState::Active(key) => Some(key),
            KeyState::Shredded(_) => None,
        };
        let stored = match &self.new_keys {
            NewKeys::Sqlite(writer) => {
                // Reads run beside the writer: only a subscriber without a row waits for it.
                if let Some(state) = self.states(&[subscriber]).await?.remove(&subscriber) {
                    return Ok(live(state));
                }
                writer
                    .submit(self.new_key(subscriber)?)
                    .await
                    .map_err(VaultError::db("store a data key"))?
            }
            NewKeys::Postgres { writer, pool } => {
                self.store_key_postgres(writer, pool, subscriber).await?
            }
        };
        match stored {
            Some(row) => Ok(live(self.key_state(row)?.1)),
            None => Err(VaultError::Corrupt {
                what: format!("the data key of {subscriber}"),
                reason: "vanished right after it was stored".to_owned(),
            }),
        }
    }

    /// A fresh data key for the subscriber, wrapped by the current master key.
    fn new_key(&self, subscriber: Uuid) -> Result<NewKey, VaultError> {
        let (key_id, wrapped) = self.ring.wrap(subscriber, &KeyBytes::generate())?;
        Ok(NewKey {
            subscriber_id: subscriber.to_string(),
            key_id,
            wrapped,
            created_at: Utc::now(),
        })
    }

    /// Stores a new key through the writer task, or reads the row already there; a row another
    /// writer committed after the batch's statement began (which its insert waited for) is
    /// read by a second query.
    async fn store_key_postgres(
        &self,
        writer: &GroupCommit<PgNewKeys>,
        pool: &PgPool,
        subscriber: Uuid,
    ) -> Result<Option<KeyRow>, VaultError> {
        let key = self.new_key(subscriber)?;
        let subscriber_id = key.subscriber_id.clone();
        let row = writer
            .submit(key)
            .await
            .map_err(VaultError::db("store a data key"))?;
        match row {
            Some(row) => Ok(Some(row)),
            None => sqlx::query_as(SELECT_KEY)
                .bind(&subscriber_id)
                .fetch_optional(pool)
                .await
                .map_err(VaultError::db("read a data key")),
        }
    }

    /// The subscriber and key state of a stored row.
    fn key_state(&self, row: KeyRow) -> Result<(Uuid, KeyState), VaultError> {
        let subscriber = Uuid::parse_str(&row.subscriber_id).map_err(|_| VaultError::Corrupt {
            what: "keyvault_data_keys".to_owned(),
            reason: "a subscriber id is not a UUID".to_owned(),
        })?;
        let state = match (row.key_id, row.wrapped_key, row.shredded_at) {
            (Some(key_id), Some(wrapped), None) => {
                KeyState::Active(self.ring.unwrap_key(subscriber, &key_id, &wrapped)?)
            }
            (_, _, Some(at)) => KeyState::Shredded(at),
            _ => {
                return Err(VaultError::Corrupt {
                    what: format!("the data key of {subscriber}"),
                    reason: "neither live nor shredded".to_owned(),
                });
            }
        };
        Ok((subscriber, state))
    }

    /// What the vault holds for each of these subscribers (absent: nothing, not even a
    /// tombstone). One query per 500 ids.
    #[instrument(name = "keyvault.states", skip_all, fields(ids = subscribers.len()), err)]
    pub async fn states(
        &self,
        subscribers: &[Uuid],
    ) -> Result<HashMap<Uuid, KeyState>, VaultError> {
        let mut out = HashMap::with_capacity(subscribers.len());
        for chunk in subscribers.chunks(IDS_PER_QUERY) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            let rows: Vec<KeyRow> = on_pool!(&self.pool, p => {
                db::ids_in(SELECT_KEYS_IN, &ids)
                    .build_query_as::<KeyRow>()
                    .fetch_all(p)
                    .await
                    .map_err(VaultError::db("read data keys"))?
            });
            for row in rows {
                let (subscriber, state) = self.key_state(row)?;
                out.insert(subscriber, state);
            }
        }
        Ok(out)
    }

    /// Destroys the subscriber's data key (crypto-shredding); idempotent. Everything encrypted
    /// with it becomes unreadable for good, in every copy of the event store.
    #[instrument(name = "keyvault.destroy", skip(self), err)]
    pub async fn destroy(&self, subscriber: Uuid) -> Result<Destroyed, VaultError> {
        const SHRED: &str = "UPDATE keyvault_data_keys SET key_id = NULL, wrapped_key = NULL, \
            shredded_at = $2 WHERE subscriber_id = $1 AND shredded_at IS NULL";
        const TOMBSTONE: &str = "INSERT INTO keyvault_data_keys \
            (subscriber_id, key_id, wrapped_key, created_at, shredded_at) \
            VALUES ($1, NULL, NULL, $2, $2) ON CONFLICT (subscriber_id) DO NOTHING";
        let now = Utc::now();
        let id = subscriber.to_string();
        let outcome = on_pool!(&self.pool, p => {
            let shredded = sqlx::query(SHRED)
                .bind(&id)
                .bind(now)
                .execute(p)
                .await
                .map_err(VaultError::db("destroy a data key"))?
                .rows_affected();
            if shredded > 0 {
                Destroyed::Now
            } else {
                let inserted = sqlx::query(TOMBSTONE)
                    .bind(&id)
                    .bind(now)
                    .execute(p)
                    .await
                    .map_err(VaultError::db("write a key tombstone"))?
                    .rows_affected();
                if inserted > 0 { Destroyed::NoKey } else { Destroyed::Already }
            }
        });
        tracing::info!(?outcome, "data key destroyed");
        Ok(outcome)
    }

    /// Re-wraps every live data key that is not wrapped by the current master key with it.
    /// Keys are re-wrapped one by one with a compare-and-set on the old wrapped bytes, so it
    /// can run while the service runs. Afterwards older master keys can be removed from the
    /// configuration.
    #[instrument(name = "keyvault.rotate", skip(self), err)]
    pub async fn rotate(&self) -> Result<RotationReport, VaultError> {
        let current = self.ring.current().id().to_owned();
        let mut report = RotationReport::default();
        let rows: Vec<KeyRow> = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, KeyRow>(
                "SELECT subscriber_id, key_id, wrapped_key, shredded_at FROM keyvault_data_keys \
                 WHERE shredded_at IS NULL",
            )
            .fetch_all(p)
            .await
            .map_err(VaultError::db("read data keys to rotate"))?
        });
        for row in rows {
            let (Some(key_id), Some(wrapped)) = (row.key_id, row.wrapped_key) else {
                continue;
            };
            if key_id == current {
                report.current += 1;
                continue;
            }
            let subscriber =
                Uuid::parse_str(&row.subscriber_id).map_err(|_| VaultError::Corrupt {
                    what: "keyvault_data_keys".to_owned(),
                    reason: "a subscriber id is not a UUID".to_owned(),
                })?;
            let key = self.ring.unwrap_key(subscriber, &key_id, &wrapped)?;
            let (new_id, new_wrapped) = self.ring.wrap(subscriber, &key)?;
            on_pool!(&self.pool, p => {
                sqlx::query(
                    "UPDATE keyvault_data_keys SET key_id = $2, wrapped_key = $3 \
                     WHERE subscriber_id = $1 AND wrapped_key = $4 AND shredded_at IS NULL",
                )
                .bind(&row.subscriber_id)
                .bind(&new_id)
                .bind(&new_wrapped)
                .bind(&wrapped)
                .execute(p)
                .await
                .map_err(VaultError::db("re-wrap a data key"))?;
            });
            report.rewrapped += 1;
        }
        self.truncate_wal().await?;
        Ok(report)
    }

    /// How many live keys each master key id wraps.
    pub async fn key_ids_in_use(&self) -> Result<Vec<(String, i64)>, VaultError> {
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT key_id, COUNT(*) FROM keyvault_data_keys WHERE key_id IS NOT NULL \
                 GROUP BY key_id ORDER BY key_id",
            )
            .fetch_all(p)
            .await
            .map_err(VaultError::db("count data keys"))?
        }))
    }

    /// On SQLite, checkpoints and truncates the vault file's write-ahead log (see
    /// [`crate::truncate_sqlite_wal`]); on PostgreSQL nothing to do.
    pub async fn truncate_wal(&self) -> Result<bool, VaultError> {
        match &self.sqlite_file {
            Some(path) => db::truncate_sqlite_wal(path).await,
            None => Ok(false),
        }
    }
}
