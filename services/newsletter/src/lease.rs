//! Leases that keep the projector and the mailer single-active across replicas.
//!
//! PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) held on a connection of its own;
//! when the holder dies its session ends and the lock is free at once. A keeper checks the
//! connection every [`KEEPALIVE`]; if it breaks, the lease is lost and the process stops (the
//! orchestrator restarts it, as a standby).
//! SQLite (one machine): an exclusive lock on `<data dir>/<name>.lock`, which the operating
//! system releases when the holder exits, however it exits.
//!
//! A standby tries every [`RETRY`], so it takes over within a few seconds of the holder's death.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

/// How often a standby tries to take the lease.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often the holder checks that its PostgreSQL session (and so its lock) is alive.
pub const KEEPALIVE: Duration = Duration::from_secs(2);

/// Where leases are kept.
#[derive(Debug, Clone)]
pub enum LeaseStore {
    /// Lock files in a directory (the embedded SQLite setup).
    Files(PathBuf),
    /// Advisory locks in a PostgreSQL database.
    Postgres(String),
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lock file could not be opened.
    #[error("cannot open the lease file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A held lease. Dropping it releases it.
pub struct Lease {
    _held: Held,
    lost: watch::Receiver<bool>,
}

enum Held {
    /// Held only to keep the file, and so its lock, open.
    #[allow(dead_code)]
    File(std::fs::File),
    Postgres(tokio::task::JoinHandle<()>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Self::Postgres(keeper) = self {
            // Ends the session, which releases the advisory lock.
            keeper.abort();
        }
    }
}

impl Lease {
    /// True once the lease was lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (never, for a lock file).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // A closed channel (no keeper) means the lease cannot be lost: wait forever.
            if lost.wait_for(|lost| *lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The advisory-lock key of a lease name: FNV-1a of `newsletter:<name>`.
fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("newsletter:{name}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl LeaseStore {
    /// Waits until the lease `name` is ours, or `shutdown` completes (then `Ok(None)`).
    pub async fn acquire(
        &self,
        name: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Option<Lease>, LeaseError> {
        tokio::pin!(shutdown);
        let mut waiting_logged = false;
        loop {
            if let Some(lease) = self.try_acquire(name).await? {
                tracing::info!(lease = name, "lease acquired: this replica is active");
                return Ok(Some(lease));
            }
            if !waiting_logged {
                tracing::info!(lease = name, "another replica holds the lease: standing by");
                waiting_logged = true;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(None),
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Takes the lease if it is free now.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        match self {
            Self::Files(dir) => {
                let path = dir.join(format!("{name}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|source| LeaseError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                match file.try_lock() {
                    Ok(()) => {
                        let (_tx, lost) = watch::channel(false);
                        // The sender is dropped: `lost` never fires for a file lock.
                        Ok(Some(Lease {
                            _held: Held::File(file),
                            lost,
                        }))
                    }
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(source)) => Err(LeaseError::File {
                        path: path.display().to_string(),
                        source,
                    }),
                }
            }
            Self::Postgres(url) => {
                // Connection problems are not errors here: the standby keeps trying.
                let mut conn = match PgConnection::connect(url).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(lease = name, error = %e, "cannot reach PostgreSQL for the lease");
                        return Ok(None);
                    }
                };
                let taken: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(lock_key(name))
                    .fetch_one(&mut conn)
                    .await;
                match taken {
                    Ok(true) => {
                        let (tx, lost) = watch::channel(false);
                        let lease_name = name.to_owned();
                        let keeper = tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(KEEPALIVE).await;
                                if let Err(e) = sqlx::query("SELECT 1").execute(&mut conn).await {
                                    tracing::error!(lease = %lease_name, error = %e, "lease session lost");
                                    let _ = tx.send(true);
                                    return;
                                }
                            }
                        });
                        Ok(Some(Lease {
                            _held: Held::Postgres(keeper),
                            lost,
                        }))
                    }
                    Ok(false) => {
                        let _ = conn.close().await;
                        Ok(None)
                    }
                    Err(e) => {
                        tracing::warn!(lease = name, error = %e, "cannot ask PostgreSQL for the lease");
                        Ok(None)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_lease_is_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let lease = LeaseStore::Files(dir.path().to_owned())
            .try_acquire("mailer")
            .await
            .unwrap()
            .expect("free");
        assert!(!lease.is_lost());
        let lost = tokio::time::timeout(Duration::from_millis(200), lease.lost()).await;
        assert!(lost.is_err(), "a lock file lease never reports itself lost");
    }

    #[tokio::test]
    async fn a_file_lease_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::Files(dir.path().to_owned());
        let first = store.try_acquire("mailer").await.unwrap().expect("free");
        assert!(store.try_acquire("mailer").await.unwrap().is_none(), "held");
        assert!(
            store.try_acquire("projector").await.unwrap().is_some(),
            "other names are free"
        );
        drop(first);
        assert!(
            store.try_acquire("mailer").await.unwrap().is_some(),
            "released"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(postgres_tests),
        ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
    )]
    async fn a_postgres_lease_is_exclusive_released_on_drop_and_lost_with_its_session() {
        let url = std::env::var("NEWSLETTER_TEST_DATABASE_URL").unwrap();
        let store = LeaseStore::Postgres(url.clone());
        let name = format!("test-{}", uuid::Uuid::new_v4());
        let first = store.try_acquire(&name).await.unwrap().expect("free");
        assert!(store.try_acquire(&name).await.unwrap().is_none(), "held");
        drop(first);
        // The keeper is aborted; its connection closes and the session ends.
        let second = tokio::time::timeout(
            Duration::from_secs(10),
            store.acquire(&name, std::future::pending()),
        )
        .await
        .expect("taken over within 10 s")
        .unwrap()
        .expect("acquired");
        // Ending the holder's session from outside: the lease reports itself lost.
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND objid = ($1::bigint & 4294967295)::oid AND granted",
        )
        .bind(lock_key(&name))
        .execute(&mut admin)
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), second.lost())
            .await
            .expect("loss noticed within 10 s");
    }
}
