//! Cross-process wake-ups for live subscriptions over LISTEN/NOTIFY.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The shortest time between two NOTIFYs of one store.
const NOTIFY_SPACING: Duration = Duration::from_millis(2);

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

/// Sends one NOTIFY per wake-up, on a connection of its own with `synchronous_commit = off`
/// (a notification needs no fsync), and at most one every [`NOTIFY_SPACING`]: appends that land
/// in between share the next one. Subscribers also poll, so a lost notification only delays.
async fn notify_loop(pool: PgPool, channel: String, pending: Arc<Notify>) {
    loop {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "no connection for NOTIFY; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = sqlx::query("SET synchronous_commit = off")
            .execute(&mut *conn)
            .await
        {
            tracing::warn!(error = %e, "could not prepare the NOTIFY connection");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            pending.notified().await;
            if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&mut *conn)
                .await
            {
                tracing::warn!(error = %e, "could not NOTIFY new events; reconnecting");
                pending.notify_one();
                break;
            }
            tokio::time::sleep(NOTIFY_SPACING).await;
        }
        // Do not hand a connection with altered settings back to the pool.
        conn.detach();
        tokio::time::sleep(Duration::from_secs(1)).await;
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
