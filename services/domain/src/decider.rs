//! The decider shape every aggregate of the service follows.
//!
//! `decide` turns a command into events against the current state; `evolve` folds one event into
//! the state. Both are pure: time and identifiers come in through the command or `now`.

use chrono::{DateTime, Utc};

/// A pure decision function over a state folded from events.
pub trait Decider {
    /// The state folded from a stream's events; `Default` is the state of an empty stream.
    type State: Default + Clone + Send + Sync;
    /// What a caller asks for.
    type Command: Send + Sync;
    /// What happened; the only thing that is stored.
    type Event: Clone + Send + Sync;
    /// Why a command was refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces in the given state, at time `now`.
    /// An empty vector means the command is accepted and changes nothing (an idempotent no-op).
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds a sequence of events into the state, starting from `Default`.
    fn fold<'a, I>(events: I) -> Self::State
    where
        I: IntoIterator<Item = &'a Self::Event>,
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |state, event| {
                Self::evolve(state, event)
            })
    }
}
