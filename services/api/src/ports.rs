//! What the API needs from storage, as ports the binary fills with adapters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use newsletter_domain::{EmailAddress, ListId, Locale, SubscriberId};
use serde::Serialize;
use utoipa::ToSchema;

/// An error of an adapter behind a port, with its context already in the message.
pub type PortError = Box<dyn std::error::Error + Send + Sync>;

/// The email index: which subscriber an address belongs to. Strongly consistent: written before
/// the subscriber's first event is appended.
#[async_trait]
pub trait SubscriberDirectory: Send + Sync {
    /// The subscriber the address belongs to, claiming `candidate` for it if it has none yet.
    /// Concurrent claims of one address all get the same id.
    async fn claim(
        &self,
        email: &EmailAddress,
        candidate: SubscriberId,
    ) -> Result<SubscriberId, PortError>;

    /// The subscribers of the addresses that are known.
    async fn find_many(
        &self,
        emails: &[EmailAddress],
    ) -> Result<Vec<(EmailAddress, SubscriberId)>, PortError>;
}

/// A list status as other services see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    /// Asked for, not yet confirmed.
    Pending,
    /// Confirmed: may be sent the newsletter.
    Confirmed,
    /// Withdrawn (or a pending request cancelled or expired).
    Unsubscribed,
    /// Processing restricted (GDPR art. 18): kept, never mailed or listed.
    Restricted,
}

/// One list of a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ListStatusView {
    /// The list id.
    #[schema(value_type = String, example = "newsletter")]
    pub list: ListId,
    /// The status on that list.
    pub status: StatusName,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// A subscriber as the read model holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberRecord {
    /// The subscriber.
    pub id: SubscriberId,
    /// The confirmed address (absent while only a request is pending).
    pub email: Option<EmailAddress>,
    /// The name, if given.
    pub name: Option<String>,
    /// The language for mails and pages.
    pub locale: Option<Locale>,
    /// Every list the subscriber ever asked for.
    pub lists: Vec<ListStatusView>,
}

/// A member of a list, for the newsletter sender.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    /// The subscriber.
    pub id: SubscriberId,
    /// The address to send to.
    pub email: EmailAddress,
    /// The name, if given.
    pub name: Option<String>,
    /// The language of the newsletter.
    pub locale: Option<Locale>,
    /// Member since.
    pub since: DateTime<Utc>,
}

/// One page of list members, in subscriber id order.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    /// The members on this page.
    pub members: Vec<MemberRecord>,
    /// The last id on this page when more may follow.
    pub next_after: Option<SubscriberId>,
}

/// Read models the internal API answers from. Eventually consistent with the event log.
#[async_trait]
pub trait StatusQueries: Send + Sync {
    /// One subscriber, if the read model knows it.
    async fn subscriber(&self, id: SubscriberId) -> Result<Option<SubscriberRecord>, PortError>;

    /// Several subscribers at once; unknown ids are left out.
    async fn subscribers(&self, ids: &[SubscriberId]) -> Result<Vec<SubscriberRecord>, PortError>;

    /// Members of a list with a status (restricted subscribers are never `confirmed` members),
    /// after a subscriber id, up to `limit`.
    async fn list_members(
        &self,
        list: &ListId,
        status: StatusName,
        after: Option<SubscriberId>,
        limit: usize,
    ) -> Result<MemberPage, PortError>;
}

/// What `/health/ready` checks.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` when the role can serve: database reachable, migrations applied.
    async fn check(&self) -> Result<(), PortError>;
}
