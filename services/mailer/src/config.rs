//! [`MailerConfig`]: what the reactor needs to know besides its ports.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::Mailbox;
use newsletter_domain::{ListId, Locale};
use url::Url;

use crate::message::list_fallback;
use crate::retry::RetryPolicy;

/// A list's display name per language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTitle {
    /// In Danish.
    pub da: String,
    /// In English.
    pub en: String,
}

/// Configuration of the [`crate::Mailer`].
#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// Where the public API is reached from a mailbox, e.g. `https://news.example.com`
    /// (links become `{public_url}/v1/confirm?token=…`; a path prefix is kept).
    pub public_url: Url,
    /// The `From` of every mail; its display name is the organisation named in the text, its
    /// domain the right-hand side of Message-IDs.
    pub from: Mailbox,
    /// The privacy policy linked from every mail.
    pub privacy_url: Url,
    /// Display names of the lists; a list without one is shown by its id.
    pub list_titles: BTreeMap<ListId, ListTitle>,
    /// Retries of transient send failures.
    pub retry: RetryPolicy,
    /// The longest wait between two reads of the log when nothing signalled new events.
    pub poll_interval: Duration,
}

impl MailerConfig {
    /// A configuration with no list titles, the default retry policy and a 1 s poll interval.
    #[must_use]
    pub fn new(public_url: Url, from: Mailbox, privacy_url: Url) -> Self {
        Self {
            public_url,
            from,
            privacy_url,
            list_titles: BTreeMap::new(),
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// The display name of `list` in `locale`.
    #[must_use]
    pub fn list_title(&self, list: &ListId, locale: Locale) -> String {
        self.list_titles.get(list).map_or_else(
            || list_fallback(list),
            |title| match locale {
                Locale::Da => title.da.clone(),
                Locale::En => title.en.clone(),
            },
        )
    }

    /// The organisation named in mails: the `From` display name, or its domain.
    #[must_use]
    pub fn organisation(&self) -> String {
        self.from
            .name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| self.from.email.domain().to_owned())
    }
}
