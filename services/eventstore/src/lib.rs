//! The event store of `newsletter`: the port every adapter implements, the SQLite (embedded
//! default), PostgreSQL and KurrentDB adapters, a catch-up-then-live subscription, and the one
//! command handling function every caller uses.

mod encoded;
mod error;

pub mod command;
pub mod connect;
pub mod counting;
pub mod group_commit;
pub mod kurrentdb;
pub mod model;
pub mod port;
pub mod postgres;
pub mod sqlite;
pub mod subscription;

pub use command::{
    Clock, CommandError, CommandOutcome, StreamHint, SystemClock, execute, execute_on,
    execute_with_hint,
};
pub use connect::connect;
pub use counting::CountingStreamReads;
pub use error::StoreError;
pub use kurrentdb::{KurrentDbConfig, KurrentDbEventStore};
pub use model::{
    AppendOutcome, EventMetadata, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
};
pub use port::EventStore;
pub use postgres::{PostgresConfig, PostgresEventStore};
pub use sqlite::{
    SQLITE_CACHE_SIZE, SqliteConfig, SqliteDurability, SqliteEventStore, durable_sqlite_options,
};
pub use subscription::{Subscription, SubscriptionOptions};
