//! [`Mailer`]: the reactor that turns `SubscriptionRequested` events into confirmation mails.
//!
//! # Delivery guarantee: at least once
//!
//! For each `SubscriptionRequested` in the global log (from the saved checkpoint on) the mailer
//! loads the subscriber, sends the mail when the request is still the pending one, the subscriber
//! is mailable and [`SubscriberState::may_send_confirmation`] allows it (at most three per 24 h),
//! then appends `ConfirmationMailSent` (actor `mailer`, causation id = the request event's id) and
//! only then saves the checkpoint. A request that is its stream's first event, when the
//! subscription's last read of the log reached its end and held no later event of that stream,
//! is decided on that one event folded, without reading the stream (a fresh signup's mail: one
//! read of the log, none of the stream); any other request, and every retry, reads the stream
//! first. Either way the record is appended expecting the version the decision saw, so an event
//! that landed meanwhile makes it read the stream and decide again; what such an event cannot
//! do is stop a mail already handed to the relay (an erasure a few milliseconds after the
//! signup, say), with or without the read. A crash after the relay accepted the mail and before
//! `ConfirmationMailSent` was appended sends it again on restart (same request, a new
//! Message-ID); a mail is never lost. A crash after the append but before the checkpoint does
//! not resend: a request that already has a sent mail is skipped.
//!
//! Requests are handled [`CONCURRENCY`] at a time, each of a different subscriber (so one
//! subscriber's requests stay in log order), through the transport's pooled connections; their
//! records are appended concurrently (the store group-commits them) and the checkpoint moves
//! past a run of events only once every event of it is handled. A shutdown in the middle of a
//! run saves the checkpoint before the first event that was not handled.
//!
//! Transient failures are retried with [`RetryPolicy`] while the checkpoint stays put; when the
//! attempts run out, or on a permanent failure, `ConfirmationMailFailed` is appended (permanent
//! or not) and the mailer moves on. Store and checkpoint failures are retried until they pass or
//! shutdown. Only one mailer may run against a store at a time (a lease is the binary's job).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use newsletter_domain::{
    Decider, ReasonText, RequestId, Subscriber, SubscriberCommand, SubscriberEvent, SubscriberId,
    SubscriberState, SubscriptionRequested,
};
use newsletter_eventstore::command::{CommandError, execute, execute_on, load};
use newsletter_eventstore::{
    Clock, EventMetadata, EventStore, Position, RecordedEvent, StreamId, Subscription,
    SubscriptionOptions,
};
use newsletter_tokens::KeyRing;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::checkpoint::CheckpointStore;
use crate::config::MailerConfig;
use crate::message::{ConfirmationMail, build_confirmation};
use crate::transport::{MailTransport, SendError};

/// The name under which the mailer saves its checkpoint.
pub const CHECKPOINT_NAME: &str = "mailer";
/// The actor recorded in the metadata of the events the mailer appends.
pub const ACTOR: &str = "mailer";
/// The stored type name the mailer reacts to.
const REQUESTED: &str = "SubscriptionRequested";
/// Events read per batch.
const BATCH_SIZE: usize = 256;
/// Requests handled at once (each of a different subscriber).
pub const CONCURRENCY: usize = 16;
/// A run of events the mailer ignores saves the checkpoint at least this often.
const SAVE_EVERY_SKIPPED: usize = 256;
/// The longest wait before retrying a failed store or checkpoint operation.
const MAX_STORE_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Counters of what the mailer did since it started. Cheap to read at any time.
#[derive(Debug, Default)]
pub struct MailerStats {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    skipped: AtomicU64,
}

/// A copy of [`MailerStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Confirmation mails handed to the transport.
    pub sent: u64,
    /// Requests given up on (permanent failure or attempts exhausted).
    pub failed: u64,
    /// Transient failures that were retried.
    pub retried: u64,
    /// Requests not mailed: stale, already mailed, restricted, throttled or expired.
    pub skipped: u64,
}

impl MailerStats {
    /// The current counts.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The double opt-in reactor. See the module docs for its guarantees.
pub struct Mailer {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    transport: Arc<dyn MailTransport>,
    keys: Arc<KeyRing>,
    config: MailerConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<MailerStats>,
}

/// What handling one event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Mailed or gave up, and recorded: save the checkpoint now.
    Done,
    /// Nothing to do for this event.
    Skipped,
    /// Shutdown came first; the checkpoint must not move past this event.
    Interrupted,
}

/// The shutdown signal, shared by every request handled at once; once it fired, every wait
/// ends at once.
#[derive(Clone)]
struct Shutdown {
    fired: tokio::sync::watch::Receiver<bool>,
}

impl Shutdown {
    /// Watches `signal` from a task of its own.
    fn watch(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (fire, fired) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = signal => { let _ = fire.send(true); }
                () = fire.closed() => {}
            }
        });
        Self { fired }
    }

    async fn wait(&self) {
        let mut fired = self.fired.clone();
        // An error means the watching task is gone, which happens only after it fired.
        let _ = fired.wait_for(|fired| *fired).await;
    }

    /// Sleeps for `delay`; false when shutdown came first.
    async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            () = self.wait() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl Mailer {
    /// A mailer over its ports. Nothing happens until [`Mailer::run`].
    #[must_use]
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        transport: Arc<dyn MailTransport>,
        keys: Arc<KeyRing>,
        config: MailerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            checkpoints,
            transport,
            keys,
            config,
            clock,
            stats: Arc::new(MailerStats::default()),
        }
    }

    /// The mailer's counters; the handle stays readable while and after it runs.
    #[must_use]
    pub fn stats(&self) -> Arc<MailerStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` completes (e.g. `tokio::signal::ctrl_c()` mapped to `()`, or
    /// `CancellationToken::cancelled_owned()`). Shutdown interrupts waits, retries and an SMTP
    /// exchange in progress at once; the checkpoint then stays before the interrupted event.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let shutdown = Shutdown::watch(shutdown);
        let span = info_span!(
            "mailer",
            transport = self.transport.name(),
            store = self.store.adapter_name()
        );
        self.run_inner(&shutdown).instrument(span).await;
    }

    async fn run_inner(&self, shutdown: &Shutdown) {
        let Some(start) = self.load_checkpoint(shutdown).await else {
            return;
        };
        info!(checkpoint = ?start.map(|p| p.to_string()), "mailer started");
        let options = SubscriptionOptions {
            batch_size: BATCH_SIZE,
            poll_interval: self.config.poll_interval,
        };
        let mut subscription = Subscription::new(Arc::clone(&self.store), start, options);
        let mut unsaved: Option<Position> = None;
        let mut skipped_since_save = 0;
        let mut failures = 0;
        // An event read but left for the next run (its subscriber already had one in this run).
        let mut carried: Option<RecordedEvent> = None;
        loop {
            let first = match carried.take() {
                Some(event) => Ok(event),
                None => match subscription.try_next().await {
                    Ok(Some(event)) => Ok(event),
                    Ok(None) => {
                        // Caught up: save what was skipped, then wait for news.
                        if let Some(position) = unsaved.take() {
                            if !self.save_checkpoint(position, shutdown).await {
                                break;
                            }
                            skipped_since_save = 0;
                        }
                        tokio::select! {
                            biased;
                            () = shutdown.wait() => break,
                            next = subscription.next() => next,
                        }
                    }
                    Err(e) => Err(e),
                },
            };
            let first = match first {
                Ok(event) => {
                    failures = 0;
                    event
                }
                Err(e) => {
                    failures += 1;
                    error!(error = %e, failures, "reading the event log failed; retrying");
                    if !shutdown.sleep(self.store_retry_delay(failures)).await {
                        break;
                    }
                    continue;
                }
            };
            let run = self.next_run(first, &mut subscription, &mut carried).await;
            // A stream's first event with nothing after it that the subscription has not
            // returned is decided on what the log showed: no read of the stream before its mail.
            let alone: Vec<bool> = run
                .iter()
                .map(|event| {
                    event.stream_version == 1
                        && subscription.returned_all_of(&event.stream)
                        && carried
                            .as_ref()
                            .is_none_or(|later| later.stream != event.stream)
                })
                .collect();
            let handled = futures::future::join_all(
                run.iter()
                    .zip(alone)
                    .map(|(event, alone)| self.handle(event, alone, shutdown)),
            )
            .await;
            // The checkpoint may move up to the last event before the first one not handled.
            let done_until = handled
                .iter()
                .position(|h| *h == Handled::Interrupted)
                .unwrap_or(run.len());
            let Some(last) = done_until.checked_sub(1).map(|i| run[i].position) else {
                break;
            };
            if handled[..done_until].contains(&Handled::Done) {
                unsaved = None;
                skipped_since_save = 0;
                if !self.save_checkpoint(last, shutdown).await {
                    break;
                }
            } else {
                unsaved = Some(last);
                skipped_since_save += done_until;
                if skipped_since_save >= SAVE_EVERY_SKIPPED {
                    unsaved = None;
                    skipped_since_save = 0;
                    if !self.save_checkpoint(last, shutdown).await {
                        break;
                    }
                }
            }
            if done_until < run.len() {
                // Shutdown interrupted an event: nothing after it may be saved.
                unsaved = None;
                break;
            }
        }
        if let Some(position) = unsaved
            && let Err(e) = self.checkpoints.save(CHECKPOINT_NAME, position).await
        {
            warn!(error = %e, "could not save the checkpoint at shutdown");
        }
        info!(stats = ?self.stats.snapshot(), "mailer stopped");
    }

    /// The run of events handled together: `first` and the events already readable after it,
    /// up to [`CONCURRENCY`], stopping before a second event of a subscriber already in the run
    /// (left in `carried`) or at a read error (the next read meets it again).
    async fn next_run(
        &self,
        first: RecordedEvent,
        subscription: &mut Subscription,
        carried: &mut Option<RecordedEvent>,
    ) -> Vec<RecordedEvent> {
        let mut streams = std::collections::HashSet::new();
        streams.insert(first.stream.clone());
        let mut run = vec![first];
        while run.len() < CONCURRENCY {
            match subscription.try_next().await {
                Ok(Some(event)) if streams.insert(event.stream.clone()) => run.push(event),
                Ok(Some(event)) => {
                    *carried = Some(event);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        run
    }

    /// Handles one event of the log; `alone`: it is its stream's first event and, as of the
    /// subscription's last read of the log, its only one.
    async fn handle(&self, event: &RecordedEvent, alone: bool, shutdown: &Shutdown) -> Handled {
        if event.event_type != REQUESTED {
            return Handled::Skipped;
        }
        let (requested, request_id) = match event.decode::<SubscriberEvent>() {
            Ok(
                decoded @ SubscriberEvent::SubscriptionRequested(SubscriptionRequested {
                    request_id,
                    ..
                }),
            ) => (decoded, request_id),
            Ok(_) => return Handled::Skipped,
            Err(e) => {
                // Never retried: a stored event does not change. Logged with its position only.
                error!(position = %event.position, error = %e, "undecodable request event; skipped");
                return Handled::Skipped;
            }
        };
        let Some(subscriber) = subscriber_of(&event.stream) else {
            warn!(position = %event.position, stream = %event.stream, "request event outside a subscriber stream; skipped");
            return Handled::Skipped;
        };
        let span = info_span!(
            "confirmation_mail",
            %subscriber,
            %request_id,
            position = %event.position
        );
        // The stream's only event as last read: its state is this one event folded.
        let known = alone.then(|| {
            (
                Subscriber::evolve(SubscriberState::default(), &requested),
                1,
            )
        });
        self.mail_request(event, subscriber, request_id, known, shutdown)
            .instrument(span)
            .await
    }

    async fn mail_request(
        &self,
        event: &RecordedEvent,
        subscriber: SubscriberId,
        request_id: RequestId,
        mut known: Option<(SubscriberState, u64)>,
        shutdown: &Shutdown,
    ) -> Handled {
        let metadata = EventMetadata {
            correlation_id: event.metadata.correlation_id,
            causation_id: Some(event.event_id),
            actor: Some(ACTOR.to_owned()),
        };
        let policy = self.config.retry;
        // Built once, so every attempt carries the same Message-ID.
        let mut mail: Option<ConfirmationMail> = None;
        let mut attempt: u32 = 0;
        // Waits while the relay is unreachable; they do not use up the request's attempts.
        let mut outage_waits: u32 = 0;
        loop {
            attempt += 1;
            // Only the first attempt decides on what the log showed; a retry reads the stream.
            let loaded = match known.take() {
                Some(known) => Some(known),
                None => match self.load_state(&event.stream, shutdown).await {
                    Some(loaded) => loaded,
                    None => return Handled::Interrupted,
                },
            };
            let Some((state, version)) = loaded else {
                return Handled::Skipped;
            };
            let now = self.clock.now();
            if let Some(reason) = why_not_mail(&state, request_id, now) {
                info!(reason, "confirmation mail not sent");
                MailerStats::add(&self.stats.skipped);
                return Handled::Skipped;
            }
            let Some(pending) = state.pending_request() else {
                return Handled::Skipped;
            };
            let built = match &mail {
                Some(built) => built.clone(),
                None => {
                    match build_confirmation(&self.config, &self.keys, subscriber, pending, now) {
                        Ok(built) => {
                            mail = Some(built.clone());
                            built
                        }
                        Err(e) => {
                            warn!(error = %e, to = %pending.email().masked(), "confirmation mail cannot be built");
                            return self
                                .give_up(
                                    event,
                                    request_id,
                                    &e.to_string(),
                                    true,
                                    &metadata,
                                    shutdown,
                                )
                                .await;
                        }
                    }
                }
            };
            let message_id = built.message_id.clone();
            let sent = tokio::select! {
                biased;
                () = shutdown.wait() => return Handled::Interrupted,
                sent = self.transport.send(built.message) => sent,
            };
            match sent {
                Ok(()) => {
                    MailerStats::add(&self.stats.sent);
                    info!(to = %pending.email().masked(), message_id = %message_id, attempt, "confirmation mail sent");
                    let command = SubscriberCommand::RecordConfirmationMailSent {
                        request_id,
                        message_id,
                    };
                    // Decided on the state read before sending: no second read unless the
                    // stream changed meanwhile (then the append conflicts and it is read).
                    let loaded = Some((state, version));
                    if !self
                        .record(&event.stream, &command, &metadata, loaded, shutdown)
                        .await
                    {
                        return Handled::Interrupted;
                    }
                    return Handled::Done;
                }
                Err(SendError::Unavailable(reason)) => {
                    MailerStats::add(&self.stats.retried);
                    attempt -= 1;
                    outage_waits = outage_waits.saturating_add(1);
                    let delay = policy.delay(outage_waits);
                    warn!(%reason, outage_waits, delay_ms = delay.as_millis(), "mail relay unavailable; waiting");
                    if !shutdown.sleep(delay).await {
                        return Handled::Interrupted;
                    }
                }
                Err(SendError::Transient(reason)) if policy.may_retry(attempt) => {
                    MailerStats::add(&self.stats.retried);
                    let delay = policy.delay(attempt);
                    warn!(%reason, attempt, delay_ms = delay.as_millis(), "transient mail failure; retrying");
                    if !shutdown.sleep(delay).await {
                        return Handled::Interrupted;
                    }
                }
                Err(SendError::Transient(reason)) => {
                    warn!(%reason, attempt, "transient mail failures; giving up");
                    return self
                        .give_up(event, request_id, &reason, false, &metadata, shutdown)
                        .await;
                }
                Err(SendError::Permanent(reason)) => {
                    warn!(%reason, attempt, "permanent mail failure");
                    return self
                        .give_up(event, request_id, &reason, true, &metadata, shutdown)
                        .await;
                }
            }
        }
    }

    /// Records `ConfirmationMailFailed` and counts the failure.
    async fn give_up(
        &self,
        event: &RecordedEvent,
        request_id: RequestId,
        reason: &str,
        permanent: bool,
        metadata: &EventMetadata,
        shutdown: &Shutdown,
    ) -> Handled {
        MailerStats::add(&self.stats.failed);
        let reason = ReasonText::lossy(reason)
            .or_else(|| ReasonText::lossy("mail failure"))
            .into_iter();
        for reason in reason {
            let command = SubscriberCommand::RecordConfirmationMailFailed {
                request_id,
                reason,
                permanent,
            };
            if !self
                .record(&event.stream, &command, metadata, None, shutdown)
                .await
            {
                return Handled::Interrupted;
            }
        }
        Handled::Done
    }

    /// Executes a command, first on `loaded` (the state and version read a moment ago) when
    /// given, retrying store failures; false on shutdown. A refusal (the request changed
    /// meanwhile) is logged and accepted: there is nothing left to record.
    async fn record(
        &self,
        stream: &StreamId,
        command: &SubscriberCommand,
        metadata: &EventMetadata,
        mut loaded: Option<(SubscriberState, u64)>,
        shutdown: &Shutdown,
    ) -> bool {
        let mut failures = 0;
        loop {
            let (store, clock) = (&*self.store, &*self.clock);
            let outcome = match loaded.take() {
                Some(loaded) => {
                    execute_on::<Subscriber>(store, clock, stream, command, metadata, loaded).await
                }
                None => execute::<Subscriber>(store, clock, stream, command, metadata).await,
            };
            match outcome {
                Ok(_) => return true,
                Err(CommandError::Refused(e)) => {
                    warn!(command = command.name(), error = %e, "the subscriber refused the record");
                    return true;
                }
                Err(e @ CommandError::Decode { .. }) => {
                    error!(command = command.name(), error = %e, "cannot record on an unreadable stream");
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    error!(command = command.name(), error = %e, failures, "recording failed; retrying");
                    if !shutdown.sleep(self.store_retry_delay(failures)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Loads a subscriber and its stream's version, retrying store failures. `None` on
    /// shutdown; `Some(None)` when the stream cannot be read back (logged; the event is skipped).
    async fn load_state(
        &self,
        stream: &StreamId,
        shutdown: &Shutdown,
    ) -> Option<Option<(SubscriberState, u64)>> {
        let mut failures = 0;
        loop {
            match load::<Subscriber>(&*self.store, stream).await {
                Ok(loaded) => return Some(Some(loaded)),
                Err(e @ CommandError::Decode { .. }) => {
                    error!(error = %e, "unreadable subscriber stream; request skipped");
                    return Some(None);
                }
                Err(e) => {
                    failures += 1;
                    error!(error = %e, failures, "loading the subscriber failed; retrying");
                    if !shutdown.sleep(self.store_retry_delay(failures)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The saved checkpoint, retrying failures; `None` on shutdown.
    async fn load_checkpoint(&self, shutdown: &Shutdown) -> Option<Option<Position>> {
        let mut failures = 0;
        loop {
            match self.checkpoints.load(CHECKPOINT_NAME).await {
                Ok(position) => return Some(position),
                Err(e) => {
                    failures += 1;
                    error!(error = %e, failures, "loading the checkpoint failed; retrying");
                    if !shutdown.sleep(self.store_retry_delay(failures)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Saves the checkpoint, retrying failures; false on shutdown.
    async fn save_checkpoint(&self, position: Position, shutdown: &Shutdown) -> bool {
        let mut failures = 0;
        loop {
            match self.checkpoints.save(CHECKPOINT_NAME, position).await {
                Ok(()) => {
                    debug!(%position, "checkpoint saved");
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    error!(error = %e, failures, "saving the checkpoint failed; retrying");
                    if !shutdown.sleep(self.store_retry_delay(failures)).await {
                        return false;
                    }
                }
            }
        }
    }

    fn store_retry_delay(&self, failures: u32) -> Duration {
        self.config
            .poll_interval
            .saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1)))
            .min(MAX_STORE_RETRY_DELAY)
    }
}

/// Why the confirmation mail of `request_id` must not go out now; `None` when it may.
fn why_not_mail(
    state: &SubscriberState,
    request_id: RequestId,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<&'static str> {
    let Some(pending) = state
        .pending_request()
        .filter(|p| p.request_id() == request_id)
    else {
        return Some("the request is no longer pending");
    };
    if !pending.mails_sent().is_empty() {
        return Some("already mailed for this request");
    }
    if !state.is_mailable() {
        return Some("the subscriber is not mailable (restricted or erased)");
    }
    if !state.may_send_confirmation(now) {
        return Some("not allowed now (throttled, expired or undeliverable)");
    }
    None
}

/// The subscriber named by a `subscriber-<uuid>` stream.
fn subscriber_of(stream: &StreamId) -> Option<SubscriberId> {
    let uuid = stream.as_str().strip_prefix("subscriber-")?;
    Uuid::parse_str(uuid).ok().map(SubscriberId::from_uuid)
}
