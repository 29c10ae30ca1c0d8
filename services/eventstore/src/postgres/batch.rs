//! One-event appends of concurrent callers on PostgreSQL (a signup's first event, say), in one
//! statement a batch: one commit, one WAL flush for all of them.
//!
//! Each row is inserted only if its stream is at the expected version, checked in the
//! statement's `WHERE` like the single append; a row whose check failed is resolved alone
//! afterwards (a conflict, or a replay of an append already stored). A unique violation (a
//! concurrent writer in another process, or an event id already stored) or a deadlock undoes the
//! whole statement, and the batch then goes one append at a time, each its own statement, which tells
//! replays from conflicts. So does a batch with a stream twice in it.
//!
//! Rows go in in stream-id order, not in the callers' order: two processes' batches racing on
//! the same new streams then take the `(stream_id, version)` index entries in one order, so one
//! waits for the other instead of the two deadlocking (which PostgreSQL would break by failing
//! one of them). Within one commit the callers are concurrent, so any order among them is theirs.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{append_one, resolve_conflict};
use crate::StoreError;
use crate::encoded::{EncodedEvent, to_i64};
use crate::group_commit::Commit;
use crate::model::{AppendOutcome, ExpectedVersion, Position, StreamId};

/// The statement for a batch of one-event appends to distinct streams.
const APPEND_MANY_SQL: &str = "INSERT INTO events \
     (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
     SELECT e.event_id, e.stream_id, e.expected + 1, e.event_type, e.schema_version, e.payload, \
            e.metadata, $8 \
     FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::text[], \
                 $7::text[]) \
          WITH ORDINALITY AS e(event_id, stream_id, expected, event_type, schema_version, payload, \
                               metadata, ord) \
     WHERE CASE WHEN e.expected = 0 \
                THEN NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = e.stream_id) \
                ELSE EXISTS (SELECT 1 FROM events x \
                             WHERE x.stream_id = e.stream_id AND x.version = e.expected) END \
     ORDER BY e.stream_id \
     RETURNING stream_id, position, transaction_id::text::bigint AS commit_position, version";

/// PostgreSQL's SQLSTATE for a statement it aborted to break a deadlock.
const DEADLOCK_DETECTED: &str = "40P01";

/// One caller's one-event append, waiting for the writer.
pub(super) struct OneEventAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub event: EncodedEvent,
}

/// The writer's side: the pool it takes a connection from for each batch.
pub(super) struct PgAppends {
    pub pool: PgPool,
}

impl Commit for PgAppends {
    type Request = OneEventAppend;
    type Reply = Result<AppendOutcome, StoreError>;

    async fn commit(
        &mut self,
        requests: &[OneEventAppend],
    ) -> Result<Vec<Self::Reply>, sqlx::Error> {
        if requests.len() > 1 && distinct_streams(requests) {
            match insert_many(&self.pool, requests).await {
                Ok(stored) => {
                    let mut replies = Vec::with_capacity(requests.len());
                    for request in requests {
                        replies.push(match stored.get(request.stream.as_str()) {
                            Some(&outcome) => Ok(outcome),
                            None => resolve_alone(&self.pool, request).await,
                        });
                    }
                    return Ok(replies);
                }
                // Undone whole: go one append at a time (a deadlock, which the stream-id order
                // should prevent, is undone the same way).
                Err(sqlx::Error::Database(e))
                    if e.is_unique_violation()
                        || e.code().as_deref() == Some(DEADLOCK_DETECTED) => {}
                Err(e) => return Err(e),
            }
        }
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(
                append_one(
                    &self.pool,
                    &request.stream,
                    request.expected,
                    std::slice::from_ref(&request.event),
                )
                .await,
            );
        }
        Ok(replies)
    }
}

fn distinct_streams(requests: &[OneEventAppend]) -> bool {
    let mut streams = HashSet::with_capacity(requests.len());
    requests
        .iter()
        .all(|request| streams.insert(request.stream.as_str()))
}

/// Runs the batch's statement; the outcome of each stream that got its event.
async fn insert_many(
    pool: &PgPool,
    requests: &[OneEventAppend],
) -> Result<HashMap<String, AppendOutcome>, sqlx::Error> {
    let ids: Vec<_> = requests.iter().map(|r| r.event.event_id).collect();
    let streams: Vec<_> = requests.iter().map(|r| r.stream.as_str()).collect();
    let expected: Vec<i64> = requests
        .iter()
        .map(|r| to_i64(r.expected.as_u64()))
        .collect();
    let types: Vec<_> = requests
        .iter()
        .map(|r| r.event.event_type.as_str())
        .collect();
    let versions: Vec<i32> = requests
        .iter()
        .map(|r| i32::try_from(r.event.schema_version).unwrap_or(i32::MAX))
        .collect();
    let payloads: Vec<_> = requests.iter().map(|r| r.event.payload.as_str()).collect();
    let metadata: Vec<_> = requests.iter().map(|r| r.event.metadata.as_str()).collect();
    let rows = sqlx::query(APPEND_MANY_SQL)
        .bind(ids)
        .bind(streams)
        .bind(expected)
        .bind(types)
        .bind(versions)
        .bind(payloads)
        .bind(metadata)
        .bind(Utc::now())
        .fetch_all(pool)
        .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &rows {
        let transaction_id: i64 = row.try_get("commit_position")?;
        let position: i64 = row.try_get("position")?;
        let version: i64 = row.try_get("version")?;
        stored.insert(
            row.try_get::<String, _>("stream_id")?,
            AppendOutcome {
                stream_version: u64::try_from(version).unwrap_or_default(),
                position: Position::new(
                    u64::try_from(transaction_id).unwrap_or_default(),
                    u64::try_from(position).unwrap_or_default(),
                ),
                idempotent_replay: false,
            },
        );
    }
    Ok(stored)
}

/// The verdict of a request whose version check failed in the batch's statement.
async fn resolve_alone(
    pool: &PgPool,
    request: &OneEventAppend,
) -> Result<AppendOutcome, StoreError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::db("acquire connection for append"))?;
    resolve_conflict(
        &mut conn,
        &request.stream,
        request.expected,
        std::slice::from_ref(&request.event),
    )
    .await
}
