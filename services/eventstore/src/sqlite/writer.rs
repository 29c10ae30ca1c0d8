//! The event store's batch for the SQLite group commit: appends of concurrent callers in one
//! transaction; one-event appends to distinct streams (a signup's first event, say) in one
//! multi-row statement.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sqlx::sqlite::{Sqlite, SqliteConnection};
use sqlx::{QueryBuilder, Row};
use tokio::sync::watch;

use super::group_commit::Batch;
use crate::StoreError;
use crate::encoded::{EncodedEvent, StoredSlot, classify_conflict, non_negative, to_i64};
use crate::model::{AppendOutcome, ExpectedVersion, Position, StreamId};

/// One caller's append, waiting for the writer.
pub(super) struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<EncodedEvent>,
}

/// The outcome of one request inside a batch: `Err` only for a fatal database error that
/// aborts the whole batch; the inner result is the request's own verdict.
type RequestResult = Result<Result<AppendOutcome, StoreError>, sqlx::Error>;

/// Appends, with a savepoint around each multi-event append; announces new events on commit.
pub(super) struct Appends {
    pub changes: watch::Sender<u64>,
}

impl Batch for Appends {
    type Request = AppendRequest;
    type Reply = Result<AppendOutcome, StoreError>;

    async fn write(
        &mut self,
        conn: &mut SqliteConnection,
        batch: &[AppendRequest],
    ) -> Result<Vec<Self::Reply>, sqlx::Error> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            if chunk.len() > 1 && one_event_each_to_distinct_streams(chunk) {
                match insert_singles(conn, chunk).await {
                    Ok(positions) => {
                        for request in chunk {
                            outcomes.push(match positions.get(request.stream.as_str()) {
                                Some(&position) => {
                                    appended(request.expected.as_u64() + 1, position)
                                }
                                None => resolve_conflict(conn, request).await?,
                            });
                        }
                        continue;
                    }
                    // The statement was undone as a whole (an event id already stored): the
                    // chunk goes one request at a time, which tells replays from conflicts.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
                    Err(e) => return Err(e),
                }
            }
            for request in chunk {
                outcomes.push(append_guarded(conn, request).await?);
            }
        }
        Ok(outcomes)
    }

    /// One request of one event: a single conditional INSERT in autocommit mode is atomic.
    fn single_statement(&self, batch: &[AppendRequest]) -> bool {
        matches!(batch, [request] if request.events.len() == 1)
    }

    fn committed(&mut self, outcomes: &[Self::Reply]) {
        if outcomes
            .iter()
            .any(|o| matches!(o, Ok(outcome) if !outcome.idempotent_replay))
        {
            self.changes
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}

/// Requests per multi-row insert (eight parameters each; SQLite allows 32,766 a statement).
const ROWS_PER_INSERT: usize = 256;

/// True when every request appends one event and no two name the same stream: then one
/// statement can check and insert them all, each against its stream as it was before.
fn one_event_each_to_distinct_streams(requests: &[AppendRequest]) -> bool {
    let mut streams = HashSet::with_capacity(requests.len());
    requests
        .iter()
        .all(|request| request.events.len() == 1 && streams.insert(request.stream.as_str()))
}

/// One statement for many one-event appends to distinct streams: each row is inserted only if
/// its stream is at the expected version. Returns the new position of each stream that got its
/// event; a stream missing from the answer had its check fail. A unique violation (an event id
/// already stored) undoes the whole statement and is returned.
async fn insert_singles(
    conn: &mut SqliteConnection,
    requests: &[AppendRequest],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let recorded_at = Utc::now().timestamp_micros();
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events \
         (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
         v.column8 FROM (",
    );
    insert.push_values(requests, |mut row, request| {
        // `one_event_each_to_distinct_streams` checked there is exactly one.
        if let Some(event) = request.events.first() {
            row.push_bind(event.event_id)
                .push_bind(request.stream.as_str())
                .push_bind(to_i64(request.expected.as_u64() + 1))
                .push_bind(event.event_type.as_str())
                .push_bind(event.schema_version)
                .push_bind(event.payload.as_str())
                .push_bind(event.metadata.as_str())
                .push_bind(recorded_at);
        }
    });
    insert.push(
        ") AS v WHERE (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = v.column2) \
         = v.column3 - 1 RETURNING position, stream_id",
    );
    insert
        .build_query_as::<(i64, String)>()
        .fetch_all(&mut *conn)
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|(position, stream)| (stream, position))
                .collect()
        })
}

/// The outcome of an append whose last event is now `stream_version`, stored at `position`.
fn appended(stream_version: u64, position: i64) -> Result<AppendOutcome, StoreError> {
    let position = non_negative(position, "new position").unwrap_or_default();
    Ok(AppendOutcome {
        stream_version,
        position: Position::new(position, position),
        idempotent_replay: false,
    })
}

/// [`append_one`], inside a savepoint when the request has several events, so that a
/// multi-event append vanishes whole if a later event of it fails.
async fn append_guarded(conn: &mut SqliteConnection, request: &AppendRequest) -> RequestResult {
    let guarded = request.events.len() > 1;
    if guarded {
        sqlx::query("SAVEPOINT append").execute(&mut *conn).await?;
    }
    let outcome = append_one(conn, request).await?;
    if guarded {
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO append")
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("RELEASE append").execute(&mut *conn).await?;
    }
    Ok(outcome)
}

/// Inserts one request's events: the first insert checks the expected version in the same
/// statement; a unique violation or a failed check is resolved into idempotent replay, a
/// version conflict or a duplicate id.
async fn append_one(conn: &mut SqliteConnection, request: &AppendRequest) -> RequestResult {
    const FIRST: &str = "INSERT INTO events \
         (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
         WHERE (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?2) = ?3 - 1 \
         RETURNING position";
    const NEXT: &str = "INSERT INTO events \
         (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING position";
    let recorded_at = Utc::now().timestamp_micros();
    let mut version = request.expected.as_u64();
    let mut position = 0;
    for (index, event) in request.events.iter().enumerate() {
        version += 1;
        let sql = if index == 0 { FIRST } else { NEXT };
        let inserted = sqlx::query(sql)
            .bind(event.event_id)
            .bind(request.stream.as_str())
            .bind(to_i64(version))
            .bind(&event.event_type)
            .bind(event.schema_version)
            .bind(&event.payload)
            .bind(&event.metadata)
            .bind(recorded_at)
            .fetch_optional(&mut *conn)
            .await;
        match inserted {
            Ok(Some(row)) => position = row.try_get::<i64, _>(0)?,
            Ok(None) => return resolve_conflict(conn, request).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return resolve_conflict(conn, request).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(appended(version, position))
}

/// Decides what a refused insert means, from what the stream holds at the versions the append
/// asked for: the same ids there make it a replay of an append that already succeeded.
async fn resolve_conflict(conn: &mut SqliteConnection, request: &AppendRequest) -> RequestResult {
    let first = request.expected.as_u64();
    let rows = sqlx::query(
        "SELECT version, event_id, position FROM events \
         WHERE stream_id = ?1 AND version > ?2 AND version <= ?3 ORDER BY version",
    )
    .bind(request.stream.as_str())
    .bind(to_i64(first))
    .bind(to_i64(first + request.events.len() as u64))
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        let position = row.try_get::<i64, _>(2)?;
        let position = non_negative(position, "stored position").unwrap_or_default();
        stored.push(StoredSlot {
            version: row.try_get(0)?,
            event_id: row.try_get(1)?,
            position: Position::new(position, position),
        });
    }
    let actual: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
            .bind(request.stream.as_str())
            .fetch_one(&mut *conn)
            .await?;
    Ok(classify_conflict(
        &request.stream,
        request.expected,
        &request.events,
        &stored,
        actual,
    ))
}
