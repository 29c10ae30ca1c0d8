//! [`CountingStreamReads`]: a decorator that counts the stream reads made through a store, to
//! see (in tests and diagnostics) which reads a caller made and which it saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::StoreError;
use crate::model::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use crate::port::EventStore;

/// Delegates everything to the store it wraps and counts the calls of
/// [`EventStore::read_stream`].
pub struct CountingStreamReads {
    inner: Arc<dyn EventStore>,
    stream_reads: AtomicUsize,
}

impl CountingStreamReads {
    /// Counts the stream reads made through `inner` from now on.
    #[must_use]
    pub fn over(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            stream_reads: AtomicUsize::new(0),
        }
    }

    /// The stream reads made so far.
    #[must_use]
    pub fn reads(&self) -> usize {
        self.stream_reads.load(Ordering::SeqCst)
    }

    /// The stream reads made since the last call (or since the start), resetting the count.
    pub fn take(&self) -> usize {
        self.stream_reads.swap(0, Ordering::SeqCst)
    }
}

#[async_trait]
impl EventStore for CountingStreamReads {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.stream_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, after_version).await
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn adapter_name(&self) -> &'static str {
        self.inner.adapter_name()
    }
}
