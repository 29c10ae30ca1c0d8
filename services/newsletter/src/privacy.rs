//! The GDPR side of the binary: erasure (API, CLI and retention share it), the retention job of
//! the projector role, the export for the CLI, and the audit log behind the admin API.
//!
//! # Erasure, step by step
//!
//! 1. Read the subscriber's stream (decrypted) and note every address it ever held: they name
//!    the development outbox's `.eml` files to delete.
//! 2. Append `SubscriberErased` (actor, reference, time; no personal data). Optimistic
//!    concurrency makes this the last word: every later command sees the erased state.
//! 3. Destroy the data key in the vault (tombstone): every sealed field of the stream, in the
//!    log and in every copy of it, is unreadable from now on and reads as `PersonalDataErased`.
//! 4. Remove the email index entry: the address may sign up again, as a new subscriber.
//! 5. Delete the outbox files that hold the addresses (overwritten with zeros first).
//! 6. Let the projector catch up (or catch up here: the checkpoint's compare-and-set makes
//!    that safe beside a running projector), so the read-model rows and the snapshot are gone.
//! 7. SQLite: truncate the write-ahead logs of the read models, the email index, the vault and
//!    the event store, so page images of deleted rows leave the `-wal` files (the files run
//!    with `secure_delete=ON`, which zeroes deleted content in the database files).
//!
//! Pending mail work needs no step: the mailer re-reads the subscriber before every send and
//! an erased subscriber is never mailed.

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
    ActorName, DomainError, ErasureReference, ListId, ListStatus, Subscriber, SubscriberCommand,
    SubscriberEvent, SubscriberId,
};
use newsletter_eventstore::command::load;
use newsletter_eventstore::{Clock, CommandError, EventMetadata, EventStore, StreamId, execute};
use newsletter_keyvault::{
    AuditEntry, AuditLog, AuditRecord, Destroyed, KeyVault, Stats, truncate_sqlite_wal,
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

/// What one retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Subscribers erased (never confirmed anything still in force).
    pub erased: u64,
    /// Pending requests expired (the subscriber stays, confirmed elsewhere).
    pub expired: u64,
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
        let events = self.store.read_stream(&stream, 0).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let addresses = lowercase_addresses(&events);
        let metadata = EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            actor: Some(actor.as_str().to_owned()),
        };
        let outcome = execute::<Subscriber>(
            self.store.as_ref(),
            self.clock.as_ref(),
            &stream,
            &SubscriberCommand::Erase {
                actor: actor.clone(),
                reference: reference.clone(),
            },
            &metadata,
        )
        .await
        .map_err(|source| PrivacyError::Command { subscriber, source })?;
        let already_erased = outcome.events.is_empty();
        let erased_at = outcome
            .state
            .erased_at()
            .unwrap_or_else(|| self.clock.now());
        let destroyed = self.vault.destroy(*subscriber.as_uuid()).await?;
        let removed = self.index.remove(subscriber).await?;
        let outbox_files_deleted = delete_outbox_files(&self.outbox, &addresses).await;
        let read_model_deleted = self.wait_for_read_model(subscriber).await;
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
        tracing::info!(%subscriber, reference = reference.as_str(), ?destroyed, removed, outbox_files_deleted, read_model_deleted, "subscriber erased");
        Ok(Some(ErasureReceipt {
            receipt_id: Uuid::now_v7().to_string(),
            subscriber_id: subscriber.to_string(),
            reference: reference.as_str().to_owned(),
            actor: actor.as_str().to_owned(),
            erased_at,
            already_erased,
            data_key: match destroyed {
                Destroyed::Now => "destroyed",
                Destroyed::Already => "already_destroyed",
                Destroyed::NoKey => "none",
            }
            .to_owned(),
            email_index_entries_removed: removed,
            read_model: if read_model_deleted {
                "deleted"
            } else {
                "pending"
            }
            .to_owned(),
            outbox_files_deleted,
            sqlite_wal_truncated: truncated,
        }))
    }

    /// Catches the subscriber projection up (safe beside a running projector: the checkpoint
    /// moves by compare-and-set) until the subscriber's rows are gone, and waits until this
    /// process's in-memory status view (if any) has dropped the subscriber, for up to 15 s.
    async fn wait_for_read_model(&self, subscriber: SubscriberId) -> bool {
        let runner = ProjectionRunner::default();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Err(error) = runner
                .catch_up_once(self.store.as_ref(), &self.models)
                .await
            {
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

    /// One retention pass: every subscriber with a pending request older than `retention` on
    /// any of `lists` is erased (actor `retention`) unless some list is confirmed, in which case
    /// only the request is expired once past its `confirm_by`. Idempotent and safe to run in
    /// several replicas at once: commands use optimistic concurrency and erasure is a no-op on
    /// an erased subscriber.
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
            let mut after = None;
            loop {
                let (members, next) = self
                    .models
                    .list_members(list, MemberStatus::Pending, after, 1000)
                    .await?;
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
        let actor =
            ActorName::parse("retention").map_err(|e| PrivacyError::Other(e.to_string()))?;
        let reference = ErasureReference::parse("retention-unconfirmed")
            .map_err(|e| PrivacyError::Other(e.to_string()))?;
        let mut report = RetentionReport::default();
        for subscriber in candidates {
            // One subscriber that cannot be handled (an unreadable stream, an unknown master key)
            // must not stop retention for everyone after it: log it and go on.
            match self
                .retain_one(subscriber, cutoff, now, &actor, &reference)
                .await
            {
                Ok(RetentionStep::Erased) => report.erased += 1,
                Ok(RetentionStep::Expired) => report.expired += 1,
                Ok(RetentionStep::Kept) => {}
                Err(e) => {
                    tracing::warn!(%subscriber, error = %e, "retention skipped a subscriber this pass");
                }
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

    /// One retention decision: erase a never-confirmed subscriber whose request is older than
    /// the cutoff, or expire an old request of a subscriber confirmed elsewhere.
    async fn retain_one(
        &self,
        subscriber: SubscriberId,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        actor: &ActorName,
        reference: &ErasureReference,
    ) -> Result<RetentionStep, PrivacyError> {
        let stream = stream_of(subscriber)?;
        let (state, _) = load::<Subscriber>(self.store.as_ref(), &stream)
            .await
            .map_err(|source| PrivacyError::Command { subscriber, source })?;
        let Some(pending) = state.pending_request() else {
            return Ok(RetentionStep::Kept);
        };
        // Restricted processing (art. 18) means the data is kept, whatever its age.
        if state.is_erased() || state.is_restricted() || pending.requested_at() > cutoff {
            return Ok(RetentionStep::Kept);
        }
        let confirmed_somewhere = state
            .lists()
            .any(|(_, m)| m.status() == ListStatus::Confirmed);
        if !confirmed_somewhere {
            if let Some(receipt) = self.erase(subscriber, actor, reference).await?
                && !receipt.already_erased
            {
                self.record(
                    "retention",
                    "subscriber.erase",
                    Some(subscriber),
                    "ok",
                    Some(reference.as_str()),
                )
                .await?;
                return Ok(RetentionStep::Erased);
            }
        } else if now > pending.confirm_by() {
            let result = execute::<Subscriber>(
                self.store.as_ref(),
                self.clock.as_ref(),
                &stream,
                &SubscriberCommand::ExpirePending {
                    request_id: pending.request_id(),
                },
                &EventMetadata {
                    correlation_id: Some(Uuid::now_v7()),
                    causation_id: None,
                    actor: Some("retention".to_owned()),
                },
            )
            .await;
            match result {
                Ok(outcome) if !outcome.events.is_empty() => return Ok(RetentionStep::Expired),
                Ok(_) | Err(CommandError::Refused(_)) => {}
                Err(source) => return Err(PrivacyError::Command { subscriber, source }),
            }
        }
        Ok(RetentionStep::Kept)
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
