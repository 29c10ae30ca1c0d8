//! The GDPR side of the binary: erasure (API, CLI and retention share it), the retention job of
//! the projector role, the export for the CLI, and the audit log behind the admin API.
//!
//! # Erasure, step by step
//!
//! 1. Note every address the subscriber held: from its stream (decrypted) and from its
//!    read-model row (which still holds it when the stream cannot be read, e.g. its vault row is
//!    missing). They name the development outbox's `.eml` files to delete.
//! 2. Append `SubscriberErased` (actor, reference, time; no personal data). Optimistic
//!    concurrency makes this the last word: every later command sees the erased state.
//! 3. Complete it ([`Privacy::complete_erasure`]), in an order that can be resumed: delete the
//!    outbox files that hold the addresses (overwritten with zeros first), remove the email
//!    index entry (the address may sign up again, as a new subscriber), and **last** destroy the
//!    data key (tombstone): every sealed field of the stream, in the log and in every copy of
//!    it, is unreadable from then on. Until the key is gone the addresses can still be read
//!    from the stream, so a completion cut short can be run again with the same effect.
//! 4. Let the projector catch up (or catch up here: the checkpoint's compare-and-set makes
//!    that safe beside a running projector), so the read-model rows and the snapshot are gone.
//! 5. SQLite: truncate the write-ahead logs of the read models, the email index, the vault and
//!    the event store, so page images of deleted rows leave the `-wal` files (the files run
//!    with `secure_delete=ON`, which zeroes deleted content in the database files).
//!
//! Pending mail work needs no step: the mailer re-reads the subscriber before every send and
//! an erased subscriber is never mailed.
//!
//! # The erasure sweep
//!
//! A process can die between steps 2 and 3. The projector role therefore runs
//! [`Privacy::run_erasure_sweep`]: it follows the log with a checkpoint of its own
//! ([`ERASURE_SWEEP_CHECKPOINT`], in the read models' checkpoint table), never ahead of the
//! subscriber projection (so the read-model rows are deleted before it truncates the WALs), and
//! completes every `SubscriberErased` it passes (steps 3 and 5). Every step is idempotent, so
//! a second sweeper, a replay from the start, or an erasure that already completed changes
//! nothing. `newsletter reapply-erasures` is the same sweep over the whole log, by hand.
//!
//! # Retention
//!
//! [`Privacy::retention_pass`] erases every subscriber who has no consent in force (no list
//! confirmed, no pending request younger than the period) and whose last subscription change
//! is older than the period; see [`retention_rule`]. The rule is decided inside the command
//! (a decider over the subscriber's stream), so the append is conditioned on the very state it
//! was decided on: a subscriber who confirms or signs up again meanwhile is not erased.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use newsletter_api::export::{AuditLine, ExportDocument, PolicyInfo, build_export};
use newsletter_api::ports::PortError;
use newsletter_api::{AuditItem, ErasureReceipt, MonthlyStats, PrivacyOperations};
use newsletter_domain::{
    ActorName, Decider, DomainError, ErasureReference, ListId, ListStatus, Subscriber,
    SubscriberCommand, SubscriberEvent, SubscriberId, SubscriberState,
};
use newsletter_eventstore::{
    Clock, CommandError, EventMetadata, EventStore, Position, StreamId, execute,
};
use newsletter_keyvault::{
    AuditEntry, AuditLog, AuditRecord, Destroyed, KeyVault, Stats, subscriber_of,
    truncate_sqlite_wal,
};
use newsletter_projections::{EmailIndex, LiveStatus, MemberStatus, ProjectionRunner, ReadModels};
use uuid::Uuid;

/// Why a privacy operation failed. Names subscribers by their opaque id only.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The subscriber's stream could not be changed or read.
    #[error("subscriber {subscriber}: {source}")]
    Command {
        /// The subscriber.
        subscriber: SubscriberId,
        /// What failed.
        #[source]
        source: CommandError<DomainError>,
    },
    /// The vault or the audit log failed.
    #[error("key vault: {0}")]
    Vault(#[from] newsletter_keyvault::VaultError),
    /// The email index or the read models failed.
    #[error("read side: {0}")]
    ReadSide(#[from] newsletter_projections::ReadModelError),
    /// The event store failed.
    #[error("event store: {0}")]
    Store(#[from] newsletter_eventstore::StoreError),
    /// Something else, described.
    #[error("{0}")]
    Other(String),
}

/// Everything erasure, export, retention and the audit log need.
#[derive(Clone)]
pub struct Privacy {
    /// The decrypting store.
    pub store: Arc<dyn EventStore>,
    /// The same log as stored (sealed payloads): the erasure sweep scans it.
    pub sealed_store: Arc<dyn EventStore>,
    /// The key vault.
    pub vault: KeyVault,
    /// The admin audit log.
    pub audit: AuditLog,
    /// The email index.
    pub index: EmailIndex,
    /// The read models.
    pub models: ReadModels,
    /// `<data dir>/outbox`.
    pub outbox: PathBuf,
    /// SQLite files whose write-ahead logs are truncated after an erasure (empty on PostgreSQL).
    pub sqlite_files: Vec<PathBuf>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The configured privacy-policy versions.
    pub policies: Vec<PolicyInfo>,
    /// The API's in-memory status view, when this process serves one: an erasure also waits
    /// until the view no longer holds the subscriber.
    pub live: Option<LiveStatus>,
}

fn stream_of(subscriber: SubscriberId) -> Result<StreamId, PrivacyError> {
    StreamId::new(subscriber.stream_name()).map_err(PrivacyError::Store)
}

fn lowercase_addresses(events: &[newsletter_eventstore::RecordedEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| match e.decode::<SubscriberEvent>() {
            Ok(SubscriberEvent::SubscriptionRequested(r)) => Some(r.email.as_str().to_lowercase()),
            _ => None,
        })
        .collect()
}

/// Does `haystack` contain `needle`, ignoring ASCII case?
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Deletes the outbox files that mention any of the addresses; returns how many.
async fn delete_outbox_files(dir: &PathBuf, addresses: &BTreeSet<String>) -> u64 {
    if addresses.is_empty() {
        return 0;
    }
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut deleted = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        if addresses
            .iter()
            .any(|a| contains_ignore_case(&bytes, a.as_bytes()))
        {
            // Overwrite in place (no truncation, which would leave the old blocks untouched) and
            // sync before unlinking, so the file's blocks do not keep the address.
            overwrite_with_zeros(&path, bytes.len()).await;
            if tokio::fs::remove_file(&path).await.is_ok() {
                deleted += 1;
            } else {
                tracing::warn!(file = %path.display(), "cannot delete an outbox file of an erased subscriber");
            }
        }
    }
    deleted
}

/// Writes `len` zero bytes over the start of the file, in place, and syncs it.
async fn overwrite_with_zeros(path: &std::path::Path, len: usize) {
    use tokio::io::AsyncWriteExt;
    let Ok(mut file) = tokio::fs::OpenOptions::new().write(true).open(path).await else {
        return;
    };
    if file.write_all(&vec![0_u8; len]).await.is_ok() {
        let _ = file.sync_all().await;
    }
}

fn audit_item(record: AuditRecord) -> AuditItem {
    AuditItem {
        id: record.id,
        at: record.at,
        actor: record.actor,
        action: record.action,
        subscriber_id: record.subscriber_id,
        outcome: record.outcome,
        detail: record.detail,
    }
}

/// What retention did with one subscriber.
enum RetentionStep {
    Erased,
    Expired,
    Kept,
}

/// The event type of an erasure, as stored.
const ERASED_EVENT: &str = "SubscriberErased";
/// The erasure reference when retention erases a subscriber whose request was never confirmed.
pub const RETENTION_UNCONFIRMED: &str = "retention-unconfirmed";
/// The erasure reference when retention erases a subscriber with no list in force and no
/// pending request (cancelled, unsubscribed before confirming, or withdrawn from every list).
pub const RETENTION_NO_CONSENT: &str = "retention-no-consent";

/// What retention does with a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionDecision {
    /// Nothing.
    Keep,
    /// Erase: `true` when a request is still pending (reference [`RETENTION_UNCONFIRMED`]),
    /// `false` when none is (reference [`RETENTION_NO_CONSENT`]).
    Erase {
        /// A request is still pending.
        unconfirmed: bool,
    },
    /// Expire the pending request.
    Expire(newsletter_domain::RequestId),
}

/// The retention rule, for a subscriber's state at `now` with `cutoff = now - period`.
///
/// The subscriber's *last change* is [`SubscriberState::last_change`]: its latest request,
/// confirmation, unsubscription, cancellation or expiry, or a restriction being lifted.
///
/// - An erased or restricted (art. 18) subscriber is kept, whatever its age.
/// - A subscriber with no confirmed list whose last change is at or before the cutoff is
///   erased: [`RETENTION_UNCONFIRMED`] when a request is still pending, else
///   [`RETENTION_NO_CONSENT`].
/// - Otherwise a pending request made at or before the cutoff and past its `confirm_by` is
///   expired (its lists go back to what they were).
/// - Everyone else is kept (including a stream whose events no longer open, whose age cannot
///   be told).
#[must_use]
pub fn retention_rule(
    state: &SubscriberState,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RetentionDecision {
    if state.is_erased() || state.is_restricted() {
        return RetentionDecision::Keep;
    }
    let pending = state.pending_request();
    let last_change = state.last_change();
    let confirmed = state
        .lists()
        .any(|(_, m)| m.status() == ListStatus::Confirmed);
    if !confirmed && last_change.is_some_and(|at| at <= cutoff) {
        return RetentionDecision::Erase {
            unconfirmed: pending.is_some(),
        };
    }
    match pending {
        Some(p) if p.requested_at() <= cutoff && now > p.confirm_by() => {
            RetentionDecision::Expire(p.request_id())
        }
        _ => RetentionDecision::Keep,
    }
}

/// Retention as a decider over one subscriber's stream: [`retention_rule`] decides on the
/// state the append is conditioned on, then the subscriber's own rules produce the event.
struct Retention;

/// The one command of [`Retention`].
struct RetentionCommand {
    cutoff: DateTime<Utc>,
    actor: ActorName,
    /// [`RETENTION_UNCONFIRMED`], parsed.
    unconfirmed: ErasureReference,
    /// [`RETENTION_NO_CONSENT`], parsed.
    no_consent: ErasureReference,
}

impl Decider for Retention {
    type State = SubscriberState;
    type Command = RetentionCommand;
    type Event = SubscriberEvent;
    type Error = DomainError;

    fn decide(
        state: &SubscriberState,
        command: &RetentionCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriberEvent>, DomainError> {
        let command = match retention_rule(state, command.cutoff, now) {
            RetentionDecision::Keep => return Ok(Vec::new()),
            RetentionDecision::Erase { unconfirmed } => SubscriberCommand::Erase {
                actor: command.actor.clone(),
                reference: if unconfirmed {
                    command.unconfirmed.clone()
                } else {
                    command.no_consent.clone()
                },
            },
            RetentionDecision::Expire(request_id) => {
                SubscriberCommand::ExpirePending { request_id }
            }
        };
        Subscriber::decide(state, &command, now)
    }

    fn evolve(state: SubscriberState, event: &SubscriberEvent) -> SubscriberState {
        Subscriber::evolve(state, event)
    }
}

fn retention_actor() -> Result<ActorName, PrivacyError> {
    ActorName::parse("retention").map_err(|e| PrivacyError::Other(e.to_string()))
}

fn reference(text: &str) -> Result<ErasureReference, PrivacyError> {
    ErasureReference::parse(text).map_err(|e| PrivacyError::Other(e.to_string()))
}

/// Metadata of an event appended by a privacy operation.
fn metadata_of(actor: &str) -> EventMetadata {
    EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        actor: Some(actor.to_owned()),
    }
}

/// What one retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Subscribers erased (no consent in force for longer than the period).
    pub erased: u64,
    /// Pending requests expired (the subscriber stays, confirmed elsewhere or active lately).
    pub expired: u64,
}

/// The name of the erasure sweep's checkpoint in the read models' checkpoint table.
pub const ERASURE_SWEEP_CHECKPOINT: &str = "privacy.erasure_sweep";

/// The name of the retention pass's checkpoint in the log (it trails the log by the period).
pub const RETENTION_CHECKPOINT: &str = "privacy.retention";

/// Event types that change a subscriber's consent (see [`SubscriberState::last_change`]).
const CONSENT_CHANGES: [&str; 6] = [
    "SubscriptionRequested",
    "SubscriptionConfirmed",
    "Unsubscribed",
    "SubscriptionRequestCancelled",
    "SubscriptionRequestExpired",
    "RestrictionLifted",
];

/// Events the sweep and the retention pass read per batch.
const SWEEP_BATCH: usize = 500;

/// What completing erasures did (the sweep, `reapply-erasures`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Distinct subscribers whose `SubscriberErased` the sweep passed.
    pub erased_subscribers: u64,
    /// Data keys that were still live and are destroyed now.
    pub keys_destroyed_now: u64,
    /// Email index entries removed.
    pub email_index_entries_removed: u64,
    /// Development outbox files deleted.
    pub outbox_files_deleted: u64,
    /// SQLite: every write-ahead log was truncated after the batch (false on PostgreSQL or
    /// when no erasure was passed).
    pub sqlite_wal_truncated: bool,
}

/// What [`Privacy::complete_erasure`] did for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// What happened to the data key.
    pub data_key: Destroyed,
    /// Email index entries removed.
    pub email_index_entries_removed: u64,
    /// Development outbox files deleted.
    pub outbox_files_deleted: u64,
}

impl Privacy {
    /// Erases a subscriber (see the module documentation); `Ok(None)` for an unknown id.
    pub async fn erase(
        &self,
        subscriber: SubscriberId,
        actor: &ActorName,
        reference: &ErasureReference,
    ) -> Result<Option<ErasureReceipt>, PrivacyError> {
        let stream = stream_of(subscriber)?;
        let Some(addresses) = self.addresses_of(subscriber).await? else {
            return Ok(None);
        };
        let outcome = execute::<Subscriber>(
            self.store.as_ref(),
            self.clock.as_ref(),
            &stream,
            &SubscriberCommand::Erase {
                actor: actor.clone(),
                reference: reference.clone(),
            },
            &metadata_of(actor.as_str()),
        )
        .await
        .map_err(|source| PrivacyError::Command { subscriber, source })?;
        let erased_at = outcome
            .state
            .erased_at()
            .unwrap_or_else(|| self.clock.now());
        self.finish_erasure(
            subscriber,
            &addresses,
            outcome.events.is_empty(),
            erased_at,
            actor,
            reference,
        )
        .await
        .map(Some)
    }

    /// The lower-cased addresses the subscriber held, from its stream (while the data key
    /// lives) and its read-model row (until the projector deletes it); `None` for an empty
    /// stream (no such subscriber).
    async fn addresses_of(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Option<BTreeSet<String>>, PrivacyError> {
        let events = self.store.read_stream(&stream_of(subscriber)?, 0).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let mut addresses = lowercase_addresses(&events);
        if let Some(view) = self.models.subscriber(subscriber).await?
            && let Some(email) = view.email
        {
            addresses.insert(email.as_str().to_lowercase());
        }
        Ok(Some(addresses))
    }

    /// Steps 3 to 5 after `SubscriberErased` was appended (or found already there); the receipt.
    async fn finish_erasure(
        &self,
        subscriber: SubscriberId,
        addresses: &BTreeSet<String>,
        already_erased: bool,
        erased_at: DateTime<Utc>,
        actor: &ActorName,
        reference: &ErasureReference,
    ) -> Result<ErasureReceipt, PrivacyError> {
        let done = self.complete_erasure(subscriber, addresses).await?;
        let read_model_deleted = self.wait_for_read_model(subscriber).await;
        let truncated = self.truncate_wals().await;
        tracing::info!(%subscriber, reference = reference.as_str(), data_key = ?done.data_key, removed = done.email_index_entries_removed, outbox_files_deleted = done.outbox_files_deleted, read_model_deleted, "subscriber erased");
        Ok(ErasureReceipt {
            receipt_id: Uuid::now_v7().to_string(),
            subscriber_id: subscriber.to_string(),
            reference: reference.as_str().to_owned(),
            actor: actor.as_str().to_owned(),
            erased_at,
            already_erased,
            data_key: match done.data_key {
                Destroyed::Now => "destroyed",
                Destroyed::Already => "already_destroyed",
                Destroyed::NoKey => "none",
            }
            .to_owned(),
            email_index_entries_removed: done.email_index_entries_removed,
            read_model: if read_model_deleted {
                "deleted"
            } else {
                "pending"
            }
            .to_owned(),
            outbox_files_deleted: done.outbox_files_deleted,
            sqlite_wal_truncated: truncated,
        })
    }

    /// Completes the erasure of a subscriber whose `SubscriberErased` is in the log: deletes
    /// the outbox files holding `addresses`, removes the email index entry, and last destroys
    /// the data key (so that, cut short, it can be run again with the addresses still
    /// readable). Idempotent; safe to run in several processes at once.
    pub async fn complete_erasure(
        &self,
        subscriber: SubscriberId,
        addresses: &BTreeSet<String>,
    ) -> Result<Completion, PrivacyError> {
        let outbox_files_deleted = delete_outbox_files(&self.outbox, addresses).await;
        let email_index_entries_removed = self.index.remove(subscriber).await?;
        let data_key = self.vault.destroy(*subscriber.as_uuid()).await?;
        Ok(Completion {
            data_key,
            email_index_entries_removed,
            outbox_files_deleted,
        })
    }

    /// SQLite: truncates every write-ahead log; true when all were truncated (false on
    /// PostgreSQL, where there is nothing to do).
    async fn truncate_wals(&self) -> bool {
        let mut truncated = !self.sqlite_files.is_empty();
        for file in &self.sqlite_files {
            match truncate_sqlite_wal(file).await {
                Ok(done) => truncated &= done,
                Err(error) => {
                    truncated = false;
                    tracing::warn!(%error, file = %file.display(), "cannot truncate a write-ahead log after an erasure");
                }
            }
        }
        truncated
    }

    /// Completes every erasure recorded in the log after `after`, up to and including `until`
    /// (the whole log when `None`); when `checkpoint` names one, saves the position reached in
    /// it after each batch. Reads the sealed store (event types and stream names are never
    /// sealed); each erased subscriber's stream is read decrypted only for its addresses.
    pub async fn sweep_erasures(
        &self,
        after: Option<Position>,
        until: Option<Position>,
        checkpoint: Option<&str>,
    ) -> Result<SweepReport, PrivacyError> {
        let mut report = SweepReport::default();
        let mut position = after;
        let mut seen = BTreeSet::new();
        loop {
            let batch = self.sealed_store.read_all(position, SWEEP_BATCH).await?;
            let full = batch.len() == SWEEP_BATCH;
            let batch: Vec<_> = batch
                .into_iter()
                .take_while(|e| until.is_none_or(|u| e.position <= u))
                .collect();
            let Some(last) = batch.last().map(|e| e.position) else {
                break;
            };
            let erased: BTreeSet<SubscriberId> = batch
                .iter()
                .filter(|e| e.event_type == ERASED_EVENT)
                .filter_map(|e| subscriber_of(e.stream.as_str()))
                .map(SubscriberId::from_uuid)
                .collect();
            for subscriber in &erased {
                let addresses = self.addresses_of(*subscriber).await?.unwrap_or_default();
                let done = self.complete_erasure(*subscriber, &addresses).await?;
                if done.data_key != Destroyed::Already {
                    report.keys_destroyed_now += 1;
                }
                report.email_index_entries_removed += done.email_index_entries_removed;
                report.outbox_files_deleted += done.outbox_files_deleted;
                if done.data_key == Destroyed::Now || done.email_index_entries_removed > 0 {
                    tracing::info!(%subscriber, data_key = ?done.data_key, "completed an interrupted erasure");
                }
            }
            if !erased.is_empty() {
                report.sqlite_wal_truncated = self.truncate_wals().await;
            }
            seen.extend(erased);
            position = Some(last);
            if let Some(name) = checkpoint {
                self.models.save_checkpoint(name, last).await?;
            }
            if !full {
                break;
            }
        }
        report.erased_subscribers = seen.len() as u64;
        Ok(report)
    }

    /// One step of the sweep: completes the erasures the subscriber projection has applied
    /// since the sweep's checkpoint.
    pub async fn sweep_once(&self) -> Result<SweepReport, PrivacyError> {
        let Some(until) = self.models.projection_checkpoint().await? else {
            return Ok(SweepReport::default());
        };
        let after = self
            .models
            .load_checkpoint(ERASURE_SWEEP_CHECKPOINT)
            .await?;
        if after.is_some_and(|a| a >= until) {
            return Ok(SweepReport::default());
        }
        self.sweep_erasures(after, Some(until), Some(ERASURE_SWEEP_CHECKPOINT))
            .await
    }

    /// Runs the erasure sweep (projector role) until `shutdown` completes: after every change
    /// of the log, and at least every second.
    pub async fn run_erasure_sweep(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut changes = self.sealed_store.changes();
        loop {
            if let Err(error) = self.sweep_once().await {
                tracing::warn!(%error, "erasure sweep failed; retrying");
            }
            tokio::select! {
                () = shutdown.as_mut() => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Catches the subscriber projection up (safe beside a running projector: the checkpoint
    /// moves by compare-and-set) until the subscriber's rows are gone, and waits until this
    /// process's in-memory status view (if any) has dropped the subscriber, for up to 15 s.
    async fn wait_for_read_model(&self, subscriber: SubscriberId) -> bool {
        let runner = ProjectionRunner::default();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Err(error) = runner.catch_up_once(&self.store, &self.models).await {
                tracing::debug!(%error, "catch-up after erasure raced the projector; waiting");
            }
            let in_view = self
                .live
                .as_ref()
                .is_some_and(|live| live.contains(subscriber));
            match self.models.subscriber(subscriber).await {
                Ok(None) if !in_view => return true,
                Ok(None) => {}
                Ok(Some(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot check the read model after an erasure")
                }
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Records an admin action.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        subscriber: Option<SubscriberId>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), PrivacyError> {
        self.audit
            .record(
                &AuditEntry {
                    actor: actor.to_owned(),
                    action: action.to_owned(),
                    subscriber: subscriber.map(|s| *s.as_uuid()),
                    outcome: outcome.to_owned(),
                    detail: detail.map(str::to_owned),
                },
                self.clock.now(),
            )
            .await?;
        Ok(())
    }

    /// The export document for the CLI (records the export like the API does); `Ok(None)` for
    /// an unknown or erased subscriber.
    pub async fn export(
        &self,
        subscriber: SubscriberId,
        actor: &ActorName,
    ) -> Result<Option<ExportDocument>, PrivacyError> {
        let stream = stream_of(subscriber)?;
        if self.store.read_stream(&stream, 0).await?.is_empty() {
            self.record(
                actor.as_str(),
                "subscriber.export",
                Some(subscriber),
                "not_found",
                None,
            )
            .await?;
            return Ok(None);
        }
        let metadata = EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            actor: Some(actor.as_str().to_owned()),
        };
        match execute::<Subscriber>(
            self.store.as_ref(),
            self.clock.as_ref(),
            &stream,
            &SubscriberCommand::RecordExport {
                actor: actor.clone(),
            },
            &metadata,
        )
        .await
        {
            Ok(_) => {}
            Err(CommandError::Refused(DomainError::Erased)) => {
                self.record(
                    actor.as_str(),
                    "subscriber.export",
                    Some(subscriber),
                    "erased",
                    None,
                )
                .await?;
                return Ok(None);
            }
            Err(source) => return Err(PrivacyError::Command { subscriber, source }),
        }
        self.record(
            actor.as_str(),
            "subscriber.export",
            Some(subscriber),
            "ok",
            None,
        )
        .await?;
        let events = self.store.read_stream(&stream, 0).await?;
        let audit = self
            .audit
            .for_subscriber(*subscriber.as_uuid())
            .await?
            .into_iter()
            .map(|a| AuditLine {
                action: a.action,
                actor: a.actor,
                at: a.at,
                outcome: a.outcome,
                detail: a.detail,
            })
            .collect();
        let (mut document, _) =
            build_export(&subscriber.to_string(), &events, audit, self.clock.now())
                .map_err(|e| PrivacyError::Other(format!("cannot decode the stream: {e}")))?;
        document.attach_policies(&self.policies);
        Ok(Some(document))
    }

    /// One retention pass. Candidates come from two places: the read models (every subscriber
    /// listed as pending or unsubscribed on one of `lists` since before the cutoff,
    /// `now - retention`), and the log (every subscriber with a consent change recorded at or
    /// before the cutoff since the previous pass; the pass follows the log with a checkpoint of
    /// its own, [`RETENTION_CHECKPOINT`], trailing it by the retention period). That second
    /// source finds subscribers with no list left at all (a first request cancelled or
    /// expired). Each candidate is judged by [`retention_rule`]: erased (actor `retention`),
    /// its stale request expired, or kept. Idempotent and safe to run in several replicas at
    /// once: each decision is appended with optimistic concurrency on the state it was made
    /// on, and erasure is a no-op on an erased subscriber.
    pub async fn retention_pass(
        &self,
        lists: &[ListId],
        retention: Duration,
    ) -> Result<RetentionReport, PrivacyError> {
        let now = self.clock.now();
        let cutoff: DateTime<Utc> =
            now - TimeDelta::from_std(retention).unwrap_or(TimeDelta::days(30));
        let mut candidates = BTreeSet::new();
        for list in lists {
            for status in [MemberStatus::Pending, MemberStatus::Unsubscribed] {
                let mut after = None;
                loop {
                    let (members, next) =
                        self.models.list_members(list, status, after, 1000).await?;
                    candidates.extend(
                        members
                            .iter()
                            .filter(|m| m.since <= cutoff)
                            .map(|m| m.subscriber_id),
                    );
                    match next {
                        Some(cursor) => after = Some(cursor),
                        None => break,
                    }
                }
            }
        }
        let mut report = RetentionReport::default();
        self.retain_all(&candidates, cutoff, &mut report).await;
        let mut position = self.models.load_checkpoint(RETENTION_CHECKPOINT).await?;
        loop {
            let batch = self.sealed_store.read_all(position, SWEEP_BATCH).await?;
            let full = batch.len() == SWEEP_BATCH;
            let old: Vec<_> = batch
                .iter()
                .take_while(|e| e.recorded_at <= cutoff)
                .collect();
            let Some(last) = old.last().map(|e| e.position) else {
                break;
            };
            let changed: BTreeSet<SubscriberId> = old
                .iter()
                .filter(|e| CONSENT_CHANGES.contains(&e.event_type.as_str()))
                .filter_map(|e| subscriber_of(e.stream.as_str()))
                .map(SubscriberId::from_uuid)
                .filter(|s| !candidates.contains(s))
                .collect();
            self.retain_all(&changed, cutoff, &mut report).await;
            self.models
                .save_checkpoint(RETENTION_CHECKPOINT, last)
                .await?;
            position = Some(last);
            if !full || old.len() < batch.len() {
                break;
            }
        }
        if report != RetentionReport::default() {
            tracing::info!(
                erased = report.erased,
                expired = report.expired,
                "retention pass"
            );
        }
        Ok(report)
    }

    /// Judges each candidate; one that cannot be handled (an unreadable stream, an unknown
    /// master key) must not stop retention for everyone after it: it is logged and skipped.
    async fn retain_all(
        &self,
        candidates: &BTreeSet<SubscriberId>,
        cutoff: DateTime<Utc>,
        report: &mut RetentionReport,
    ) {
        for subscriber in candidates {
            match self.retain_one(*subscriber, cutoff).await {
                Ok(RetentionStep::Erased) => report.erased += 1,
                Ok(RetentionStep::Expired) => report.expired += 1,
                Ok(RetentionStep::Kept) => {}
                Err(e) => {
                    tracing::warn!(%subscriber, error = %e, "retention skipped a subscriber this pass");
                }
            }
        }
    }

    /// Decides and carries out retention for one subscriber.
    async fn retain_one(
        &self,
        subscriber: SubscriberId,
        cutoff: DateTime<Utc>,
    ) -> Result<RetentionStep, PrivacyError> {
        let stream = stream_of(subscriber)?;
        let actor = retention_actor()?;
        // Read before the erasure is appended: the read-model row may go right after it.
        let addresses = self.addresses_of(subscriber).await?.unwrap_or_default();
        let outcome = execute::<Retention>(
            self.store.as_ref(),
            self.clock.as_ref(),
            &stream,
            &RetentionCommand {
                cutoff,
                actor: actor.clone(),
                unconfirmed: reference(RETENTION_UNCONFIRMED)?,
                no_consent: reference(RETENTION_NO_CONSENT)?,
            },
            &metadata_of(actor.as_str()),
        )
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // A request that ended meanwhile, an erasure that won the race: nothing to do.
            Err(CommandError::Refused(_)) => return Ok(RetentionStep::Kept),
            Err(source) => return Err(PrivacyError::Command { subscriber, source }),
        };
        match outcome.events.first() {
            Some(SubscriberEvent::SubscriberErased(erased)) => {
                self.finish_erasure(
                    subscriber,
                    &addresses,
                    false,
                    erased.at,
                    &actor,
                    &erased.reference,
                )
                .await?;
                self.record(
                    actor.as_str(),
                    "subscriber.erase",
                    Some(subscriber),
                    "ok",
                    Some(erased.reference.as_str()),
                )
                .await?;
                Ok(RetentionStep::Erased)
            }
            Some(SubscriberEvent::SubscriptionRequestExpired(_)) => Ok(RetentionStep::Expired),
            _ => Ok(RetentionStep::Kept),
        }
    }

    /// Runs retention passes until `shutdown` completes, every quarter of the retention period
    /// (at least every second, at most every hour).
    pub async fn run_retention(
        &self,
        lists: Vec<ListId>,
        retention: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let interval = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            if let Err(error) = self.retention_pass(&lists, retention).await {
                tracing::warn!(%error, "retention pass failed; trying again later");
            }
            tokio::select! {
                () = shutdown.as_mut() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[async_trait]
impl PrivacyOperations for Privacy {
    async fn erase(
        &self,
        subscriber: SubscriberId,
        actor: &ActorName,
        reference: &ErasureReference,
    ) -> Result<Option<ErasureReceipt>, PortError> {
        Ok(Privacy::erase(self, subscriber, actor, reference).await?)
    }

    async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        subscriber: Option<SubscriberId>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), PortError> {
        Ok(self
            .record(actor, action, subscriber, outcome, detail)
            .await?)
    }

    async fn audit_page(&self, after: i64, limit: usize) -> Result<Vec<AuditItem>, PortError> {
        Ok(self
            .audit
            .page(after, limit)
            .await?
            .into_iter()
            .map(audit_item)
            .collect())
    }

    fn policies(&self) -> Vec<PolicyInfo> {
        self.policies.clone()
    }

    async fn stats(&self) -> Result<Vec<MonthlyStats>, PortError> {
        Ok(Stats::new(&self.vault)
            .counts()
            .await?
            .into_iter()
            .map(|c| MonthlyStats {
                list: c.list,
                month: c.month,
                requested: c.requested,
                confirmed: c.confirmed,
                unsubscribed: c.unsubscribed,
                erased: c.erased,
            })
            .collect())
    }

    async fn audit_of(&self, subscriber: SubscriberId) -> Result<Vec<AuditItem>, PortError> {
        Ok(self
            .audit
            .for_subscriber(*subscriber.as_uuid())
            .await?
            .into_iter()
            .map(audit_item)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_ignoring_case() {
        assert!(contains_ignore_case(
            b"To: Jane.Doe@Example.com\r\n",
            b"jane.doe@example.com"
        ));
        assert!(!contains_ignore_case(
            b"To: jane@example.com",
            b"john@example.com"
        ));
        assert!(!contains_ignore_case(b"abc", b""));
    }
}
