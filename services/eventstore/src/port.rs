//! The event store port: what every adapter provides, and the guarantees it owes.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::StoreError;
use crate::model::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};

/// An append-only log of events, partitioned into streams, with one global order.
///
/// Guarantees every adapter states and the conformance suite checks:
/// - `append` is atomic (all events or none), checks the expected version, and is idempotent on
///   event ids: appending the same ids to the same stream again succeeds without writing.
/// - A returned `append` is durable.
/// - `read_all` returns committed events in one global order, and never returns an event at a
///   position below one it has already returned: a reader that keeps its last position as a
///   checkpoint never skips an event, even one whose transaction committed late.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to a stream if the stream is at `expected`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// Reads a stream's events with a version above `after_version` (0 reads all), in order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of the global log after `after` (`None`: from the start).
    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// A signal that changes whenever new events may be readable, so subscriptions can wake
    /// before their polling interval. It may fire spuriously and may miss writes made by other
    /// processes; subscriptions therefore also poll.
    fn changes(&self) -> watch::Receiver<u64>;

    /// A short name of the adapter, for logs and metrics (`sqlite`, `postgres`).
    fn adapter_name(&self) -> &'static str;
}
