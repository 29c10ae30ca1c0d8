//! Real parts for the mailer's tests: a SQLite event store in a temporary directory, a
//! file-backed checkpoint store, a settable clock and a real SMTP server on loopback
//! (mailin-embedded).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use lettre::message::Mailbox;
use newsletter_domain::{
    ActorName, ConsentEvidence, EmailAddress, ListCatalog, ListId, Locale, PersonName,
    PolicyVersion, Profile, ReasonText, RequestId, Subscriber, SubscriberCommand, SubscriberEvent,
    SubscriberId,
};
use newsletter_eventstore::command::execute;
use newsletter_eventstore::{
    Clock, EventMetadata, EventStore, Position, RecordedEvent, SqliteConfig, SqliteEventStore,
    StreamId,
};
use newsletter_mailer::{
    CheckpointError, CheckpointStore, MailTransport, Mailer, MailerConfig, MailerStats, RetryPolicy,
};
use newsletter_tokens::KeyRing;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;
use uuid::Uuid;

/// 2026-11-25 09:00 UTC.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap()
}

/// A clock tests move by hand.
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    pub fn at(now: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(now)))
    }
    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap() = now;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Checkpoints as one small file per name, replaced atomically (write, then rename).
pub struct FileCheckpoints {
    dir: PathBuf,
}

impl FileCheckpoints {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        Arc::new(Self { dir })
    }
}

#[async_trait]
impl CheckpointStore for FileCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        match tokio::fs::read_to_string(self.dir.join(name)).await {
            Ok(text) => {
                let (commit, prepare) = text
                    .trim()
                    .split_once('/')
                    .ok_or_else(|| CheckpointError::new(name, "corrupt", "no slash"))?;
                let parse = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|e| CheckpointError::new(name, "corrupt", e))
                };
                Ok(Some(Position::new(parse(commit)?, parse(prepare)?)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CheckpointError::new(name, "read", e)),
        }
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), CheckpointError> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        tokio::fs::write(&tmp, position.to_string())
            .await
            .map_err(|e| CheckpointError::new(name, "write", e))?;
        tokio::fs::rename(&tmp, self.dir.join(name))
            .await
            .map_err(|e| CheckpointError::new(name, "rename", e))
    }
}

/// One mail as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Clone)]
struct Catcher {
    inbox: Arc<Mutex<Vec<Received>>>,
    /// The reply to RCPT: 250, 550 (no such mailbox) or 451 (try again later).
    rcpt_reply: u16,
    current: Option<Received>,
    /// EHLO/HELO greetings seen: one per SMTP session (no STARTTLS here).
    greetings: Arc<AtomicUsize>,
}

impl mailin_embedded::Handler for Catcher {
    fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> mailin_embedded::Response {
        self.greetings.fetch_add(1, Ordering::SeqCst);
        mailin_embedded::response::OK
    }

    fn rcpt(&mut self, _to: &str) -> mailin_embedded::Response {
        match self.rcpt_reply {
            550 => mailin_embedded::response::NO_MAILBOX,
            451 => mailin_embedded::response::INTERNAL_ERROR,
            _ => mailin_embedded::response::OK,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.current = Some(Received {
            from: from.to_owned(),
            to: to.to_vec(),
            data: Vec::new(),
        });
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(current) = self.current.as_mut() {
            current.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        if let Some(done) = self.current.take() {
            self.inbox.lock().unwrap().push(done);
        }
        mailin_embedded::response::OK
    }
}

/// A real SMTP server on a loopback port. It runs on its own thread until the test process
/// ends (mailin-embedded has no stop).
pub struct SmtpServer {
    pub port: u16,
    inbox: Arc<Mutex<Vec<Received>>>,
    greetings: Arc<AtomicUsize>,
}

impl SmtpServer {
    /// A free loopback port with nothing listening on it (yet).
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Starts a server on `port` (0: any free port).
    pub fn start_on(port: u16, reject_recipients: bool) -> Self {
        Self::start_replying(port, if reject_recipients { 550 } else { 250 })
    }

    /// Starts a server that answers every RCPT with `rcpt_reply` (250, 550 or 451).
    pub fn start_replying(port: u16, rcpt_reply: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let greetings = Arc::new(AtomicUsize::new(0));
        let mut server = mailin_embedded::Server::new(Catcher {
            inbox: Arc::clone(&inbox),
            rcpt_reply,
            current: None,
            greetings: Arc::clone(&greetings),
        });
        server
            .with_name("smtp.test")
            .with_num_threads(8)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self {
            port,
            inbox,
            greetings,
        }
    }

    pub fn start() -> Self {
        Self::start_on(0, false)
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// SMTP sessions opened so far (each greets once).
    pub fn sessions(&self) -> usize {
        self.greetings.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }
}

/// The store, checkpoints, keys and clock of one test, in a temporary directory.
pub struct World {
    pub dir: TempDir,
    pub store: Arc<dyn EventStore>,
    pub checkpoints: Arc<FileCheckpoints>,
    pub keys: Arc<KeyRing>,
    pub clock: Arc<TestClock>,
}

impl World {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
                .await
                .unwrap(),
        );
        let checkpoints = FileCheckpoints::new(dir.path().join("checkpoints"));
        Self {
            dir,
            store,
            checkpoints,
            keys: Arc::new(KeyRing::generate()),
            clock: TestClock::at(t0()),
        }
    }

    pub fn config(&self) -> MailerConfig {
        let mut config = MailerConfig::new(
            Url::parse("https://news.example.com/").unwrap(),
            "OCTOPUS <noreply@octopus.example>"
                .parse::<Mailbox>()
                .unwrap(),
            Url::parse("https://octopus.example/privatlivspolitik").unwrap(),
        );
        config.retry = RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_attempts: 100,
        };
        config.poll_interval = Duration::from_millis(50);
        config
    }

    /// Starts a mailer; the returned handle stops it.
    pub fn start(&self, transport: Arc<dyn MailTransport>, config: MailerConfig) -> Running {
        self.start_on(Arc::clone(&self.store), transport, config)
    }

    /// Starts a mailer that reads and writes through `store` (this world's store, decorated).
    pub fn start_on(
        &self,
        store: Arc<dyn EventStore>,
        transport: Arc<dyn MailTransport>,
        config: MailerConfig,
    ) -> Running {
        let mailer = Mailer::new(
            store,
            self.checkpoints.clone(),
            transport,
            Arc::clone(&self.keys),
            config,
            self.clock.clone(),
        );
        let stats = mailer.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mailer.run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
            stats,
        }
    }

    pub async fn request(
        &self,
        subscriber: SubscriberId,
        request: RequestId,
        email: &str,
        locale: Locale,
        lists: &[&str],
    ) {
        let now = self.clock.now();
        let command = SubscriberCommand::RequestSubscription {
            request_id: request,
            lists: list_set(lists),
            email: EmailAddress::parse(email).unwrap(),
            profile: Profile {
                name: Some(PersonName::parse("Søren Kierkegaard").unwrap()),
                ..Profile::default()
            },
            locale,
            consent: ConsentEvidence {
                policy_version: PolicyVersion::parse("2026-11").unwrap(),
                source: None,
                at: now,
                ip: None,
                user_agent: None,
            },
            confirm_by: now + TimeDelta::days(7),
        };
        self.execute(subscriber, command).await;
    }

    /// A fresh request of `subscriber` for the news list, in Danish.
    pub async fn request_news(&self, subscriber: SubscriberId, email: &str) {
        self.request(subscriber, new_request(), email, Locale::Da, &["news"])
            .await;
    }

    pub async fn execute(&self, subscriber: SubscriberId, command: SubscriberCommand) {
        execute::<Subscriber>(
            &*self.store,
            &*self.clock,
            &stream(subscriber),
            &command,
            &EventMetadata {
                actor: Some("test".to_owned()),
                ..EventMetadata::default()
            },
        )
        .await
        .unwrap();
    }

    pub async fn restrict(&self, subscriber: SubscriberId) {
        self.execute(
            subscriber,
            SubscriberCommand::Restrict {
                actor: ActorName::parse("dpo").unwrap(),
                reason: ReasonText::parse("asked by phone").unwrap(),
            },
        )
        .await;
    }

    /// The stream's recorded events with their decoded form.
    pub async fn events(&self, subscriber: SubscriberId) -> Vec<(RecordedEvent, SubscriberEvent)> {
        self.store
            .read_stream(&stream(subscriber), 0)
            .await
            .unwrap()
            .into_iter()
            .map(|recorded| {
                let event = recorded.decode::<SubscriberEvent>().unwrap();
                (recorded, event)
            })
            .collect()
    }
}

pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    pub stats: Arc<MailerStats>,
}

impl Running {
    /// Signals shutdown and waits (at most 5 s) for the mailer to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the mailer stops promptly")
            .unwrap();
    }
}

pub fn stream(subscriber: SubscriberId) -> StreamId {
    StreamId::new(subscriber.stream_name()).unwrap()
}

pub fn list_set(ids: &[&str]) -> BTreeSet<ListId> {
    let catalog = ListCatalog::new(["news", "events", "product"]).unwrap();
    ids.iter().map(|id| catalog.parse(id).unwrap()).collect()
}

pub fn new_subscriber() -> SubscriberId {
    SubscriberId::from_uuid(Uuid::now_v7())
}

pub fn new_request() -> RequestId {
    RequestId::from_uuid(Uuid::now_v7())
}

/// Waits until `check` holds, polling every 20 ms, for at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
