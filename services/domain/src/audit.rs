//! Who did an administrative action and why: [`ActorName`], [`ReasonText`],
//! [`ErasureReference`].

use serde::Deserialize;

use crate::error::{Field, ValueError};
use crate::text::{
    bounded_line, is_forbidden_char, personal_string_value, public_string_value, token,
};

/// The longest actor name, in characters.
pub const MAX_ACTOR_CHARS: usize = 64;
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The longest erasure reference, in characters.
pub const MAX_REFERENCE_CHARS: usize = 64;

/// The short name of a service token or an admin (`dpo`, `crm-sync`): 1–64 characters of
/// `[A-Za-z0-9._-]`. The alphabet has no `@` on purpose: actors are not email addresses.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ActorName {
    value: String,
}
public_string_value!(ActorName);

impl ActorName {
    /// Trims and checks outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        token(input, Field::Actor, MAX_ACTOR_CHARS).map(|value| Self { value })
    }
}

/// The reference of a data-subject request (a ticket number such as `DSR-2026-0042`): 1–64
/// characters of `[A-Za-z0-9._-]`. Stored in the erasure event, so it must never be a name or
/// an address; the alphabet keeps email addresses out.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ErasureReference {
    value: String,
}
public_string_value!(ErasureReference);

impl ErasureReference {
    /// Trims and checks outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        token(input, Field::Reference, MAX_REFERENCE_CHARS).map(|value| Self { value })
    }
}

/// A free-text reason (why processing was restricted, why a mail failed): 1–500 characters, one
/// line. Treated as personal data (it may quote the person or their address): redacted `Debug`.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ReasonText {
    value: String,
}
personal_string_value!(ReasonText);

impl ReasonText {
    /// Trims and checks outside input; control characters are refused.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        bounded_line(input, Field::Reason, MAX_REASON_CHARS).map(|value| Self { value })
    }

    /// For machine-made text (an SMTP reply): control characters become spaces and the text is
    /// cut to 500 characters. `None` only when nothing is left.
    #[must_use]
    pub fn lossy(input: &str) -> Option<Self> {
        let cleaned: String = input
            .chars()
            .map(|c| if is_forbidden_char(c) { ' ' } else { c })
            .collect();
        let cut: String = cleaned.trim().chars().take(MAX_REASON_CHARS).collect();
        Self::parse(&cut).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_references_are_tokens() {
        assert!(ActorName::parse("dpo").is_ok());
        assert!(ActorName::parse("jane@example.com").is_err());
        assert!(ErasureReference::parse("DSR-2026-0042").is_ok());
        assert!(ErasureReference::parse("Jane Doe").is_err());
    }

    #[test]
    fn reasons_are_one_bounded_line() {
        assert!(ReasonText::parse("asked by phone").is_ok());
        assert!(ReasonText::parse("a\nb").is_err());
        let lossy = ReasonText::lossy("550 5.1.1\r\n<x@y.dk> unknown").unwrap();
        assert_eq!(lossy.as_str(), "550 5.1.1  <x@y.dk> unknown");
        assert_eq!(
            ReasonText::lossy(&"x".repeat(600)).unwrap().as_str().len(),
            500
        );
        assert!(ReasonText::lossy("\r\n").is_none());
        assert_eq!(format!("{lossy:?}"), "ReasonText(<redacted>)");
    }
}
