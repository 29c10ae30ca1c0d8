//! Picks an adapter from a database URL.

use std::sync::Arc;

use crate::StoreError;
use crate::kurrentdb::{KurrentDbConfig, KurrentDbEventStore};
use crate::port::EventStore;
use crate::postgres::{PostgresConfig, PostgresEventStore};
use crate::sqlite::{SqliteConfig, SqliteEventStore};

/// Opens the event store a URL names: `sqlite:…`, `postgres://…` / `postgresql://…`, or a
/// KurrentDB connection string `kurrentdb://…` / `esdb://…` (also their `+discover` forms).
pub async fn connect(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Arc::new(
            SqliteEventStore::open_url(url, SqliteConfig::default()).await?,
        )),
        "postgres" | "postgresql" => Ok(Arc::new(
            PostgresEventStore::connect(url, PostgresConfig::default()).await?,
        )),
        "kurrentdb" | "kurrentdb+discover" | "esdb" | "esdb+discover" => Ok(Arc::new(
            KurrentDbEventStore::connect(url, KurrentDbConfig::default()).await?,
        )),
        other => Err(StoreError::UnsupportedUrl {
            scheme: other.chars().take(32).collect(),
        }),
    }
}
