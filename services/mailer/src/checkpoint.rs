//! The [`CheckpointStore`] port: where a reactor keeps its place in the global log.

use async_trait::async_trait;
use newsletter_eventstore::Position;

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {name:?}: {message}")]
pub struct CheckpointError {
    /// The checkpoint's name.
    pub name: String,
    /// What went wrong.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CheckpointError {
    /// An error with its cause.
    pub fn new(
        name: &str,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Named positions in the global log, durable across restarts. The SQL implementation lives in
/// the projections crate.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The saved position, `None` when nothing was saved under `name` yet.
    async fn load(&self, name: &str) -> Result<Option<Position>, CheckpointError>;

    /// Saves `position` under `name`, replacing what was there.
    async fn save(&self, name: &str, position: Position) -> Result<(), CheckpointError>;
}
