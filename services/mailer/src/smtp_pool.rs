//! [`PlainSmtpPool`]: our own pool of plain SMTP connections with `TCP_NODELAY` set.
//!
//! lettre 0.11.23 (the newest release) never sets `TCP_NODELAY` on the sockets it opens. SMTP
//! writes a command in two small writes and then waits for the reply, so Nagle's algorithm
//! holds the second write until the server's delayed ACK (40 ms on Linux): every mail cost
//! 40 ms, whatever the relay. This pool opens the TCP connection itself (tokio, `nodelay`),
//! hands it to lettre's [`AsyncSmtpConnection`] for the protocol, and keeps the connections
//! between mails.
//!
//! Used for the plain `smtp://host:port` form (a relay on the same host or network, the usual
//! set-up in front of a mail provider). The TLS and AUTH forms stay on lettre's own pooled
//! transport (see [`crate::SmtpMailTransport`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::transport::{SendError, classify_smtp, no_answer_to_noop};

/// A connection idle at least this long is checked with NOOP before it carries a mail.
pub const NOOP_AFTER_IDLE: Duration = Duration::from_millis(500);
/// A connection idle at least this long is closed instead of reused (relays drop idle
/// connections after a few minutes; this stays well below).
pub const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(60);

/// How long a goodbye (QUIT) to a connection closed for idling may take.
const QUIT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection waiting in the pool, and since when.
struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// At most `size` plain SMTP connections to one relay, reused between mails, opened with
/// `TCP_NODELAY`. A connection that failed in any way is closed, never reused.
pub struct PlainSmtpPool {
    host: String,
    port: u16,
    hello: ClientId,
    timeout: Duration,
    noop_after: Duration,
    close_after: Duration,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
}

impl std::fmt::Debug for PlainSmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainSmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PlainSmtpPool {
    /// A pool of at most `size` connections to `host:port`, greeting with `hello`; every
    /// connect and every SMTP exchange is bounded by `timeout`.
    #[must_use]
    pub fn new(host: String, port: u16, hello: ClientId, size: usize, timeout: Duration) -> Self {
        Self {
            host,
            port,
            hello,
            timeout,
            noop_after: NOOP_AFTER_IDLE,
            close_after: CLOSE_AFTER_IDLE,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// The same pool with other idle limits than [`NOOP_AFTER_IDLE`] and [`CLOSE_AFTER_IDLE`]:
    /// a connection idle `noop_after` is checked with NOOP first, one idle `close_after` is
    /// closed instead of reused.
    #[must_use]
    pub const fn with_idle_limits(mut self, noop_after: Duration, close_after: Duration) -> Self {
        self.noop_after = noop_after;
        self.close_after = close_after;
        self
    }

    /// Sends one message over a pooled connection (a new one if none is idle).
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        // The semaphore is never closed, so acquiring fails only if it were: send anyway.
        let _permit = self.permits.acquire().await.ok();
        let mut connection = self.checkout().await?;
        let body = message.formatted();
        match tokio::time::timeout(self.timeout, connection.send(message.envelope(), &body)).await {
            Ok(Ok(_)) => {
                self.check_in(connection);
                Ok(())
            }
            // lettre closed the connection on the error (its `try_smtp!`); it is dropped here.
            Ok(Err(e)) => Err(classify_smtp(&e)),
            // Cancelled mid-exchange: where the conversation stands is unknown, so close it.
            Err(_) => Err(SendError::Unavailable("SMTP timeout".to_owned())),
        }
    }

    /// Whether the relay answers NOOP now, on a pooled or new connection.
    pub async fn check(&self) -> Result<(), SendError> {
        let _permit = self.permits.acquire().await.ok();
        let mut connection = self.checkout().await?;
        if self.noop(&mut connection).await {
            self.check_in(connection);
            Ok(())
        } else {
            Err(no_answer_to_noop())
        }
    }

    /// How many connections wait in the pool now.
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// An idle connection that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(Idle {
            mut connection,
            since,
        }) = self.take_idle()
        {
            let idle_for = since.elapsed();
            if idle_for >= self.close_after {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, connection.quit()).await;
                continue;
            }
            if idle_for < self.noop_after || self.noop(&mut connection).await {
                return Ok(connection);
            }
        }
        self.connect().await
    }

    /// NOOP within the timeout; false if the connection is gone.
    async fn noop(&self, connection: &mut AsyncSmtpConnection) -> bool {
        tokio::time::timeout(self.timeout, connection.test_connected())
            .await
            .unwrap_or(false)
    }

    fn take_idle(&self) -> Option<Idle> {
        // Most recently used first: it is the likeliest to be alive and skips the NOOP.
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    fn check_in(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// A new connection: TCP with `TCP_NODELAY`, then the greeting and EHLO (lettre).
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let unavailable =
            |what: &str| SendError::Unavailable(format!("SMTP connection failed: {what}"));
        let stream = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Unavailable("SMTP timeout while connecting".to_owned()))?
        .map_err(|e| unavailable(&e.kind().to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(&e.kind().to_string()))?;
        tokio::time::timeout(
            self.timeout,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
        )
        .await
        .map_err(|_| SendError::Unavailable("SMTP timeout during the greeting".to_owned()))?
        .map_err(|e| classify_smtp(&e))
    }
}
