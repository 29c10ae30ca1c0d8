//! [`AuditLog`]: every admin read or change, with the acting token's name and the time.
//!
//! Table `admin_audit(id, at, actor, action, subscriber_id, outcome, detail)` in the vault's
//! database. Entries hold no personal data: the subject is named by its opaque subscriber id
//! only (an export by address records the id it resolved to, never the address), and `detail`
//! carries only tokens such as an erasure reference. Entries are kept after an erasure: the
//! id they name no longer leads to anything.
//!
//! # Paging never skips an entry
//!
//! [`AuditLog::page`] pages by id (`id > after`), so an id must never become visible after a
//! higher one. Ids are therefore taken and committed in one order: on PostgreSQL every insert
//! first takes a transaction-scoped advisory lock ([`AUDIT_LOCK`]) that its commit releases, so
//! writers (in every replica) insert one after another and a reader that sees id `n` has
//! already been able to see every committed id below it; on SQLite the database's single
//! writer lock does the same. A rolled-back insert leaves a gap, never a late entry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::db::{Pool, on_pool};
use crate::error::VaultError;
use crate::vault::KeyVault;

/// The most entries one page returns.
pub const MAX_AUDIT_PAGE: usize = 500;

/// The PostgreSQL advisory lock key that serialises audit inserts (held until each commits).
pub const AUDIT_LOCK: i64 = 7_366_615_210_420_509;

/// One action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The service token's (or CLI user's, or job's) name.
    pub actor: String,
    /// What was done (`subscriber.export`, `subscriber.erase`, `audit.read`, …).
    pub action: String,
    /// Whom it concerned, if anyone.
    pub subscriber: Option<Uuid>,
    /// `ok`, `not_found`, `refused`, …
    pub outcome: String,
    /// A token-like detail (an erasure reference); never personal data.
    pub detail: Option<String>,
}

/// One recorded entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Increasing id; the cursor for paging.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Whom it concerned.
    pub subscriber_id: Option<String>,
    /// How it ended.
    pub outcome: String,
    /// Detail (a reference), if any.
    pub detail: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    subscriber_id: Option<String>,
    outcome: String,
    detail: Option<String>,
}

impl From<Row> for AuditRecord {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            subscriber_id: r.subscriber_id,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

/// An audit entry inserted in a transaction that is still open (see [`AuditLog::begin`]).
#[derive(Debug)]
pub struct PendingAuditEntry {
    id: i64,
    tx: PendingTx,
}

#[derive(Debug)]
enum PendingTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl PendingAuditEntry {
    /// The id the entry will have.
    #[must_use]
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Commits the entry (and, on PostgreSQL, releases the audit lock); returns its id.
    pub async fn commit(self) -> Result<i64, VaultError> {
        match self.tx {
            PendingTx::Sqlite(tx) => tx.commit().await,
            PendingTx::Postgres(tx) => tx.commit().await,
        }
        .map_err(VaultError::db("commit an audit entry"))?;
        Ok(self.id)
    }
}

/// The audit log (shares the vault's database).
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: Pool,
}

impl AuditLog {
    /// The audit log in the vault's database.
    #[must_use]
    pub fn new(vault: &KeyVault) -> Self {
        Self {
            pool: vault.pool().clone(),
        }
    }

    /// Records an entry at `at`; returns its id.
    pub async fn record(&self, entry: &AuditEntry, at: DateTime<Utc>) -> Result<i64, VaultError> {
        self.begin(entry, at).await?.commit().await
    }

    /// Inserts an entry in a transaction of its own and leaves it open: the entry becomes
    /// visible when [`PendingAuditEntry::commit`] is called and is rolled back if the value is
    /// dropped. Until then other audit writers wait (see the module documentation), so keep it
    /// short; [`AuditLog::record`] commits at once.
    pub async fn begin(
        &self,
        entry: &AuditEntry,
        at: DateTime<Utc>,
    ) -> Result<PendingAuditEntry, VaultError> {
        const SQL: &str = "INSERT INTO admin_audit (at, actor, action, subscriber_id, outcome, detail) \
                           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        let subscriber = entry.subscriber.map(|s| s.to_string());
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(VaultError::db("begin an audit entry"))?;
                let id = sqlx::query_scalar::<_, i64>(SQL)
                    .bind(at)
                    .bind(&entry.actor)
                    .bind(&entry.action)
                    .bind(subscriber)
                    .bind(&entry.outcome)
                    .bind(&entry.detail)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(VaultError::db("record an audit entry"))?;
                Ok(PendingAuditEntry {
                    id,
                    tx: PendingTx::Sqlite(tx),
                })
            }
            Pool::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(VaultError::db("begin an audit entry"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(VaultError::db("lock the audit log"))?;
                let id = sqlx::query_scalar::<_, i64>(SQL)
                    .bind(at)
                    .bind(&entry.actor)
                    .bind(&entry.action)
                    .bind(subscriber)
                    .bind(&entry.outcome)
                    .bind(&entry.detail)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(VaultError::db("record an audit entry"))?;
                Ok(PendingAuditEntry {
                    id,
                    tx: PendingTx::Postgres(tx),
                })
            }
        }
    }

    /// Entries with an id above `after`, oldest first, at most `limit` (clamped to
    /// 1..=[`MAX_AUDIT_PAGE`]).
    pub async fn page(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, VaultError> {
        const SQL: &str = "SELECT id, at, actor, action, subscriber_id, outcome, detail \
                           FROM admin_audit WHERE id > $1 ORDER BY id LIMIT $2";
        let limit = i64::try_from(limit.clamp(1, MAX_AUDIT_PAGE)).unwrap_or(100);
        let rows: Vec<Row> = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, Row>(SQL)
                .bind(after)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(VaultError::db("read the audit log"))?
        });
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    /// Every entry about one subscriber, oldest first.
    pub async fn for_subscriber(&self, subscriber: Uuid) -> Result<Vec<AuditRecord>, VaultError> {
        const SQL: &str = "SELECT id, at, actor, action, subscriber_id, outcome, detail \
                           FROM admin_audit WHERE subscriber_id = $1 ORDER BY id";
        let rows: Vec<Row> = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, Row>(SQL)
                .bind(subscriber.to_string())
                .fetch_all(p)
                .await
                .map_err(VaultError::db("read a subscriber's audit entries"))?
        });
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}
