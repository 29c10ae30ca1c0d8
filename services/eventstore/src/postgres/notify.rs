//! Cross-process wake-ups for live subscriptions over LISTEN/NOTIFY.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The listener and notifier tasks of one store; aborted when the store is dropped.
pub(super) struct BackgroundTasks(Vec<JoinHandle<()>>);

impl BackgroundTasks {
    /// Starts a task that turns local appends into (coalesced) NOTIFYs, and one that turns
    /// NOTIFYs from any process into local wake-ups.
    pub(super) fn start(
        pool: PgPool,
        channel: String,
        changes: Arc<watch::Sender<u64>>,
        pending: Arc<Notify>,
    ) -> Self {
        let notifier = tokio::spawn(notify_loop(pool.clone(), channel.clone(), pending));
        let listener = tokio::spawn(listen_loop(pool, channel, changes));
        Self(vec![notifier, listener])
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Sends one NOTIFY per wake-up; appends that land while one is in flight share the next.
async fn notify_loop(pool: PgPool, channel: String, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&pool)
            .await
        {
            // Subscribers in other processes fall back to polling until it works again.
            tracing::warn!(error = %e, "could not NOTIFY new events");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Listens on the channel and bumps the local change signal on every notification.
async fn listen_loop(pool: PgPool, channel: String, changes: Arc<watch::Sender<u64>>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(_) => changes.send_modify(|g| *g = g.wrapping_add(1)),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "could not LISTEN for new events"),
            },
            Err(e) => tracing::warn!(error = %e, "could not connect the event listener"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
