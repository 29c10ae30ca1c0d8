//! A catch-up-then-live subscription to the global log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::StoreError;
use crate::model::{Position, RecordedEvent, StreamId};
use crate::port::EventStore;

/// How a subscription reads.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionOptions {
    /// Events fetched per read.
    pub batch_size: usize,
    /// The longest wait between two reads when nothing signalled new events (the safety net for
    /// writers in other processes and missed notifications).
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Reads the global log from a checkpoint: first everything already stored (catch-up), then
/// new events as they become readable (live). The caller stores `checkpoint()` with what it did
/// with each event; a new subscription from that checkpoint continues exactly after it.
pub struct Subscription {
    store: Arc<dyn EventStore>,
    options: SubscriptionOptions,
    changes: watch::Receiver<u64>,
    checkpoint: Option<Position>,
    buffer: VecDeque<RecordedEvent>,
    /// Whether the last read of the log came back with less than a full batch.
    last_read_reached_end: bool,
}

impl Subscription {
    /// Starts after `checkpoint` (`None`: from the start of the log).
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoint: Option<Position>,
        options: SubscriptionOptions,
    ) -> Self {
        let changes = store.changes();
        Self {
            store,
            options,
            changes,
            checkpoint,
            buffer: VecDeque::new(),
            last_read_reached_end: false,
        }
    }

    /// The position of the last event returned (or the starting checkpoint).
    pub fn checkpoint(&self) -> Option<Position> {
        self.checkpoint
    }

    /// Whether every event of `stream` that was readable at this subscription's last read of the
    /// log has been returned: that read reached the end of the log (it came back with less than
    /// a full batch) and none of the stream's events waits in the buffer. Events written after
    /// that read are not known here; a caller deciding on what it folded must still append
    /// expecting the version it saw.
    #[must_use]
    pub fn returned_all_of(&self, stream: &StreamId) -> bool {
        self.last_read_reached_end && !self.buffer.iter().any(|event| &event.stream == stream)
    }

    /// Reads the next batch of the log after the checkpoint into the buffer.
    async fn read_batch(&mut self) -> Result<(), StoreError> {
        let batch = self
            .store
            .read_all(self.checkpoint, self.options.batch_size)
            .await?;
        self.last_read_reached_end = batch.len() < self.options.batch_size;
        self.buffer.extend(batch);
        Ok(())
    }

    /// The next event, waiting for one to be written if the subscription has caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.checkpoint = Some(event.position);
                return Ok(event);
            }
            // Mark the current signal as seen before reading, so a write that lands after the
            // read wakes the wait below.
            self.changes.borrow_and_update();
            self.read_batch().await?;
            if self.buffer.is_empty() {
                let waited =
                    tokio::time::timeout(self.options.poll_interval, self.changes.changed()).await;
                if let Ok(Err(_sender_gone)) = waited {
                    // No in-process signal any more: fall back to plain polling.
                    tokio::time::sleep(self.options.poll_interval).await;
                }
            }
        }
    }

    /// The next event if one is readable now, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        if self.buffer.is_empty() {
            self.read_batch().await?;
        }
        Ok(self.buffer.pop_front().inspect(|event| {
            self.checkpoint = Some(event.position);
        }))
    }
}
