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
        "kurrentdb" | "kurrentdb+discover" | "esdb" | "esdb+discover" | "kurrent"
        | "kurrent+discover" | "kdb" | "kdb+discover" => Ok(Arc::new(
            KurrentDbEventStore::connect(url, KurrentDbConfig::default()).await?,
        )),
        other => Err(StoreError::UnsupportedUrl {
            scheme: other.chars().take(32).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kurrentdb_and_esdb_urls_open_the_kurrentdb_adapter() {
        // The client connects lazily, so no server is needed to see which adapter is chosen.
        for url in [
            "kurrentdb://127.0.0.1:1?tls=false",
            "esdb://127.0.0.1:1?tls=false",
            "esdb+discover://127.0.0.1:1?tls=false",
        ] {
            let store = connect(url).await.expect("a KurrentDB URL is accepted");
            assert_eq!(store.adapter_name(), "kurrentdb", "{url}");
        }
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_by_name() {
        match connect("mysql://localhost/db").await {
            Err(StoreError::UnsupportedUrl { scheme }) => assert_eq!(scheme, "mysql"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("mysql was accepted"),
        }
    }
}
