//! The [`MailTransport`] port and its adapters: SMTP ([`SmtpMailTransport`], over
//! [`crate::PlainSmtpPool`] or lettre's pool) and a directory of
//! `.eml` files ([`FileMailTransport`], the default outbox when no SMTP URL is configured).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::smtp_pool::PlainSmtpPool;
use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why a mail was not handed over. The message never holds personal data (SMTP reply texts,
/// which often quote the address, are left out; only the reply code is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The relay (or the outbox) cannot be reached: connection refused or reset, timeouts.
    /// Nothing was refused, so the mailer waits and tries again without limit: an outage of
    /// any length delays mail, it never loses it.
    #[error("mail relay unavailable: {0}")]
    Unavailable(String),
    /// The relay answered with a 4xx reply (greylisting, a full mailbox): retried a limited
    /// number of times, then recorded as a failure.
    #[error("transient mail failure: {0}")]
    Transient(String),
    /// Retrying will not help: 5xx replies, an address the relay or the mail library refuses.
    #[error("permanent mail failure: {0}")]
    Permanent(String),
}

impl SendError {
    /// True for [`SendError::Permanent`].
    #[must_use]
    pub const fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }
}

/// Hands finished mails to whatever delivers them.
#[async_trait]
pub trait MailTransport: Send + Sync + 'static {
    /// Sends one message; returns once the relay (or outbox) has accepted it.
    async fn send(&self, message: Message) -> Result<(), SendError>;

    /// A short name for logs (`smtp`, `file`).
    fn name(&self) -> &'static str;

    /// Whether mail could be handed over now (the relay answers, the outbox exists), for the
    /// mailer role's readiness. Sends nothing.
    async fn check(&self) -> Result<(), SendError> {
        Ok(())
    }
}

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The SMTP URL was not accepted (the URL is not echoed: it may hold a password).
    #[error("invalid SMTP URL (expected smtp://host:port or smtps://user:pass@host): {0}")]
    InvalidUrl(#[source] lettre::transport::smtp::Error),
    /// A TLS or credential form was built outside a Tokio runtime (lettre's pool spawns its
    /// idle-connection reaper on the current runtime, and would panic without one).
    #[error("the SMTP transport for a TLS or credential URL must be built within a Tokio runtime")]
    NoRuntime,
    /// The outbox directory could not be created.
    #[error("cannot create the mail outbox directory {path}: {source}")]
    Outbox {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// SMTP delivery with pooled connections.
///
/// URL forms (lettre's): `smtp://host:port` (plain, for a relay on the same host or network or
/// a test server), `smtp://host:587?tls=required` (STARTTLS), `smtps://user:pass@host` (implicit
/// TLS, port 465). A path sets the EHLO name (`smtp://relay:25/mail.example.com`).
///
/// The plain form without credentials goes through [`PlainSmtpPool`], which sets `TCP_NODELAY`
/// (lettre 0.11.23 does not, and Nagle's algorithm then costs 40 ms per mail). The TLS forms
/// and any form with credentials go through lettre's own pooled transport (rustls with the
/// `ring` provider and the webpki root certificates); they keep the 40 ms until lettre releases
/// its `TCP_NODELAY` change. Either way at most [`SMTP_CONNECTIONS`] exchanges run at once.
#[derive(Clone)]
pub struct SmtpMailTransport {
    delivery: Delivery,
}

/// The two ways [`SmtpMailTransport`] delivers.
#[derive(Clone)]
enum Delivery {
    /// Plain SMTP through our pool (`TCP_NODELAY`).
    Plain(Arc<PlainSmtpPool>),
    /// TLS or AUTH through lettre's pool, and a bound on exchanges at once (lettre opens an
    /// extra, unpooled connection when every pooled one is busy).
    Lettre {
        inner: AsyncSmtpTransport<Tokio1Executor>,
        connections: Arc<tokio::sync::Semaphore>,
    },
}

impl std::fmt::Debug for SmtpMailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // lettre's Debug may show credentials; keep them out.
        f.write_str(match self.delivery {
            Delivery::Plain(_) => "SmtpMailTransport(plain, nodelay pool)",
            Delivery::Lettre { .. } => "SmtpMailTransport(lettre pool)",
        })
    }
}

/// How long one SMTP command may take before the attempt counts as a transient failure.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pooled connections to the relay, and the most exchanges at once.
pub const SMTP_CONNECTIONS: u32 = 4;
/// The port of `smtp://` when the URL names none (lettre's default too).
const SMTP_DEFAULT_PORT: u16 = 25;

impl SmtpMailTransport {
    /// A pooled transport for a lettre connection URL. The TLS and credential forms need a
    /// Tokio runtime (lettre's pool spawns its idle-connection reaper there): outside one they
    /// are refused with [`TransportError::NoRuntime`].
    pub fn from_url(url: &str) -> Result<Self, TransportError> {
        // lettre validates every form, the plain one included, so both paths accept and refuse
        // the same URLs.
        let lettre = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(TransportError::InvalidUrl)?;
        if let Some(plain) = plain_smtp(url) {
            return Ok(Self {
                delivery: Delivery::Plain(Arc::new(PlainSmtpPool::new(
                    plain.host,
                    plain.port,
                    plain.hello,
                    SMTP_CONNECTIONS as usize,
                    SMTP_TIMEOUT,
                ))),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let inner = lettre
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(SMTP_CONNECTIONS))
            .build();
        Ok(Self {
            delivery: Delivery::Lettre {
                inner,
                connections: Arc::new(tokio::sync::Semaphore::new(SMTP_CONNECTIONS as usize)),
            },
        })
    }

    /// True when mail goes through [`PlainSmtpPool`] (`TCP_NODELAY`), false for lettre's pool.
    #[must_use]
    pub fn is_plain_pool(&self) -> bool {
        matches!(self.delivery, Delivery::Plain(_))
    }
}

/// Where a plain `smtp://` URL without TLS or credentials points.
struct PlainTarget {
    host: String,
    port: u16,
    hello: ClientId,
}

/// The plain form of an SMTP URL, or `None` for the TLS and credential forms.
fn plain_smtp(url: &str) -> Option<PlainTarget> {
    let url = url::Url::parse(url).ok()?;
    let plain = url.scheme() == "smtp"
        && url.username().is_empty()
        && url.password().is_none()
        && !url.query_pairs().any(|(k, _)| k == "tls");
    if !plain {
        return None;
    }
    // Url keeps the brackets of an IPv6 literal, which the resolver does not take.
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = url.path().trim_matches('/');
    let hello = if name.is_empty() {
        ClientId::default()
    } else {
        ClientId::Domain(name.to_owned())
    };
    Some(PlainTarget {
        host,
        port: url.port().unwrap_or(SMTP_DEFAULT_PORT),
        hello,
    })
}

#[async_trait]
impl MailTransport for SmtpMailTransport {
    async fn send(&self, message: Message) -> Result<(), SendError> {
        match &self.delivery {
            Delivery::Plain(pool) => pool.send(&message).await,
            Delivery::Lettre { inner, connections } => {
                // The semaphore is never closed, so acquiring fails only if it were: send anyway.
                let _connection = connections.acquire().await.ok();
                inner
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| classify_smtp(&e))
            }
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn check(&self) -> Result<(), SendError> {
        match &self.delivery {
            Delivery::Plain(pool) => pool.check().await,
            Delivery::Lettre { inner, .. } => match inner.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(no_answer_to_noop()),
                Err(e) => Err(classify_smtp(&e)),
            },
        }
    }
}

/// The readiness failure of a relay that did not answer NOOP.
pub(crate) fn no_answer_to_noop() -> SendError {
    SendError::Unavailable("the SMTP relay did not answer NOOP".to_owned())
}

/// Sorts a lettre SMTP error into transient or permanent, keeping only the reply code.
pub(crate) fn classify_smtp(error: &lettre::transport::smtp::Error) -> SendError {
    let code = error.status().map(|c| c.to_string());
    if error.is_permanent() {
        SendError::Permanent(format!("SMTP reply {}", code.as_deref().unwrap_or("5xx")))
    } else if error.is_transient() {
        SendError::Transient(format!("SMTP reply {}", code.as_deref().unwrap_or("4xx")))
    } else if error.is_timeout() {
        SendError::Unavailable("SMTP timeout".to_owned())
    } else if error.is_client() {
        SendError::Permanent("the mail could not be sent as built (client error)".to_owned())
    } else {
        // Connection refused or reset, TLS handshake, unparseable reply, pool shut down.
        SendError::Unavailable("SMTP connection failed".to_owned())
    }
}

/// Writes each mail as `<uuid>.eml` into a directory: the outbox when no SMTP relay is set,
/// and a way to look at mails in development.
#[derive(Debug, Clone)]
pub struct FileMailTransport {
    dir: PathBuf,
    inner: AsyncFileTransport<Tokio1Executor>,
}

impl FileMailTransport {
    /// Writes into `dir`, creating it if needed.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, TransportError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| TransportError::Outbox {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            inner: AsyncFileTransport::new(&dir),
            dir,
        })
    }

    /// The outbox directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl MailTransport for FileMailTransport {
    async fn send(&self, message: Message) -> Result<(), SendError> {
        self.inner
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError::Unavailable(format!("cannot write to the outbox: {e}")))
    }

    fn name(&self) -> &'static str {
        "file"
    }

    async fn check(&self) -> Result<(), SendError> {
        match std::fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(SendError::Unavailable(
                "the outbox directory is missing".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // lettre's pool spawns its idle reaper on the runtime, so the TLS forms need one.
    #[tokio::test]
    async fn plain_smtp_urls_use_the_nodelay_pool_and_tls_or_credentials_use_lettres() {
        let plain = |url: &str| SmtpMailTransport::from_url(url).map(|t| t.is_plain_pool());
        assert!(plain("smtp://127.0.0.1:2525").unwrap());
        assert!(plain("smtp://relay.internal").unwrap());
        assert!(plain("smtp://[::1]:2525/mail.example.com").unwrap());
        assert!(!plain("smtp://relay.example.com:587?tls=required").unwrap());
        assert!(!plain("smtp://relay.example.com?tls=opportunistic").unwrap());
        assert!(!plain("smtp://user:secret@relay.example.com:25").unwrap());
        assert!(!plain("smtps://user:secret@relay.example.com").unwrap());
        assert!(plain("http://relay.example.com").is_err());
        assert!(plain("not a url").is_err());
    }

    #[test]
    fn outside_a_runtime_the_tls_forms_are_refused_and_the_plain_form_is_built() {
        let tls = SmtpMailTransport::from_url("smtps://user:secret@relay.example.com");
        assert!(matches!(tls, Err(TransportError::NoRuntime)));
        let starttls = SmtpMailTransport::from_url("smtp://relay.example.com:587?tls=required");
        assert!(matches!(starttls, Err(TransportError::NoRuntime)));
        let plain = SmtpMailTransport::from_url("smtp://127.0.0.1:2525");
        assert!(plain.is_ok_and(|t| t.is_plain_pool()));
    }

    #[test]
    fn the_plain_target_takes_port_host_and_ehlo_name_from_the_url() {
        let target = plain_smtp("smtp://[::1]/mail.example.com").unwrap();
        assert_eq!(target.host, "::1");
        assert_eq!(target.port, 25);
        assert_eq!(
            target.hello,
            ClientId::Domain("mail.example.com".to_owned())
        );
        let target = plain_smtp("smtp://relay:2525").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("relay", 2525));
        assert_eq!(target.hello, ClientId::default());
    }
}
