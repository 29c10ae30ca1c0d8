//! [`LiveStatus`]: the subscriber status projection held in memory, so the API answers status by
//! id without a database round trip.
//!
//! # What it holds
//!
//! Per subscriber only what the status answer needs: the locale and, per list, the reported
//! status and since when. No address, no name, nothing else of the profile: the map holds no
//! personal data. List ids are interned (each distinct list id is held once), so an entry is a
//! 16-byte key, a locale byte and one 20-byte item per list; with the hash table's overhead
//! about 100 bytes per subscriber with one list.
//!
//! # How it starts
//!
//! [`LiveStatus::load`] reads the SQL read model (`subscribers` joined with `list_members`) and
//! the subscriber projection's checkpoint in one transaction (SQLite: one read snapshot;
//! PostgreSQL: `REPEATABLE READ`), so the rows are exactly the state at that checkpoint. Nothing is
//! replayed and nothing decrypted for subscribers the read model already holds.
//!
//! # How it follows the log
//!
//! [`LiveStatus::run`] subscribes to the log from the loaded checkpoint, through the decrypting
//! store (one key lookup a page), and applies it a batch at a time with the domain's own
//! [`Subscriber::evolve`](newsletter_domain::Subscriber); each touched entry is replaced with what
//! the read model would report ([`crate::MemberStatus::reported`]: `restricted` on every list
//! while restricted), and an erased subscriber's entry is removed. Per subscriber in a batch:
//!
//! - events that cannot change a status (mail and export bookkeeping,
//!   [`newsletter_domain::STATUS_NEUTRAL_TYPES`]) leave the entry as it is;
//! - events that are the subscriber's whole stream so far (a new signup, versions from 1) are
//!   folded as they are;
//! - otherwise the subscriber is re-folded from its whole stream as stored at that moment, so
//!   the entry may already reflect events later in the log than the view's position; it is never
//!   older than the position.
//!
//! So a signup and its confirmation mail cost the view no read beyond the log's own pages; a
//! confirmation, an unsubscribe or a GDPR action costs one read of that subscriber's stream.
//!
//! Staleness: the view is behind the log by the time to notice an append and re-fold the
//! subscriber. In one process with the writer (`serve`) it is woken by every append; on
//! PostgreSQL by `NOTIFY` across processes; otherwise within the poll interval.
//!
//! A failure (store, database, an undecodable event) is logged and retried with exponential
//! backoff from the view's position; meanwhile the view answers as of that position. An
//! undecodable event therefore stops the view there, as it stops the SQL projection.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use newsletter_domain::{
    Decider, EventCodec, ListId, Locale, Subscriber, SubscriberEvent, SubscriberId,
    SubscriberState, is_status_neutral,
};
use newsletter_eventstore::{
    EventStore, Position, RecordedEvent, StreamId, Subscription, SubscriptionOptions,
};
use sqlx::FromRow;
use tracing::{Instrument, info_span, instrument};
use uuid::Uuid;

use crate::apply::{Decoded, PROJECTION, decode, reported_lists};
use crate::db::{Pool, on_pool};
use crate::error::{ReadModelError, to_u64};
use crate::models::{ReadModels, parse_locale, parse_status};
use crate::runner::{backoff, next_batch};
use crate::views::{MemberStatus, MembershipView};

/// A subscriber's statuses as the in-memory view holds them: no personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// The subscriber.
    pub id: SubscriberId,
    /// The confirmed locale, or else the pending request's.
    pub locale: Option<Locale>,
    /// Every list the subscriber has a status on, in list order.
    pub lists: Vec<MembershipView>,
}

/// How [`LiveStatus::run`] reads the log.
#[derive(Debug, Clone, Copy)]
pub struct LiveStatusOptions {
    /// The most events taken from the log at once.
    pub batch_size: usize,
    /// The longest wait for new events when nothing signalled any (see [`SubscriptionOptions`]).
    pub poll_interval: Duration,
    /// The first wait after a failure; it doubles per failure in a row, up to 30 s.
    pub retry_backoff: Duration,
}

impl Default for LiveStatusOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(250),
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// The subscriber status projection in memory (see the module documentation). Cheap to clone:
/// clones share one view.
#[derive(Clone, Default)]
pub struct LiveStatus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStatus")
            .field("loaded", &self.is_loaded())
            .field("subscribers", &self.len())
            .field("position", &self.position())
            .finish()
    }
}

#[derive(Default)]
struct Shared {
    table: RwLock<Table>,
    position: RwLock<Option<Position>>,
    loaded: AtomicBool,
}

/// The entries, and the list ids they refer to by index.
#[derive(Default)]
struct Table {
    entries: HashMap<Uuid, Entry>,
    lists: Vec<ListId>,
    list_index: HashMap<ListId, u32>,
}

struct Entry {
    locale: Option<Locale>,
    lists: Box<[Membership]>,
}

#[derive(Clone, Copy)]
struct Membership {
    list: u32,
    status: MemberStatus,
    since: DateTime<Utc>,
}

/// One list's reported status and since when, before interning.
type ListStatuses = Vec<(ListId, MemberStatus, DateTime<Utc>)>;
/// One subscriber's statuses before interning: `None` when the subscriber is gone (erased).
type Statuses = Option<(Option<Locale>, ListStatuses)>;

impl Table {
    fn intern(&mut self, list: ListId) -> Result<u32, ReadModelError> {
        if let Some(index) = self.list_index.get(&list) {
            return Ok(*index);
        }
        let index = u32::try_from(self.lists.len())
            .map_err(|_| ReadModelError::corrupt("list_members", "more than 2^32 list ids"))?;
        self.lists.push(list.clone());
        self.list_index.insert(list, index);
        Ok(index)
    }

    /// Replaces (or with `None` removes) one subscriber's entry. `lists` must be in list order.
    fn put(&mut self, id: Uuid, statuses: Statuses) -> Result<(), ReadModelError> {
        let Some((locale, lists)) = statuses else {
            self.entries.remove(&id);
            return Ok(());
        };
        let lists = lists
            .into_iter()
            .map(|(list, status, since)| {
                Ok(Membership {
                    list: self.intern(list)?,
                    status,
                    since,
                })
            })
            .collect::<Result<Box<[_]>, ReadModelError>>()?;
        self.entries.insert(id, Entry { locale, lists });
        Ok(())
    }
}

#[derive(FromRow)]
struct LoadRow {
    subscriber_id: Uuid,
    locale: Option<String>,
    list_id: Option<String>,
    reported_status: Option<String>,
    since: Option<DateTime<Utc>>,
}

const LOAD_CHECKPOINT: &str =
    "SELECT \"commit\", prepare FROM projection_checkpoints WHERE name = $1";
const LOAD_STATUSES: &str = "SELECT s.subscriber_id, s.locale, m.list_id, m.reported_status, \
     m.since FROM subscribers s LEFT JOIN list_members m ON m.subscriber_id = s.subscriber_id \
     ORDER BY s.subscriber_id";

impl LiveStatus {
    /// An empty view that is not loaded yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// True once [`LiveStatus::load`] has succeeded: until then the view must not answer.
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// The log position the view has applied everything up to (`None`: the start of the log).
    #[must_use]
    pub fn position(&self) -> Option<Position> {
        *self
            .shared
            .position
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many subscribers the view holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// True when the view holds no subscriber.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the view holds the subscriber.
    #[must_use]
    pub fn contains(&self, id: SubscriberId) -> bool {
        self.table().entries.contains_key(id.as_uuid())
    }

    /// A subscriber's statuses; `None` when unknown or erased.
    #[must_use]
    pub fn get(&self, id: SubscriberId) -> Option<StatusView> {
        let table = self.table();
        let entry = table.entries.get(id.as_uuid())?;
        Some(StatusView {
            id,
            locale: entry.locale,
            lists: entry
                .lists
                .iter()
                .filter_map(|m| {
                    Some(MembershipView {
                        list: table.lists.get(m.list as usize)?.clone(),
                        status: m.status,
                        since: m.since,
                    })
                })
                .collect(),
        })
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_position(&self, position: Option<Position>) {
        *self
            .shared
            .position
            .write()
            .unwrap_or_else(PoisonError::into_inner) = position;
    }

    /// Replaces the view with the SQL read model's rows and takes its checkpoint as the view's
    /// position, both read in one transaction; marks the view loaded.
    #[instrument(name = "live_status.load", skip_all, fields(backend = models.backend_name(), subscribers), err)]
    pub async fn load(&self, models: &ReadModels) -> Result<(), ReadModelError> {
        let mut table = Table::default();
        let postgres = matches!(models.pool, Pool::Postgres(_));
        let checkpoint: Option<(i64, i64)> = on_pool!(&models.pool, p => {
            let mut tx = p.begin().await.map_err(ReadModelError::db("begin load"))?;
            if postgres {
                // Both statements below see one snapshot.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(ReadModelError::db("set the load's isolation"))?;
            }
            // On SQLite the first read starts the transaction's snapshot; the second sees the same.
            let checkpoint = sqlx::query_as::<_, (i64, i64)>(LOAD_CHECKPOINT)
                .bind(PROJECTION)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ReadModelError::db("load the projection checkpoint"))?;
            {
                let mut rows = sqlx::query_as::<_, LoadRow>(LOAD_STATUSES).fetch(&mut *tx);
                let mut current: Option<(Uuid, Option<Locale>, ListStatuses)> = None;
                while let Some(row) = rows.try_next().await.map_err(ReadModelError::db("load statuses"))? {
                    let location = format!("subscribers {}", row.subscriber_id);
                    if current.as_ref().is_none_or(|(id, _, _)| *id != row.subscriber_id) {
                        if let Some((id, locale, lists)) = current.take() {
                            table.put(id, Some((locale, sorted(lists))))?;
                        }
                        current = Some((row.subscriber_id, parse_locale(row.locale, &location)?, Vec::new()));
                    }
                    if let (Some(list), Some(status), Some(since), Some((_, _, lists))) =
                        (row.list_id, row.reported_status, row.since, current.as_mut())
                    {
                        let list = ListId::try_from(list)
                            .map_err(|e| ReadModelError::corrupt(&location, e.to_string()))?;
                        lists.push((list, parse_status(&status, &location)?, since));
                    }
                }
                if let Some((id, locale, lists)) = current.take() {
                    table.put(id, Some((locale, sorted(lists))))?;
                }
            }
            tx.commit().await.map_err(ReadModelError::db("end load"))?;
            checkpoint
        });
        let position = checkpoint
            .map(|(commit, prepare)| {
                let location = "projection_checkpoints";
                Ok::<_, ReadModelError>(Position::new(
                    to_u64(commit, location)?,
                    to_u64(prepare, location)?,
                ))
            })
            .transpose()?;
        tracing::Span::current().record("subscribers", table.entries.len());
        table.entries.shrink_to_fit();
        *self
            .shared
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = table;
        self.set_position(position);
        self.shared.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies events read from the log after the view's position, in log order, and moves the
    /// position to the last event's. `events` must be open (read through the decrypting store),
    /// so that they decode. Per subscriber the batch touches:
    ///
    /// - when all of its events in the batch are [status-neutral](newsletter_domain::is_status_neutral)
    ///   (mail and export bookkeeping), the entry stays as it is: nothing is read;
    /// - when they are its whole stream so far (versions 1, 2, … with none whose personal data
    ///   is gone), they are folded as they are: nothing is read (a new signup);
    /// - otherwise its whole stream is read from `store` and folded.
    #[instrument(name = "live_status.apply", skip_all, fields(events = events.len(), subscribers, reread), err)]
    pub async fn apply(
        &self,
        store: &dyn EventStore,
        events: &[RecordedEvent],
    ) -> Result<(), ReadModelError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        let mut by_subscriber: BTreeMap<Uuid, Vec<Decoded>> = BTreeMap::new();
        for decoded in decode(events)? {
            by_subscriber
                .entry(decoded.subscriber)
                .or_default()
                .push(decoded);
        }
        tracing::Span::current().record("subscribers", by_subscriber.len());
        let mut folded = Vec::with_capacity(by_subscriber.len());
        let mut reread = 0_usize;
        for (id, stream) in by_subscriber {
            if stream
                .iter()
                .all(|d| is_status_neutral(d.event.event_type()))
            {
                continue;
            }
            let whole = stream.iter().zip(1_u64..).all(|(d, version)| {
                d.version == version && !matches!(d.event, SubscriberEvent::PersonalDataErased(_))
            });
            let statuses = if whole {
                statuses_of(&Subscriber::fold(stream.iter().map(|d| &d.event)))
            } else {
                reread += 1;
                refold(store, id).await?
            };
            folded.push((id, statuses));
        }
        tracing::Span::current().record("reread", reread);
        {
            let mut table = self
                .shared
                .table
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (id, statuses) in folded {
                table.put(id, statuses)?;
            }
        }
        self.set_position(Some(last));
        Ok(())
    }

    /// Loads the view (retrying until it succeeds), then follows the log until `shutdown`
    /// completes. `store` must open sealed personal data (the decrypting store), so that the
    /// events decode: the log is read through it, and so are the streams that are re-folded.
    pub async fn run<F>(
        &self,
        store: Arc<dyn EventStore>,
        models: ReadModels,
        options: LiveStatusOptions,
        shutdown: F,
    ) where
        F: Future<Output = ()> + Send,
    {
        let span = info_span!("live_status.run", backend = models.backend_name());
        async move {
            let mut shutdown = std::pin::pin!(shutdown);
            let mut failures = 0_u32;
            loop {
                let result = if self.is_loaded() {
                    self.follow(&store, options, &mut failures, shutdown.as_mut())
                        .await
                } else {
                    self.load(&models).await.map(|()| false)
                };
                match result {
                    Ok(true) => return,
                    Ok(false) => {
                        tracing::info!(subscribers = self.len(), position = ?self.position(), "status view loaded");
                        failures = 0;
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let wait = backoff(options.retry_backoff, failures);
                        tracing::warn!(%error, failures, wait_ms = wait.as_millis() as u64, "status view failed; retrying from its position");
                        tokio::select! {
                            biased;
                            () = shutdown.as_mut() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Follows the log from the view's position until shutdown (`Ok(true)`) or a failure.
    async fn follow(
        &self,
        store: &Arc<dyn EventStore>,
        options: LiveStatusOptions,
        failures: &mut u32,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<bool, ReadModelError> {
        let batch_size = options.batch_size.max(1);
        let mut subscription = Subscription::new(
            Arc::clone(store),
            self.position(),
            SubscriptionOptions {
                batch_size,
                poll_interval: options.poll_interval,
            },
        );
        while let Some(batch) = next_batch(&mut subscription, batch_size, shutdown.as_mut()).await?
        {
            self.apply(store.as_ref(), &batch).await?;
            *failures = 0;
        }
        Ok(true)
    }
}

/// Sorts a subscriber's lists into list order.
fn sorted(mut lists: ListStatuses) -> ListStatuses {
    lists.sort_by(|a, b| a.0.cmp(&b.0));
    lists
}

/// Folds one subscriber's whole stream with the domain's own rules and says what the read side
/// reports for it; `None` when erased.
async fn refold(store: &dyn EventStore, subscriber: Uuid) -> Result<Statuses, ReadModelError> {
    let stream = StreamId::new(SubscriberId::from_uuid(subscriber).stream_name())
        .map_err(ReadModelError::store("naming a subscriber's stream"))?;
    let events = store
        .read_stream(&stream, 0)
        .await
        .map_err(ReadModelError::store("reading a subscriber's stream"))?;
    let decoded = decode(&events)?;
    Ok(statuses_of(&Subscriber::fold(
        decoded.iter().map(|d| &d.event),
    )))
}

/// What the read side reports for a folded subscriber; `None` when erased. The personal data
/// the fold saw is dropped here.
fn statuses_of(state: &SubscriberState) -> Statuses {
    if state.is_erased() {
        return None;
    }
    Some((
        state.locale(),
        reported_lists(state)
            .map(|(list, _, reported, since)| (list.clone(), reported, since))
            .collect(),
    ))
}
