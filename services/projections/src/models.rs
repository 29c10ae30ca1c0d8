//! [`ReadModels`]: the read-model database, its queries and the checkpoint table.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use newsletter_domain::{EmailAddress, ListId, Locale, PersonName, SubscriberId};
use newsletter_eventstore::Position;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{FromRow, QueryBuilder};
use tracing::instrument;
use uuid::Uuid;

use crate::db::{self, Pool, Schema, on_pool};
use crate::error::{ReadModelError, to_i64, to_u64};
use crate::views::{
    MemberCursor, MemberStatus, MemberView, MembershipView, StatusCount, SubscriberView,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite/read_models");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres/read_models");

const SCHEMA: Schema = Schema {
    what: "read models",
    table: "_read_models_migrations",
    sqlite: &SQLITE_MIGRATIONS,
    postgres: &POSTGRES_MIGRATIONS,
};

/// The most rows one listing page returns; larger limits are lowered to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Ids per `IN (…)` list, well below every backend's bind-parameter limit.
pub(crate) const IDS_PER_QUERY: usize = 500;

/// The read-model database: subscriber views, list memberships, the projection's snapshots, and
/// the checkpoints of the projection and of reactors.
///
/// On SQLite it is a file of its own (e.g. `<data dir>/readmodels.db`, WAL, `synchronous=FULL`,
/// `secure_delete=ON`), apart from the event store so that projecting never waits on the event
/// store's single writer. On PostgreSQL it shares the event store's database; its tables are
/// `projection_checkpoints`, `subscriber_snapshots`, `subscribers` and `list_members`, and its
/// migrations are recorded in `_read_models_migrations`. Everything in it can be rebuilt from the
/// log (see [`crate::ProjectionRunner::rebuild`]), except reactor checkpoints, which restart from
/// the beginning of the log if the database is thrown away.
#[derive(Debug, Clone)]
pub struct ReadModels {
    pub(crate) pool: Pool,
}

#[derive(FromRow)]
struct SubscriberRow {
    subscriber_id: Uuid,
    locale: Option<String>,
    restricted: bool,
    email: Option<String>,
    name: Option<String>,
    stream_version: i64,
    commit: i64,
    prepare: i64,
}

#[derive(FromRow)]
struct MembershipRow {
    subscriber_id: Uuid,
    list_id: String,
    reported_status: String,
    since: DateTime<Utc>,
}

#[derive(FromRow)]
struct MemberRow {
    subscriber_id: Uuid,
    reported_status: String,
    since: DateTime<Utc>,
    email: Option<String>,
    name: Option<String>,
    locale: Option<String>,
}

#[derive(FromRow)]
struct CountRow {
    list_id: String,
    reported_status: String,
    count: i64,
}

const SUBSCRIBER_COLUMNS: &str = "SELECT subscriber_id, locale, restricted, email, name, stream_version, \"commit\", prepare \
     FROM subscribers WHERE subscriber_id IN (";
const MEMBERSHIP_COLUMNS: &str = "SELECT subscriber_id, list_id, reported_status, since \
     FROM list_members WHERE subscriber_id IN (";

const LIST_FIRST_PAGE: &str = "SELECT m.subscriber_id, m.reported_status, m.since, s.email, \
     s.name, s.locale FROM list_members m JOIN subscribers s ON s.subscriber_id = m.subscriber_id \
     WHERE m.list_id = $1 AND m.reported_status = $2 ORDER BY m.subscriber_id LIMIT $3";
const LIST_NEXT_PAGE: &str = "SELECT m.subscriber_id, m.reported_status, m.since, s.email, \
     s.name, s.locale FROM list_members m JOIN subscribers s ON s.subscriber_id = m.subscriber_id \
     WHERE m.list_id = $1 AND m.reported_status = $2 AND m.subscriber_id > $4 \
     ORDER BY m.subscriber_id LIMIT $3";

pub(crate) fn parse_locale(
    value: Option<String>,
    location: &str,
) -> Result<Option<Locale>, ReadModelError> {
    value
        .map(|v| Locale::parse(&v).map_err(|e| ReadModelError::corrupt(location, e.to_string())))
        .transpose()
}

fn parse_email(
    value: Option<String>,
    location: &str,
) -> Result<Option<EmailAddress>, ReadModelError> {
    value
        .map(|v| {
            EmailAddress::try_from(v).map_err(|e| ReadModelError::corrupt(location, e.to_string()))
        })
        .transpose()
}

fn parse_name(value: Option<String>, location: &str) -> Result<Option<PersonName>, ReadModelError> {
    value
        .map(|v| {
            PersonName::try_from(v).map_err(|e| ReadModelError::corrupt(location, e.to_string()))
        })
        .transpose()
}

pub(crate) fn parse_status(value: &str, location: &str) -> Result<MemberStatus, ReadModelError> {
    MemberStatus::from_name(value)
        .ok_or_else(|| ReadModelError::corrupt(location, "unknown status"))
}

impl ReadModels {
    /// Opens the read models a URL names: `sqlite:…` (a file of its own, not the event store's)
    /// or `postgres://…` (the event store's database). Applies migrations.
    #[instrument(name = "read_models.open", skip_all, err)]
    pub async fn open(url: &str) -> Result<Self, ReadModelError> {
        Ok(Self {
            pool: db::open_url(url, &SCHEMA).await?,
        })
    }

    /// Opens (creating if needed) a SQLite file and applies migrations.
    #[instrument(name = "read_models.open_sqlite", skip_all, err)]
    pub async fn open_sqlite(path: &Path) -> Result<Self, ReadModelError> {
        Self::open_sqlite_with(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens SQLite with explicit options; WAL, `synchronous=FULL` and `secure_delete=ON` are
    /// always set.
    pub async fn open_sqlite_with(options: SqliteConnectOptions) -> Result<Self, ReadModelError> {
        Ok(Self {
            pool: db::open_sqlite(options, &SCHEMA).await?,
        })
    }

    /// Connects to PostgreSQL with explicit options (e.g. a `search_path`) and applies
    /// migrations.
    pub async fn connect_postgres_with(options: PgConnectOptions) -> Result<Self, ReadModelError> {
        Ok(Self {
            pool: db::connect_postgres(options, &SCHEMA).await?,
        })
    }

    /// Uses an existing PostgreSQL pool (e.g. the event store's) and applies migrations.
    pub async fn from_postgres_pool(pool: PgPool) -> Result<Self, ReadModelError> {
        Ok(Self {
            pool: db::migrate_postgres(pool, &SCHEMA).await?,
        })
    }

    /// A short name of the backend, for logs and metrics (`sqlite`, `postgres`).
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// One subscriber's view; `None` when unknown or erased.
    #[instrument(name = "read_models.subscriber", skip(self), fields(backend = self.backend_name()), err)]
    pub async fn subscriber(
        &self,
        id: SubscriberId,
    ) -> Result<Option<SubscriberView>, ReadModelError> {
        Ok(self.subscribers_by_ids(&[id]).await?.into_iter().next())
    }

    /// The views of the given subscribers that exist, in the order of `ids` (duplicates once).
    #[instrument(name = "read_models.subscribers_by_ids", skip_all, fields(backend = self.backend_name(), ids = ids.len()), err)]
    pub async fn subscribers_by_ids(
        &self,
        ids: &[SubscriberId],
    ) -> Result<Vec<SubscriberView>, ReadModelError> {
        let mut rows: Vec<SubscriberRow> = Vec::new();
        let mut memberships: Vec<MembershipRow> = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            on_pool!(&self.pool, p => {
                let mut query = QueryBuilder::new(SUBSCRIBER_COLUMNS);
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id.as_uuid());
                }
                query.push(")");
                rows.extend(
                    query
                        .build_query_as::<SubscriberRow>()
                        .fetch_all(p)
                        .await
                        .map_err(ReadModelError::db("read subscribers"))?,
                );
                let mut query = QueryBuilder::new(MEMBERSHIP_COLUMNS);
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id.as_uuid());
                }
                query.push(") ORDER BY subscriber_id, list_id");
                memberships.extend(
                    query
                        .build_query_as::<MembershipRow>()
                        .fetch_all(p)
                        .await
                        .map_err(ReadModelError::db("read list memberships"))?,
                );
            });
        }
        let mut lists: HashMap<Uuid, Vec<MembershipView>> = HashMap::new();
        for row in memberships {
            let location = format!("list_members {}", row.subscriber_id);
            lists
                .entry(row.subscriber_id)
                .or_default()
                .push(MembershipView {
                    list: ListId::try_from(row.list_id)
                        .map_err(|e| ReadModelError::corrupt(&location, e.to_string()))?,
                    status: parse_status(&row.reported_status, &location)?,
                    since: row.since,
                });
        }
        let mut by_id: HashMap<Uuid, SubscriberView> = HashMap::new();
        for row in rows {
            let location = format!("subscribers {}", row.subscriber_id);
            let mut memberships = lists.remove(&row.subscriber_id).unwrap_or_default();
            memberships.sort_by(|a, b| a.list.cmp(&b.list));
            by_id.insert(
                row.subscriber_id,
                SubscriberView {
                    id: SubscriberId::from_uuid(row.subscriber_id),
                    locale: parse_locale(row.locale, &location)?,
                    restricted: row.restricted,
                    email: parse_email(row.email, &location)?,
                    name: parse_name(row.name, &location)?,
                    lists: memberships,
                    version: to_u64(row.stream_version, &location)?,
                    updated: Position::new(
                        to_u64(row.commit, &location)?,
                        to_u64(row.prepare, &location)?,
                    ),
                },
            );
        }
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id.as_uuid()))
            .collect())
    }

    /// One page of a list's members with one reported status, ordered by subscriber id, after
    /// `after` (keyset pagination: stable under concurrent changes, each member at most once per
    /// walk). `limit` is clamped to `1..=`[`MAX_PAGE_SIZE`]. The cursor is `Some` exactly when
    /// more members follow. A restricted subscriber is listed only under
    /// [`MemberStatus::Restricted`], never under `Confirmed`.
    #[instrument(name = "read_models.list_members", skip(self), fields(backend = self.backend_name()), err)]
    pub async fn list_members(
        &self,
        list: &ListId,
        status: MemberStatus,
        after: Option<MemberCursor>,
        limit: usize,
    ) -> Result<(Vec<MemberView>, Option<MemberCursor>), ReadModelError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        // One more than asked, to know whether another page follows.
        let fetch = to_i64(limit as u64 + 1, "page size")?;
        let rows: Vec<MemberRow> = on_pool!(&self.pool, p => {
            match after {
                None => sqlx::query_as::<_, MemberRow>(LIST_FIRST_PAGE)
                    .bind(list.as_str())
                    .bind(status.as_str())
                    .bind(fetch)
                    .fetch_all(p)
                    .await,
                Some(MemberCursor(after)) => sqlx::query_as::<_, MemberRow>(LIST_NEXT_PAGE)
                    .bind(list.as_str())
                    .bind(status.as_str())
                    .bind(fetch)
                    .bind(*after.as_uuid())
                    .fetch_all(p)
                    .await,
            }
            .map_err(ReadModelError::db("list members"))?
        });
        let more = rows.len() > limit;
        let mut members = Vec::with_capacity(limit.min(rows.len()));
        for row in rows.into_iter().take(limit) {
            let location = format!("list_members {}", row.subscriber_id);
            members.push(MemberView {
                subscriber_id: SubscriberId::from_uuid(row.subscriber_id),
                status: parse_status(&row.reported_status, &location)?,
                since: row.since,
                email: parse_email(row.email, &location)?,
                name: parse_name(row.name, &location)?,
                locale: parse_locale(row.locale, &location)?,
            });
        }
        let next = if more {
            members.last().map(|m| MemberCursor(m.subscriber_id))
        } else {
            None
        };
        Ok((members, next))
    }

    /// How many subscribers have each reported status on each list (statuses without members
    /// are left out), ordered by list and status name.
    #[instrument(name = "read_models.counts", skip(self), fields(backend = self.backend_name()), err)]
    pub async fn counts(&self) -> Result<Vec<StatusCount>, ReadModelError> {
        const SQL: &str = "SELECT list_id, reported_status, COUNT(*) AS count FROM list_members \
                           GROUP BY list_id, reported_status ORDER BY list_id, reported_status";
        let rows: Vec<CountRow> = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, CountRow>(SQL)
                .fetch_all(p)
                .await
                .map_err(ReadModelError::db("count list members"))?
        });
        rows.into_iter()
            .map(|row| {
                let location = format!("list_members counts of {}", row.list_id);
                Ok(StatusCount {
                    status: parse_status(&row.reported_status, &location)?,
                    count: to_u64(row.count, &location)?,
                    list: ListId::try_from(row.list_id)
                        .map_err(|e| ReadModelError::corrupt(&location, e.to_string()))?,
                })
            })
            .collect()
    }

    /// The stored position of a named checkpoint (a reactor's, or a projection's).
    #[instrument(name = "read_models.load_checkpoint", skip(self), fields(backend = self.backend_name()), err)]
    pub async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, ReadModelError> {
        const SQL: &str = "SELECT \"commit\", prepare FROM projection_checkpoints WHERE name = $1";
        let row: Option<(i64, i64)> = on_pool!(&self.pool, p => {
            sqlx::query_as::<_, (i64, i64)>(SQL)
                .bind(name)
                .fetch_optional(p)
                .await
                .map_err(ReadModelError::db("load checkpoint"))?
        });
        row.map(|(commit, prepare)| {
            let location = "projection_checkpoints";
            Ok(Position::new(
                to_u64(commit, location)?,
                to_u64(prepare, location)?,
            ))
        })
        .transpose()
    }

    /// Stores a named checkpoint (for reactors such as the mailer; a projection stores its own
    /// in the transaction of its rows). Overwrites unconditionally. Do not use the names of
    /// projections (`projection.*`).
    #[instrument(name = "read_models.save_checkpoint", skip(self), fields(backend = self.backend_name()), err)]
    pub async fn save_checkpoint(
        &self,
        name: &str,
        position: Position,
    ) -> Result<(), ReadModelError> {
        const SQL: &str = "INSERT INTO projection_checkpoints (name, \"commit\", prepare) \
                           VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
                           SET \"commit\" = excluded.\"commit\", prepare = excluded.prepare";
        let commit = to_i64(position.commit, "commit position")?;
        let prepare = to_i64(position.prepare, "prepare position")?;
        on_pool!(&self.pool, p => {
            sqlx::query(SQL)
                .bind(name)
                .bind(commit)
                .bind(prepare)
                .execute(p)
                .await
                .map_err(ReadModelError::db("save checkpoint"))?;
        });
        Ok(())
    }

    /// Where the subscriber projection has got to in the log (`None`: nothing applied yet).
    pub async fn projection_checkpoint(&self) -> Result<Option<Position>, ReadModelError> {
        self.load_checkpoint(crate::apply::PROJECTION).await
    }
}
