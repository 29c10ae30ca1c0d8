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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use newsletter_eventstore::{EventStore, Position, RecordedEvent};
use serde::Serialize;
use serde_json::Value;
use sqlx::QueryBuilder;

use crate::db::{Pool, ids_in, on_pool};
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

/// Rows per multi-row statement (6 binds a row at most, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// Which count an event moves; the value is its index in [`Plan::counts`]' arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Requested = 0,
    Confirmed = 1,
    Unsubscribed = 2,
    Erased = 3,
}

/// One counted event of a batch, parsed outside the transaction.
struct Counted {
    /// The subscriber id as `privacy_stats_members` stores it.
    subscriber: String,
    month: String,
    column: Column,
    /// The lists it names (empty for an erasure: those come from the members table).
    lists: BTreeSet<String>,
}

/// The counted events among `events`, in log order.
fn counted_events(events: &[RecordedEvent]) -> Result<Vec<Counted>, VaultError> {
    let mut out = Vec::new();
    for event in events {
        let Some(subscriber) = subscriber_of(event.stream.as_str()) else {
            continue;
        };
        let column = match event.event_type.as_str() {
            "SubscriptionRequested" => Column::Requested,
            "SubscriptionConfirmed" => Column::Confirmed,
            "Unsubscribed" => Column::Unsubscribed,
            "SubscriberErased" => Column::Erased,
            _ => continue,
        };
        let lists = if column == Column::Erased {
            BTreeSet::new()
        } else {
            let payload: Value =
                serde_json::from_str(&event.payload).map_err(|_| VaultError::Corrupt {
                    what: format!("event at {}", event.position),
                    reason: "payload is not JSON".to_owned(),
                })?;
            lists_of(&payload)
        };
        out.push(Counted {
            subscriber: subscriber.to_string(),
            month: event.recorded_at.format("%Y-%m").to_string(),
            column,
            lists,
        });
    }
    Ok(out)
}

/// What a batch writes: counts to add per (list, month) as
/// `[requested, confirmed, unsubscribed, erased]`, and the member rows to insert (those of
/// erased subscribers are deleted first).
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    counts: BTreeMap<(String, String), [i64; 4]>,
    members: Vec<(String, String)>,
}

/// Folds a batch in log order, as applying it one event at a time would: a request remembers
/// its lists, an erasure counts every list remembered so far (`stored`: the members rows of the
/// batch's erased subscribers before it) and forgets them.
fn fold(counted: &[Counted], stored: &[(String, String)]) -> Plan {
    let mut remembered: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for (subscriber, list) in stored {
        remembered
            .entry(subscriber.as_str())
            .or_default()
            .insert(list.clone());
    }
    // Lists remembered since the subscriber's last erasure in this batch (or the batch start).
    let mut added: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut plan = Plan::default();
    for event in counted {
        let subscriber = event.subscriber.as_str();
        let lists = if event.column == Column::Erased {
            added.remove(subscriber);
            remembered.remove(subscriber).unwrap_or_default()
        } else {
            if event.column == Column::Requested {
                remembered
                    .entry(subscriber)
                    .or_default()
                    .extend(event.lists.iter().cloned());
                added
                    .entry(subscriber)
                    .or_default()
                    .extend(event.lists.iter().cloned());
            }
            event.lists.clone()
        };
        let index = event.column as usize;
        for list in lists {
            plan.counts.entry((list, event.month.clone())).or_default()[index] += 1;
        }
    }
    plan.members = added
        .into_iter()
        .flat_map(|(subscriber, lists)| {
            lists
                .into_iter()
                .map(move |list| (subscriber.to_owned(), list))
        })
        .collect();
    plan
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

    /// Applies a batch read after `after` in one transaction with the checkpoint. The events are
    /// parsed and folded before and around a handful of statements (checkpoint, one read of the
    /// erased subscribers' lists, one delete, one insert of members, one upsert of counts), so
    /// the vault's write lock is held for a few statements per batch, not per event.
    async fn apply(
        &self,
        after: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<Option<Position>, VaultError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(after);
        };
        let counted = counted_events(events)?;
        let erased: Vec<String> = counted
            .iter()
            .filter(|c| c.column == Column::Erased)
            .map(|c| c.subscriber.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
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
            let mut stored: Vec<(String, String)> = Vec::new();
            for chunk in erased.chunks(ROWS_PER_STATEMENT) {
                let mut query = ids_in("SELECT subscriber_id, list_id FROM privacy_stats_members WHERE subscriber_id IN (", chunk);
                let rows: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *tx).await
                    .map_err(VaultError::db("read the erased subscribers' lists"))?;
                stored.extend(rows);
            }
            let plan = fold(&counted, &stored);
            for chunk in erased.chunks(ROWS_PER_STATEMENT) {
                let mut query = ids_in("DELETE FROM privacy_stats_members WHERE subscriber_id IN (", chunk);
                query.build().execute(&mut *tx).await
                    .map_err(VaultError::db("forget the erased subscribers' lists"))?;
            }
            for chunk in plan.members.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new("INSERT INTO privacy_stats_members (subscriber_id, list_id) ");
                query.push_values(chunk, |mut row, (subscriber, list)| {
                    row.push_bind(subscriber.as_str()).push_bind(list.as_str());
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await
                    .map_err(VaultError::db("remember subscribers' lists"))?;
            }
            let counts: Vec<_> = plan.counts.iter().collect();
            for chunk in counts.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new("INSERT INTO privacy_stats (list_id, month, requested, confirmed, unsubscribed, erased) ");
                query.push_values(chunk, |mut row, ((list, month), n)| {
                    row.push_bind(list.as_str()).push_bind(month.as_str())
                        .push_bind(n[0]).push_bind(n[1]).push_bind(n[2]).push_bind(n[3]);
                });
                query.push(" ON CONFLICT (list_id, month) DO UPDATE SET \
                    requested = privacy_stats.requested + excluded.requested, \
                    confirmed = privacy_stats.confirmed + excluded.confirmed, \
                    unsubscribed = privacy_stats.unsubscribed + excluded.unsubscribed, \
                    erased = privacy_stats.erased + excluded.erased");
                query.build().execute(&mut *tx).await
                    .map_err(VaultError::db("count a batch"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::{MasterKey, MasterKeyRing};
    use chrono::{TimeZone, Utc};
    use newsletter_eventstore::{EventMetadata, StreamId};
    use uuid::Uuid;

    /// A pseudo-random history over a few subscribers and lists: requests, confirmations,
    /// unsubscribes and erasures (some followed by a new request), across two months.
    fn history(seed: u64, len: usize) -> Vec<RecordedEvent> {
        let mut state = seed;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let subscribers: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        let lists = ["news", "offers", "events"];
        (0..len)
            .map(|i| {
                let subscriber = subscribers[next(6) as usize];
                let (event_type, payload) = match next(5) {
                    0 | 1 => {
                        let a = lists[next(3) as usize];
                        let b = lists[next(3) as usize];
                        (
                            "SubscriptionRequested",
                            format!(r#"{{"lists":["{a}","{b}"]}}"#),
                        )
                    }
                    2 => (
                        "SubscriptionConfirmed",
                        format!(r#"{{"lists":["{}"]}}"#, lists[next(3) as usize]),
                    ),
                    3 => (
                        "Unsubscribed",
                        format!(r#"{{"list":"{}"}}"#, lists[next(3) as usize]),
                    ),
                    _ => ("SubscriberErased", "{}".to_owned()),
                };
                let n = i as u64 + 1;
                RecordedEvent {
                    event_id: Uuid::new_v4(),
                    stream: StreamId::new(format!("subscriber-{subscriber}")).unwrap(),
                    stream_version: n,
                    position: Position::new(n, n),
                    recorded_at: Utc
                        .with_ymd_and_hms(2026, 11 + u32::from(i >= len / 2), 3, 12, 0, 0)
                        .unwrap(),
                    event_type: event_type.to_owned(),
                    schema_version: 1,
                    payload,
                    metadata: EventMetadata::default(),
                }
            })
            .collect()
    }

    async fn counts_applied_in(events: &[RecordedEvent], batch: usize) -> Vec<MonthlyCount> {
        let dir = tempfile::tempdir().unwrap();
        let ring = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
        let vault = KeyVault::open_sqlite(&dir.path().join("vault.db"), ring)
            .await
            .unwrap();
        counts_of(&vault, events, batch).await
    }

    async fn counts_of(
        vault: &KeyVault,
        events: &[RecordedEvent],
        batch: usize,
    ) -> Vec<MonthlyCount> {
        let stats = Stats::new(vault);
        let mut checkpoint = None;
        for chunk in events.chunks(batch) {
            checkpoint = stats.apply(checkpoint, chunk).await.unwrap();
        }
        stats.counts().await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_counts_what_its_events_count_one_by_one() {
        for seed in 1..=8 {
            let events = history(seed, 120);
            let one_by_one = counts_applied_in(&events, 1).await;
            assert!(one_by_one.iter().any(|c| c.erased > 0), "seed {seed}");
            for batch in [7, 500] {
                assert_eq!(
                    counts_applied_in(&events, batch).await,
                    one_by_one,
                    "seed {seed}, batches of {batch}"
                );
            }
        }
    }

    #[tokio::test]
    #[cfg_attr(
        not(postgres_tests),
        ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
    )]
    async fn a_batch_counts_what_its_events_count_one_by_one_on_postgres() {
        use sqlx::Connection as _;
        use std::str::FromStr as _;
        let url = std::env::var("NEWSLETTER_TEST_DATABASE_URL")
            .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests");
        let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
        let events = history(3, 120);
        let mut results = Vec::new();
        for batch in [1, 500] {
            let schema = format!("stats_test_{}", Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .expect("create test schema");
            let options = sqlx::postgres::PgConnectOptions::from_str(&url)
                .expect("a valid URL")
                .options([("search_path", schema.as_str())]);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .expect("connect");
            let ring = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
            let vault = KeyVault::from_postgres_pool(pool, ring).await.unwrap();
            results.push(counts_of(&vault, &events, batch).await);
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop test schema");
        }
        assert!(results[0].iter().any(|c| c.erased > 0));
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], counts_applied_in(&events, 1).await);
    }

    #[test]
    fn an_erasure_counts_stored_and_batch_lists_and_a_later_request_is_remembered() {
        let subscriber = Uuid::new_v4();
        let event = |column, lists: &[&str]| Counted {
            subscriber: subscriber.to_string(),
            month: "2026-12".to_owned(),
            column,
            lists: lists.iter().map(|l| (*l).to_owned()).collect(),
        };
        let counted = [
            event(Column::Requested, &["offers"]),
            event(Column::Erased, &[]),
            event(Column::Requested, &["events"]),
        ];
        let stored = [(subscriber.to_string(), "news".to_owned())];
        let plan = fold(&counted, &stored);
        let month = |list: &str| (list.to_owned(), "2026-12".to_owned());
        assert_eq!(plan.counts[&month("news")], [0, 0, 0, 1]);
        assert_eq!(plan.counts[&month("offers")], [1, 0, 0, 1]);
        assert_eq!(plan.counts[&month("events")], [1, 0, 0, 0]);
        assert_eq!(
            plan.members,
            vec![(subscriber.to_string(), "events".to_owned())]
        );
    }
}
