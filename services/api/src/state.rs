//! Everything a handler needs, shared by all workers.

use std::sync::Arc;

use newsletter_eventstore::{Clock, EventStore};
use newsletter_tokens::KeyRing;

use crate::auth::ServiceTokens;
use crate::config::ApiConfig;
use crate::ports::{Readiness, StatusQueries, SubscriberDirectory};
use crate::rate_limit::RateLimiter;
use crate::routes::admin::PrivacyOperations;

/// The application state.
#[derive(Clone)]
pub struct ApiState {
    /// The event log commands are appended to.
    pub store: Arc<dyn EventStore>,
    /// The email index.
    pub directory: Arc<dyn SubscriberDirectory>,
    /// The read models.
    pub queries: Arc<dyn StatusQueries>,
    /// Readiness of the storage behind the API.
    pub readiness: Arc<dyn Readiness>,
    /// Link token keys.
    pub keys: Arc<KeyRing>,
    /// Service tokens of other services.
    pub tokens: Arc<ServiceTokens>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// The clock decisions use.
    pub clock: Arc<dyn Clock>,
    /// The signup rate limiter.
    pub signup_limiter: Arc<RateLimiter>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Erasure and the admin audit log (`/admin/v1/…`).
    pub privacy: Arc<dyn PrivacyOperations>,
}
