//! Builds the confirmation mail of a pending request as a lettre [`Message`], headers only
//! through lettre's typed API.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, header};
use newsletter_domain::{ListId, MessageId, PendingRequest, SubscriberId};
use newsletter_tokens::KeyRing;
use url::Url;
use uuid::Uuid;

use crate::config::MailerConfig;
use crate::template::ConfirmationContent;

/// Why a confirmation mail could not be built. Never holds the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The mail library does not accept the recipient address (e.g. a non-ASCII local part).
    #[error("the recipient address is not accepted by the mail library")]
    Recipient,
    /// lettre refused the message (should not happen with the typed API).
    #[error("the mail could not be built: {0}")]
    Message(String),
    /// The generated Message-ID was refused by the domain type.
    #[error("the generated Message-ID was not accepted")]
    MessageId,
}

/// A built confirmation mail and its Message-ID.
#[derive(Debug, Clone)]
pub struct ConfirmationMail {
    /// The message, ready for a [`crate::MailTransport`].
    pub message: Message,
    /// Its `Message-ID` header value, with angle brackets.
    pub message_id: MessageId,
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no auto-replies, please.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        if s.trim().eq_ignore_ascii_case("auto-generated") {
            Ok(Self)
        } else {
            Err("only auto-generated is supported".into())
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `{public_url}/v1/<endpoint>?token=<token>`, keeping any path prefix of the public URL.
#[must_use]
pub fn link(public_url: &Url, endpoint: &str, token: &str) -> String {
    let mut url = public_url.clone();
    let path = format!("{}/v1/{endpoint}", public_url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

/// Builds the confirmation mail for `pending`, with a confirm link that expires at the
/// request's `confirm_by` and a "this wasn't me" link (an unsubscribe token for all lists).
pub fn build_confirmation(
    config: &MailerConfig,
    keys: &KeyRing,
    subscriber: SubscriberId,
    pending: &PendingRequest,
    now: DateTime<Utc>,
) -> Result<ConfirmationMail, BuildError> {
    let to_address = pending
        .email()
        .as_str()
        .parse()
        .map_err(|_| BuildError::Recipient)?;
    let to = Mailbox::new(None, to_address);

    let confirm_token = keys.confirm_token(subscriber, pending.request_id(), pending.confirm_by());
    // "This wasn't me" cancels this request only: never lists the person confirmed before.
    let cancel_token = keys.cancel_token(subscriber, pending.request_id());
    let confirm_url = link(&config.public_url, "confirm", &confirm_token);
    let cancel_url = link(&config.public_url, "cancel", &cancel_token);
    let locale = pending.locale();
    let lists = pending
        .lists()
        .iter()
        .map(|list| config.list_title(list, locale))
        .collect();
    let organisation = config.organisation();
    let content = ConfirmationContent {
        locale,
        name: pending.profile().name.as_ref().map(|n| n.as_str()),
        organisation: &organisation,
        lists,
        confirm_url: &confirm_url,
        cancel_url: &cancel_url,
        privacy_url: config.privacy_url.as_str(),
        confirm_by: pending.confirm_by(),
    };
    let rendered = content.render();

    let message_id_text = format!("<{}@{}>", Uuid::new_v4(), config.from.email.domain());
    let message_id = MessageId::parse(&message_id_text).map_err(|_| BuildError::MessageId)?;
    let message = Message::builder()
        .from(config.from.clone())
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(message_id_text))
        .date(SystemTime::from(now))
        .header(AutoSubmitted)
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ))
        .map_err(|e| BuildError::Message(e.to_string()))?;
    Ok(ConfirmationMail {
        message,
        message_id,
    })
}

/// The id itself, used where a configured title is missing.
pub(crate) fn list_fallback(list: &ListId) -> String {
    list.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_a_path_prefix_and_carry_only_the_token() {
        let base = Url::parse("https://x.example/newsletter/").unwrap();
        assert_eq!(
            link(&base, "confirm", "k1.abc-_"),
            "https://x.example/newsletter/v1/confirm?token=k1.abc-_"
        );
        let bare = Url::parse("https://x.example?utm=1#top").unwrap();
        assert_eq!(
            link(&bare, "unsubscribe", "k1.x"),
            "https://x.example/v1/unsubscribe?token=k1.x"
        );
    }
}
