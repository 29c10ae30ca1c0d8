//! The conformance suite against the KurrentDB adapter.
//!
//! Runs when `KURRENTDB_URL` names a server, e.g. `esdb://localhost:2113?tls=false` after
//! `docker compose up kurrentdb`; every test uses streams under a prefix of its own, so the tests
//! share one database without seeing each other's events. Without the variable every test here
//! is reported as ignored with that reason (never as passed). With it set and the server
//! unreachable, the tests fail.

mod conformance;

use std::sync::Arc;

use conformance::Backend;
use newsletter_eventstore::{EventStore, KurrentDbConfig, KurrentDbEventStore};
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("KURRENTDB_URL")
        .expect("KURRENTDB_URL names the KurrentDB server for these tests")
}

/// A namespace of streams of its own on the configured server.
struct KurrentDb {
    config: KurrentDbConfig,
    store: Arc<KurrentDbEventStore>,
}

impl KurrentDb {
    async fn open(config: &KurrentDbConfig) -> Arc<KurrentDbEventStore> {
        Arc::new(
            KurrentDbEventStore::connect(&server_url(), config.clone())
                .await
                .expect("connect to the KurrentDB test server"),
        )
    }
}

impl Backend for KurrentDb {
    async fn fresh() -> Self {
        let config = KurrentDbConfig {
            stream_prefix: format!("conformance-{}-", Uuid::new_v4().simple()),
            ..KurrentDbConfig::default()
        };
        let store = Self::open(&config).await;
        Self { config, store }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) {
        self.store = Self::open(&self.config).await;
    }

    /// KurrentDB streams are left in place: a test namespace is never read again, and deleting
    /// would only add tombstones to `$all`.
    async fn cleanup(self) {}
}

conformance_suite!(KurrentDb, [#[cfg_attr(not(kurrentdb_tests), ignore = "KURRENTDB_URL is not set: KurrentDB conformance suite not run")]]);
