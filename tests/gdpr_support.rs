//! A small harness of its own for the GDPR end-to-end tests (tests/gdpr.rs): the real binary
//! on a free loopback port with its own data dir, its stderr captured to a file, a fresh
//! PostgreSQL database per test when asked, and the outbox as the mail transport.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use newsletter_domain::{ActorName, ErasureReference, Subscriber, SubscriberCommand};
use newsletter_eventstore::{
    EventMetadata, EventStore, PostgresConfig, PostgresEventStore, RecordedEvent, SqliteConfig,
    SqliteEventStore, StreamId, SystemClock, execute,
};
use newsletter_keyvault::{EncryptingEventStore, KeyState, KeyVault, MasterKeyRing};
use serde_json::Value;
use std::sync::Arc;
use tempfile::TempDir;

/// Secret of the `status`-only token.
pub const STATUS_TOKEN: &str = "gdpr-status-secret-0123456789abcdef";
/// Secret of the `admin` token.
pub const ADMIN_TOKEN: &str = "gdpr-admin-secret-fedcba9876543210";
/// How long an eventual outcome may take.
pub const DEADLINE: Duration = Duration::from_secs(40);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh PostgreSQL database, dropped on drop.
pub struct PgDatabase {
    /// Its URL.
    pub url: String,
    name: String,
    server: String,
}

impl PgDatabase {
    /// Creates `nl_gdpr_<uuid>` on `NEWSLETTER_TEST_DATABASE_URL`'s server.
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let server = std::env::var("NEWSLETTER_TEST_DATABASE_URL")
            .expect("NEWSLETTER_TEST_DATABASE_URL names the PostgreSQL server for these tests");
        let name = format!("nl_gdpr_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let mut url = url::Url::from_str(&server).expect("a URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            name,
            server,
        }
    }

    /// `pg_dump` of the whole database (schema and data), as bytes.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new("pg_dump")
            .arg("--no-owner")
            .arg(&self.url)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The running service.
pub struct Service {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub client: reqwest::Client,
    env: BTreeMap<String, String>,
    home: TempDir,
    logs: TempDir,
    starts: u32,
    /// The PostgreSQL database, if any.
    pub pg: Option<PgDatabase>,
}

impl Service {
    /// Starts `newsletter serve` (SQLite unless `pg`), with extra settings.
    pub async fn start(pg: Option<PgDatabase>, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let home = tempfile::Builder::new()
            .prefix("nl-gdpr-")
            .tempdir()
            .unwrap();
        let logs = tempfile::Builder::new()
            .prefix("nl-gdpr-logs-")
            .tempdir()
            .unwrap();
        let mut env: BTreeMap<String, String> = [
            ("NEWSLETTER_LISTEN", format!("127.0.0.1:{port}")),
            ("NEWSLETTER_PUBLIC_URL", base.clone()),
            (
                "NEWSLETTER_DATA_DIR",
                home.path().join("data").display().to_string(),
            ),
            ("NEWSLETTER_LISTS", "newsletter,offers".to_owned()),
            (
                "NEWSLETTER_TOKENS",
                format!("reader:{STATUS_TOKEN}:status,dpo:{ADMIN_TOKEN}:admin+status"),
            ),
            ("NEWSLETTER_SIGNUP_RATE_LIMIT", "0".to_owned()),
            ("NEWSLETTER_TRUSTED_PROXIES", "127.0.0.1".to_owned()),
            ("NEWSLETTER_POLICY_VERSION", "2026-11".to_owned()),
            (
                "NEWSLETTER_POLICY_VERSIONS",
                "2026-11 https://policy.example/privatliv/2026-11 2026-11-01, 2025-05 https://policy.example/privatliv/2025-05 2025-05-01".to_owned(),
            ),
            ("NEWSLETTER_LOG", "debug".to_owned()),
            ("NO_COLOR", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(db) = &pg {
            env.insert("NEWSLETTER_DATABASE_URL".to_owned(), db.url.clone());
        }
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut service = Self {
            child: None,
            base,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            env,
            home,
            logs,
            starts: 0,
            pg,
        };
        service.start_again().await;
        service
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_newsletter"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NEWSLETTER_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(&self.env).current_dir(self.home.path());
        cmd
    }

    /// Changes a setting for the next start.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    /// Starts the process (again) and waits for readiness.
    pub async fn start_again(&mut self) {
        self.starts += 1;
        let err =
            fs::File::create(self.logs.path().join(format!("stderr.{}", self.starts))).unwrap();
        let out =
            fs::File::create(self.logs.path().join(format!("stdout.{}", self.starts))).unwrap();
        let child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the binary");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the service exited at start ({status}):\n{}",
                    self.logs_text()
                );
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && r.status().as_u16() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                self.logs_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the process (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a CLI subcommand with the same settings; (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command().args(args).output().expect("run the CLI");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        fs::write(
            self.logs
                .path()
                .join(format!("cli.{}", uuid::Uuid::new_v4().simple())),
            &stderr,
        )
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }

    /// Everything the service (and the CLI runs) wrote to stderr.
    pub fn logs_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in fs::read_dir(self.logs.path()).unwrap().flatten() {
            all.extend(fs::read(entry.path()).unwrap_or_default());
        }
        all
    }

    /// The logs as text (for failure messages).
    pub fn logs_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.logs_bytes()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// Every file under the data dir, with its bytes.
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir(), &mut out);
        out
    }

    /// The outbox `.eml` files that mention `needle`.
    pub fn outbox_mails(&self, needle: &str) -> Vec<Vec<u8>> {
        let needle = needle.to_ascii_lowercase();
        fs::read_dir(self.data_dir().join("outbox"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter(|b| {
                String::from_utf8_lossy(b)
                    .to_ascii_lowercase()
                    .contains(&needle)
            })
            .collect()
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with an optional bearer token; returns (status, JSON or Null).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- service logs ---\n{}", self.logs_text());
        }
    }
}

/// Finds `needle` in `haystack` ignoring ASCII case.
pub fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The service's event log and key vault, opened from the test with the library crates the
/// binary uses (same codec, same encryption, the data dir's development master key): to look
/// at what is stored, and to write what a crash would leave behind.
pub struct Storage {
    /// The log as stored (sealed payloads).
    pub sealed: Arc<dyn EventStore>,
    /// The log through the decrypting decorator.
    pub store: EncryptingEventStore,
    /// The key vault.
    pub vault: KeyVault,
}

impl Service {
    /// Opens the service's event log and key vault (SQLite files in the data dir, or its
    /// PostgreSQL database).
    pub async fn storage(&self) -> Storage {
        let ring = MasterKeyRing::parse(
            &fs::read_to_string(self.data_dir().join("master-key")).expect("the master key file"),
        )
        .unwrap();
        let (sealed, vault): (Arc<dyn EventStore>, KeyVault) = match &self.pg {
            Some(db) => {
                let store = PostgresEventStore::connect(&db.url, PostgresConfig::default())
                    .await
                    .unwrap();
                let vault = KeyVault::from_postgres_pool(store.pool().clone(), ring)
                    .await
                    .unwrap();
                (Arc::new(store), vault)
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir().join("events.db").display());
                let store = SqliteEventStore::open_url(&url, SqliteConfig::default())
                    .await
                    .unwrap();
                let vault = KeyVault::open_sqlite(&self.data_dir().join("keyvault.db"), ring)
                    .await
                    .unwrap();
                (Arc::new(store), vault)
            }
        };
        Storage {
            store: EncryptingEventStore::new(Arc::clone(&sealed), vault.clone()),
            sealed,
            vault,
        }
    }

    /// Deletes the subscriber's vault row outright (no tombstone), as restoring a vault backup
    /// taken before the subscriber signed up would.
    pub async fn delete_vault_row(&self, id: &str) {
        use sqlx::Connection as _;
        const SQL: &str = "DELETE FROM keyvault_data_keys WHERE subscriber_id = $1";
        let deleted = match &self.pg {
            Some(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query(SQL)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir().join("keyvault.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(SQL)
                    .bind(id)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        };
        assert_eq!(deleted, 1, "the subscriber had a vault row");
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(format!("subscriber-{id}")).unwrap()
}

impl Storage {
    /// Appends `SubscriberErased` exactly as `erase` does (the domain's command through the
    /// encrypting store) and nothing else: what a process killed right after that append
    /// leaves behind.
    pub async fn append_erasure_only(&self, id: &str, reference: &str) {
        let outcome = execute::<Subscriber>(
            &self.store,
            &SystemClock,
            &stream(id),
            &SubscriberCommand::Erase {
                actor: ActorName::parse("dpo").unwrap(),
                reference: ErasureReference::parse(reference).unwrap(),
            },
            &EventMetadata::default(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.events.len(), 1, "SubscriberErased appended");
    }

    /// What the vault holds for the subscriber.
    pub async fn key_state(&self, id: &str) -> Option<KeyState> {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        self.vault.states(&[uuid]).await.unwrap().remove(&uuid)
    }

    /// The subscriber's events as stored (sealed).
    pub async fn sealed_events(&self, id: &str) -> Vec<RecordedEvent> {
        self.sealed.read_stream(&stream(id), 0).await.unwrap()
    }

    /// The subscriber's events as the service reads them (opened, or `PersonalDataErased`).
    pub async fn opened_events(&self, id: &str) -> Vec<RecordedEvent> {
        self.store.read_stream(&stream(id), 0).await.unwrap()
    }
}

/// The decoded text of a mail (all parts), for finding links.
pub fn mail_text(raw: &[u8]) -> String {
    fn walk(part: &mailparse::ParsedMail<'_>, out: &mut String) {
        if part.subparts.is_empty() {
            out.push_str(&part.get_body().unwrap_or_default());
            out.push('\n');
        }
        for sub in &part.subparts {
            walk(sub, out);
        }
    }
    let parsed = mailparse::parse_mail(raw).expect("a parseable mail");
    let mut out = String::new();
    walk(&parsed, &mut out);
    out
}

/// The `token` of the first `{base}/v1/confirm?token=…` link in a mail.
pub fn confirm_token(raw: &[u8], base: &str) -> String {
    link_token(raw, base, "/v1/confirm")
}

/// The `token` of the first `{base}{path}?token=…` link in a mail.
pub fn link_token(raw: &[u8], base: &str, path: &str) -> String {
    let text = mail_text(raw);
    let prefix = format!("{base}{path}?token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no confirm link in:\n{text}"));
    let rest = &text[start + prefix.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '&'))
        .unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request with a raw body of a given content type and an optional bearer token; returns
/// (status, JSON or Null).
pub async fn call_raw(
    svc: &Service,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &'static str,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = svc
        .client
        .request(method, svc.url(path))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every audit entry with an id above `after`, paging through `GET /admin/v1/audit` (which
/// records one `audit.read` entry per page it serves, after the page).
pub async fn audit_entries_after(svc: &Service, mut after: i64) -> Vec<Value> {
    let mut entries = Vec::new();
    loop {
        let (status, page) = svc
            .call(
                "GET",
                &format!("/admin/v1/audit?after={after}&limit=500"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "audit page: {page}");
        let batch = page["entries"].as_array().cloned().unwrap_or_default();
        entries.extend(batch);
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return entries,
        }
    }
}

/// Confirms whichever of the mails to `email` holds the link of the live request (the others'
/// links no longer work); returns the HTTP status of that confirmation.
pub async fn confirm_live_request(svc: &Service, email: &str) -> u16 {
    let mut last = 0;
    for mail in svc.outbox_mails(email) {
        let token = confirm_token(&mail, &svc.base);
        let response = svc
            .client
            .post(svc.url("/v1/confirm"))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        last = response.status().as_u16();
        if last == 200 {
            return last;
        }
    }
    last
}
