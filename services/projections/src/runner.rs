//! [`ProjectionRunner`]: keeps the subscriber read model up to date with the log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use newsletter_eventstore::{
    EventStore, Position, RecordedEvent, Subscription, SubscriptionOptions,
};
use tracing::{Instrument, info_span, instrument};

use crate::apply::PROJECTION;
use crate::error::ReadModelError;
use crate::models::ReadModels;
use crate::views::RebuildReport;

/// How the subscriber projection reads and applies the log.
#[derive(Debug, Clone)]
pub struct ProjectionRunner {
    /// The most events applied in one transaction.
    pub batch_size: usize,
    /// The longest wait for new events when nothing signalled any (see [`SubscriptionOptions`]).
    pub poll_interval: Duration,
    /// The first wait after a failure; it doubles per failure in a row, up to
    /// [`ProjectionRunner::MAX_BACKOFF`].
    pub retry_backoff: Duration,
}

impl Default for ProjectionRunner {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
            retry_backoff: Duration::from_millis(200),
        }
    }
}

impl ProjectionRunner {
    /// The longest wait between two attempts after failures.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// Projects until `shutdown` completes: subscribes from the stored checkpoint (catch-up,
    /// then live), takes what is readable now up to `batch_size` events, and applies it in one
    /// transaction with the checkpoint. On any failure (database, store, an undecodable event,
    /// another runner moving the checkpoint) it logs, waits with exponential backoff and starts
    /// again from the stored checkpoint; it never skips an event. Returns the number of events
    /// applied. A shutdown is honoured between batches: a batch in flight is finished, not
    /// torn.
    pub async fn run<F>(&self, store: Arc<dyn EventStore>, models: ReadModels, shutdown: F) -> u64
    where
        F: Future<Output = ()> + Send,
    {
        let span = info_span!(
            "projection.run",
            projection = PROJECTION,
            backend = models.backend_name()
        );
        self.run_inner(store, models, shutdown)
            .instrument(span)
            .await
    }

    async fn run_inner<F>(&self, store: Arc<dyn EventStore>, models: ReadModels, shutdown: F) -> u64
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut applied = 0_u64;
        let mut failures = 0_u32;
        loop {
            let result = self
                .follow(
                    &store,
                    &models,
                    &mut applied,
                    &mut failures,
                    shutdown.as_mut(),
                )
                .await;
            match result {
                Ok(()) => {
                    tracing::info!(applied, "projection stopped");
                    return applied;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = self.backoff(failures);
                    tracing::warn!(%error, failures, wait_ms = wait.as_millis() as u64, "projection failed; resuming from the stored checkpoint");
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => {
                            tracing::info!(applied, "projection stopped");
                            return applied;
                        }
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Follows the log from the stored checkpoint until shutdown (`Ok`) or a failure.
    async fn follow(
        &self,
        store: &Arc<dyn EventStore>,
        models: &ReadModels,
        applied: &mut u64,
        failures: &mut u32,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(), ReadModelError> {
        let mut checkpoint = models.load_checkpoint(PROJECTION).await?;
        tracing::info!(checkpoint = ?checkpoint, "projection subscribing");
        let batch_size = self.batch_size.max(1);
        let mut subscription = Subscription::new(
            Arc::clone(store),
            checkpoint,
            SubscriptionOptions {
                batch_size,
                poll_interval: self.poll_interval,
            },
        );
        while let Some(batch) = next_batch(&mut subscription, batch_size, shutdown.as_mut()).await?
        {
            checkpoint = models.apply_batch(checkpoint, &batch).await?;
            *applied += batch.len() as u64;
            *failures = 0;
        }
        Ok(())
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(self.retry_backoff, failures)
    }

    /// Applies everything readable now, batch by batch, and returns how many events it applied.
    /// Errors are returned, not retried. The next batch is read (and decrypted, behind the
    /// encrypting store) by a spawned task, on another worker thread, while the current one is
    /// written; it is applied only after the current one committed, from the checkpoint that one
    /// moved to.
    #[instrument(name = "projection.catch_up_once", skip_all, fields(projection = PROJECTION, backend = models.backend_name()), err)]
    pub async fn catch_up_once(
        &self,
        store: &Arc<dyn EventStore>,
        models: &ReadModels,
    ) -> Result<u64, ReadModelError> {
        let mut checkpoint: Option<Position> = models.load_checkpoint(PROJECTION).await?;
        let size = self.batch_size.max(1);
        let read_ahead = |after: Option<Position>| {
            let store = Arc::clone(store);
            tokio::spawn(
                async move { store.read_all(after, size).await }
                    .instrument(tracing::Span::current()),
            )
        };
        let mut batch = joined(read_ahead(checkpoint).await)?;
        let mut applied = 0_u64;
        while let Some(last) = batch.last().map(|e| e.position) {
            // Spawned before the apply starts, so reading and writing overlap.
            let next = read_ahead(Some(last));
            let moved = models.apply_batch(checkpoint, &batch).await;
            if moved.is_err() {
                next.abort();
            }
            checkpoint = moved?;
            applied += batch.len() as u64;
            batch = joined(next.await)?;
        }
        Ok(applied)
    }

    /// Empties the subscriber read model and replays the whole log into it (for
    /// `newsletter rebuild-projections`). Stop the running projector first: a runner working
    /// meanwhile gets [`ReadModelError::CheckpointMoved`] and backs off, but the rebuild and it
    /// would take turns. Reactor checkpoints are left alone.
    #[instrument(name = "projection.rebuild", skip_all, fields(projection = PROJECTION, backend = models.backend_name()), err)]
    pub async fn rebuild(
        &self,
        store: &Arc<dyn EventStore>,
        models: &ReadModels,
    ) -> Result<RebuildReport, ReadModelError> {
        models.truncate().await?;
        let events = self.catch_up_once(store, models).await?;
        let (subscribers, memberships) = models.row_counts().await?;
        tracing::info!(events, subscribers, memberships, "read model rebuilt");
        Ok(RebuildReport {
            events,
            subscribers,
            memberships,
        })
    }
}

/// The wait after `failures` failures in a row: `base`, doubled per further failure, at most
/// [`ProjectionRunner::MAX_BACKOFF`].
pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 2_u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor)
        .min(ProjectionRunner::MAX_BACKOFF)
}

/// The next batch of a subscription: waits for one event, then takes what is readable now, up to
/// `batch_size` events. `None` when `shutdown` completes first.
pub(crate) async fn next_batch(
    subscription: &mut Subscription,
    batch_size: usize,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Result<Option<Vec<RecordedEvent>>, ReadModelError> {
    let first = tokio::select! {
        biased;
        () = shutdown.as_mut() => return Ok(None),
        next = subscription.next() => next.map_err(ReadModelError::store("reading the log"))?,
    };
    let mut batch = vec![first];
    while batch.len() < batch_size {
        match subscription
            .try_next()
            .await
            .map_err(ReadModelError::store("reading the log"))?
        {
            Some(event) => batch.push(event),
            None => break,
        }
    }
    Ok(Some(batch))
}

/// The events of a read-ahead task, or why there are none. A panic in the task is resumed here,
/// as it would have surfaced had the read run in this task.
fn joined(
    result: Result<
        Result<Vec<RecordedEvent>, newsletter_eventstore::StoreError>,
        tokio::task::JoinError,
    >,
) -> Result<Vec<RecordedEvent>, ReadModelError> {
    match result {
        Ok(read) => read.map_err(ReadModelError::store("reading the log")),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ReadModelError::ReaderCancelled {
            operation: "reading the log",
        }),
    }
}

/// [`ProjectionRunner::catch_up_once`] with the default settings.
pub async fn catch_up_once(
    store: &Arc<dyn EventStore>,
    models: &ReadModels,
) -> Result<u64, ReadModelError> {
    ProjectionRunner::default()
        .catch_up_once(store, models)
        .await
}

/// [`ProjectionRunner::rebuild`] with the default settings.
pub async fn rebuild(
    store: &Arc<dyn EventStore>,
    models: &ReadModels,
) -> Result<RebuildReport, ReadModelError> {
    ProjectionRunner::default().rebuild(store, models).await
}
