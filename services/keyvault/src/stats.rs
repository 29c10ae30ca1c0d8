//! [`Stats`]: anonymous counts per list and month — requested, confirmed, unsubscribed, erased —
//! that survive erasure (privacy policy section 5: data may be kept in anonymised form).
//!
//! A small projection of its own in the vault's database (`privacy_stats`, with its checkpoint
//! in `privacy_stats_checkpoint`, moved by compare-and-set in the same transaction as the
//! counts, so an event is counted exactly once). It reads the **inner** (sealed) store: the
//! list ids and times it needs are never sealed, so it needs no data key. To count an erasure
//! per list it keeps which lists each live subscriber ever asked for
//! (`privacy_stats_members`: opaque id and list id only), and deletes those rows when it counts
//! the erasure. The month is the month (UTC) the event was recorded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use newsletter_eventstore::{EventStore, Position, RecordedEvent};
use serde::Serialize;
use serde_json::Value;

use crate::db::{Pool, on_pool};
use crate::error::VaultError;
use crate::store::subscriber_of;
use crate::vault::KeyVault;

const CHECKPOINT: &str = "privacy_stats";

/// Counts of one list in one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthlyCount {
    /// The list id.
    pub list: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Subscription requests (signups) that named the list.
    pub requested: i64,
    /// Confirmations of it.
    pub confirmed: i64,
    /// Unsubscribes from it.
    pub unsubscribed: i64,
    /// Erased subscribers who had asked for it.
    pub erased: i64,
}

/// The statistics projection.
#[derive(Debug, Clone)]
pub struct Stats {
    pool: Pool,
}

fn lists_of(payload: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(items) = payload.get("lists").and_then(Value::as_array) {
        out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(list) = payload.get("list").and_then(Value::as_str) {
        out.insert(list.to_owned());
    }
    out
}

impl Stats {
    /// The statistics in the vault's database.
    #[must_use]
    pub fn new(vault: &KeyVault) -> Self {
        Self {
            pool: vault.pool().clone(),
        }
    }

    async fn checkpoint(&self) -> Result<Option<Position>, VaultError> {
        const SQL: &str =
            "SELECT \"commit\", prepare FROM privacy_stats_checkpoint WHERE name = $1";
        let row: Option<(i64, i64)> = on_pool!(&self.pool, p => {
            sqlx::query_as(SQL)
                .bind(CHECKPOINT)
                .fetch_optional(p)
                .await
                .map_err(VaultError::db("read the statistics checkpoint"))?
        });
        Ok(row.map(|(c, p)| {
            Position::new(u64::try_from(c).unwrap_or(0), u64::try_from(p).unwrap_or(0))
        }))
    }

    /// Applies a batch read after `after` in one transaction with the checkpoint.
    async fn apply(
        &self,
        after: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<Option<Position>, VaultError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(after);
        };
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(VaultError::db("begin statistics batch"))?;
            let moved = match after {
                None => sqlx::query("INSERT INTO privacy_stats_checkpoint (name, \"commit\", prepare) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                    .bind(CHECKPOINT).bind(to_i64(last.commit)).bind(to_i64(last.prepare))
                    .execute(&mut *tx).await,
                Some(a) => sqlx::query("UPDATE privacy_stats_checkpoint SET \"commit\" = $2, prepare = $3 WHERE name = $1 AND \"commit\" = $4 AND prepare = $5")
                    .bind(CHECKPOINT).bind(to_i64(last.commit)).bind(to_i64(last.prepare))
                    .bind(to_i64(a.commit)).bind(to_i64(a.prepare))
                    .execute(&mut *tx).await,
            }
            .map_err(VaultError::db("move the statistics checkpoint"))?
            .rows_affected();
            if moved != 1 {
                return Err(VaultError::Corrupt {
                    what: "privacy_stats_checkpoint".to_owned(),
                    reason: "moved by another runner".to_owned(),
                });
            }
            for event in events {
                let Some(subscriber) = subscriber_of(event.stream.as_str()) else { continue };
                let column = match event.event_type.as_str() {
                    "SubscriptionRequested" => "requested",
                    "SubscriptionConfirmed" => "confirmed",
                    "Unsubscribed" => "unsubscribed",
                    "SubscriberErased" => "erased",
                    _ => continue,
                };
                let month = event.recorded_at.format("%Y-%m").to_string();
                let lists: Vec<String> = if column == "erased" {
                    let lists: Vec<String> = sqlx::query_scalar("SELECT list_id FROM privacy_stats_members WHERE subscriber_id = $1 ORDER BY list_id")
                        .bind(subscriber.to_string())
                        .fetch_all(&mut *tx).await
                        .map_err(VaultError::db("read a subscriber's lists"))?;
                    sqlx::query("DELETE FROM privacy_stats_members WHERE subscriber_id = $1")
                        .bind(subscriber.to_string())
                        .execute(&mut *tx).await
                        .map_err(VaultError::db("forget a subscriber's lists"))?;
                    lists
                } else {
                    let payload: Value = serde_json::from_str(&event.payload).map_err(|_| VaultError::Corrupt {
                        what: format!("event at {}", event.position),
                        reason: "payload is not JSON".to_owned(),
                    })?;
                    lists_of(&payload).into_iter().collect()
                };
                for list in lists {
                    if column == "requested" {
                        sqlx::query("INSERT INTO privacy_stats_members (subscriber_id, list_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                            .bind(subscriber.to_string()).bind(&list)
                            .execute(&mut *tx).await
                            .map_err(VaultError::db("remember a subscriber's list"))?;
                    }
                    let sql = format!(
                        "INSERT INTO privacy_stats (list_id, month, {column}) VALUES ($1, $2, 1) \
                         ON CONFLICT (list_id, month) DO UPDATE SET {column} = privacy_stats.{column} + 1"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&list).bind(&month)
                        .execute(&mut *tx).await
                        .map_err(VaultError::db("count an event"))?;
                }
            }
            tx.commit().await.map_err(VaultError::db("commit statistics batch"))?;
        });
        Ok(Some(last))
    }

    /// Counts everything readable now in `store` (the inner, sealed store); returns how many
    /// events it read.
    pub async fn catch_up(&self, store: &dyn EventStore) -> Result<u64, VaultError> {
        let mut checkpoint = self.checkpoint().await?;
        let mut read = 0_u64;
        loop {
            let batch = store
                .read_all(checkpoint, 500)
                .await
                .map_err(|e| VaultError::Corrupt {
                    what: "the event log".to_owned(),
                    reason: e.to_string(),
                })?;
            if batch.is_empty() {
                return Ok(read);
            }
            checkpoint = self.apply(checkpoint, &batch).await?;
            read += batch.len() as u64;
        }
    }

    /// Keeps counting until `shutdown` completes (projector role); failures are logged and
    /// retried.
    pub async fn run(
        &self,
        store: Arc<dyn EventStore>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut changes = store.changes();
        loop {
            if let Err(error) = self.catch_up(store.as_ref()).await {
                tracing::warn!(%error, "statistics projection failed; retrying");
            }
            tokio::select! {
                () = shutdown.as_mut() => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Every count, by list and month.
    pub async fn counts(&self) -> Result<Vec<MonthlyCount>, VaultError> {
        const SQL: &str = "SELECT list_id, month, requested, confirmed, unsubscribed, erased \
                           FROM privacy_stats ORDER BY list_id, month";
        let rows: Vec<(String, String, i64, i64, i64, i64)> = on_pool!(&self.pool, p => {
            sqlx::query_as(SQL)
                .fetch_all(p)
                .await
                .map_err(VaultError::db("read statistics"))?
        });
        Ok(rows
            .into_iter()
            .map(
                |(list, month, requested, confirmed, unsubscribed, erased)| MonthlyCount {
                    list,
                    month,
                    requested,
                    confirmed,
                    unsubscribed,
                    erased,
                },
            )
            .collect())
    }
}
