//! The read-side suite on SQLite, plus what only a file can show: no address in the email
//! index's bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use newsletter_domain::EmailAddress;
use newsletter_eventstore::{EventStore, SqliteConfig, SqliteEventStore};
use newsletter_projections::{EmailIndex, EmailIndexKey, ReadModels};
use suite::Backend;
use tempfile::TempDir;

struct Sqlite {
    dir: TempDir,
    store: Arc<dyn EventStore>,
    models: ReadModels,
    others: usize,
}

fn key() -> EmailIndexKey {
    EmailIndexKey::from_bytes([42; 32])
}

impl Sqlite {
    fn models_path(&self) -> PathBuf {
        self.dir.path().join("readmodels.db")
    }
}

impl Backend for Sqlite {
    async fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
                .await
                .expect("open event store"),
        );
        let models = ReadModels::open_sqlite(&dir.path().join("readmodels.db"))
            .await
            .expect("open read models");
        Self {
            dir,
            store,
            models,
            others: 0,
        }
    }

    async fn committed_events(&self) -> usize {
        // One writer commits in position order: everything committed is readable.
        self.store()
            .read_all(None, usize::MAX >> 1)
            .await
            .expect("read all")
            .len()
    }

    fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.store)
    }

    fn models(&self) -> ReadModels {
        self.models.clone()
    }

    async fn reopen_models(&mut self) -> ReadModels {
        self.models = ReadModels::open_sqlite(&self.models_path())
            .await
            .expect("reopen read models");
        self.models.clone()
    }

    async fn other_models(&mut self) -> ReadModels {
        self.others += 1;
        let url = format!(
            "sqlite://{}",
            self.dir
                .path()
                .join(format!("other-{}.db", self.others))
                .display()
        );
        ReadModels::open(&url)
            .await
            .expect("open other read models")
    }

    async fn email_index(&mut self) -> EmailIndex {
        EmailIndex::open_sqlite(&self.dir.path().join("emailindex.db"), key())
            .await
            .expect("open email index")
    }

    async fn cleanup(self) {}
}

read_side_suite!(Sqlite, []);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of a SQLite database and its WAL.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("database file");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

#[tokio::test]
async fn the_email_index_file_never_holds_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emailindex.db");
    let index = EmailIndex::open_sqlite(&path, key()).await.unwrap();
    let addresses: Vec<EmailAddress> = (0..50)
        .map(|n| EmailAddress::parse(&format!("Private.Person{n}@Mailbox.example")).unwrap())
        .collect();
    for address in &addresses {
        index.claim(address, suite::new_id()).await.unwrap();
    }
    assert_eq!(index.find_many(&addresses).await.unwrap().len(), 50);
    let bytes = file_bytes(&path);
    // The digest is there: the scan looks at the data that was written.
    assert!(contains(&bytes, &key().digest(&addresses[0])));
    for address in &addresses {
        let lower = address.as_str().to_lowercase();
        let local = lower.split('@').next().unwrap();
        assert!(!contains(&bytes, address.as_str().as_bytes()));
        assert!(!contains(&bytes, lower.as_bytes()));
        assert!(!contains(&bytes, local.as_bytes()));
    }
    assert!(!contains(&bytes, b"mailbox.example"));
}

#[tokio::test]
async fn read_models_open_from_a_url_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readmodels.db");
    let models = ReadModels::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(models.backend_name(), "sqlite");
    assert!(path.exists());
    assert!(matches!(
        ReadModels::open("mysql://localhost/db").await,
        Err(newsletter_projections::ReadModelError::UnsupportedUrl { .. })
    ));
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        wal.exists(),
        "journal_mode=WAL keeps a -wal file beside the database"
    );
}

fn step() -> impl proptest::strategy::Strategy<Value = suite::Step> {
    use proptest::prelude::*;
    use suite::Step;
    prop_oneof![
        3 => (1..8_u8).prop_map(Step::Request),
        3 => Just(Step::MailSent),
        4 => Just(Step::Confirm),
        2 => (0..3_u8).prop_map(Step::Unsubscribe),
        1 => Just(Step::Restrict),
        1 => Just(Step::Lift),
        1 => Just(Step::Erase),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(12))]

    /// Property: however the log is cut into batches (one event per transaction, batches of 7,
    /// a rebuild's large batches), the read models end up the same, erasures included.
    #[test]
    fn batching_never_changes_the_rows(
        steps in proptest::collection::vec((0..12_usize, step()), 1..90)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut backend = Sqlite::fresh().await;
            suite::batching_does_not_change_rows(&mut backend, 12, &steps).await;
        });
    }
}
