//! Command handling: the one function every caller uses to change a stream.
//!
//! Load the stream, fold it, decide, append with the expected version; on a version conflict
//! (another writer got there first) start again on fresh state, a bounded number of times.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use newsletter_domain::{Decider, DecodeError, EventCodec};
use uuid::Uuid;

use crate::StoreError;
use crate::model::{AppendOutcome, EventMetadata, ExpectedVersion, NewEvent, StreamId};
use crate::port::EventStore;

/// How many times a command is decided again after a version conflict.
pub const MAX_CONFLICT_RETRIES: usize = 5;

/// The source of `now` for decisions (a fixed clock in tests).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused the command.
    #[error("command refused: {0}")]
    Refused(#[source] E),
    /// Other writers kept changing the stream; every retry conflicted.
    #[error("stream {stream} kept changing; gave up after {attempts} attempts")]
    Contention {
        /// The stream.
        stream: StreamId,
        /// How many times it was tried.
        attempts: usize,
    },
    /// A stored event could not be decoded.
    #[error("stream {stream} holds an unreadable event at version {version}: {source}")]
    Decode {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// What the codec said.
        #[source]
        source: DecodeError,
    },
    /// A new event could not be encoded.
    #[error("could not encode a {event_type} event: {source}")]
    Encode {
        /// The event's type.
        event_type: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a carried-out command did.
#[derive(Debug)]
pub struct CommandOutcome<D: Decider> {
    /// The stream's state after the command.
    pub state: D::State,
    /// The events the command produced (empty for an accepted no-op).
    pub events: Vec<D::Event>,
    /// The append, when there was one.
    pub appended: Option<AppendOutcome>,
    /// The stream's version after the command.
    pub stream_version: u64,
    _decider: PhantomData<D>,
}

/// What the caller knows of a stream when it runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamHint {
    /// Nothing: the stream is read before the first decision.
    Unknown,
    /// Never written, as far as the caller can tell (its id was minted a moment ago): the first
    /// decision is taken on the empty state without reading the stream, and appended with
    /// [`ExpectedVersion::NoStream`]. If the stream exists after all, that append conflicts and
    /// the command goes on as with [`StreamHint::Unknown`]: read, decide again on what is
    /// there. Saves one read per new stream; never decides on a wrong state.
    BelievedNew,
}

/// Loads a stream, decides `command` on its state, appends the result with optimistic
/// concurrency, and retries on conflict up to [`MAX_CONFLICT_RETRIES`] times.
pub async fn execute<D>(
    store: &dyn EventStore,
    clock: &dyn Clock,
    stream: &StreamId,
    command: &D::Command,
    metadata: &EventMetadata,
) -> Result<CommandOutcome<D>, CommandError<D::Error>>
where
    D: Decider,
    D::Event: EventCodec,
{
    execute_with_hint::<D>(store, clock, stream, command, metadata, StreamHint::Unknown).await
}

/// [`execute`], with what the caller knows of the stream (see [`StreamHint`]).
pub async fn execute_with_hint<D>(
    store: &dyn EventStore,
    clock: &dyn Clock,
    stream: &StreamId,
    command: &D::Command,
    metadata: &EventMetadata,
    hint: StreamHint,
) -> Result<CommandOutcome<D>, CommandError<D::Error>>
where
    D: Decider,
    D::Event: EventCodec,
{
    let known = (hint == StreamHint::BelievedNew).then(|| (D::State::default(), 0));
    decide_and_append::<D>(store, clock, stream, command, metadata, known).await
}

/// [`execute`], deciding first on a state the caller loaded a moment ago ([`load`]) at
/// `version`, without reading the stream again. The append expects `version`: if the stream
/// changed meanwhile it conflicts and the command goes on as [`execute`] does (read, decide
/// again on what is there), so a decision on an old state is never appended.
pub async fn execute_on<D>(
    store: &dyn EventStore,
    clock: &dyn Clock,
    stream: &StreamId,
    command: &D::Command,
    metadata: &EventMetadata,
    loaded: (D::State, u64),
) -> Result<CommandOutcome<D>, CommandError<D::Error>>
where
    D: Decider,
    D::Event: EventCodec,
{
    decide_and_append::<D>(store, clock, stream, command, metadata, Some(loaded)).await
}

/// The command loop: the first decision on `known` when given, every other on the stream as
/// read; optimistic appends, retried on conflict up to [`MAX_CONFLICT_RETRIES`] times.
async fn decide_and_append<D>(
    store: &dyn EventStore,
    clock: &dyn Clock,
    stream: &StreamId,
    command: &D::Command,
    metadata: &EventMetadata,
    mut known: Option<(D::State, u64)>,
) -> Result<CommandOutcome<D>, CommandError<D::Error>>
where
    D: Decider,
    D::Event: EventCodec,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (state, version) = match known.take() {
            Some(known) => known,
            None => load::<D>(store, stream).await?,
        };
        let events = D::decide(&state, command, clock.now()).map_err(CommandError::Refused)?;
        if events.is_empty() {
            return Ok(CommandOutcome {
                state,
                events,
                appended: None,
                stream_version: version,
                _decider: PhantomData,
            });
        }
        let new_events = events
            .iter()
            .map(|event| encode(event, metadata))
            .collect::<Result<Vec<_>, _>>()?;
        match store
            .append(stream, ExpectedVersion::from_current(version), new_events)
            .await
        {
            Ok(appended) => {
                let state = events.iter().fold(state, D::evolve);
                return Ok(CommandOutcome {
                    state,
                    events,
                    appended: Some(appended),
                    stream_version: appended.stream_version,
                    _decider: PhantomData,
                });
            }
            Err(StoreError::WrongExpectedVersion { .. }) if attempts <= MAX_CONFLICT_RETRIES => {
                tracing::debug!(%stream, attempts, "version conflict; deciding again");
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                return Err(CommandError::Contention {
                    stream: stream.clone(),
                    attempts,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads and folds a stream: its state and its version (0 for no stream).
pub async fn load<D>(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<(D::State, u64), CommandError<D::Error>>
where
    D: Decider,
    D::Event: EventCodec,
{
    let recorded = store.read_stream(stream, 0).await?;
    let mut state = D::State::default();
    let mut version = 0;
    for event in recorded {
        let decoded = event
            .decode::<D::Event>()
            .map_err(|source| CommandError::Decode {
                stream: stream.clone(),
                version: event.stream_version,
                source,
            })?;
        state = D::evolve(state, &decoded);
        version = event.stream_version;
    }
    Ok((state, version))
}

fn encode<E: EventCodec, X: std::error::Error + 'static>(
    event: &E,
    metadata: &EventMetadata,
) -> Result<NewEvent, CommandError<X>> {
    let payload = event.encode().map_err(|source| CommandError::Encode {
        event_type: event.event_type(),
        source,
    })?;
    Ok(NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload,
        metadata: metadata.clone(),
    })
}
