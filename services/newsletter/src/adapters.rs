//! The adapters that connect the API's and the mailer's ports to the projections crate.

use async_trait::async_trait;
use newsletter_api::ports::{
    ListStatusView, MemberPage, MemberRecord, PortError, Readiness, StatusName, StatusQueries,
    SubscriberDirectory, SubscriberRecord,
};
use newsletter_domain::{EmailAddress, ListId, SubscriberId};
use std::sync::Arc;

use newsletter_eventstore::{EventStore, Position};
use newsletter_mailer::{CheckpointError, CheckpointStore};
use newsletter_projections::{
    EmailIndex, LiveStatus, MemberCursor, MemberStatus, MembershipView, ReadModels, SubscriberView,
};

/// The email index as the API's directory.
pub struct Directory(pub EmailIndex);

#[async_trait]
impl SubscriberDirectory for Directory {
    async fn claim(
        &self,
        email: &EmailAddress,
        candidate: SubscriberId,
    ) -> Result<SubscriberId, PortError> {
        Ok(self.0.claim(email, candidate).await?)
    }

    async fn find_many(
        &self,
        emails: &[EmailAddress],
    ) -> Result<Vec<(EmailAddress, SubscriberId)>, PortError> {
        Ok(self.0.find_many(emails).await?)
    }
}

/// The read models as the API's status queries: status by id from the in-memory view once it
/// is loaded (from the SQL read model until then, or without a view), lookups and listings from
/// the SQL read model.
pub struct Queries {
    /// The SQL read model.
    pub models: ReadModels,
    /// The in-memory status view, if this process keeps one.
    pub live: Option<LiveStatus>,
}

fn status_name(status: MemberStatus) -> StatusName {
    match status {
        MemberStatus::Pending => StatusName::Pending,
        MemberStatus::Confirmed => StatusName::Confirmed,
        MemberStatus::Unsubscribed => StatusName::Unsubscribed,
        MemberStatus::Restricted => StatusName::Restricted,
    }
}

fn member_status(status: StatusName) -> MemberStatus {
    match status {
        StatusName::Pending => MemberStatus::Pending,
        StatusName::Confirmed => MemberStatus::Confirmed,
        StatusName::Unsubscribed => MemberStatus::Unsubscribed,
        StatusName::Restricted => MemberStatus::Restricted,
    }
}

fn list_views(lists: Vec<MembershipView>) -> Vec<ListStatusView> {
    lists
        .into_iter()
        .map(|m| ListStatusView {
            list: m.list,
            status: status_name(m.status),
            since: m.since,
        })
        .collect()
}

fn record(view: SubscriberView) -> SubscriberRecord {
    SubscriberRecord {
        id: view.id,
        email: view.email,
        name: view.name.map(|n| n.as_str().to_owned()),
        locale: view.locale,
        lists: list_views(view.lists),
    }
}

#[async_trait]
impl StatusQueries for Queries {
    async fn subscriber(&self, id: SubscriberId) -> Result<Option<SubscriberRecord>, PortError> {
        if let Some(live) = self.live.as_ref().filter(|live| live.is_loaded()) {
            return Ok(live.get(id).map(|view| SubscriberRecord {
                id: view.id,
                email: None,
                name: None,
                locale: view.locale,
                lists: list_views(view.lists),
            }));
        }
        Ok(self.models.subscriber(id).await?.map(record))
    }

    async fn subscribers(&self, ids: &[SubscriberId]) -> Result<Vec<SubscriberRecord>, PortError> {
        Ok(self
            .models
            .subscribers_by_ids(ids)
            .await?
            .into_iter()
            .map(record)
            .collect())
    }

    async fn list_members(
        &self,
        list: &ListId,
        status: StatusName,
        after: Option<SubscriberId>,
        limit: usize,
    ) -> Result<MemberPage, PortError> {
        let (members, next) = self
            .models
            .list_members(list, member_status(status), after.map(MemberCursor), limit)
            .await?;
        Ok(MemberPage {
            members: members
                .into_iter()
                .filter_map(|m| {
                    Some(MemberRecord {
                        id: m.subscriber_id,
                        email: m.email?,
                        name: m.name.map(|n| n.as_str().to_owned()),
                        locale: m.locale,
                        since: m.since,
                    })
                })
                .collect(),
            next_after: next.map(|cursor| cursor.0),
        })
    }
}

/// Readiness of the API's in-memory status view: not ready until it has loaded.
pub struct LiveStatusReadiness(pub LiveStatus);

#[async_trait]
impl Readiness for LiveStatusReadiness {
    async fn check(&self) -> Result<(), PortError> {
        if self.0.is_loaded() {
            Ok(())
        } else {
            Err("the in-memory status view is still loading".into())
        }
    }
}

/// Readiness: the event store and the read-model database both answer.
pub struct StorageReadiness {
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// The read models.
    pub models: ReadModels,
}

#[async_trait]
impl Readiness for StorageReadiness {
    async fn check(&self) -> Result<(), PortError> {
        self.store.read_all(None, 1).await?;
        self.models.projection_checkpoint().await?;
        Ok(())
    }
}

/// Reactor checkpoints kept in the read-model database.
pub struct Checkpoints(pub ReadModels);

#[async_trait]
impl CheckpointStore for Checkpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        self.0
            .load_checkpoint(name)
            .await
            .map_err(|e| CheckpointError::new(name, "read-model database", e))
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), CheckpointError> {
        self.0
            .save_checkpoint(name, position)
            .await
            .map_err(|e| CheckpointError::new(name, "read-model database", e))
    }
}

/// Counts appended events by type for `/metrics`, around any event store.
pub struct MeteredStore {
    inner: Arc<dyn EventStore>,
    metrics: Arc<newsletter_api::metrics::Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore>, metrics: Arc<newsletter_api::metrics::Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl EventStore for MeteredStore {
    async fn append(
        &self,
        stream: &newsletter_eventstore::StreamId,
        expected: newsletter_eventstore::ExpectedVersion,
        events: Vec<newsletter_eventstore::NewEvent>,
    ) -> Result<newsletter_eventstore::AppendOutcome, newsletter_eventstore::StoreError> {
        let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
        let outcome = self.inner.append(stream, expected, events).await?;
        if !outcome.idempotent_replay {
            for event_type in &types {
                self.metrics
                    .events_appended
                    .with_label_values(&[event_type.as_str()])
                    .inc();
            }
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &newsletter_eventstore::StreamId,
        after_version: u64,
    ) -> Result<Vec<newsletter_eventstore::RecordedEvent>, newsletter_eventstore::StoreError> {
        self.inner.read_stream(stream, after_version).await
    }

    async fn read_all(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<newsletter_eventstore::RecordedEvent>, newsletter_eventstore::StoreError> {
        self.inner.read_all(after, limit).await
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }

    fn adapter_name(&self) -> &'static str {
        self.inner.adapter_name()
    }
}
