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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqliteConnectOptions;
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
    ring: MasterKeyRing,
    sqlite_file: Option<PathBuf>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    subscriber_id: String,
    key_id: Option<String>,
    wrapped_key: Option<Vec<u8>>,
    shredded_at: Option<DateTime<Utc>>,
}

const IDS_PER_QUERY: usize = 500;

impl KeyVault {
    /// Opens (creating if needed) a SQLite file of its own, e.g. `<data dir>/keyvault.db`.
    #[instrument(name = "keyvault.open_sqlite", skip_all, err)]
    pub async fn open_sqlite(path: &Path, ring: MasterKeyRing) -> Result<Self, VaultError> {
        Ok(Self {
            pool: db::open_sqlite(SqliteConnectOptions::new().filename(path)).await?,
            ring,
            sqlite_file: Some(path.to_path_buf()),
        })
    }

    /// Uses a PostgreSQL pool (the event store's database) and creates the tables.
    #[instrument(name = "keyvault.open_postgres", skip_all, err)]
    pub async fn from_postgres_pool(pool: PgPool, ring: MasterKeyRing) -> Result<Self, VaultError> {
        Ok(Self {
            pool: db::open_postgres(pool).await?,
            ring,
            sqlite_file: None,
        })
    }

    /// Opens `sqlite:…` or `postgres://…`.
    pub async fn open(url: &str, ring: MasterKeyRing) -> Result<Self, VaultError> {
        let sqlite_file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)));
        Ok(Self {
            pool: db::open_url(url).await?,
            ring,
            sqlite_file,
        })
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
    /// concurrent callers (in any process) exactly one key is stored and all get it.
    #[instrument(name = "keyvault.key_for_append", skip(self), err)]
    pub async fn key_for_append(&self, subscriber: Uuid) -> Result<Option<KeyBytes>, VaultError> {
        if let Some(state) = self.states(&[subscriber]).await?.remove(&subscriber) {
            return Ok(match state {
                KeyState::Active(key) => Some(key),
                KeyState::Shredded(_) => None,
            });
        }
        let fresh = KeyBytes::generate();
        let (key_id, wrapped) = self.ring.wrap(subscriber, &fresh)?;
        const INSERT: &str = "INSERT INTO keyvault_data_keys \
            (subscriber_id, key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4) \
            ON CONFLICT (subscriber_id) DO NOTHING";
        on_pool!(&self.pool, p => {
            sqlx::query(INSERT)
                .bind(subscriber.to_string())
                .bind(&key_id)
                .bind(&wrapped)
                .bind(Utc::now())
                .execute(p)
                .await
                .map_err(VaultError::db("store a data key"))?;
        });
        // Read back: another writer may have won the insert.
        match self.states(&[subscriber]).await?.remove(&subscriber) {
            Some(KeyState::Active(key)) => Ok(Some(key)),
            Some(KeyState::Shredded(_)) => Ok(None),
            None => Err(VaultError::Corrupt {
                what: format!("the data key of {subscriber}"),
                reason: "vanished right after it was stored".to_owned(),
            }),
        }
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
            let rows: Vec<KeyRow> = on_pool!(&self.pool, p => {
                let mut query = QueryBuilder::new(
                    "SELECT subscriber_id, key_id, wrapped_key, shredded_at FROM keyvault_data_keys WHERE subscriber_id IN (",
                );
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(id.to_string());
                }
                query.push(")");
                query
                    .build_query_as::<KeyRow>()
                    .fetch_all(p)
                    .await
                    .map_err(VaultError::db("read data keys"))?
            });
            for row in rows {
                let subscriber =
                    Uuid::parse_str(&row.subscriber_id).map_err(|_| VaultError::Corrupt {
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
