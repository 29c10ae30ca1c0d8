//! The conformance suite against the SQLite adapter, plus SQLite's own durability settings.

mod conformance;

use std::sync::Arc;

use conformance::Backend;
use newsletter_eventstore::{EventStore, SqliteConfig, SqliteEventStore};
use tempfile::TempDir;

/// A fresh database file in a temporary directory.
struct Sqlite {
    dir: TempDir,
    store: Arc<dyn EventStore>,
}

impl Sqlite {
    async fn open(dir: &TempDir) -> Arc<dyn EventStore> {
        Arc::new(
            SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
                .await
                .expect("open sqlite store"),
        )
    }
}

impl Backend for Sqlite {
    async fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Self::open(&dir).await;
        Self { dir, store }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.store)
    }

    async fn reopen(&mut self) {
        self.store = Self::open(&self.dir).await;
    }

    async fn cleanup(self) {}
}

conformance_suite!(Sqlite, []);

#[tokio::test]
async fn the_writer_runs_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
        .await
        .expect("open sqlite store");
    assert_eq!(store.durability().journal_mode, "wal");
    assert_eq!(store.durability().synchronous, 2, "2 is FULL");
}
