//! [`EmailIndex`]: which subscriber an email address belongs to, strongly consistent.
//!
//! Not a projection: the API claims an address here *before* it appends a subscriber's first
//! event, so two signups with one address land in one stream. It is never truncated or rebuilt
//! with the read models; on SQLite give it a file of its own (e.g. `<data dir>/emailindex.db`),
//! which must be kept and backed up like the event store.
//!
//! # What is stored
//!
//! Only `HMAC-SHA256(index key, normalised address)` and the subscriber id: never the address.
//! The key (32 bytes, from configuration) keeps the digests from being reversed by hashing
//! guessed addresses; losing it makes the index unusable, changing it needs a re-index.
//!
//! # Normalisation
//!
//! The [`EmailAddress`] as parsed (trimmed, domain lower-cased and IDNA-normalised), then
//! lower-cased **as a whole** with Unicode lower-casing: `Jane.Doe@Example.com` and
//! `jane.doe@example.com` are one entry. RFC 5321 lets a local part be case-sensitive, but
//! practically no mailbox provider treats it so, and one person typing their address in two
//! ways must not get two subscriptions. Nothing else is folded (no dot or `+tag` removal: those
//! are different mailboxes at many providers).
//!
//! # Claims under load
//!
//! On SQLite every claim goes through one writer task that owns the file's write connection
//! and commits the claims of all concurrent signups in one transaction (one fsync; the
//! [group commit](newsletter_eventstore::sqlite::group_commit) the event store uses too). On
//! PostgreSQL a writer task of the same kind ([`GroupCommit`]) claims every waiting address in
//! one statement (insert, or else read the winner), one commit for all of them. Either way a
//! claim returns only after the entry is committed.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use newsletter_domain::{EmailAddress, SubscriberId};
use newsletter_eventstore::group_commit::{Commit, GroupCommit};
use newsletter_eventstore::sqlite::group_commit::{Batch, SqliteGroupCommit};
use sha2::Sha256;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, QueryBuilder};
use tracing::instrument;
use uuid::Uuid;

use crate::db::{self, Pool, Schema, on_pool};
use crate::error::ReadModelError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite/email_index");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres/email_index");

const SCHEMA: Schema = Schema {
    what: "email index",
    table: "_email_index_migrations",
    sqlite: &SQLITE_MIGRATIONS,
    postgres: &POSTGRES_MIGRATIONS,
};

/// The most addresses one [`EmailIndex::find_many`] call takes.
pub const MAX_FIND_MANY: usize = 1000;
/// How often a claim is retried when the entry it saw vanished (a concurrent `remove`).
const CLAIM_ATTEMPTS: usize = 3;
/// The entry of one digest.
const FIND: &str = "SELECT subscriber_id FROM email_index WHERE address_hash = $1";
/// The most claims a writer commits at once (on SQLite two parameters each in the batch's one
/// insert, well below SQLite's 32,766; on PostgreSQL two arrays whatever the count).
const MAX_CLAIMS_PER_COMMIT: usize = 512;

/// The secret key of the email index's HMAC. Its `Debug` is redacted.
#[derive(Clone)]
pub struct EmailIndexKey([u8; 32]);

impl EmailIndexKey {
    /// A key from 32 bytes (e.g. decoded from configuration).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The keyed digest of an address, normalised as the module documentation says.
    #[must_use]
    pub fn digest(&self, email: &EmailAddress) -> [u8; 32] {
        // HMAC zero-pads keys shorter than the hash's 64-byte block; padding here gives the same
        // MAC as `new_from_slice(&self.0)` without a fallible constructor.
        let mut block = [0_u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(normalise(email).as_bytes());
        let out = mac.finalize().into_bytes();
        let mut digest = [0_u8; 32];
        digest.copy_from_slice(&out);
        digest
    }
}

impl fmt::Debug for EmailIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailIndexKey(<redacted>)")
    }
}

/// The index form of an address: the parsed address lower-cased as a whole.
fn normalise(email: &EmailAddress) -> String {
    email.as_str().to_lowercase()
}

/// The email index: keyed hash of the normalised address → subscriber id.
#[derive(Debug, Clone)]
pub struct EmailIndex {
    pool: Pool,
    claims: Claims,
    key: EmailIndexKey,
}

/// Where claims are written.
#[derive(Debug, Clone)]
enum Claims {
    /// The SQLite file's group-committing writer.
    Sqlite(SqliteGroupCommit<ClaimBatch>),
    /// The PostgreSQL writer task, and the pool for the rare claim it leaves to its caller.
    Postgres {
        writer: GroupCommit<PgClaims>,
        pool: PgPool,
    },
}

/// One claim waiting for the SQLite writer.
struct ClaimRequest {
    digest: [u8; 32],
    candidate: Uuid,
}

/// Claims of concurrent signups, in one SQLite transaction.
struct ClaimBatch;

impl Batch for ClaimBatch {
    type Request = ClaimRequest;
    /// The id the address belongs to after the claim.
    type Reply = Uuid;

    /// Two statements for the whole batch, each a hop to sqlx's worker thread: one multi-row
    /// insert that keeps entries already there (and, for an address claimed twice in the batch,
    /// the first claim), then one read of every claimed address's entry. Inside the writer's
    /// transaction, so what the read finds is what the insert left.
    async fn write(
        &mut self,
        conn: &mut SqliteConnection,
        claims: &[ClaimRequest],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut insert =
            sqlx::QueryBuilder::new("INSERT INTO email_index (address_hash, subscriber_id) ");
        insert.push_values(claims, |mut row, claim| {
            row.push_bind(claim.digest.as_slice())
                .push_bind(claim.candidate);
        });
        insert.push(" ON CONFLICT (address_hash) DO NOTHING");
        insert.build().execute(&mut *conn).await?;
        let mut select = sqlx::QueryBuilder::new(
            "SELECT address_hash, subscriber_id FROM email_index WHERE address_hash IN (",
        );
        let mut digests = select.separated(", ");
        for claim in claims {
            digests.push_bind(claim.digest.as_slice());
        }
        select.push(")");
        let entries: HashMap<Vec<u8>, Uuid> = select
            .build_query_as::<(Vec<u8>, Uuid)>()
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        claims
            .iter()
            .map(|claim| {
                entries
                    .get(claim.digest.as_slice())
                    .copied()
                    .ok_or(sqlx::Error::RowNotFound)
            })
            .collect()
    }
}

/// Claims of concurrent signups on PostgreSQL, in one autocommit statement a batch.
struct PgClaims {
    pool: PgPool,
}

impl Commit for PgClaims {
    type Request = ClaimRequest;
    /// The id the address belongs to after the claim; `None` when a concurrent claim committed
    /// the entry after the statement's snapshot (the insert waited for it and skipped the
    /// address, the read could not see it): the caller then claims it alone.
    type Reply = Option<Uuid>;

    /// One statement: a multi-row insert that keeps the entries already there (and, for an
    /// address claimed twice in the batch, one of the claims), and a read of the entries that
    /// were there before it. Rows go in in address-hash order, so two processes' batches
    /// claiming the same addresses wait for each other instead of deadlocking.
    async fn commit(&mut self, claims: &[ClaimRequest]) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        const CLAIM_MANY: &str = "WITH inserted AS ( \
                 INSERT INTO email_index (address_hash, subscriber_id) \
                 SELECT * FROM unnest($1::bytea[], $2::uuid[]) ORDER BY 1 \
                 ON CONFLICT (address_hash) DO NOTHING RETURNING address_hash, subscriber_id) \
             SELECT address_hash, subscriber_id FROM inserted \
             UNION ALL SELECT address_hash, subscriber_id FROM email_index \
                 WHERE address_hash = ANY($1)";
        let digests: Vec<Vec<u8>> = claims.iter().map(|claim| claim.digest.to_vec()).collect();
        let candidates: Vec<Uuid> = claims.iter().map(|claim| claim.candidate).collect();
        let entries: HashMap<Vec<u8>, Uuid> = sqlx::query_as::<_, (Vec<u8>, Uuid)>(CLAIM_MANY)
            .bind(&digests)
            .bind(&candidates)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        Ok(claims
            .iter()
            .map(|claim| entries.get(claim.digest.as_slice()).copied())
            .collect())
    }
}

impl EmailIndex {
    /// Opens the index a URL names (`sqlite:…`, a file of its own; or `postgres://…`, the event
    /// store's database) and applies migrations.
    #[instrument(name = "email_index.open", skip_all, err)]
    pub async fn open(url: &str, key: EmailIndexKey) -> Result<Self, ReadModelError> {
        match db::Target::parse(url)? {
            db::Target::Sqlite(options) => Self::open_sqlite_with(options, key).await,
            db::Target::Postgres(options) => Self::connect_postgres_with(options, key).await,
        }
    }

    /// Opens (creating if needed) a SQLite file and applies migrations.
    #[instrument(name = "email_index.open_sqlite", skip_all, err)]
    pub async fn open_sqlite(path: &Path, key: EmailIndexKey) -> Result<Self, ReadModelError> {
        Self::open_sqlite_with(SqliteConnectOptions::new().filename(path), key).await
    }

    /// Opens SQLite with explicit options (WAL, `synchronous=FULL`, `secure_delete=ON` forced),
    /// and starts the writer that group-commits claims on a connection of its own.
    pub async fn open_sqlite_with(
        options: SqliteConnectOptions,
        key: EmailIndexKey,
    ) -> Result<Self, ReadModelError> {
        let options = db::durable_sqlite(options);
        let pool = db::open_sqlite(options.clone(), &SCHEMA).await?;
        let writer = options
            .connect()
            .await
            .map_err(ReadModelError::db("open the email index writer"))?;
        Ok(Self {
            pool,
            claims: Claims::Sqlite(SqliteGroupCommit::on_sqlite(
                writer,
                ClaimBatch,
                MAX_CLAIMS_PER_COMMIT,
            )),
            key,
        })
    }

    /// Connects to PostgreSQL with explicit options and applies migrations.
    pub async fn connect_postgres_with(
        options: PgConnectOptions,
        key: EmailIndexKey,
    ) -> Result<Self, ReadModelError> {
        Self::on_postgres(db::connect_postgres(options, &SCHEMA).await?, key)
    }

    /// Uses an existing PostgreSQL pool and applies migrations.
    pub async fn from_postgres_pool(
        pool: PgPool,
        key: EmailIndexKey,
    ) -> Result<Self, ReadModelError> {
        Self::on_postgres(db::migrate_postgres(pool, &SCHEMA).await?, key)
    }

    fn on_postgres(pool: Pool, key: EmailIndexKey) -> Result<Self, ReadModelError> {
        match &pool {
            Pool::Postgres(pg) => Ok(Self {
                claims: Claims::Postgres {
                    writer: GroupCommit::spawn(
                        PgClaims { pool: pg.clone() },
                        MAX_CLAIMS_PER_COMMIT,
                    ),
                    pool: pg.clone(),
                },
                pool,
                key,
            }),
            Pool::Sqlite(_) => Err(ReadModelError::corrupt(
                "email_index",
                "a PostgreSQL index was opened on SQLite",
            )),
        }
    }

    /// The subscriber the address belongs to: the one already stored, or else `candidate`,
    /// which is stored. Race-safe: of concurrent claims for one address (from any number of
    /// processes) exactly one candidate is stored and every claim returns it. Returns after
    /// the entry is committed.
    #[instrument(name = "email_index.claim", skip(self, email), fields(candidate = %candidate), err)]
    pub async fn claim(
        &self,
        email: &EmailAddress,
        candidate: SubscriberId,
    ) -> Result<SubscriberId, ReadModelError> {
        let digest = self.key.digest(email);
        let winner = match &self.claims {
            Claims::Sqlite(writer) => writer
                .submit(ClaimRequest {
                    digest,
                    candidate: *candidate.as_uuid(),
                })
                .await
                .map_err(ReadModelError::db("claim address"))?,
            Claims::Postgres { writer, pool } => {
                let claimed = writer
                    .submit(ClaimRequest {
                        digest,
                        candidate: *candidate.as_uuid(),
                    })
                    .await
                    .map_err(ReadModelError::db("claim address"))?;
                match claimed {
                    Some(winner) => winner,
                    None => claim_postgres(self, pool, &digest, *candidate.as_uuid()).await?,
                }
            }
        };
        let winner = SubscriberId::from_uuid(winner);
        if winner != candidate {
            tracing::debug!(existing = %winner, "address already claimed");
        }
        Ok(winner)
    }

    /// The subscriber the address belongs to, if any.
    #[instrument(name = "email_index.find", skip_all, err)]
    pub async fn find(&self, email: &EmailAddress) -> Result<Option<SubscriberId>, ReadModelError> {
        self.find_digest(&self.key.digest(email)).await
    }

    async fn find_digest(&self, digest: &[u8]) -> Result<Option<SubscriberId>, ReadModelError> {
        let found: Option<Uuid> = on_pool!(&self.pool, p => {
            sqlx::query_scalar::<_, Uuid>(FIND)
                .bind(digest)
                .fetch_optional(p)
                .await
                .map_err(ReadModelError::db("find address"))?
        });
        Ok(found.map(SubscriberId::from_uuid))
    }

    /// The subscribers of those addresses that are known, in the order given (an address given
    /// twice is answered twice). At most [`MAX_FIND_MANY`] addresses; one query.
    #[instrument(name = "email_index.find_many", skip_all, fields(addresses = emails.len()), err)]
    pub async fn find_many(
        &self,
        emails: &[EmailAddress],
    ) -> Result<Vec<(EmailAddress, SubscriberId)>, ReadModelError> {
        if emails.len() > MAX_FIND_MANY {
            return Err(ReadModelError::TooManyAddresses {
                max: MAX_FIND_MANY,
                got: emails.len(),
            });
        }
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let digests: Vec<[u8; 32]> = emails.iter().map(|e| self.key.digest(e)).collect();
        let mut unique = digests.clone();
        unique.sort_unstable();
        unique.dedup();
        let rows: Vec<(Vec<u8>, Uuid)> = on_pool!(&self.pool, p => {
            let mut query = QueryBuilder::new(
                "SELECT address_hash, subscriber_id FROM email_index WHERE address_hash IN (",
            );
            let mut list = query.separated(", ");
            for digest in &unique {
                list.push_bind(digest.to_vec());
            }
            query.push(")");
            query
                .build_query_as::<(Vec<u8>, Uuid)>()
                .fetch_all(p)
                .await
                .map_err(ReadModelError::db("find addresses"))?
        });
        let found: std::collections::HashMap<Vec<u8>, Uuid> = rows.into_iter().collect();
        Ok(emails
            .iter()
            .zip(&digests)
            .filter_map(|(email, digest)| {
                found
                    .get(digest.as_slice())
                    .map(|id| (email.clone(), SubscriberId::from_uuid(*id)))
            })
            .collect())
    }

    /// Removes every entry pointing at the subscriber (on erasure); returns how many.
    #[instrument(name = "email_index.remove", skip(self), fields(subscriber = %subscriber), err)]
    pub async fn remove(&self, subscriber: SubscriberId) -> Result<u64, ReadModelError> {
        const SQL: &str = "DELETE FROM email_index WHERE subscriber_id = $1";
        let done = on_pool!(&self.pool, p => {
            sqlx::query(SQL)
                .bind(*subscriber.as_uuid())
                .execute(p)
                .await
                .map_err(ReadModelError::db("remove subscriber from email index"))?
                .rows_affected()
        });
        Ok(done)
    }
}

/// One claim alone (when the batch could not see the winner): one statement inserts the
/// candidate or reads the entry already there. It reads with the
/// statement's snapshot, so an entry committed by a concurrent claim after that snapshot (which
/// the insert waited for) is invisible to it: then a new statement reads it. Retried when the
/// entry vanished in between (a concurrent `remove`).
async fn claim_postgres(
    index: &EmailIndex,
    pool: &PgPool,
    digest: &[u8],
    candidate: Uuid,
) -> Result<Uuid, ReadModelError> {
    const CLAIM: &str = "WITH inserted AS ( \
             INSERT INTO email_index (address_hash, subscriber_id) VALUES ($1, $2) \
             ON CONFLICT (address_hash) DO NOTHING RETURNING subscriber_id) \
         SELECT subscriber_id FROM inserted \
         UNION ALL SELECT subscriber_id FROM email_index WHERE address_hash = $1 \
         LIMIT 1";
    for _ in 0..CLAIM_ATTEMPTS {
        let claimed: Option<Uuid> = sqlx::query_scalar(CLAIM)
            .bind(digest)
            .bind(candidate)
            .fetch_optional(pool)
            .await
            .map_err(ReadModelError::db("claim address"))?;
        if let Some(winner) = claimed {
            return Ok(winner);
        }
        if let Some(winner) = index.find_digest(digest).await? {
            return Ok(*winner.as_uuid());
        }
    }
    Err(ReadModelError::corrupt(
        "email_index",
        "the entry vanished after every claim attempt (concurrent removals)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_hmac_sha256_of_the_lower_cased_address() {
        let key = EmailIndexKey::from_bytes([7; 32]);
        let mixed = EmailAddress::parse("Jane.Doe@Example.com").expect("valid");
        let lower = EmailAddress::parse("jane.doe@example.com").expect("valid");
        assert_eq!(key.digest(&mixed), key.digest(&lower));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).expect("any key length");
        mac.update(b"jane.doe@example.com");
        assert_eq!(
            key.digest(&lower).as_slice(),
            mac.finalize().into_bytes().as_slice()
        );
        let other = EmailIndexKey::from_bytes([8; 32]);
        assert_ne!(key.digest(&lower), other.digest(&lower), "the key matters");
        assert_eq!(format!("{key:?}"), "EmailIndexKey(<redacted>)");
    }
}
