//! Wake-ups for live subscriptions: a background catch-up-then-live subscription to `$all`
//! (server-side filtered) that bumps the store's change signal for every event any process
//! writes, and reconnects with backoff when the server goes away.

use std::sync::Arc;
use std::time::Duration;

use kurrentdb::{
    Client, StreamPosition, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first wait after the subscription dropped; doubled on every failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(200);

/// Bumps the signal: readers only compare it with what they saw last.
pub(super) fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// The watcher task of one store; aborted when the store is dropped.
pub(super) struct Watcher(JoinHandle<()>);

impl Watcher {
    /// Starts watching `$all` from its end.
    pub(super) fn start(
        client: Client,
        filter: SubscriptionFilter,
        changes: Arc<watch::Sender<u64>>,
        max_backoff: Duration,
    ) -> Self {
        Self(tokio::spawn(watch_all(
            client,
            filter,
            changes,
            max_backoff,
        )))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to `$all` from the end; after a drop, resubscribes from the last event seen (so
/// events written while disconnected still wake readers) after a growing pause. Every
/// (re)subscription bumps the signal once as well, since events may have been written while
/// no subscription was open. Subscribers poll besides, so a missed wake-up only delays them.
async fn watch_all(
    client: Client,
    filter: SubscriptionFilter,
    changes: Arc<watch::Sender<u64>>,
    max_backoff: Duration,
) {
    let mut from = StreamPosition::End;
    let mut backoff = BACKOFF_START;
    loop {
        let options = SubscribeToAllOptions::default()
            .position(from)
            .filter(filter.clone());
        let mut subscription = client.subscribe_to_all(&options).await;
        let error = loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    if let Some(event) = resolved.event.as_ref().or(resolved.link.as_ref()) {
                        from = StreamPosition::Position(event.position);
                    }
                    backoff = BACKOFF_START;
                    bump(&changes);
                }
                Ok(SubscriptionEvent::Confirmed(_)) => {
                    tracing::debug!("KurrentDB change watcher subscribed to $all");
                    bump(&changes);
                }
                Ok(SubscriptionEvent::Checkpoint(position)) => {
                    from = StreamPosition::Position(position);
                }
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        tracing::warn!(
            %error,
            retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "KurrentDB change watcher lost its subscription; readers fall back to polling"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}
