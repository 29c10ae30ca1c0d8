//! The double opt-in reactor of `newsletter`: it follows the event log and sends each pending
//! subscription request its confirmation mail (Danish or English), then records the outcome.
//!
//! - [`Mailer`]: the reactor (at-least-once; see [`reactor`]).
//! - [`MailTransport`]: the port to whatever delivers mail; [`SmtpMailTransport`] (pooled:
//!   [`PlainSmtpPool`] with `TCP_NODELAY` for plain SMTP, lettre's pool for TLS) and
//!   [`FileMailTransport`] (`.eml` files, the default outbox).
//! - [`CheckpointStore`]: the port where the reactor keeps its place.
//! - [`build_confirmation`] and [`template`]: the mail itself.

mod checkpoint;
mod config;
mod message;
pub mod reactor;
mod retry;
mod smtp_pool;
pub mod template;
mod transport;

pub use checkpoint::{CheckpointError, CheckpointStore};
pub use config::{ListTitle, MailerConfig};
pub use message::{BuildError, ConfirmationMail, build_confirmation, link};
pub use reactor::{ACTOR, CHECKPOINT_NAME, CONCURRENCY, Mailer, MailerStats, StatsSnapshot};
pub use retry::RetryPolicy;
pub use smtp_pool::{CLOSE_AFTER_IDLE, NOOP_AFTER_IDLE, PlainSmtpPool};
pub use transport::{
    FileMailTransport, MailTransport, SMTP_CONNECTIONS, SMTP_TIMEOUT, SendError, SmtpMailTransport,
    TransportError,
};
