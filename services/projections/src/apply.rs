//! Applying a batch of events to the subscriber read model, in one transaction with the
//! projection's checkpoint.
//!
//! # Why snapshots of the domain's own state
//!
//! Rows are derived from [`SubscriberState`], folded by the domain's own [`Subscriber::evolve`],
//! so no lifecycle rule (supersession, expiry restoring earlier statuses, erasure, …) is written a
//! second time here. The fold is kept as a JSON snapshot per subscriber in
//! `subscriber_snapshots`; a batch loads the snapshots of the subscribers it touches with one
//! query, evolves them by the batch's events in log order, and writes snapshots, rows and the
//! checkpoint in one transaction. The alternative, re-reading each touched subscriber's stream
//! from the event store, costs one store round trip per subscriber per batch, reads events beyond
//! the checkpoint (so rows would reflect events the checkpoint has not reached), and needs
//! every historical event to stay decodable; the snapshot needs only the batch's own events.
//! A snapshot is as disposable as the rows: a rebuild throws both away and replays the log.
//!
//! While a subscriber exists its snapshot holds what its state holds, personal data included
//! (as do the rows the API reads); after `SubscriberErased` the snapshot is the erased state,
//! which holds only the time of erasure, and the subscriber's `subscribers` and `list_members`
//! rows are deleted. The snapshot is kept so that the fold stays correct should any event follow.
//!
//! # Exactly once
//!
//! The checkpoint moves by compare-and-set inside the batch's transaction: a batch read after
//! checkpoint `c` commits only if the stored checkpoint is still `c`. A crash before commit
//! leaves rows and checkpoint as they were; a second runner working from the same checkpoint gets
//! [`ReadModelError::CheckpointMoved`] and writes nothing.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use newsletter_domain::{
    Decider, ListId, ListStatus, Subscriber, SubscriberEvent, SubscriberState,
};
use newsletter_eventstore::{Position, RecordedEvent};
use sqlx::{FromRow, QueryBuilder};
use tracing::instrument;
use uuid::Uuid;

use crate::db::on_pool;
use crate::error::{ReadModelError, to_i64};
use crate::models::{IDS_PER_QUERY, ReadModels};
use crate::views::{MemberStatus, list_status_name};

/// The checkpoint name of the subscriber projection.
pub(crate) const PROJECTION: &str = "projection.subscribers";

/// One subscriber event of a batch, decoded.
pub(crate) struct Decoded {
    pub(crate) subscriber: Uuid,
    pub(crate) event: SubscriberEvent,
    position: Position,
    pub(crate) version: u64,
}

/// What a batch writes for one subscriber.
struct Change {
    subscriber: Uuid,
    state: String,
    version: i64,
    commit: i64,
    prepare: i64,
    /// `None` when erased: the rows are deleted.
    row: Option<Row>,
}

struct Row {
    locale: Option<&'static str>,
    restricted: bool,
    email: Option<String>,
    name: Option<String>,
    lists: Vec<Membership>,
}

/// One `list_members` row of a subscriber.
struct Membership {
    list: String,
    status: &'static str,
    reported: &'static str,
    since: DateTime<Utc>,
}

#[derive(FromRow)]
struct SnapshotRow {
    subscriber_id: Uuid,
    state: String,
}

/// The subscriber a stream belongs to; `None` for streams that are not a subscriber's.
pub(crate) fn subscriber_of(stream: &str) -> Option<Uuid> {
    stream
        .strip_prefix("subscriber-")
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// A serde error described without echoing any of the input (which may be personal data).
fn describe(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

/// Decodes the subscriber events among `events` (other streams are skipped); an event that
/// cannot be decoded is an error naming its place, never its payload.
pub(crate) fn decode(events: &[RecordedEvent]) -> Result<Vec<Decoded>, ReadModelError> {
    let mut decoded = Vec::with_capacity(events.len());
    for recorded in events {
        let Some(subscriber) = subscriber_of(recorded.stream.as_str()) else {
            continue;
        };
        let event = recorded
            .decode::<SubscriberEvent>()
            .map_err(|e| ReadModelError::Decode {
                position: recorded.position,
                stream: recorded.stream.as_str().to_owned(),
                version: recorded.stream_version,
                reason: match &e {
                    newsletter_domain::DecodeError::Malformed {
                        event_type,
                        schema_version,
                        source,
                    } => format!(
                        "{event_type} v{schema_version} has a malformed payload: {}",
                        describe(source)
                    ),
                    other => other.to_string(),
                },
            })?;
        decoded.push(Decoded {
            subscriber,
            event,
            position: recorded.position,
            version: recorded.stream_version,
        });
    }
    Ok(decoded)
}

/// Every list of a subscriber's state as the read side reports it: the list, the domain's
/// status, the reported status (`Restricted` on every list while restricted) and since when, to
/// the microsecond (what the databases store). In list order.
pub(crate) fn reported_lists(
    state: &SubscriberState,
) -> impl Iterator<Item = (&ListId, ListStatus, MemberStatus, DateTime<Utc>)> {
    state.lists().map(|(list, membership)| {
        (
            list,
            membership.status(),
            MemberStatus::reported(membership.status(), state.is_restricted()),
            membership.since().trunc_subsecs(6),
        )
    })
}

/// Evolves the loaded snapshots by the batch's events and says what to write.
fn evolve(
    snapshots: Vec<SnapshotRow>,
    decoded: Vec<Decoded>,
) -> Result<Vec<Change>, ReadModelError> {
    let mut states: HashMap<Uuid, SubscriberState> = HashMap::new();
    for snapshot in snapshots {
        let state: SubscriberState = serde_json::from_str(&snapshot.state).map_err(|e| {
            ReadModelError::corrupt(
                format!("subscriber_snapshots {}", snapshot.subscriber_id),
                describe(&e),
            )
        })?;
        states.insert(snapshot.subscriber_id, state);
    }
    let mut touched: BTreeMap<Uuid, (u64, Position)> = BTreeMap::new();
    for item in decoded {
        let state = states.remove(&item.subscriber).unwrap_or_default();
        states.insert(item.subscriber, Subscriber::evolve(state, &item.event));
        touched.insert(item.subscriber, (item.version, item.position));
    }
    let mut changes = Vec::with_capacity(touched.len());
    for (subscriber, (version, position)) in touched {
        let state = states.remove(&subscriber).unwrap_or_default();
        let json = serde_json::to_string(&state).map_err(|e| {
            ReadModelError::corrupt(format!("subscriber_snapshots {subscriber}"), describe(&e))
        })?;
        let row = (!state.is_erased()).then(|| Row {
            locale: state.locale().map(|l| l.as_str()),
            restricted: state.is_restricted(),
            email: state.email().map(|e| e.as_str().to_owned()),
            name: state.profile().name.as_ref().map(|n| n.as_str().to_owned()),
            lists: reported_lists(&state)
                .map(|(list, status, reported, since)| Membership {
                    list: list.as_str().to_owned(),
                    status: list_status_name(status),
                    reported: reported.as_str(),
                    since,
                })
                .collect(),
        });
        changes.push(Change {
            subscriber,
            state: json,
            version: to_i64(version, "stream version")?,
            commit: to_i64(position.commit, "commit position")?,
            prepare: to_i64(position.prepare, "prepare position")?,
            row,
        });
    }
    Ok(changes)
}

const INSERT_FIRST_CHECKPOINT: &str = "INSERT INTO projection_checkpoints (name, \"commit\", prepare) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
const MOVE_CHECKPOINT: &str = "UPDATE projection_checkpoints SET \"commit\" = $2, prepare = $3 \
     WHERE name = $1 AND \"commit\" = $4 AND prepare = $5";
/// Rows per multi-row statement: at most 8 columns × 1,000 rows = 8,000 bind parameters, well
/// below SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 1000;
const INSERT_SNAPSHOTS: &str =
    "INSERT INTO subscriber_snapshots (subscriber_id, state, stream_version, \"commit\", prepare) ";
const SNAPSHOT_CONFLICT: &str = " ON CONFLICT (subscriber_id) DO UPDATE SET state = excluded.state, \
     stream_version = excluded.stream_version, \"commit\" = excluded.\"commit\", \
     prepare = excluded.prepare";
const INSERT_SUBSCRIBERS: &str = "INSERT INTO subscribers \
     (subscriber_id, locale, restricted, email, name, stream_version, \"commit\", prepare) ";
const SUBSCRIBER_CONFLICT: &str = " ON CONFLICT (subscriber_id) DO UPDATE SET locale = excluded.locale, \
     restricted = excluded.restricted, email = excluded.email, name = excluded.name, \
     stream_version = excluded.stream_version, \"commit\" = excluded.\"commit\", \
     prepare = excluded.prepare";
const DELETE_SUBSCRIBERS: &str = "DELETE FROM subscribers WHERE subscriber_id IN (";
const DELETE_MEMBERSHIPS: &str = "DELETE FROM list_members WHERE subscriber_id IN (";
const INSERT_MEMBERSHIPS: &str =
    "INSERT INTO list_members (list_id, subscriber_id, status, reported_status, since) ";

impl ReadModels {
    /// Applies `events` (read from the log after `after`, in log order) and moves the
    /// projection's checkpoint from `after` to the last event's position, all in one
    /// transaction. Returns the new checkpoint.
    #[instrument(
        name = "projection.apply_batch",
        skip_all,
        fields(backend = self.backend_name(), events = events.len(), subscribers),
        err
    )]
    pub(crate) async fn apply_batch(
        &self,
        after: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<Option<Position>, ReadModelError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(after);
        };
        let decoded = decode(events)?;
        let mut ids: Vec<Uuid> = decoded.iter().map(|d| d.subscriber).collect();
        ids.sort_unstable();
        ids.dedup();
        tracing::Span::current().record("subscribers", ids.len());
        let new_commit = to_i64(last.commit, "commit position")?;
        let new_prepare = to_i64(last.prepare, "prepare position")?;
        let moved = |rows: u64| {
            if rows == 1 {
                Ok(())
            } else {
                Err(ReadModelError::CheckpointMoved { name: PROJECTION })
            }
        };
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(ReadModelError::db("begin batch"))?;
            // The checkpoint first: the batch's first statement is a write, so SQLite takes its
            // write lock at once and PostgreSQL locks the checkpoint row against a second runner.
            let result = match after {
                None => sqlx::query(INSERT_FIRST_CHECKPOINT)
                    .bind(PROJECTION)
                    .bind(new_commit)
                    .bind(new_prepare)
                    .execute(&mut *tx)
                    .await,
                Some(after) => sqlx::query(MOVE_CHECKPOINT)
                    .bind(PROJECTION)
                    .bind(new_commit)
                    .bind(new_prepare)
                    .bind(to_i64(after.commit, "commit position")?)
                    .bind(to_i64(after.prepare, "prepare position")?)
                    .execute(&mut *tx)
                    .await,
            }
            .map_err(ReadModelError::db("move checkpoint"))?;
            moved(result.rows_affected())?;

            let mut snapshots = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let mut query =
                    QueryBuilder::new("SELECT subscriber_id, state FROM subscriber_snapshots WHERE subscriber_id IN (");
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                query.push(")");
                snapshots.extend(
                    query
                        .build_query_as::<SnapshotRow>()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(ReadModelError::db("load snapshots"))?,
                );
            }

            let changes = evolve(snapshots, decoded)?;
            for chunk in changes.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(INSERT_SNAPSHOTS);
                query.push_values(chunk, |mut values, change| {
                    values
                        .push_bind(change.subscriber)
                        .push_bind(change.state.as_str())
                        .push_bind(change.version)
                        .push_bind(change.commit)
                        .push_bind(change.prepare);
                });
                query.push(SNAPSHOT_CONFLICT);
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(ReadModelError::db("write snapshots"))?;
            }
            // Every touched subscriber's memberships are written afresh; erased subscribers'
            // rows go.
            let touched: Vec<Uuid> = changes.iter().map(|c| c.subscriber).collect();
            let erased: Vec<Uuid> = changes
                .iter()
                .filter(|c| c.row.is_none())
                .map(|c| c.subscriber)
                .collect();
            for (sql, ids, what) in [
                (DELETE_MEMBERSHIPS, &touched, "delete list memberships"),
                (DELETE_SUBSCRIBERS, &erased, "delete erased subscribers"),
            ] {
                for chunk in ids.chunks(IDS_PER_QUERY) {
                    let mut query = QueryBuilder::new(sql);
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(ReadModelError::db(what))?;
                }
            }
            let live: Vec<(&Change, &Row)> = changes
                .iter()
                .filter_map(|c| c.row.as_ref().map(|row| (c, row)))
                .collect();
            for chunk in live.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(INSERT_SUBSCRIBERS);
                query.push_values(chunk, |mut values, (change, row)| {
                    values
                        .push_bind(change.subscriber)
                        .push_bind(row.locale)
                        .push_bind(row.restricted)
                        .push_bind(row.email.as_deref())
                        .push_bind(row.name.as_deref())
                        .push_bind(change.version)
                        .push_bind(change.commit)
                        .push_bind(change.prepare);
                });
                query.push(SUBSCRIBER_CONFLICT);
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(ReadModelError::db("write subscribers"))?;
            }
            let memberships: Vec<(Uuid, &Membership)> = live
                .iter()
                .flat_map(|(change, row)| row.lists.iter().map(|m| (change.subscriber, m)))
                .collect();
            for chunk in memberships.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::new(INSERT_MEMBERSHIPS);
                query.push_values(chunk, |mut values, (subscriber, membership)| {
                    values
                        .push_bind(membership.list.as_str())
                        .push_bind(*subscriber)
                        .push_bind(membership.status)
                        .push_bind(membership.reported)
                        .push_bind(membership.since);
                });
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(ReadModelError::db("write list memberships"))?;
            }
            tx.commit().await.map_err(ReadModelError::db("commit batch"))?;
        });
        Ok(Some(last))
    }

    /// Empties the subscriber read model and its checkpoint (not reactor checkpoints), in one
    /// transaction.
    #[instrument(name = "projection.truncate", skip_all, fields(backend = self.backend_name()), err)]
    pub(crate) async fn truncate(&self) -> Result<(), ReadModelError> {
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(ReadModelError::db("begin truncate"))?;
            for sql in [
                "DELETE FROM list_members",
                "DELETE FROM subscribers",
                "DELETE FROM subscriber_snapshots",
            ] {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(ReadModelError::db("truncate read model"))?;
            }
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
                .bind(PROJECTION)
                .execute(&mut *tx)
                .await
                .map_err(ReadModelError::db("reset checkpoint"))?;
            tx.commit().await.map_err(ReadModelError::db("commit truncate"))?;
        });
        Ok(())
    }

    /// The numbers of subscriber and membership rows.
    pub(crate) async fn row_counts(&self) -> Result<(u64, u64), ReadModelError> {
        let (subscribers, memberships): (i64, i64) = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM subscribers), (SELECT COUNT(*) FROM list_members)",
            )
            .fetch_one(p)
            .await
            .map_err(ReadModelError::db("count rows"))?
        });
        Ok((
            crate::error::to_u64(subscribers, "subscribers count")?,
            crate::error::to_u64(memberships, "list_members count")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use newsletter_domain::SubscriberId;

    #[test]
    fn only_subscriber_streams_are_projected() {
        let id = SubscriberId::from_uuid(Uuid::now_v7());
        assert_eq!(subscriber_of(&id.stream_name()), Some(*id.as_uuid()));
        assert_eq!(subscriber_of("mailer-outbox"), None);
        assert_eq!(subscriber_of("subscriber-not-a-uuid"), None);
    }

    /// The exactly-once guard: a batch commits only from the checkpoint it was read after.
    #[tokio::test]
    async fn a_batch_from_a_stale_checkpoint_writes_nothing() {
        use newsletter_eventstore::{
            EventMetadata, EventStore, ExpectedVersion, NewEvent, SqliteConfig, SqliteEventStore,
            StreamId,
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
            .await
            .expect("event store");
        let models = ReadModels::open_sqlite(&dir.path().join("readmodels.db"))
            .await
            .expect("read models");
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "SomethingElse".to_owned(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata::default(),
        };
        store
            .append(
                &StreamId::new("other-stream").expect("stream"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .expect("append");
        let events = store.read_all(None, 10).await.expect("read");
        let moved = models
            .apply_batch(None, &events)
            .await
            .expect("first batch");
        assert_eq!(moved, events.last().map(|e| e.position));
        assert!(matches!(
            models.apply_batch(None, &events).await,
            Err(ReadModelError::CheckpointMoved { .. })
        ));
        assert!(matches!(
            models
                .apply_batch(Some(Position::new(999, 999)), &events)
                .await,
            Err(ReadModelError::CheckpointMoved { .. })
        ));
        assert_eq!(models.projection_checkpoint().await.expect("load"), moved);
    }
}
