//! The read side of `newsletter`: the subscriber read models and the checkpointed runner that
//! projects the event log into them, the email index the API claims addresses in, and named
//! checkpoints for reactors. Everything runs on SQLite (embedded default) and PostgreSQL.
//!
//! - [`ReadModels`]: subscriber views, list memberships (`pending`, `confirmed`, `unsubscribed`,
//!   reported as `restricted` while the subscriber is restricted), counts, and checkpoints.
//!   Disposable: [`ProjectionRunner::rebuild`] replays the whole log into it. How rows are derived
//!   (the domain's own fold, kept as snapshots) and why a crash never applies an event twice nor
//!   skips one is described in the `apply` module's source documentation: in short, each batch
//!   moves the checkpoint by compare-and-set in the same transaction as its rows.
//! - [`ProjectionRunner`]: `run` (catch-up then live, until shutdown), `catch_up_once`, `rebuild`.
//! - [`LiveStatus`]: the status projection in memory (locale and list statuses, no personal
//!   data) for the API's status by id: loaded from the read model with its checkpoint in one
//!   transaction, then following the log from there.
//! - [`EmailIndex`]: keyed hash of the normalised address → subscriber id; not a projection and
//!   never rebuilt.
//!
//! No personal data is logged: spans and errors name subscribers by their opaque id only.
//!
//! # Tables
//!
//! `projection_checkpoints(name, "commit", prepare)`,
//! `subscriber_snapshots(subscriber_id, state, stream_version, "commit", prepare)`,
//! `subscribers(subscriber_id, locale, restricted, email, name, stream_version, "commit", prepare)`,
//! `list_members(list_id, subscriber_id, status, reported_status, since)` and
//! `email_index(address_hash, subscriber_id)`; see `migrations/`.

mod apply;
mod db;
mod email_index;
mod error;
mod live_status;
mod models;
mod runner;
mod views;

pub use email_index::{EmailIndex, EmailIndexKey, MAX_FIND_MANY};
pub use error::ReadModelError;
pub use live_status::{LiveStatus, LiveStatusOptions, StatusView};
pub use models::{MAX_PAGE_SIZE, ReadModels};
pub use runner::{ProjectionRunner, catch_up_once, rebuild};
pub use views::{
    MemberCursor, MemberStatus, MemberView, MembershipView, RebuildReport, StatusCount,
    SubscriberView,
};
