//! New data keys under concurrency, on a real SQLite file and on PostgreSQL: of concurrent first
//! appends for one subscriber exactly one key is stored and every caller gets it; keys of
//! different subscribers committed in one batch never reach the wrong caller; an erased
//! subscriber never gets a key again.
//!
//! The PostgreSQL test runs when `NEWSLETTER_TEST_DATABASE_URL` names a server (in a fresh
//! schema); without it it is reported as ignored with that reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use newsletter_keyvault::{Destroyed, KeyState, KeyVault, MasterKey, MasterKeyRing};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const SUBSCRIBERS: usize = 50;
const CALLS_EACH: usize = 4;

/// 200 concurrent `key_for_append` calls for 50 subscribers through two vault handles (as two
/// processes would), one of the subscribers erased beforehand.
async fn concurrent_first_keys(vaults: [KeyVault; 2]) {
    let subscribers: Vec<Uuid> = (0..SUBSCRIBERS).map(|_| Uuid::now_v7()).collect();
    let erased = subscribers[7];
    assert_eq!(vaults[0].destroy(erased).await.unwrap(), Destroyed::NoKey);
    let mut tasks = Vec::new();
    for call in 0..CALLS_EACH {
        for (n, subscriber) in subscribers.iter().copied().enumerate() {
            let vault = vaults[(n + call) % 2].clone();
            tasks.push(tokio::spawn(async move {
                let key = vault.key_for_append(subscriber).await.unwrap();
                (subscriber, key.map(|k| *k.as_bytes()))
            }));
        }
    }
    let mut answers: BTreeMap<Uuid, BTreeSet<Option<[u8; 32]>>> = BTreeMap::new();
    for task in futures_join(tasks).await {
        let (subscriber, key) = task;
        answers.entry(subscriber).or_default().insert(key);
    }
    assert_eq!(answers.len(), SUBSCRIBERS, "every call answered");
    let mut keys = BTreeSet::new();
    for (subscriber, got) in &answers {
        assert_eq!(got.len(), 1, "{subscriber}: every caller gets one key");
        let key = *got.first().unwrap();
        if *subscriber == erased {
            assert_eq!(key, None, "an erased subscriber gets no key");
            continue;
        }
        let key = key.expect("a live key");
        keys.insert(key);
        for vault in &vaults {
            match vault
                .states(&[*subscriber])
                .await
                .unwrap()
                .remove(subscriber)
            {
                Some(KeyState::Active(stored)) => assert_eq!(
                    *stored.as_bytes(),
                    key,
                    "{subscriber}: the key every caller got is the one stored"
                ),
                other => panic!("{subscriber}: stored {other:?}"),
            }
        }
    }
    assert_eq!(
        keys.len(),
        SUBSCRIBERS - 1,
        "one key per subscriber, none shared"
    );
    assert!(matches!(
        vaults[1].states(&[erased]).await.unwrap().remove(&erased),
        Some(KeyState::Shredded(_))
    ));
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

fn ring() -> MasterKeyRing {
    MasterKeyRing::single(MasterKey::generate("k1").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyvault.db");
    let ring = ring();
    let first = KeyVault::open_sqlite(&path, ring.clone()).await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let second = KeyVault::open(&url, ring).await.unwrap();
    concurrent_first_keys([first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn concurrent_first_keys_on_postgres() {
    let url = std::env::var("NEWSLETTER_TEST_DATABASE_URL")
        .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests");
    let schema = format!("vault_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    let options = PgConnectOptions::from_str(&url)
        .expect("a valid URL")
        .options([("search_path", schema.as_str())]);
    let ring = ring();
    let mut vaults = Vec::new();
    for _ in 0..2 {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .expect("connect");
        vaults.push(
            KeyVault::from_postgres_pool(pool, ring.clone())
                .await
                .unwrap(),
        );
    }
    let [first, second]: [KeyVault; 2] = vaults.try_into().expect("two vaults");
    concurrent_first_keys([first, second]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .expect("drop test schema");
}
