//! [`EmailAddress`]: the one mandatory piece of personal data.
//!
//! Accepted: `local@domain` with exactly one `@`, after trimming surrounding whitespace.
//! - the local part is kept as typed (case preserved), 1–64 octets, dot-atom only: no quoted local
//!   parts, no whitespace, no control characters, none of `()<>[]:;,\"`, no leading/trailing dot
//!   and no `..`; non-ASCII (RFC 6531) letters are accepted;
//! - the domain is lower-cased and IDNA-normalised to its ASCII form (`bücher.dk` becomes
//!   `xn--bcher-kva.dk`); it needs at least two labels, each 1–63 characters of `[a-z0-9-]` not
//!   starting or ending with `-`, and a top-level label that is not all digits; address literals
//!   (`[192.0.2.1]`) are refused;
//! - the whole address is at most 254 octets (RFC 5321).

use serde::Deserialize;

use crate::error::{Field, ValueError};
use crate::text::{is_forbidden_char, personal_string_value};

const FIELD: Field = Field::Email;
/// The longest accepted address, in octets (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_OCTETS: usize = 254;
/// The longest accepted local part, in octets.
pub const MAX_LOCAL_PART_OCTETS: usize = 64;

/// A syntactically valid, normalised email address. Personal data: its `Debug` is redacted and it
/// has no `Display`; use [`EmailAddress::as_str`] to send mail and [`EmailAddress::masked`] to log.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct EmailAddress {
    value: String,
}

personal_string_value!(EmailAddress);

fn malformed(reason: &'static str) -> ValueError {
    ValueError::Malformed {
        field: FIELD,
        reason,
    }
}

impl EmailAddress {
    /// Parses and normalises outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        if trimmed.chars().any(is_forbidden_char) {
            return Err(ValueError::ControlCharacter { field: FIELD });
        }
        if trimmed.chars().any(char::is_whitespace) {
            return Err(malformed("must not contain whitespace"));
        }
        let mut parts = trimmed.split('@');
        let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => (local, domain),
            _ => return Err(malformed("must contain exactly one @")),
        };
        check_local_part(local)?;
        let domain = normalise_domain(domain)?;
        let value = format!("{local}@{domain}");
        if value.len() > MAX_EMAIL_OCTETS {
            return Err(ValueError::TooLong {
                field: FIELD,
                max: MAX_EMAIL_OCTETS,
            });
        }
        Ok(Self { value })
    }

    /// The local part, as typed.
    #[must_use]
    pub fn local_part(&self) -> &str {
        self.value
            .rsplit_once('@')
            .map_or(self.value.as_str(), |(local, _)| local)
    }

    /// The domain, lower-cased ASCII (IDNA A-labels).
    #[must_use]
    pub fn domain(&self) -> &str {
        self.value.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// A form safe for logs: the first character of the local part and of the domain, and the
    /// top-level domain, e.g. `j***@e***.com` (a personal domain alone could name the person).
    #[must_use]
    pub fn masked(&self) -> String {
        let first = self.local_part().chars().next().unwrap_or('*');
        let domain = self.domain();
        let domain_first = domain.chars().next().unwrap_or('*');
        let tld = domain.rsplit_once('.').map_or("", |(_, tld)| tld);
        format!("{first}***@{domain_first}***.{tld}")
    }
}

fn check_local_part(local: &str) -> Result<(), ValueError> {
    if local.is_empty() {
        return Err(malformed("the part before @ is missing"));
    }
    if local.contains('"') {
        return Err(malformed("quoted local parts are not accepted"));
    }
    if local.len() > MAX_LOCAL_PART_OCTETS {
        return Err(malformed("the part before @ must be at most 64 octets"));
    }
    if local.chars().any(|c| {
        matches!(
            c,
            '(' | ')' | '<' | '>' | '[' | ']' | ':' | ';' | ',' | '\\'
        )
    }) {
        return Err(ValueError::InvalidCharacter { field: FIELD });
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(malformed(
            "the part before @ must not start or end with a dot or contain two dots in a row",
        ));
    }
    Ok(())
}

fn normalise_domain(domain: &str) -> Result<String, ValueError> {
    if domain.is_empty() {
        return Err(malformed("the domain after @ is missing"));
    }
    if domain.starts_with('[') {
        return Err(malformed("address literals are not accepted"));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(malformed(
            "the domain must not start or end with a dot or contain two dots in a row",
        ));
    }
    let ascii = idna::domain_to_ascii(&domain.to_lowercase())
        .map_err(|_| malformed("the domain is not a valid domain name"))?;
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(malformed("the domain must contain a dot"));
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(malformed(
                "each part of the domain must be 1 to 63 characters",
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ValueError::InvalidCharacter { field: FIELD });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(malformed(
                "a part of the domain must not start or end with -",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(malformed("the top-level domain must not be numeric"));
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        EmailAddress::parse(input)
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|e| panic!("{input:?} refused: {e}"))
    }

    #[test]
    fn trims_and_lowercases_only_the_domain() {
        assert_eq!(ok("  Jane.Doe@Example.COM \n"), "Jane.Doe@example.com");
    }

    #[test]
    fn idna_normalises_the_domain() {
        assert_eq!(ok("kim@Bücher.DK"), "kim@xn--bcher-kva.dk");
        assert_eq!(ok("kim@xn--bcher-kva.dk"), "kim@xn--bcher-kva.dk");
    }

    #[test]
    fn accepts_plus_addressing_and_utf8_local_parts() {
        assert_eq!(ok("a+news@x.io"), "a+news@x.io");
        assert_eq!(ok("søren@x.dk"), "søren@x.dk");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "plain",
            "a@b@c.dk",
            "@x.dk",
            "a@",
            "a@localhost",
            "\"a b\"@x.dk",
            "a b@x.dk",
            "a@x.dk\r\nBcc: y@z.dk",
            "a\u{0}@x.dk",
            ".a@x.dk",
            "a.@x.dk",
            "a..b@x.dk",
            "a@.x.dk",
            "a@x.dk.",
            "a@x..dk",
            "a@-x.dk",
            "a@x_y.dk",
            "a@[192.0.2.1]",
            "a@192.0.2.1",
            "a<b>@x.dk",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn enforces_lengths_in_octets() {
        let local64 = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local64}@x.dk")).is_ok());
        assert!(EmailAddress::parse(&format!("a{local64}@x.dk")).is_err());
        let long_domain = format!("{}.dk", vec!["b".repeat(63); 4].join("."));
        assert!(EmailAddress::parse(&format!("a@{long_domain}")).is_err());
        let fits = format!("{}.dk", vec!["b".repeat(60); 4].join("."));
        assert!(EmailAddress::parse(&format!("{}@{fits}", "a".repeat(7))).is_ok());
    }

    #[test]
    fn masks_for_logs_and_redacts_debug() {
        let email = EmailAddress::parse("jane@example.com").unwrap();
        assert_eq!(email.masked(), "j***@e***.com");
        assert_eq!(format!("{email:?}"), "EmailAddress(<redacted>)");
        assert_eq!(email.local_part(), "jane");
        assert_eq!(email.domain(), "example.com");
    }

    #[test]
    fn deserialising_revalidates() {
        let email: EmailAddress = serde_json::from_str("\"Jane@Example.com\"").unwrap();
        assert_eq!(email.as_str(), "Jane@example.com");
        assert!(serde_json::from_str::<EmailAddress>("\"nope\"").is_err());
        assert_eq!(
            serde_json::to_string(&email).unwrap(),
            "\"Jane@example.com\""
        );
    }
}
