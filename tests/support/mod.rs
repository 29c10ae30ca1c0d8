//! Shared harness of the black-box end-to-end tests.
//!
//! Everything here is real: the `newsletter` binary built by cargo (`CARGO_BIN_EXE_newsletter`)
//! runs as a child process on a free loopback port with its own data directory, talks to a real
//! SQLite file or a fresh PostgreSQL database, and sends mail to a real SMTP server
//! (`tests/support/smtp_sink.py`, aiosmtpd) on another free loopback port. Child processes are
//! killed when their guard is dropped; every wait polls against a deadline and then fails with
//! what it last saw, so no test can hang.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long any eventual outcome (a mail, a projected status) may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How long the binary may take to become ready (a debug build, migrations, key generation).
pub const START_DEADLINE: Duration = Duration::from_secs(90);
/// How often the waits poll.
pub const POLL: Duration = Duration::from_millis(150);

/// Secret of the service token with scope `status`.
pub const STATUS_TOKEN: &str = "e2e-status-secret-5f1c0d9a7b3e4c21";
/// Secret of the service token with scope `admin` only (no `status`).
pub const ADMIN_TOKEN: &str = "e2e-admin-only-secret-8a2b4c6d0e1f3a5b";
/// The `From` address the service is configured with.
pub const MAIL_FROM: &str = "Nyhedsbrev <nyhedsbrev@e2e.example.com>";

/// A unique, recognisable address for one test subscriber.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A free TCP port on 127.0.0.1 (bound and released; the tiny race is acceptable for tests).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("local address of the ephemeral listener")
        .port()
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP sink
// ---------------------------------------------------------------------------------------------

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// The DATA, byte for byte.
    pub raw: Vec<u8>,
}

/// The real SMTP server (aiosmtpd) on a loopback port; can be stopped and started again on the
/// same port to simulate an outage. Killed on drop.
pub struct SmtpSink {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

fn python() -> String {
    std::env::var("NEWSLETTER_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn sink_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/smtp_sink.py")
}

impl SmtpSink {
    /// A sink on a free port, not yet listening (the "SMTP server is down" state).
    pub fn stopped() -> Self {
        Self {
            child: None,
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("nl-e2e-smtp-")
                .tempdir()
                .expect("temp dir for the SMTP sink"),
        }
    }

    /// A listening sink on a free port.
    pub fn start() -> Self {
        let mut sink = Self::stopped();
        sink.listen();
        sink
    }

    /// `smtp://127.0.0.1:<port>` for `NEWSLETTER_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Starts listening (again) on the same port; waits until it accepts connections.
    pub fn listen(&mut self) {
        assert!(self.child.is_none(), "the SMTP sink already runs");
        let log = self.dir.path().join("sink.stderr");
        let stderr = fs::File::create(&log).expect("create the SMTP sink's stderr log");
        let child = Command::new(python())
            .arg(sink_script())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--dir",
            ])
            .arg(self.dir.path())
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the SMTP sink ({} {}): {e}. It needs Python 3 with aiosmtpd: \
                     `python3 -m pip install aiosmtpd` (or set NEWSLETTER_TEST_PYTHON)",
                    python(),
                    sink_script().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "the SMTP sink exited at start ({status}); it needs Python 3 with aiosmtpd \
                     (`python3 -m pip install aiosmtpd`). Its stderr:\n{}",
                    tail(&log, 30)
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink did not listen on port {} within 20 s; stderr:\n{}",
                self.port,
                tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it (SIGKILL); the port refuses connections afterwards.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let mut metas: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .expect("read the SMTP sink's directory")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        metas.sort();
        metas
            .into_iter()
            .map(|meta| {
                let v: Value = serde_json::from_str(
                    &fs::read_to_string(&meta).expect("read a sink metadata file"),
                )
                .expect("sink metadata is JSON");
                let eml = self
                    .dir
                    .path()
                    .join(v["eml"].as_str().expect("sink metadata names its .eml"));
                Received {
                    mail_from: v["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    raw: fs::read(eml).expect("read a received .eml"),
                }
            })
            .collect()
    }

    /// The messages whose envelope names `rcpt` (case-insensitive).
    pub fn messages_to(&self, rcpt: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
            .collect()
    }

    /// Waits until at least `count` messages to `rcpt` arrived; returns all of them.
    pub async fn wait_for_mail(&self, rcpt: &str, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.messages_to(rcpt);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} mail(s) to {rcpt} at the SMTP sink within {DEADLINE:?}, got {}; \
                 all recipients seen: {:?}; RCPT log:\n{}",
                got.len(),
                self.messages()
                    .iter()
                    .flat_map(|m| m.rcpt_tos.clone())
                    .collect::<Vec<_>>(),
                tail(&self.dir.path().join("rcpt.log"), 20)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// RCPT attempts for `rcpt` (accepted and rejected), with their outcome and Unix time.
    pub fn rcpt_attempts(&self, rcpt: &str) -> Vec<(String, f64)> {
        let Ok(text) = fs::read_to_string(self.dir.path().join("rcpt.log")) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["rcpt"]
                    .as_str()
                    .is_some_and(|r| r.eq_ignore_ascii_case(rcpt))
            })
            .map(|v| {
                (
                    v["outcome"].as_str().unwrap_or_default().to_owned(),
                    v["time"].as_f64().unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a fresh database per test
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL server of `NEWSLETTER_TEST_DATABASE_URL`. Panics (the test fails) when the
/// variable is missing: the PostgreSQL tests are marked ignored in that case, so reaching this
/// without it means someone ran them with `--ignored` and no server.
pub fn postgres_server_url() -> String {
    match std::env::var("NEWSLETTER_TEST_DATABASE_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "NEWSLETTER_TEST_DATABASE_URL is not set: it names the PostgreSQL server for the \
             PostgreSQL variants of the end-to-end tests (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        ),
    }
}

/// A fresh database `nl_e2e_<uuid>` on the test server, dropped (WITH FORCE) on drop.
pub struct PgDatabase {
    /// Its name.
    pub name: String,
    /// The URL the service gets as `NEWSLETTER_DATABASE_URL`.
    pub url: String,
    server: String,
}

impl PgDatabase {
    /// Creates it. Fails the test if the server named by `NEWSLETTER_TEST_DATABASE_URL` is unreachable.
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let server = postgres_server_url();
        let name = format!("nl_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = tokio::time::timeout(
            Duration::from_secs(15),
            sqlx::PgConnection::connect(&server),
        )
        .await
        .unwrap_or_else(|_| panic!("connecting to NEWSLETTER_TEST_DATABASE_URL timed out"))
        .unwrap_or_else(|e| {
            panic!("NEWSLETTER_TEST_DATABASE_URL is set but its server is unreachable: {e}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE for the test");
        let _ = admin.close().await;
        let mut url = url::Url::from_str(&server).expect("NEWSLETTER_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
            server,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let connect = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect(&server),
                )
                .await;
                if let Ok(Ok(mut admin)) = connect {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(20),
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin),
                    )
                    .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Which event store / read-model database the service under test uses.
pub enum Backend {
    /// The embedded default (SQLite in the data dir).
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres(PgDatabase),
}

impl Backend {
    /// The embedded default.
    pub fn sqlite() -> Self {
        Self::Sqlite
    }

    /// A fresh PostgreSQL database (fails the test if the server is unreachable).
    pub async fn postgres() -> Self {
        Self::Postgres(PgDatabase::create().await)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------------------------

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text (lossy).
    pub body: String,
    /// What was asked, for messages.
    pub request: String,
}

impl Resp {
    async fn read(request: String, r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Self {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            request,
        }
    }

    /// The Content-Type without parameters, lower-case ("" when absent).
    pub fn content_type(&self) -> String {
        self.header(CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The body as JSON, or fail the test.
    pub fn json_or_fail(&self) -> Value {
        self.json()
            .unwrap_or_else(|| panic!("expected a JSON body: {}", self.describe()))
    }

    /// One line (plus a body excerpt) for failure messages.
    pub fn describe(&self) -> String {
        let body: String = self.body.chars().take(600).collect();
        format!(
            "{} -> {} [{}] {}",
            self.request,
            self.status,
            self.header("content-type").unwrap_or_default(),
            body.replace('\n', " ")
        )
    }

    /// Asserts the status.
    pub fn expect_status(&self, want: u16) -> &Self {
        assert_eq!(self.status, want, "unexpected status: {}", self.describe());
        self
    }

    /// Asserts a 2xx status.
    pub fn expect_success(&self) -> &Self {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx: {}",
            self.describe()
        );
        self
    }

    /// Asserts the content type (without parameters).
    pub fn expect_content_type(&self, want: &str) -> &Self {
        assert_eq!(
            self.content_type(),
            want,
            "unexpected content type: {}",
            self.describe()
        );
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The service under test
// ---------------------------------------------------------------------------------------------

/// Settings before start.
pub struct ServiceBuilder {
    env: BTreeMap<String, String>,
    backend: Backend,
    use_data_dir: bool,
    args: Vec<String>,
}

/// The running `newsletter` binary. Killed on drop; on a failing test its log tail is printed.
pub struct Service {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:<port>`, also its `NEWSLETTER_PUBLIC_URL`.
    pub base: String,
    /// The HTTP client (no redirects followed, no pooled connections, 30 s per request).
    pub client: reqwest::Client,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    /// Data dir (or working dir, when the test uses the default data dir).
    home: TempDir,
    logs: TempDir,
    starts: u32,
    /// Keeps the PostgreSQL database alive as long as the service.
    backend: Backend,
}

/// Polls `url` until it answers `want` (within [`START_DEADLINE`]); fails with the last answer.
pub async fn wait_http_status(client: &reqwest::Client, url: &str, want: u16, what: &str) {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let got = client
            .get(url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never answered {want} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_newsletter")
}

/// A `Command` for the binary with every inherited `NEWSLETTER_*` variable removed.
pub fn newsletter_command() -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NEWSLETTER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The HTTP client the tests use.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build the HTTP client")
}

impl ServiceBuilder {
    /// Sets (or overrides) a setting.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    /// Removes a setting.
    pub fn without(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    /// Sends mail through this sink.
    pub fn smtp(self, sink: &SmtpSink) -> Self {
        let url = sink.url();
        self.env("NEWSLETTER_SMTP_URL", url)
    }

    /// Uses this database.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Leaves `NEWSLETTER_DATA_DIR` unset and runs in a fresh working directory instead
    /// (so the default `./data` is used).
    pub fn default_data_dir(mut self) -> Self {
        self.use_data_dir = false;
        self
    }

    /// Runs another subcommand than `serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Starts the binary and waits until `GET /health/ready` answers 200.
    pub async fn start(self) -> Service {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let home = tempfile::Builder::new()
            .prefix("nl-e2e-home-")
            .tempdir()
            .expect("temp data dir");
        let logs = tempfile::Builder::new()
            .prefix("nl-e2e-logs-")
            .tempdir()
            .expect("temp log dir");
        let mut env = self.env;
        env.entry("NEWSLETTER_LISTEN".into())
            .or_insert(format!("127.0.0.1:{port}"));
        env.entry("NEWSLETTER_PUBLIC_URL".into())
            .or_insert(base.clone());
        if self.use_data_dir {
            env.entry("NEWSLETTER_DATA_DIR".into())
                .or_insert(home.path().join("data").to_string_lossy().into_owned());
        }
        if let Backend::Postgres(db) = &self.backend {
            env.entry("NEWSLETTER_DATABASE_URL".into())
                .or_insert(db.url.clone());
        }
        let mut service = Service {
            child: None,
            port,
            base,
            client: http_client(),
            env,
            args: self.args,
            home,
            logs,
            starts: 0,
            backend: self.backend,
        };
        service.start_again().await;
        service
    }
}

impl Service {
    /// The defaults every test starts from: SQLite, outbox (no SMTP), lists `newsletter,offers`,
    /// a `status` token and an `admin`-only token, no signup rate limit, fast mail retries.
    pub fn builder() -> ServiceBuilder {
        ServiceBuilder {
            env: BTreeMap::from([
                ("NEWSLETTER_LISTS".into(), "newsletter,offers".into()),
                (
                    "NEWSLETTER_TOKENS".into(),
                    format!("reader:{STATUS_TOKEN}:status,dpo:{ADMIN_TOKEN}:admin"),
                ),
                ("NEWSLETTER_MAIL_FROM".into(), MAIL_FROM.into()),
                ("NEWSLETTER_SIGNUP_RATE_LIMIT".into(), "0".into()),
                ("NEWSLETTER_MAIL_RETRY_BASE".into(), "100ms".into()),
                ("RUST_LOG".into(), "info".into()),
                ("RUST_BACKTRACE".into(), "1".into()),
                ("NO_COLOR".into(), "1".into()),
            ]),
            backend: Backend::Sqlite,
            use_data_dir: true,
            args: vec!["serve".into()],
        }
    }

    /// The data directory (`<home>/data`; also when the default `./data` is used).
    pub fn data_dir(&self) -> PathBuf {
        self.env
            .get("NEWSLETTER_DATA_DIR")
            .map_or_else(|| self.home.path().join("data"), PathBuf::from)
    }

    /// `<data dir>/outbox`.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir().join("outbox")
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process (SIGKILL: nothing acknowledged may be lost).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to exit; returns whether it
    /// exited successfully. Fails the test if it does not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            panic!("the service is not running");
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not send SIGTERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the service did not stop within {limit:?} of SIGTERM.\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process (again, with the same settings, data dir and database) and waits
    /// until it is ready.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the service already runs");
        self.starts += 1;
        let out = fs::File::create(self.logs.path().join(format!("stdout.{}", self.starts)))
            .expect("create stdout log");
        let err = fs::File::create(self.logs.path().join(format!("stderr.{}", self.starts)))
            .expect("create stderr log");
        let mut cmd = newsletter_command();
        cmd.args(&self.args)
            .envs(&self.env)
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary())),
        );
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                panic!(
                    "`newsletter {}` exited before it was ready ({status}).\n{}",
                    self.args.join(" "),
                    self.log_tail()
                );
            }
            let last = match self.client.get(self.url("/health/ready")).send().await {
                Ok(r) if r.status().as_u16() == 200 => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "GET /health/ready did not answer 200 within {START_DEADLINE:?} (last: {last}).\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts another role of the binary (`projector`, `mailer`, `api`, …) with the same settings,
    /// data dir and database, plus `overrides`; killed when the guard is dropped.
    pub fn spawn_role(&self, role: &str, overrides: &[(&str, String)]) -> RoleProcess {
        let name = format!("{role}-{}", free_port());
        let out = fs::File::create(self.logs.path().join(format!("{name}.stdout")))
            .expect("create role stdout log");
        let err_path = self.logs.path().join(format!("{name}.stderr"));
        let err = fs::File::create(&err_path).expect("create role stderr log");
        let mut cmd = newsletter_command();
        cmd.arg(role)
            .envs(&self.env)
            .envs(overrides.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `newsletter {role}`: {e}"));
        RoleProcess {
            child: Some(child),
            role: role.to_owned(),
            stderr: err_path,
        }
    }

    /// Runs a one-shot subcommand (e.g. `rebuild-projections`) with the same settings; waits at
    /// most `limit`, then kills it and fails. Returns (success, stdout + stderr).
    pub fn run_once(&self, args: &[&str], limit: Duration) -> (bool, String) {
        let out_path = self.logs.path().join(format!("once-{}.out", free_port()));
        let out = fs::File::create(&out_path).expect("create one-shot log");
        let err = out.try_clone().expect("clone one-shot log handle");
        let mut child = newsletter_command()
            .args(args)
            .envs(&self.env)
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `newsletter {}`: {e}", args.join(" ")));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (
                    status.success(),
                    fs::read_to_string(&out_path).unwrap_or_default(),
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`newsletter {}` did not finish within {limit:?}:\n{}",
                    args.join(" "),
                    tail(&out_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the current run's stdout and stderr.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        for stream in ["stdout", "stderr"] {
            let path = self.logs.path().join(format!("{stream}.{}", self.starts));
            let _ = writeln!(s, "--- newsletter {stream} (run {}) ---", self.starts);
            let _ = writeln!(s, "{}", tail(&path, 40));
        }
        s
    }

    /// Everything the service logged so far (all runs), for leak checks.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for run in 1..=self.starts {
            for stream in ["stdout", "stderr"] {
                let path = self.logs.path().join(format!("{stream}.{run}"));
                s.push_str(&fs::read_to_string(path).unwrap_or_default());
            }
        }
        s
    }

    // --- requests -----------------------------------------------------------------------------

    async fn send(&self, what: String, req: reqwest::RequestBuilder) -> Resp {
        match req.send().await {
            Ok(r) => Resp::read(what, r).await,
            Err(e) => panic!("{what}: no HTTP response: {e}\n{}", self.log_tail()),
        }
    }

    /// GET a path (or absolute URL).
    pub async fn get(&self, path_or_url: &str) -> Resp {
        let url = self.absolute(path_or_url);
        self.send(
            format!("GET {url}"),
            self.client.get(&url).header("accept", BROWSER_ACCEPT),
        )
        .await
    }

    fn absolute(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.url(path_or_url)
        }
    }

    /// POST an urlencoded form (fields may repeat), as a browser does.
    pub async fn post_form(&self, path_or_url: &str, fields: &[(&str, &str)]) -> Resp {
        let url = self.absolute(path_or_url);
        self.send(
            format!("POST {url} (form {fields:?})"),
            self.client
                .post(&url)
                .header("accept", BROWSER_ACCEPT)
                .form(fields),
        )
        .await
    }

    /// POST a JSON body as a `fetch` client does.
    pub async fn post_json(&self, path_or_url: &str, body: &Value) -> Resp {
        let url = self.absolute(path_or_url);
        self.send(
            format!("POST {url} (json {body})"),
            self.client
                .post(&url)
                .header("accept", "application/json")
                .json(body),
        )
        .await
    }

    /// POST raw bytes with the given content type (None: no Content-Type header) and Accept.
    pub async fn post_raw(
        &self,
        path_or_url: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Vec<u8>,
    ) -> Resp {
        let url = self.absolute(path_or_url);
        let shown: String = String::from_utf8_lossy(&body).chars().take(120).collect();
        let mut req = self.client.post(&url).header("accept", accept).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(format!("POST {url} ({content_type:?}: {shown})"), req)
            .await
    }

    /// The RFC 8058 one-click unsubscribe POST to an unsubscribe URL.
    pub async fn one_click(&self, unsubscribe_url: &str) -> Resp {
        self.post_raw(
            unsubscribe_url,
            Some("application/x-www-form-urlencoded"),
            "*/*",
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await
    }

    /// POST /v1/subscriptions as a form.
    pub async fn signup_form(&self, fields: &[(&str, &str)]) -> Resp {
        self.post_form("/v1/subscriptions", fields).await
    }

    /// POST /v1/subscriptions as JSON.
    pub async fn signup_json(&self, body: &Value) -> Resp {
        self.post_json("/v1/subscriptions", body).await
    }

    /// GET an internal endpoint with a bearer token (None: no Authorization header).
    pub async fn internal_get(&self, path: &str, token: Option<&str>) -> Resp {
        let url = self.url(path);
        let mut req = self.client.get(&url).header("accept", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(format!("GET {url}"), req).await
    }

    /// POST JSON to an internal endpoint with a bearer token.
    pub async fn internal_post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let url = self.url(path);
        let mut req = self
            .client
            .post(&url)
            .header("accept", "application/json")
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let shown: String = body.to_string().chars().take(200).collect();
        self.send(format!("POST {url} ({shown})"), req).await
    }

    /// `POST /internal/v1/subscribers/lookup` for one address: the subscriber, if known.
    pub async fn lookup(&self, email: &str) -> Option<Value> {
        let r = self
            .internal_post(
                "/internal/v1/subscribers/lookup",
                Some(STATUS_TOKEN),
                &json!({ "emails": [email] }),
            )
            .await;
        r.expect_status(200);
        let v = r.json_or_fail();
        let subs = v["subscribers"].as_array().unwrap_or_else(|| {
            panic!("lookup answer has no `subscribers` array: {}", r.describe())
        });
        subs.iter()
            .find(|s| {
                s["email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .cloned()
    }

    /// Waits until the lookup knows `email`; returns its record.
    pub async fn wait_lookup(&self, email: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.lookup(email).await {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the lookup did not know {email} within {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the lookup (which reads the SQL read models) shows `want` on `list` for
    /// `email`, and returns its document; after the deadline returns the last answer, so the
    /// caller's assertion reports it. Status by id answers from the API's in-memory view, which
    /// follows the log separately and may be ahead of the read models for a moment.
    pub async fn wait_lookup_status(&self, email: &str, list: &str, want: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let found = self.wait_lookup(email).await;
            if list_status(&found, list).as_deref() == Some(want) || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the lookup knows `email` and returns its id.
    pub async fn subscriber_id(&self, email: &str) -> String {
        let s = self.wait_lookup(email).await;
        s["id"]
            .as_str()
            .unwrap_or_else(|| panic!("lookup record without a string `id`: {s}"))
            .to_owned()
    }

    /// `GET /internal/v1/subscribers/{id}` (200 expected).
    pub async fn subscriber(&self, id: &str) -> Value {
        let r = self
            .internal_get(
                &format!("/internal/v1/subscribers/{id}"),
                Some(STATUS_TOKEN),
            )
            .await;
        r.expect_status(200);
        r.json_or_fail()
    }

    /// Waits until subscriber `id` has `want` on `list` (by id); returns the record.
    pub async fn wait_status(&self, id: &str, list: &str, want: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = self
                .internal_get(
                    &format!("/internal/v1/subscribers/{id}"),
                    Some(STATUS_TOKEN),
                )
                .await;
            if r.status == 200
                && let Some(v) = r.json()
                && list_status(&v, list).as_deref() == Some(want)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "subscriber {id} did not reach `{want}` on list `{list}` within {DEADLINE:?}; last: {}",
                r.describe()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until subscriber `id`'s status on `list` is one of `wanted`; returns it.
    pub async fn wait_status_in(&self, id: &str, list: &str, wanted: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = self
                .internal_get(
                    &format!("/internal/v1/subscribers/{id}"),
                    Some(STATUS_TOKEN),
                )
                .await;
            if r.status == 200
                && let Some(v) = r.json()
                && let Some(s) = list_status(&v, list)
                && wanted.contains(&s.as_str())
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "subscriber {id} did not reach any of {wanted:?} on `{list}` within {DEADLINE:?}; last: {}",
                r.describe()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `unsubscribe_url` of `email` in the listing of `list` with `status` (e.g. `pending`:
    /// the only way for a black-box test to get an unsubscribe link before confirmation).
    pub async fn unsubscribe_url(&self, list: &str, status: &str, email: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let all = self.list_all(list, status, 100).await;
            if let Some(entry) = all.iter().find(|e| {
                e["email"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(email))
            }) {
                return entry["unsubscribe_url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("listing entry without unsubscribe_url: {entry}"))
                    .to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{email} not in the `{status}` listing of `{list}` within {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `email` is no longer in the listing of `list` with `status`. Listings come
    /// from the SQL read model, status by id from the API's in-memory view: after a change the
    /// two may disagree for a moment.
    pub async fn wait_unlisted(&self, list: &str, status: &str, email: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let all = self.list_all(list, status, 100).await;
            if !all.iter().any(|e| {
                e["email"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(email))
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{email} still in the `{status}` listing of `{list}` after {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every subscriber of `list` with `status`, following `next` cursors (page size `limit`).
    pub async fn list_all(&self, list: &str, status: &str, limit: u32) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let mut path =
                format!("/internal/v1/lists/{list}/subscribers?status={status}&limit={limit}");
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(
                    &url::form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>(),
                );
            }
            let r = self.internal_get(&path, Some(STATUS_TOKEN)).await;
            r.expect_status(200);
            let v = r.json_or_fail();
            let page = v["subscribers"]
                .as_array()
                .unwrap_or_else(|| panic!("listing without `subscribers`: {}", r.describe()));
            all.extend(page.iter().cloned());
            match &v["next"] {
                Value::Null => return all,
                Value::String(s) => after = Some(s.clone()),
                other => panic!("listing `next` is neither a string nor null: {other}"),
            }
        }
        panic!("listing of {list} did not end after 1000 pages");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        kill_child(&mut self.child);
    }
}

/// Another role of the binary started by [`Service::spawn_role`]; killed on drop.
pub struct RoleProcess {
    child: Option<Child>,
    role: String,
    stderr: PathBuf,
}

impl RoleProcess {
    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "`newsletter {}` exited ({status}):\n{}",
                self.role,
                tail(&self.stderr, 40)
            );
        }
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- newsletter {} stderr ---\n{}",
                self.role,
                tail(&self.stderr, 40)
            );
        }
        kill_child(&mut self.child);
    }
}

/// What a browser sends as `Accept` for a page or a form post.
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The status of `list` in a subscriber record (`lists: [{list, status, since}]`).
pub fn list_status(subscriber: &Value, list: &str) -> Option<String> {
    subscriber["lists"].as_array()?.iter().find_map(|l| {
        (l["list"].as_str() == Some(list)).then(|| l["status"].as_str().map(str::to_owned))?
    })
}

/// A JSON value's text, searched case-insensitively for `needle` (for tolerant checks such as
/// "the problem's `errors` name the field `email`").
pub fn mentions(v: &Value, needle: &str) -> bool {
    v.to_string()
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// The `(List-Unsubscribe, List-Unsubscribe-Post)` values of a listing entry, accepting an object
/// `{"List-Unsubscribe": …}` (any case) or an array of `[name, value]` pairs or `{name, value}` objects.
pub fn unsubscribe_headers(entry: &Value) -> (Option<String>, Option<String>) {
    let h = &entry["list_unsubscribe_headers"];
    let mut pairs: Vec<(String, String)> = Vec::new();
    match h {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    pairs.push((k.clone(), s.to_owned()));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Array(kv) if kv.len() == 2 => {
                        if let (Some(k), Some(v)) = (kv[0].as_str(), kv[1].as_str()) {
                            pairs.push((k.to_owned(), v.to_owned()));
                        }
                    }
                    Value::Object(o) => {
                        let k = o.get("name").and_then(Value::as_str);
                        let v = o.get("value").and_then(Value::as_str);
                        if let (Some(k), Some(v)) = (k, v) {
                            pairs.push((k.to_owned(), v.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    (find("List-Unsubscribe"), find("List-Unsubscribe-Post"))
}

// ---------------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------------

/// A parsed mail: headers, MIME structure, and the decoded text and HTML bodies.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Top-level headers, decoded (name, value).
    pub headers: Vec<(String, String)>,
    /// Every part's MIME type, depth first (the top level first).
    pub mime_types: Vec<String>,
    /// Whether a multipart/alternative part has both a text/plain and a text/html child.
    pub alternative_text_and_html: bool,
    /// Decoded text/plain body.
    pub text: Option<String>,
    /// Decoded text/html body.
    pub html: Option<String>,
    /// Raw bytes.
    pub raw: Vec<u8>,
}

fn walk(part: &mailparse::ParsedMail<'_>, mail: &mut Mail) {
    let mime = part.ctype.mimetype.to_ascii_lowercase();
    mail.mime_types.push(mime.clone());
    if mime == "multipart/alternative" {
        let kids: Vec<String> = part
            .subparts
            .iter()
            .map(|p| p.ctype.mimetype.to_ascii_lowercase())
            .collect();
        if kids.iter().any(|k| k == "text/plain") && kids.iter().any(|k| k == "text/html") {
            mail.alternative_text_and_html = true;
        }
    }
    if mime == "text/plain" && mail.text.is_none() {
        mail.text = part.get_body().ok();
    }
    if mime == "text/html" && mail.html.is_none() {
        mail.html = part.get_body().ok();
    }
    for sub in &part.subparts {
        walk(sub, mail);
    }
}

impl Mail {
    /// Parses an RFC 5322 message.
    pub fn parse(raw: &[u8]) -> Self {
        let parsed = mailparse::parse_mail(raw).unwrap_or_else(|e| {
            panic!(
                "the mail does not parse ({e}):\n{}",
                String::from_utf8_lossy(raw)
            )
        });
        let mut mail = Self {
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            mime_types: Vec::new(),
            alternative_text_and_html: false,
            text: None,
            html: None,
            raw: raw.to_vec(),
        };
        walk(&parsed, &mut mail);
        mail
    }

    /// A top-level header (first occurrence, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The first link starting with `prefix` in `body` (HTML entities `&amp;` decoded).
    pub fn link_in(body: &str, prefix: &str) -> Option<String> {
        let start = body.find(prefix)?;
        let rest = &body[start..];
        let end = rest
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']' | '`')
            })
            .unwrap_or(rest.len());
        Some(rest[..end].replace("&amp;", "&"))
    }

    /// The first link starting with `prefix`, from the text part (else the HTML part).
    pub fn link(&self, prefix: &str) -> Option<String> {
        self.text
            .as_deref()
            .and_then(|t| Self::link_in(t, prefix))
            .or_else(|| self.html.as_deref().and_then(|h| Self::link_in(h, prefix)))
    }

    /// Text and HTML bodies together (for language checks).
    pub fn all_text(&self) -> String {
        format!(
            "{}\n{}",
            self.text.as_deref().unwrap_or_default(),
            self.html.as_deref().unwrap_or_default()
        )
    }
}

/// The `token` query parameter of a link.
pub fn token_of(link: &str) -> String {
    let url = url::Url::parse(link).unwrap_or_else(|e| panic!("not a URL: {link}: {e}"));
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no token parameter in {link}"))
}

/// The links a confirmation mail must carry.
#[derive(Debug, Clone)]
pub struct ConfirmationLinks {
    /// `{PUBLIC_URL}/v1/confirm?token=…`
    pub confirm: String,
    /// The "this wasn't me" link. The issue named `{PUBLIC_URL}/v1/unsubscribe?token=…`; the
    /// service's README documents `{PUBLIC_URL}/v1/cancel?token=…` (cancels that pending request
    /// only). This must be the documented `/v1/cancel` link.
    pub wasnt_me: String,
}

impl ConfirmationLinks {
    /// Finds both links in a confirmation mail of the service at `base`, or fails the test.
    pub fn of(mail: &Mail, base: &str) -> Self {
        let confirm = mail
            .link(&format!("{base}/v1/confirm?token="))
            .unwrap_or_else(|| {
                panic!(
                    "no {base}/v1/confirm?token=… link in the mail:\n{}",
                    mail.all_text()
                )
            });
        let wasnt_me = mail
            .link(&format!("{base}/v1/cancel?token="))
            .unwrap_or_else(|| {
                panic!(
                    "no {base}/v1/cancel?token=… (\"this wasn't me\") link in the mail:\n{}",
                    mail.all_text()
                )
            });
        Self { confirm, wasnt_me }
    }

    /// The confirm token.
    pub fn confirm_token(&self) -> String {
        token_of(&self.confirm)
    }
}

/// The `.eml` files in a directory (recursively one level), sorted by name.
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(eml_files(&p));
        } else if p.extension().is_some_and(|x| x == "eml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The outbox mails addressed to `rcpt` (To header or file content).
pub fn outbox_mails_to(dir: &Path, rcpt: &str) -> Vec<Mail> {
    eml_files(dir)
        .into_iter()
        .filter_map(|p| fs::read(p).ok())
        .filter(|raw| {
            String::from_utf8_lossy(raw)
                .to_ascii_lowercase()
                .contains(&rcpt.to_ascii_lowercase())
        })
        .map(|raw| Mail::parse(&raw))
        .collect()
}

/// Waits until at least `count` outbox mails to `rcpt` exist.
pub async fn wait_outbox(dir: &Path, rcpt: &str, count: usize) -> Vec<Mail> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = outbox_mails_to(dir, rcpt);
        if got.len() >= count {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} .eml file(s) to {rcpt} in {} within {DEADLINE:?}, found {} (files: {:?})",
            dir.display(),
            got.len(),
            eml_files(dir)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Reads a line-oriented child stream fully (for the CLI tests).
pub fn read_all(r: impl std::io::Read) -> String {
    BufReader::new(r)
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n")
}
