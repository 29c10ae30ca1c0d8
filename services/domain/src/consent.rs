//! Consent evidence (privacy policy sections 2 and 4): which policy, which form, when, from which
//! IP address and browser — recorded at signup **and** at confirmation.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Field, ValueError};
use crate::text::{is_forbidden_char, personal_string_value, public_string_value, token};

/// The longest policy version or source id, in characters.
pub const MAX_TOKEN_CHARS: usize = 64;
/// The longest kept user agent, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// The version of the privacy policy shown when consent was given (e.g. `2026-11`): 1–64
/// characters of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct PolicyVersion {
    value: String,
}
public_string_value!(PolicyVersion);

impl PolicyVersion {
    /// Trims and checks outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        token(input, Field::PolicyVersion, MAX_TOKEN_CHARS).map(|value| Self { value })
    }
}

/// The form or integration a signup came from (e.g. `footer-form`): 1–64 characters of
/// `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct SourceId {
    value: String,
}
public_string_value!(SourceId);

impl SourceId {
    /// Trims and checks outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        token(input, Field::Source, MAX_TOKEN_CHARS).map(|value| Self { value })
    }
}

/// The browser's `User-Agent`, kept as evidence. Lenient because it is evidence, not a reason to
/// refuse a signup: control characters are removed, whitespace trimmed, and the text cut to 512
/// characters. Refused only when nothing is left. Parsing a parsed value gives it back unchanged.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct UserAgent {
    value: String,
}
personal_string_value!(UserAgent);

impl UserAgent {
    /// Cleans and bounds outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let cleaned: String = input.chars().filter(|c| !is_forbidden_char(*c)).collect();
        let cut: String = cleaned.trim().chars().take(MAX_USER_AGENT_CHARS).collect();
        let value = cut.trim_end().to_owned();
        if value.is_empty() {
            return Err(ValueError::Empty {
                field: Field::UserAgent,
            });
        }
        Ok(Self { value })
    }
}

/// Evidence of one act of consent (signup or confirmation). `ip` and `user_agent` are personal
/// data; the event store encrypts them with the subscriber's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvidence {
    /// The privacy policy version the person was shown.
    pub policy_version: PolicyVersion,
    /// The form or integration, when known.
    #[serde(default)]
    pub source: Option<SourceId>,
    /// When the person acted, as seen by the HTTP layer.
    pub at: DateTime<Utc>,
    /// The client's IP address, when known.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// The client's user agent, when known.
    #[serde(default)]
    pub user_agent: Option<UserAgent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(PolicyVersion::parse("2026-11").is_ok());
        assert!(PolicyVersion::parse("v 1").is_err());
        assert!(SourceId::parse("footer-form").is_ok());
        assert!(SourceId::parse("").is_err());
    }

    #[test]
    fn user_agents_are_cleaned_and_cut() {
        let ua = UserAgent::parse(" Mozilla/5.0\r\n (X11) ").unwrap();
        assert_eq!(ua.as_str(), "Mozilla/5.0 (X11)");
        let long = UserAgent::parse(&"u".repeat(600)).unwrap();
        assert_eq!(long.as_str().chars().count(), 512);
        assert_eq!(UserAgent::parse(long.as_str()).unwrap(), long);
        assert!(UserAgent::parse("\u{7}").is_err());
    }

    #[test]
    fn evidence_round_trips() {
        let evidence = ConsentEvidence {
            policy_version: PolicyVersion::parse("2026-11").unwrap(),
            source: Some(SourceId::parse("footer").unwrap()),
            at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .unwrap()
                .to_utc(),
            ip: Some("192.0.2.7".parse().unwrap()),
            user_agent: Some(UserAgent::parse("curl/8").unwrap()),
        };
        let json = serde_json::to_value(&evidence).unwrap();
        assert_eq!(json["ip"], "192.0.2.7");
        let back: ConsentEvidence = serde_json::from_value(json).unwrap();
        assert_eq!(back, evidence);
    }
}
