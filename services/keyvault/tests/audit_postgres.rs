//! The audit log on PostgreSQL: paging with `after` never skips an entry when two writers
//! commit out of id order.
//!
//! Runs when `NEWSLETTER_TEST_DATABASE_URL` names a server (in a fresh schema); without it the
//! test is reported as ignored with that reason. With it set and the server unreachable, it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use newsletter_keyvault::{AUDIT_LOCK, AuditEntry, AuditLog, KeyVault, MasterKey, MasterKeyRing};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("NEWSLETTER_TEST_DATABASE_URL")
        .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests")
}

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        actor: "dpo".to_owned(),
        action: action.to_owned(),
        subscriber: None,
        outcome: "ok".to_owned(),
        detail: None,
    }
}

/// Pages from `after` to the end; returns the ids seen and the cursor to continue from.
async fn page_all(audit: &AuditLog, mut after: i64) -> (Vec<i64>, i64) {
    let mut seen = Vec::new();
    loop {
        let page = audit.page(after, 2).await.expect("page the audit log");
        seen.extend(page.iter().map(|e| e.id));
        match page.last() {
            Some(last) => after = last.id,
            None => return (seen, after),
        }
    }
}

/// Is a session of this database waiting for the audit lock?
async fn someone_waits_for_the_audit_lock(admin: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_locks \
         WHERE locktype = 'advisory' AND NOT granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND ((classid::bigint << 32) | objid::bigint) = $1)",
    )
    .bind(AUDIT_LOCK)
    .fetch_one(admin)
    .await
    .expect("read pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn paging_never_skips_an_entry_committed_late() {
    let schema = format!("audit_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server_url())
        .await
        .expect("connect to the PostgreSQL test server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    let options = PgConnectOptions::from_str(&server_url())
        .expect("a valid NEWSLETTER_TEST_DATABASE_URL")
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("connect");
    let ring = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
    let vault = KeyVault::from_postgres_pool(pool, ring).await.unwrap();
    let audit = AuditLog::new(&vault);
    let first_id = audit.record(&entry("before"), Utc::now()).await.unwrap();
    let (seen_before, cursor) = page_all(&audit, 0).await;
    assert_eq!(seen_before, vec![first_id]);

    // Writer A inserts and keeps its transaction open.
    let writer_a = audit.begin(&entry("late"), Utc::now()).await.unwrap();
    let late_id = writer_a.id();
    // Writer B starts after A's insert and tries to commit at once.
    let writer_b = {
        let audit = audit.clone();
        tokio::spawn(async move { audit.record(&entry("early"), Utc::now()).await })
    };
    // Wait until B has either committed or is waiting for A.
    while !writer_b.is_finished() && !someone_waits_for_the_audit_lock(&mut admin).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A reader pages now, while A is still open, and remembers where it stopped.
    let (seen_meanwhile, cursor) = page_all(&audit, cursor).await;

    writer_a.commit().await.unwrap();
    let early_id = writer_b.await.unwrap().unwrap();
    let (seen_after, _) = page_all(&audit, cursor).await;

    let mut seen: Vec<i64> = seen_meanwhile.into_iter().chain(seen_after).collect();
    seen.sort_unstable();
    let mut expected = vec![late_id, early_id];
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "every entry committed after the first page is seen exactly once by paging with after"
    );

    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await;
}
