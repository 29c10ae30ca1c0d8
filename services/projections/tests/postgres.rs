//! The read-side suite on PostgreSQL.
//!
//! Runs when `NEWSLETTER_TEST_DATABASE_URL` names a server (each test in fresh schemas); without
//! it every test here is reported as ignored with that reason. With it set and the server
//! unreachable, the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::str::FromStr;
use std::sync::Arc;

use newsletter_eventstore::{EventStore, PostgresConfig, PostgresEventStore};
use newsletter_projections::{EmailIndex, EmailIndexKey, ReadModels};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use suite::Backend;
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("NEWSLETTER_TEST_DATABASE_URL")
        .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests")
}

fn options(schema: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&server_url())
        .expect("a valid NEWSLETTER_TEST_DATABASE_URL")
        .options([("search_path", schema)])
}

async fn create_schema() -> String {
    let schema = format!("rm_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server_url())
        .await
        .expect("connect to the PostgreSQL test server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    schema
}

/// Fresh schemas: the first holds the events, the read models and the email index (as in
/// production: one database); others hold further read models on the same log.
struct Postgres {
    schemas: Vec<String>,
    store: Arc<dyn EventStore>,
    models: ReadModels,
}

impl Backend for Postgres {
    async fn fresh() -> Self {
        let schema = create_schema().await;
        let config = PostgresConfig {
            notify_channel: format!("events_{schema}"),
            ..PostgresConfig::default()
        };
        let store: Arc<dyn EventStore> = Arc::new(
            PostgresEventStore::connect_with(options(&schema), config)
                .await
                .expect("connect the event store"),
        );
        let models = ReadModels::connect_postgres_with(options(&schema))
            .await
            .expect("connect read models");
        Self {
            schemas: vec![schema],
            store,
            models,
        }
    }

    async fn committed_events(&self) -> usize {
        let mut conn = PgConnection::connect_with(&options(&self.schemas[0]))
            .await
            .expect("connect");
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await
            .expect("count events");
        usize::try_from(count).expect("a count")
    }

    fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.store)
    }

    fn models(&self) -> ReadModels {
        self.models.clone()
    }

    async fn reopen_models(&mut self) -> ReadModels {
        self.models = ReadModels::connect_postgres_with(options(&self.schemas[0]))
            .await
            .expect("reconnect read models");
        self.models.clone()
    }

    async fn other_models(&mut self) -> ReadModels {
        let schema = create_schema().await;
        let models = ReadModels::connect_postgres_with(options(&schema))
            .await
            .expect("connect other read models");
        self.schemas.push(schema);
        models
    }

    async fn email_index(&mut self) -> EmailIndex {
        EmailIndex::connect_postgres_with(
            options(&self.schemas[0]),
            EmailIndexKey::from_bytes([42; 32]),
        )
        .await
        .expect("connect email index")
    }

    async fn cleanup(self) {
        drop(self.store);
        drop(self.models);
        if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
            for schema in &self.schemas {
                let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop_schema))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

read_side_suite!(Postgres, [#[cfg_attr(not(postgres_tests), ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run")]]);
