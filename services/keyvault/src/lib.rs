//! Crypto-shredding for `newsletter`.
//!
//! # Key hierarchy
//!
//! ```text
//! master key (KEK, 256 bit, from NEWSLETTER_MASTER_KEY[_FILE], id:hex; never stored in a database)
//!   └─ wraps (XChaCha20-Poly1305, AAD = subscriber id + key id) ──► one data key per subscriber
//!        (256 bit, random; row in keyvault_data_keys with the master key's id)
//!          └─ seals (XChaCha20-Poly1305, AAD = event id + stream) ──► the personal fields of
//!               each of that subscriber's events, in the event store
//! ```
//!
//! - [`KeyVault`]: the data keys, in a SQLite file of its own (`<data dir>/keyvault.db`,
//!   `secure_delete=ON`) or in the PostgreSQL database. Erasure destroys the key (tombstone).
//! - [`EncryptingEventStore`]: the [`newsletter_eventstore::EventStore`] decorator every role
//!   uses; what it stores and how an erased event reads is in its module documentation.
//! - [`AuditLog`]: who did which admin read or change, when.
//! - [`Stats`]: anonymous counts per list and month that survive erasure.
//! - [`truncate_sqlite_wal`]: drops page images of deleted rows from a SQLite `-wal` file.

mod audit;
mod db;
mod error;
mod master;
mod stats;
mod store;
mod vault;

pub use audit::{AUDIT_LOCK, AuditEntry, AuditLog, AuditRecord, MAX_AUDIT_PAGE, PendingAuditEntry};
pub use db::truncate_sqlite_wal;
pub use error::VaultError;
pub use master::{KEY_BYTES, KeyBytes, MasterKey, MasterKeyRing};
pub use stats::{MonthlyCount, Stats};
pub use store::{ALGORITHM, ERASED_TYPE, EncryptingEventStore, SEALED_MEMBER, subscriber_of};
pub use vault::{Destroyed, KeyState, KeyVault, RotationReport};
