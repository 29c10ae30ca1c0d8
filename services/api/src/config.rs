//! What the API needs to know from configuration.

use std::net::IpAddr;

use chrono::TimeDelta;
use newsletter_domain::{ListCatalog, ListId, PolicyVersion};

/// API settings, already parsed and checked by the binary.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base of every link in pages and headers, without a trailing slash.
    pub public_url: String,
    /// The configured lists.
    pub lists: ListCatalog,
    /// The list a signup without `lists` joins.
    pub default_list: ListId,
    /// How long a confirm link stays valid.
    pub confirm_ttl: TimeDelta,
    /// Where form signups are redirected (303) instead of seeing the thank-you page.
    pub thank_you_url: Option<String>,
    /// The privacy-policy version stamped on consent evidence.
    pub policy_version: PolicyVersion,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Signups per minute per client IP; 0 turns the limit off.
    pub signup_rate_limit: u32,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The most addresses one lookup may ask for.
    pub max_lookup: usize,
}

impl ApiConfig {
    /// The default largest body: 64 KiB (a signup form is a few hundred bytes; a lookup of
    /// 1,000 addresses is under 64 KiB).
    pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
}
