//! [`AuditLog`]: every admin read or change, with the acting token's name and the time.
//!
//! Table `admin_audit(id, at, actor, action, subscriber_id, outcome, detail)` in the vault's
//! database. Entries hold no personal data: the subject is named by its opaque subscriber id
//! only (an export by address records the id it resolved to, never the address), and `detail`
//! carries only tokens such as an erasure reference. Entries are kept after an erasure: the
//! id they name no longer leads to anything.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{Pool, on_pool};
use crate::error::VaultError;
use crate::vault::KeyVault;

/// The most entries one page returns.
pub const MAX_AUDIT_PAGE: usize = 500;

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
        const SQL: &str = "INSERT INTO admin_audit (at, actor, action, subscriber_id, outcome, detail) \
                           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        Ok(on_pool!(&self.pool, p => {
            sqlx::query_scalar::<_, i64>(SQL)
                .bind(at)
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(entry.subscriber.map(|s| s.to_string()))
                .bind(&entry.outcome)
                .bind(&entry.detail)
                .fetch_one(p)
                .await
                .map_err(VaultError::db("record an audit entry"))?
        }))
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
